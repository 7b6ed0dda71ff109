// Package plan decides where the workloads that are not placed yet would
// best run, from the traffic graph, the RTT matrix and each cluster's free
// capacity, and prices each cluster's remaining capacity.
//
// Karmada schedules one binding at a time. A score that sees only the
// binding at hand fills the cluster its callers run in with whatever comes
// first, and the heavy pair that comes later is split (measured on
// DeathStarBench's social network: 0.69 of the default's cross-cluster
// bytes instead of about 0.4). The plan gives TrafficLocality the two
// things a single binding cannot see:
//   - where each not-yet-placed peer is expected to run, so traffic to it
//     counts instead of being ignored;
//   - what a core of a cluster is worth to the workloads planned there (the
//     network cost of pushing one of them elsewhere), so a light workload
//     does not take the room a heavy one needs.
//
// Solve is deterministic, never fails, and bounds its work (see MaxPasses);
// it runs when the model is rebuilt, never on the Score path.
package plan

import (
	"math"
	"slices"
	"sort"
)

// MaxPasses bounds the improvement passes of Solve. Each pass is
// O(edges x clusters); the plan converges in a handful on real call graphs.
const MaxPasses = 8

// Unconstrained is the free capacity of a cluster whose capacity is unknown.
var Unconstrained = math.Inf(1)

// Problem is one planning problem. Cost is bytes/s x ms: the traffic of an
// edge times the RTT between the clusters of its ends.
type Problem struct {
	// Clusters is the number of clusters (indexes 0..Clusters-1).
	Clusters int
	// RTTMs is the Clusters x Clusters RTT matrix in milliseconds; negative
	// entries are unknown and cost as much as the largest known RTT (an
	// unmeasured pair must not look free).
	RTTMs []float64
	// Free is each cluster's free capacity, in the unit of Node.Demand;
	// Unconstrained (+Inf) when unknown.
	Free []float64
	// Nodes are the workloads.
	Nodes []Node
	// Edges are the traffic between workloads, undirected; repeated pairs
	// add up.
	Edges []Edge
}

// Node is one workload.
type Node struct {
	// Demand is the capacity the workload needs (0: unknown, it is planned
	// but never blocks another).
	Demand float64
	// Fixed is where a placed workload's replicas run (fractions summing
	// to 1); the plan does not move it. Empty: the workload is planned.
	Fixed []Share
	// External is traffic from clients that are not workloads of the
	// problem, by client cluster.
	External []Load
}

// Share is a fraction of a workload in one cluster.
type Share struct {
	Cluster  int
	Fraction float64
}

// Load is traffic from one cluster.
type Load struct {
	Cluster        int
	BytesPerSecond float64
}

// Edge is traffic between two workloads.
type Edge struct {
	A, B           int
	BytesPerSecond float64
}

// Result is the plan.
type Result struct {
	// Cluster is the planned cluster of each node; -1 for fixed nodes.
	Cluster []int
	// Slack is each cluster's free capacity left by the plan (negative when
	// the planned workloads do not fit anywhere); +Inf when unconstrained.
	Slack []float64
	// Price is, for each cluster, the least network cost per unit of
	// capacity of moving one of its planned workloads to its next best
	// cluster with room: what taking capacity the plan gave away costs.
	// 0 when no workload is planned there or the cluster is unconstrained.
	Price []float64
	// Cost is the plan's network cost over edges with a planned end and
	// external traffic of planned nodes.
	Cost float64
}

type adj struct {
	to    int
	bytes float64
}

type solver struct {
	n      int
	rtt    []float64
	free   []float64 // remaining free capacity under the current plan
	nodes  []Node
	adj    [][]adj // only edges with at least one planned end
	base   [][]float64
	where  []int
	weight []float64
}

// Solve computes the plan.
func Solve(p Problem) Result {
	if p.Clusters <= 0 {
		// Nowhere to plan anything.
		r := Result{Cluster: make([]int, len(p.Nodes))}
		for i := range r.Cluster {
			r.Cluster[i] = -1
		}
		return r
	}
	s := newSolver(p)
	s.initial(p.Edges)
	s.improve()
	return s.result()
}

func newSolver(p Problem) *solver {
	n := p.Clusters
	s := &solver{n: n, nodes: p.Nodes, where: make([]int, len(p.Nodes)), weight: make([]float64, len(p.Nodes))}
	s.rtt = make([]float64, n*n)
	var worst float64
	for i := 0; i < n*n && i < len(p.RTTMs); i++ {
		worst = math.Max(worst, p.RTTMs[i])
	}
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			v := -1.0
			if i := a*n + b; i < len(p.RTTMs) {
				v = p.RTTMs[i]
			}
			if v < 0 || math.IsNaN(v) {
				// Try the reverse direction before assuming the worst.
				if j := b*n + a; j < len(p.RTTMs) && p.RTTMs[j] >= 0 {
					v = p.RTTMs[j]
				} else if a == b {
					v = 0
				} else {
					v = worst
				}
			}
			s.rtt[a*n+b] = v
		}
	}
	s.free = make([]float64, n)
	for c := range s.free {
		s.free[c] = Unconstrained
		if c < len(p.Free) && !math.IsNaN(p.Free[c]) {
			s.free[c] = p.Free[c]
		}
	}
	s.adj = make([][]adj, len(p.Nodes))
	for _, e := range p.Edges {
		if e.A == e.B || e.A < 0 || e.B < 0 || e.A >= len(p.Nodes) || e.B >= len(p.Nodes) || !(e.BytesPerSecond > 0) {
			continue
		}
		s.weight[e.A] += e.BytesPerSecond
		s.weight[e.B] += e.BytesPerSecond
		if s.planned(e.A) {
			s.adj[e.A] = append(s.adj[e.A], adj{e.B, e.BytesPerSecond})
		}
		if s.planned(e.B) {
			s.adj[e.B] = append(s.adj[e.B], adj{e.A, e.BytesPerSecond})
		}
	}
	// base[u][c]: the cost of u in c from what does not move (fixed peers
	// and external clients).
	s.base = make([][]float64, len(p.Nodes))
	for u, nd := range p.Nodes {
		s.where[u] = -1
		if !s.planned(u) {
			continue
		}
		row := make([]float64, n)
		for _, l := range nd.External {
			if l.Cluster < 0 || l.Cluster >= n || !(l.BytesPerSecond > 0) {
				continue
			}
			s.weight[u] += l.BytesPerSecond
			for c := 0; c < n; c++ {
				row[c] += l.BytesPerSecond * s.rtt[l.Cluster*n+c]
			}
		}
		kept := s.adj[u][:0]
		for _, a := range s.adj[u] {
			if s.planned(a.to) {
				kept = append(kept, a)
				continue
			}
			for _, sh := range p.Nodes[a.to].Fixed {
				if sh.Cluster < 0 || sh.Cluster >= n {
					continue
				}
				for c := 0; c < n; c++ {
					row[c] += a.bytes * sh.Fraction * s.rtt[c*n+sh.Cluster]
				}
			}
		}
		s.adj[u] = kept
		s.base[u] = row
	}
	return s
}

func (s *solver) planned(u int) bool { return len(s.nodes[u].Fixed) == 0 }

// cost of u in c given where its planned neighbours are now (unassigned
// neighbours cost nothing yet).
func (s *solver) cost(u, c int) float64 {
	v := s.base[u][c]
	for _, a := range s.adj[u] {
		if w := s.where[a.to]; w >= 0 {
			v += a.bytes * s.rtt[c*s.n+w]
		}
	}
	return v
}

func (s *solver) fits(u, c int) bool { return s.free[c] >= s.nodes[u].Demand }

func (s *solver) assign(u, c int) {
	s.where[u] = c
	s.free[c] -= s.nodes[u].Demand
}

func (s *solver) unassign(u int) {
	s.free[s.where[u]] += s.nodes[u].Demand
	s.where[u] = -1
}

// initial groups planned workloads along their heaviest edges (while a group
// still fits the largest free cluster), then places groups, heaviest first,
// in their cheapest cluster with room for the whole group.
func (s *solver) initial(edges []Edge) {
	parent := make([]int, len(s.nodes))
	demand := make([]float64, len(s.nodes))
	for u := range parent {
		parent[u] = u
		demand[u] = s.nodes[u].Demand
	}
	find := func(u int) int {
		for parent[u] != u {
			parent[u] = parent[parent[u]]
			u = parent[u]
		}
		return u
	}
	largest := 0.0
	for _, f := range s.free {
		largest = math.Max(largest, f)
	}
	inner := slices.Clone(edges)
	inner = slices.DeleteFunc(inner, func(e Edge) bool {
		return e.A == e.B || e.A < 0 || e.B < 0 || e.A >= len(s.nodes) || e.B >= len(s.nodes) ||
			!(e.BytesPerSecond > 0) || !s.planned(e.A) || !s.planned(e.B)
	})
	sort.SliceStable(inner, func(i, j int) bool { return inner[i].BytesPerSecond > inner[j].BytesPerSecond })
	for _, e := range inner {
		a, b := find(e.A), find(e.B)
		if a == b || demand[a]+demand[b] > largest {
			continue
		}
		if b < a {
			a, b = b, a
		}
		parent[b] = a
		demand[a] += demand[b]
	}
	groups := map[int][]int{}
	var roots []int
	for u := range s.nodes {
		if !s.planned(u) {
			continue
		}
		r := find(u)
		if _, ok := groups[r]; !ok {
			roots = append(roots, r)
		}
		groups[r] = append(groups[r], u)
	}
	groupWeight := func(r int) float64 {
		var w float64
		for _, u := range groups[r] {
			w += s.weight[u]
		}
		return w
	}
	sort.SliceStable(roots, func(i, j int) bool { return groupWeight(roots[i]) > groupWeight(roots[j]) })
	for _, r := range roots {
		members := groups[r]
		best, bestCost := -1, math.Inf(1)
		for c := 0; c < s.n; c++ {
			if s.free[c] < demand[r] {
				continue
			}
			var v float64
			for _, u := range members {
				v += s.cost(u, c)
			}
			if v < bestCost {
				best, bestCost = c, v
			}
		}
		if best >= 0 {
			for _, u := range members {
				s.assign(u, best)
			}
			continue
		}
		// The group fits nowhere whole: its members one by one, heaviest
		// first, each beside what is already placed.
		sort.SliceStable(members, func(i, j int) bool { return s.weight[members[i]] > s.weight[members[j]] })
		for _, u := range members {
			s.assign(u, s.cheapest(u, -1))
		}
	}
}

// cheapest is u's cheapest cluster other than except with room for it; when
// none has room, the cluster with the most free capacity (the plan then
// overcommits it, and its slack goes negative).
func (s *solver) cheapest(u, except int) int {
	best, bestCost := -1, math.Inf(1)
	roomiest := 0
	for c := 0; c < s.n; c++ {
		if s.free[c] > s.free[roomiest] {
			roomiest = c
		}
		if c == except || !s.fits(u, c) {
			continue
		}
		if v := s.cost(u, c); v < bestCost {
			best, bestCost = c, v
		}
	}
	if best < 0 {
		return roomiest
	}
	return best
}

// improve moves single workloads, and pairs joined by an edge, to cheaper
// clusters with room until nothing improves or MaxPasses is reached.
func (s *solver) improve() {
	const eps = 1e-9
	for pass := 0; pass < MaxPasses; pass++ {
		moved := false
		for u := range s.nodes {
			if !s.planned(u) {
				continue
			}
			from := s.where[u]
			cur := s.cost(u, from)
			s.unassign(u)
			best, bestCost := from, cur
			for c := 0; c < s.n; c++ {
				if c == from || !s.fits(u, c) {
					continue
				}
				if v := s.cost(u, c); v < bestCost-eps*(1+math.Abs(bestCost)) {
					best, bestCost = c, v
				}
			}
			s.assign(u, best)
			moved = moved || best != from
		}
		// A pair that talks mostly to each other cannot leave a cluster one
		// at a time: each single move splits it.
		for u := range s.nodes {
			if !s.planned(u) {
				continue
			}
			for _, a := range s.adj[u] {
				v := a.to
				if v < u || s.where[v] != s.where[u] {
					continue
				}
				from := s.where[u]
				cur := s.cost(u, from) + s.cost(v, from)
				s.unassign(u)
				s.unassign(v)
				best, bestCost := from, cur
				for c := 0; c < s.n; c++ {
					if c == from || s.free[c] < s.nodes[u].Demand+s.nodes[v].Demand {
						continue
					}
					// Each end's cost counts the edge between them at
					// where the other is now (unassigned: not at all).
					val := s.cost(u, c) + s.cost(v, c)
					if val < bestCost-eps*(1+math.Abs(bestCost)) {
						best, bestCost = c, val
					}
				}
				s.assign(u, best)
				s.assign(v, best)
				moved = moved || best != from
			}
		}
		if !moved {
			return
		}
	}
}

func (s *solver) result() Result {
	r := Result{Cluster: slices.Clone(s.where), Slack: slices.Clone(s.free), Price: make([]float64, s.n)}
	for c := range r.Price {
		r.Price[c] = math.Inf(1)
	}
	for u := range s.nodes {
		c := s.where[u]
		if c < 0 {
			continue
		}
		here := s.cost(u, c)
		r.Cost += here
		if s.nodes[u].Demand <= 0 {
			continue
		}
		s.unassign(u)
		alt := s.cheapest(u, c)
		var regret float64
		if alt != c && s.fits(u, alt) {
			regret = math.Max(0, s.cost(u, alt)-here)
		} else {
			// Nowhere else to go: as dear as the most expensive cluster.
			for k := 0; k < s.n; k++ {
				regret = math.Max(regret, s.cost(u, k)-here)
			}
		}
		s.assign(u, c)
		r.Price[c] = math.Min(r.Price[c], regret/s.nodes[u].Demand)
	}
	for c := range r.Price {
		if math.IsInf(r.Price[c], 1) || math.IsInf(s.free[c], 1) {
			// Nothing planned, or room without bound: nothing is displaced.
			r.Price[c] = 0
		}
	}
	// Edges between two planned nodes were counted from both ends.
	for u := range s.nodes {
		if s.where[u] < 0 {
			continue
		}
		for _, a := range s.adj[u] {
			if w := s.where[a.to]; w >= 0 {
				r.Cost -= a.bytes * s.rtt[s.where[u]*s.n+w] / 2
			}
		}
	}
	return r
}
