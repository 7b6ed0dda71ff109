package agent

import (
	"net/netip"
	"testing"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/telemetry"
)

func TestSeriesKey(t *testing.T) {
	r, err := attribution.NewStatic(&attribution.TopologyFile{
		APIVersion: attribution.TopologyAPIVersion, Kind: attribution.TopologyKind, Cluster: "a",
		Clusters: []attribution.TopologyCluster{
			{Name: "a", UID: "uid-a", CIDRs: []string{"10.1.0.0/16"}},
			{Name: "b", UID: "uid-b", CIDRs: []string{"10.2.0.0/16"}},
		},
		Services: []attribution.TopologyService{{Namespace: "shop", Name: "cart", Addresses: []string{"10.96.0.10:80"}}},
		Workloads: []attribution.TopologyWorkload{
			{Namespace: "shop", Name: "frontend", Kind: "Deployment", Addresses: []string{"10.1.0.5"}},
			{Namespace: "shop", Name: "cart", Kind: "Deployment", Service: "cart", Addresses: []string{"10.2.0.7"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	cart := telemetry.Peer{ClusterUID: "uid-b", ClusterName: "b", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "cart"}
	frontend := telemetry.Peer{ClusterUID: "uid-a", ClusterName: "a", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "frontend"}
	for _, tc := range []struct {
		name string
		key  probe.FlowKey
		want telemetry.SeriesKey
	}{
		{"client via a redirected service address",
			probe.FlowKey{Local: netip.MustParseAddr("10.1.0.5"), Dialed: ap("10.96.0.10:80"), Peer: ap("10.2.0.7:8080"), Role: probe.RoleClient},
			telemetry.SeriesKey{Role: "client", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "frontend",
				ServiceNamespace: "shop", ServiceName: "cart", ServerPort: 80, Peer: cart}},
		{"client dialing an endpoint directly",
			probe.FlowKey{Local: netip.MustParseAddr("10.1.0.5"), Dialed: ap("10.2.0.7:8080"), Peer: ap("10.2.0.7:8080"), Role: probe.RoleClient},
			telemetry.SeriesKey{Role: "client", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "frontend",
				ServiceNamespace: "shop", ServiceName: "cart", ServerPort: 8080, Peer: cart}},
		{"server side of the same",
			probe.FlowKey{Local: netip.MustParseAddr("10.2.0.7"), Dialed: ap("10.2.0.7:8080"), Peer: ap("10.1.0.5:0"), Role: probe.RoleServer},
			telemetry.SeriesKey{Role: "server", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "cart",
				ServiceNamespace: "shop", ServiceName: "cart", ServerPort: 8080, Peer: frontend}},
		{"unknown everything",
			probe.FlowKey{Local: netip.MustParseAddr("192.0.2.1"), Dialed: ap("198.51.100.1:443"), Peer: ap("198.51.100.1:443"), Role: probe.RoleClient},
			telemetry.SeriesKey{Role: "client", ServerPort: 443}},
	} {
		if got := seriesKey(r, tc.key); got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
}
