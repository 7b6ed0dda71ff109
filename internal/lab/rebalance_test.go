package lab

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/lab/demo"
)

// measuredShop is a snapshot of the shop as the estimator aggregates it:
// the calls' bytes from the demo's own call graph at rps requests/s, RTT
// of the three clusters (us-east-1 and us-west-2 70 ms apart, eu-west-1
// 75 and 140 ms away), and load generators in every cluster.
func measuredShop(app *demo.App, where map[string]string, rps float64) *aggregate.Snapshot {
	rtt := map[[2]string]float64{{"us-east-1", "us-west-2"}: 70, {"us-east-1", "eu-west-1"}: 75, {"us-west-2", "eu-west-1"}: 140}
	snap := &aggregate.Snapshot{Now: time.Unix(1e9, 0), Latency: map[string]map[string]aggregate.PairStat{}, Traffic: map[aggregate.WorkloadKey]*aggregate.WorkloadStat{}}
	clusters := []string{"us-east-1", "us-west-2", "eu-west-1"}
	for _, a := range clusters {
		snap.Latency[ClusterUID(a)] = map[string]aggregate.PairStat{}
		for _, b := range clusters {
			ms := rtt[[2]string{a, b}] + rtt[[2]string{b, a}]
			if a == b {
				ms = 0.1
			}
			snap.Latency[ClusterUID(a)][ClusterUID(b)] = aggregate.PairStat{P50: ms / 1e3, Samples: 1000}
		}
	}
	add := func(from, fromCluster, to string, bytes float64) {
		k := aggregate.WorkloadKey{Namespace: app.Namespace, Kind: "Deployment", Name: from}
		st := snap.Traffic[k]
		if st == nil {
			st = &aggregate.WorkloadStat{Peers: map[aggregate.PeerKey]map[aggregate.ClusterPair]aggregate.Rates{}}
			snap.Traffic[k] = st
		}
		pk := aggregate.PeerKey{Namespace: app.Namespace, Kind: "Deployment", Name: to}
		if st.Peers[pk] == nil {
			st.Peers[pk] = map[aggregate.ClusterPair]aggregate.Rates{}
		}
		st.Peers[pk][aggregate.ClusterPair{Src: ClusterUID(fromCluster), Dst: ClusterUID(where[to])}] = aggregate.Rates{BytesPerSecond: bytes}
	}
	for _, c := range clusters {
		entry, _ := app.Service(app.Entry)
		add(LoadGenerator(c), c, app.Entry, rps*float64(entry.RespBytes))
	}
	for _, s := range app.Services {
		for _, call := range s.Calls {
			callee, _ := app.Service(call.To)
			add(s.Name, where[s.Name], call.To, rps*float64(call.Count)*float64(call.ReqBytes+callee.RespBytes))
		}
	}
	return snap
}

func TestRebalance(t *testing.T) {
	app := demo.Shop()
	clusters := []string{"us-east-1", "us-west-2", "eu-west-1"}
	capacity := Capacity{"us-east-1": 4, "us-west-2": 4, "eu-west-1": 4}
	before, err := KarmadaDefault(app, clusters, capacity)
	if err != nil {
		t.Fatal(err)
	}
	snap := measuredShop(app, before, 5)
	kept := maps.Clone(before)
	rb, err := Rebalance(app, snap, clusters, capacity, before, ClusterOfUID)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(before, kept) {
		t.Errorf("Rebalance changed its input placement: %v -> %v", kept, before)
	}
	if g := rb.Gap(); g < 1-1e-9 || g > 1.10 {
		t.Errorf("gap %v: plan %v (%.4g) vs optimum %v (%.4g)", g, rb.Placement, rb.CostPlanned, rb.Optimal, rb.CostOptimal)
	}
	if !(rb.CostPlanned < rb.CostBefore) {
		t.Errorf("plan cost %.4g, running placement %.4g: want a saving", rb.CostPlanned, rb.CostBefore)
	}
	// The heaviest edges (frontend -> catalog, recommend -> catalog) stay
	// inside one cluster, and that cluster is us-east-1: the one nearest
	// to the clients of all three regions.
	for _, s := range []string{"frontend", "catalog", "recommend"} {
		if rb.Placement[s] != "us-east-1" {
			t.Errorf("%s in %s, want us-east-1 with frontend and catalog: %v", s, rb.Placement[s], rb.Placement)
		}
	}
	used := map[string]int{}
	for _, c := range rb.Placement {
		used[c]++
	}
	for c, n := range used {
		if n > capacity[c] {
			t.Errorf("%s holds %d services, capacity %d", c, n, capacity[c])
		}
	}
	again, _ := Rebalance(app, snap, clusters, capacity, before, ClusterOfUID)
	if !maps.Equal(again.Placement, rb.Placement) {
		t.Errorf("not deterministic: %v then %v", rb.Placement, again.Placement)
	}
}

func TestRebalanceBadInput(t *testing.T) {
	app := demo.Shop()
	clusters := []string{"us-east-1", "us-west-2"}
	before := map[string]string{}
	for _, s := range app.Services {
		before[s.Name] = "us-east-1"
	}
	snap := measuredShop(app, before, 5)
	before["cart"] = "mars-1"
	if _, err := Rebalance(app, snap, clusters, Capacity{"us-east-1": 8, "us-west-2": 8}, before, ClusterOfUID); err == nil || !strings.Contains(err.Error(), "cart runs in no cluster") {
		t.Errorf("a service in an unknown cluster: err %v", err)
	}
	before["cart"] = "us-east-1"
	if _, err := Rebalance(app, snap, clusters, Capacity{"us-east-1": 3, "us-west-2": 3}, before, ClusterOfUID); err == nil || !strings.Contains(err.Error(), "capacity") {
		t.Errorf("7 services in room for 6: err %v", err)
	}
}
