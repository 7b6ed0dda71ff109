package attribution

import (
	"net/netip"
	"strings"
	"testing"
)

func validTopology() *TopologyFile {
	return &TopologyFile{
		APIVersion: TopologyAPIVersion, Kind: TopologyKind, Cluster: "us-east-1",
		Clusters: []TopologyCluster{
			{Name: "us-east-1", UID: "uid-use1", CIDRs: []string{"10.1.0.0/16"}},
			{Name: "eu-west-1", UID: "uid-euw1", CIDRs: []string{"10.2.0.0/16"}},
		},
		Services: []TopologyService{
			{Namespace: "shop", Name: "cart", Addresses: []string{"10.96.0.10:80"}, Translated: true},
		},
		Workloads: []TopologyWorkload{
			{Namespace: "shop", Name: "frontend", Kind: "Deployment", Addresses: []string{"10.1.0.5"}},
			{Namespace: "shop", Name: "cart", Kind: "StatefulSet", Service: "cart", Addresses: []string{"10.2.3.0/24"}},
		},
	}
}

func TestStaticResolves(t *testing.T) {
	s, err := NewStatic(validTopology())
	if err != nil {
		t.Fatal(err)
	}
	if s.Self() != (Cluster{UID: "uid-use1", Name: "us-east-1"}) {
		t.Errorf("self = %+v", s.Self())
	}
	for _, tc := range []struct {
		name string
		got  any
		want any
	}{
		{"local frontend", first(s.Local(netip.MustParseAddr("10.1.0.5"), 0)), Workload{"shop", "Deployment", "frontend"}},
		{"service by VIP", first(s.Service(netip.MustParseAddrPort("10.96.0.10:80"))), Service{"shop", "cart"}},
		{"service by endpoint", first(s.Service(netip.MustParseAddrPort("10.2.3.7:8080"))), Service{"shop", "cart"}},
		{"remote endpoint", first(s.Endpoint(netip.MustParseAddrPort("10.2.3.7:8080"))),
			Endpoint{Cluster: Cluster{"uid-euw1", "eu-west-1"}, Workload: Workload{"shop", "StatefulSet", "cart"}, Service: Service{"shop", "cart"}}},
		{"cluster only", first(s.Endpoint(netip.MustParseAddrPort("10.2.9.9:1"))), Endpoint{Cluster: Cluster{"uid-euw1", "eu-west-1"}}},
		{"translated", s.TranslatedServices(), []netip.AddrPort{netip.MustParseAddrPort("10.96.0.10:80")}},
	} {
		if !equal(tc.got, tc.want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}
	if _, ok := s.Endpoint(netip.MustParseAddrPort("192.0.2.1:80")); ok {
		t.Error("an address outside every range resolved")
	}
}

func first[T any](v T, _ bool) T { return v }

func equal(a, b any) bool {
	switch av := a.(type) {
	case []netip.AddrPort:
		bv := b.([]netip.AddrPort)
		if len(av) != len(bv) {
			return false
		}
		for i := range av {
			if av[i] != bv[i] {
				return false
			}
		}
		return true
	}
	return a == b
}

func TestStaticRejectsBadFiles(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*TopologyFile)
		want   string
	}{
		{"api version", func(f *TopologyFile) { f.APIVersion = "v1" }, `apiVersion: "v1"`},
		{"no clusters", func(f *TopologyFile) { f.Clusters = nil; f.Workloads = nil }, "clusters: at least one cluster"},
		{"duplicate cluster", func(f *TopologyFile) { f.Clusters[1].Name = "us-east-1" }, `clusters[1].name: duplicate cluster "us-east-1"`},
		{"bad service address", func(f *TopologyFile) { f.Services[0].Addresses = []string{"10.96.0.10"} }, `services[0].addresses[0]: "10.96.0.10" is not ip:port`},
		{"unknown service", func(f *TopologyFile) { f.Workloads[1].Service = "nope" }, `workloads[1].service: "nope" is not declared`},
		{"unknown cluster", func(f *TopologyFile) { f.Workloads[0].Cluster = "mars" }, `workloads[0].cluster: "mars"`},
		{"bad address", func(f *TopologyFile) { f.Workloads[0].Addresses = []string{"ten"} }, `workloads[0].addresses[0]: "ten" is not an IP or CIDR`},
		{"ipv6 translated", func(f *TopologyFile) { f.Services[0].Addresses = []string{"[fd00::1]:80"} }, "translated addresses must be IPv4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := validTopology()
			tc.mutate(f)
			_, err := NewStatic(f)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}
