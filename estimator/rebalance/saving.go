package rebalance

import (
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

// move is one group of planned moves that depend on each other: the
// workloads are advised, and requested, together.
type move struct {
	members []int     // node indexes, ascending
	target  []int     // planned cluster per member
	share   []float64 // each member's attributed saving rate (B/s x ms)
	own     []float64 // each member's own network cost where it runs now
	band    []float64 // each member's noise band
	saving  float64   // the group's saving rate: cost now - cost with all moved
	floor   float64   // the absolute floor under the group's band
	key     string    // advice identity: members and targets
	fits    bool      // the moves together fit the clusters' actual free capacity
}

// noise is the group's band: its members' bands plus the floor.
func (m *move) noise() float64 { return sum(m.band) + m.floor }

func sum(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s
}

// moves groups the plan's moves and attributes their saving.
//
// Grouping: two moved workloads belong together when an edge joins them
// (what one saves depends on where the other goes) or when one's move only
// fits the target's capacity once the other has left it. Workloads that
// neither talk to nor make room for each other move alone.
//
// Attribution: the saving of moving a set S of the group's workloads is
// v(S) = CostOf(current) - CostOf(current with S moved). The plan's cost
// is a sum of unary terms (client traffic, edges to fixed peers) and
// pairwise terms (edges between planned workloads), so v has only pairwise
// interactions and its Shapley value has a closed form: each workload's
// solo saving v({u}) plus half the interaction I(u,w) = v({u,w}) - v({u})
// - v({w}) of every co-mover w it has an edge to. The shares add up to
// v(group) exactly, each workload is credited only with what its own move
// and its half of each joint effect bring, and every value comes from
// plan.CostOf on assignments. Costs are evaluated on the group's
// neighbourhood (the group planned, everything it touches fixed where it
// runs): terms without a group member are equal in every assignment
// compared and cancel.
func (b *built) moves(planned []int, rel, floor float64) []*move {
	movedAt := map[int]int{} // node -> planned cluster
	for _, u := range b.movables {
		if c := planned[u]; c >= 0 && c != b.current[u] {
			movedAt[u] = c
		}
	}
	if len(movedAt) == 0 {
		return nil
	}
	parent := map[int]int{}
	var find func(int) int
	find = func(u int) int {
		if parent[u] == u {
			return u
		}
		parent[u] = find(parent[u])
		return parent[u]
	}
	union := func(a, c int) {
		ra, rc := find(a), find(c)
		if ra != rc {
			parent[max(ra, rc)] = min(ra, rc)
		}
	}
	moved := make([]int, 0, len(movedAt))
	for u := range movedAt {
		parent[u] = u
		moved = append(moved, u)
	}
	sort.Ints(moved)
	adj := map[int][]int{}
	for _, e := range b.p.Edges {
		adj[e.A] = append(adj[e.A], e.B)
		adj[e.B] = append(adj[e.B], e.A)
		_, ma := movedAt[e.A]
		_, mb := movedAt[e.B]
		if ma && mb {
			union(e.A, e.B)
		}
	}
	leaving := map[int][]int{} // cluster -> movers leaving it
	for _, u := range moved {
		leaving[b.current[u]] = append(leaving[b.current[u]], u)
	}
	for _, u := range moved {
		if !fits(b.actual[movedAt[u]], b.p.Nodes[u].Demand) {
			for _, w := range leaving[movedAt[u]] {
				union(u, w)
			}
		}
	}
	groups := map[int][]int{}
	for _, u := range moved {
		groups[find(u)] = append(groups[find(u)], u)
	}
	roots := make([]int, 0, len(groups))
	for r := range groups {
		roots = append(roots, r)
	}
	sort.Ints(roots)
	out := make([]*move, 0, len(roots))
	for _, r := range roots {
		out = append(out, b.attribute(groups[r], movedAt, adj, rel, floor))
	}
	return out
}

func fits(free, demand plan.Resources) bool {
	for r := range demand {
		if demand[r] > 0 && free[r] < demand[r] {
			return false
		}
	}
	return true
}

// attribute prices one group on its neighbourhood.
func (b *built) attribute(members []int, movedAt map[int]int, adj map[int][]int, rel, floor float64) *move {
	m := &move{members: members}
	local := map[int]int{} // global node -> sub-problem node
	sub := plan.Problem{Clusters: b.p.Clusters, RTTMs: b.p.RTTMs, EgressMs: b.p.EgressMs}
	for _, u := range members {
		local[u] = len(sub.Nodes)
		sub.Nodes = append(sub.Nodes, plan.Node{Demand: b.p.Nodes[u].Demand, External: b.p.Nodes[u].External})
	}
	fixedAt := func(u int) []plan.Share {
		if b.current[u] >= 0 {
			return []plan.Share{{Cluster: b.current[u], Fraction: 1}}
		}
		return b.p.Nodes[u].Fixed
	}
	for _, e := range b.p.Edges {
		_, ia := local[e.A]
		_, ib := local[e.B]
		if !ia && !ib {
			continue
		}
		for _, u := range []int{e.A, e.B} {
			if _, ok := local[u]; !ok {
				local[u] = len(sub.Nodes)
				sub.Nodes = append(sub.Nodes, plan.Node{Fixed: fixedAt(u)})
			}
		}
		sub.Edges = append(sub.Edges, plan.Edge{A: local[e.A], B: local[e.B], BytesPerSecond: e.BytesPerSecond})
	}
	cur := make([]int, len(sub.Nodes))
	for i := range cur {
		cur[i] = -1
	}
	for _, u := range members {
		cur[local[u]] = b.current[u]
	}
	base := plan.CostOf(sub, cur)
	value := func(set ...int) float64 {
		a := slices.Clone(cur)
		for _, u := range set {
			a[local[u]] = movedAt[u]
		}
		return base - plan.CostOf(sub, a)
	}
	m.saving = value(members...)
	solo := make(map[int]float64, len(members))
	for _, u := range members {
		solo[u] = value(u)
	}
	in := make(map[int]bool, len(members))
	for _, u := range members {
		in[u] = true
	}
	var keys []string
	for _, u := range members {
		share := solo[u]
		seen := map[int]bool{}
		for _, w := range adj[u] {
			if !in[w] || w == u || seen[w] {
				continue
			}
			seen[w] = true
			share += (value(u, w) - solo[u] - solo[w]) / 2
		}
		m.target = append(m.target, movedAt[u])
		m.share = append(m.share, share)
		own, band := b.ownAndBand(u, movedAt, rel)
		m.own = append(m.own, own)
		m.band = append(m.band, band)
		keys = append(keys, b.nodes[u].key+"="+b.names[movedAt[u]])
	}
	m.floor = floor
	m.key = strings.Join(keys, ",")
	free := slices.Clone(b.actual)
	m.fits = true
	for _, u := range members {
		for r, v := range b.p.Nodes[u].Demand {
			if v > 0 {
				free[b.current[u]][r] += v
				free[movedAt[u]][r] -= v
			}
		}
	}
	for _, u := range members {
		for _, v := range free[movedAt[u]] {
			if v < -1e-6 {
				m.fits = false
			}
		}
	}
	return m
}

// ownAndBand is u's own network cost where it runs now (every term of the
// plan's cost that involves u), and the noise band of its move: how much
// the saving could be off from the resolution of what it is computed from.
//
// Each term is a rate b times a link cost L. The published rate is within
// rel x b (plus the publisher's floor of 1 KiB/s) of the measured one: the
// estimator rewrites a WorkloadTraffic only when a rate moved by more than
// --relative-change. Each RTT is a quantile of the agents' log-linear
// histogram, within one bucket width (loghist.Resolution) of the sample
// quantile, and likewise rewritten only past rel x RTT. The saving is a
// sum over u's terms of b x (L_now - L_planned), so its worst-case
// first-order error is the sum over those terms of db x |L_now - L_planned|
// + b x (dL_now + dL_planned). A saving within it is indistinguishable
// from none.
func (b *built) ownAndBand(u int, movedAt map[int]int, rel float64) (own, band float64) {
	n := b.p.Clusters
	now, to := b.current[u], movedAt[u]
	dRate := func(v float64) float64 { return math.Max(rel*v, floorBytesPerSec) }
	dLink := func(ms float64) float64 {
		return math.Max(rel*ms, math.Max(loghist.Resolution(ms*1000)/1000, floorRTTMs))
	}
	term := func(bps, lNow, lTo float64) {
		own += bps * lNow
		band += dRate(bps)*math.Abs(lNow-lTo) + bps*(dLink(lNow)+dLink(lTo))
	}
	for _, l := range b.p.Nodes[u].External {
		term(l.BytesPerSecond, b.p.RTTMs[l.Cluster*n+now], b.p.RTTMs[l.Cluster*n+to])
	}
	for _, e := range b.p.Edges {
		var w int
		switch u {
		case e.A:
			w = e.B
		case e.B:
			w = e.A
		default:
			continue
		}
		peerNow, peerTo := b.sharesNow(w), b.sharesNow(w)
		if c, ok := movedAt[w]; ok {
			peerTo = []plan.Share{{Cluster: c, Fraction: 1}}
		}
		var lNow, lTo float64
		for _, sh := range peerNow {
			lNow += sh.Fraction * b.linkMs[now*n+sh.Cluster]
		}
		for _, sh := range peerTo {
			lTo += sh.Fraction * b.linkMs[to*n+sh.Cluster]
		}
		term(e.BytesPerSecond, lNow, lTo)
	}
	return own, band
}

func (b *built) sharesNow(u int) []plan.Share {
	if b.current[u] >= 0 {
		return []plan.Share{{Cluster: b.current[u], Fraction: 1}}
	}
	return b.p.Nodes[u].Fixed
}

// The publisher's absolute floors (estimator/publish.go): below them a
// change is never written, whatever its ratio.
const (
	floorBytesPerSec = 1024
	floorRTTMs       = 0.05
)
