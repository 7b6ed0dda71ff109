package routing

import (
	"net/netip"
	"reflect"
	"testing"
)

func eps(addrs ...string) []Endpoint {
	var out []Endpoint
	for _, a := range addrs {
		out = append(out, Endpoint{Addr: netip.MustParseAddr(a), Ready: true, Serving: true})
	}
	return out
}

func tgt(cluster string, addrs ...string) []Target {
	var out []Target
	for _, a := range addrs {
		out = append(out, Target{Addr: netip.MustParseAddrPort(a), Cluster: cluster})
	}
	return out
}

func TestBuild(t *testing.T) {
	web := []Port{{Name: "http", Port: 8080}}
	vip := netip.MustParseAddr("10.96.0.10")
	base := func(slices ...Slice) ServiceView {
		return ServiceView{Namespace: "shop", Name: "cart", Policy: DefaultPolicy, IPs: []netip.Addr{vip}, Ports: []Port{{Name: "web", Port: 80}}, Slices: slices}
	}
	notReady := Endpoint{Addr: netip.MustParseAddr("10.1.0.9"), Ready: false, Serving: false}
	terminating := Endpoint{Addr: netip.MustParseAddr("10.1.0.8"), Ready: false, Serving: true, Terminating: true}
	webPort := []Port{{Name: "web", Port: 8080}}
	cases := []struct {
		name    string
		view    ServiceView
		order   []string
		ejected []string
		want    [][]Target
	}{
		{"local first, then by order",
			base(Slice{Cluster: "me", Ports: webPort, Endpoints: eps("10.1.0.1")},
				Slice{Cluster: "far", Ports: webPort, Endpoints: eps("10.3.0.1")},
				Slice{Cluster: "near", Ports: webPort, Endpoints: eps("10.2.0.1", "10.2.0.2")}),
			[]string{"near", "far"}, nil,
			[][]Target{tgt("me", "10.1.0.1:8080"), tgt("near", "10.2.0.1:8080", "10.2.0.2:8080"), tgt("far", "10.3.0.1:8080")}},
		{"no local endpoints leaves tier 0 empty",
			base(Slice{Cluster: "near", Ports: webPort, Endpoints: eps("10.2.0.1")}),
			[]string{"near"}, nil,
			[][]Target{nil, tgt("near", "10.2.0.1:8080")}},
		{"not ready endpoints are left out",
			base(Slice{Cluster: "me", Ports: webPort, Endpoints: append(eps("10.1.0.1"), notReady, terminating)}),
			nil, nil,
			[][]Target{tgt("me", "10.1.0.1:8080")}},
		{"serving terminating endpoints only when nothing is ready",
			base(Slice{Cluster: "me", Ports: webPort, Endpoints: []Endpoint{notReady, terminating}}),
			nil, nil,
			[][]Target{tgt("me", "10.1.0.8:8080")}},
		{"ejected backends leave their tier",
			base(Slice{Cluster: "me", Ports: webPort, Endpoints: eps("10.1.0.1")},
				Slice{Cluster: "near", Ports: webPort, Endpoints: eps("10.2.0.1")}),
			[]string{"near"}, []string{"10.1.0.1:8080"},
			[][]Target{nil, tgt("near", "10.2.0.1:8080")}},
		{"everything ejected keeps everything (the kernel falls back)",
			base(Slice{Cluster: "me", Ports: webPort, Endpoints: eps("10.1.0.1")}),
			nil, []string{"10.1.0.1:8080"},
			[][]Target{tgt("me", "10.1.0.1:8080")}},
		{"too few local endpoints: the nearest cluster joins tier 0",
			func() ServiceView {
				v := base(Slice{Cluster: "me", Ports: webPort, Endpoints: eps("10.1.0.1")},
					Slice{Cluster: "near", Ports: webPort, Endpoints: eps("10.2.0.1")},
					Slice{Cluster: "far", Ports: webPort, Endpoints: eps("10.3.0.1")})
				v.Policy.MinLocalEndpoints = 2
				return v
			}(),
			[]string{"near", "far"}, nil,
			[][]Target{append(tgt("me", "10.1.0.1:8080"), tgt("near", "10.2.0.1:8080")...), tgt("far", "10.3.0.1:8080")}},
		{"slices without the service's port name are not used",
			base(Slice{Cluster: "me", Ports: web, Endpoints: eps("10.1.0.1")},
				Slice{Cluster: "near", Ports: webPort, Endpoints: eps("10.2.0.1")}),
			[]string{"near"}, nil,
			[][]Target{nil, tgt("near", "10.2.0.1:8080")}},
		{"other family's slices are not used",
			base(Slice{Cluster: "me", IPv6: true, Ports: webPort, Endpoints: eps("fd00::1")},
				Slice{Cluster: "near", Ports: webPort, Endpoints: eps("10.2.0.1")}),
			[]string{"near"}, nil,
			[][]Target{nil, tgt("near", "10.2.0.1:8080")}},
		{"more clusters than tiers share the last",
			func() ServiceView {
				var sl []Slice
				for i, c := range []string{"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"} {
					sl = append(sl, Slice{Cluster: c, Ports: webPort, Endpoints: eps(netip.AddrFrom4([4]byte{10, 9, 0, byte(i + 1)}).String())})
				}
				return base(sl...)
			}(),
			[]string{"c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"}, nil,
			[][]Target{nil, tgt("c1", "10.9.0.1:8080"), tgt("c2", "10.9.0.2:8080"), tgt("c3", "10.9.0.3:8080"), tgt("c4", "10.9.0.4:8080"),
				tgt("c5", "10.9.0.5:8080"), tgt("c6", "10.9.0.6:8080"), append(tgt("c7", "10.9.0.7:8080"), append(tgt("c8", "10.9.0.8:8080"), tgt("c9", "10.9.0.9:8080")...)...)}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ej := map[netip.AddrPort]bool{}
			for _, a := range c.ejected {
				ej[netip.MustParseAddrPort(a)] = true
			}
			got := Build(&c.view, "me", c.order, func(a netip.AddrPort) bool { return ej[a] })
			if len(got) != 1 || got[0].VIP != netip.AddrPortFrom(vip, 80) {
				t.Fatalf("tables %+v, want one for %s:80", got, vip)
			}
			if !reflect.DeepEqual(got[0].Tiers, c.want) {
				t.Errorf("tiers\n got %v\nwant %v", got[0].Tiers, c.want)
			}
		})
	}
}

func TestBuildNoEndpointsNoTable(t *testing.T) {
	v := ServiceView{IPs: []netip.Addr{netip.MustParseAddr("10.96.0.1")}, Ports: []Port{{Name: "", Port: 80}}, Policy: DefaultPolicy}
	if got := Build(&v, "me", nil, nil); len(got) != 0 {
		t.Errorf("a service with no endpoints got tables %+v", got)
	}
}
