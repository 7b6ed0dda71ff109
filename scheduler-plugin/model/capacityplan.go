package model

import (
	"math"

	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

// plan builds the capacity-plan problem from the snapshot's workloads with
// traffic fresh at now, solves it, and records the result: planned clusters
// for unplaced workloads (and as the Dist of peer edges to them) and each
// cluster's slack and price.
func (s *Snapshot) plan(in Inputs, opts BuildOptions, now int64) {
	n := s.n
	p := plan.Problem{Clusters: n, RTTMs: make([]float64, n*n), Free: make([]plan.Resources, n)}
	for a := int32(0); a < int32(n); a++ {
		for b := int32(0); b < int32(n); b++ {
			v := -1.0
			if us, ok := s.RTT(opts.PlanQuantile, a, b, now); ok {
				v = float64(us) / 1000
			}
			p.RTTMs[int(a)*n+int(b)] = v
		}
	}
	if opts.PlanEgressMs != nil {
		p.EgressMs = make([]float64, n*n)
		for a := range n {
			for b := range n {
				if a != b {
					p.EgressMs[a*n+b] = opts.PlanEgressMs(s.clusters[a], s.clusters[b])
				}
			}
		}
	}
	available := func(m map[string]float64, c int) float64 {
		if v, ok := m[s.clusters[c].Name]; ok && !math.IsNaN(v) {
			return max(v, 0)
		}
		return plan.Unconstrained
	}
	for c := range p.Free {
		p.Free[c][plan.CPU] = available(in.AvailableMilliCPU, c)
		p.Free[c][plan.Memory] = available(in.AvailableMemoryBytes, c)
	}

	index := map[Key]int{}
	var keys []Key
	node := func(k Key) int {
		if i, ok := index[k]; ok {
			return i
		}
		i := len(p.Nodes)
		index[k] = i
		keys = append(keys, k)
		var nd plan.Node
		if w := s.workloads[k]; w != nil {
			nd.Demand, nd.Fixed = w.demand(), fixedShares(w.Placement)
		}
		p.Nodes = append(p.Nodes, nd)
		return i
	}
	// Iterate the inputs, not the map, so the problem (and thus ties in the
	// plan) does not depend on map order.
	var fresh []Key
	seen := map[Key]bool{}
	for _, t := range in.Traffic {
		w := s.workloads[t.Workload]
		if w == nil || w.Traffic == nil || !w.Traffic.Fresh(now) || seen[t.Workload] {
			continue
		}
		seen[t.Workload] = true
		fresh = append(fresh, t.Workload)
	}
	// inbound[k][c]: bytes/s callers placed in c send to k, already counted
	// as edges, to be taken out of k's client traffic.
	inbound := map[Key]map[int32]float64{}
	for _, k := range fresh {
		from := node(k)
		w := s.workloads[k]
		for _, e := range w.Traffic.Peers {
			pk := e.Workload
			pw := s.workloads[pk]
			if pk == (Key{}) || e.Source == PlacementObserved && !(pw != nil && pw.Bound) {
				// A plain service, or a workload Karmada does not place:
				// where it was observed is where it stays.
				if len(e.Dist) > 0 {
					keys = append(keys, Key{})
					p.Nodes = append(p.Nodes, plan.Node{Fixed: fixedShares(e.Dist)})
					p.Edges = append(p.Edges, plan.Edge{A: from, B: len(p.Nodes) - 1, BytesPerSecond: e.BytesPerSecond})
				}
				continue
			}
			p.Edges = append(p.Edges, plan.Edge{A: from, B: node(pk), BytesPerSecond: e.BytesPerSecond})
			for _, sh := range w.Placement {
				if inbound[pk] == nil {
					inbound[pk] = map[int32]float64{}
				}
				inbound[pk][sh.Cluster] += e.BytesPerSecond * sh.Fraction
			}
		}
	}
	for _, k := range fresh {
		w := s.workloads[k]
		nd := &p.Nodes[index[k]]
		for _, c := range w.Traffic.Clients {
			if v := c.BytesPerSecond - inbound[k][c.Cluster]; v > 0 {
				nd.External = append(nd.External, plan.Load{Cluster: int(c.Cluster), BytesPerSecond: v})
			}
		}
	}
	if len(p.Nodes) == 0 {
		return
	}

	// The previous plan is the start, by workload (indexes change between
	// snapshots).
	if prev := opts.Previous; prev != nil && prev.workloads != nil {
		p.Start = make([]int, len(p.Nodes))
		for i, k := range keys {
			p.Start[i] = -1
			if w := prev.workloads[k]; w != nil && w.Planned >= 0 && int(w.Planned) < len(prev.clusters) {
				if c, ok := s.index[prev.clusters[w.Planned].Name]; ok {
					p.Start[i] = int(c)
				}
			}
		}
	}
	r := plan.Solve(p)
	s.slack, s.price, s.displacement, s.planCost = r.Slack, r.Price, r.Displacement, r.Cost
	dist := map[Key][]Share{}
	for i, c := range r.Cluster {
		if c < 0 || keys[i] == (Key{}) {
			continue
		}
		if w := s.workloads[keys[i]]; w != nil {
			w.Planned = int32(c)
		}
		dist[keys[i]] = []Share{{Cluster: int32(c), Fraction: 1}}
	}
	// A caller that is not placed yet is in neither the callee's peers (it
	// lists whom it calls) nor its clients (nothing was measured from where
	// it will run): without this, a callee scheduled before its callers
	// ignores them. Its traffic counts at its planned cluster.
	for _, e := range p.Edges {
		caller, callee := keys[e.A], keys[e.B]
		if caller == (Key{}) || callee == (Key{}) || r.Cluster[e.A] < 0 {
			continue
		}
		w := s.workloads[callee]
		if w == nil || w.Traffic == nil || !w.Traffic.Fresh(now) {
			continue
		}
		w.Traffic.Peers = append(w.Traffic.Peers, PeerEdge{Name: caller.String() + " (caller)", Workload: caller,
			BytesPerSecond: e.BytesPerSecond, Dist: dist[caller], Source: PlacementPlanned})
		w.Traffic.PeerBytesPerSecond += e.BytesPerSecond
	}
	// Edges to a peer with no placement, or whose binding waits to be
	// scheduled (its observed location is about to change), take the plan.
	for _, w := range s.workloads {
		if w.Traffic == nil {
			continue
		}
		for i := range w.Traffic.Peers {
			e := &w.Traffic.Peers[i]
			d := dist[e.Workload]
			if d != nil && (e.Source == PlacementUnknown || e.Source == PlacementObserved && s.waiting(e.Workload)) {
				e.Dist, e.Source = d, PlacementPlanned
			}
		}
	}
}

func fixedShares(dist []Share) []plan.Share {
	out := make([]plan.Share, 0, len(dist))
	for _, sh := range dist {
		out = append(out, plan.Share{Cluster: int(sh.Cluster), Fraction: sh.Fraction})
	}
	return out
}
