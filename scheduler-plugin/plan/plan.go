// Package plan decides where workloads would best run, from the traffic
// graph, the cluster-to-cluster cost of a byte (RTT, plus egress prices) and
// each cluster's free CPU and memory, and prices each cluster's remaining
// capacity.
//
// # The problem
//
// Minimising sum(bytes/s x link cost) over workload edges plus client
// traffic x link cost, with each workload whole in one cluster and every
// cluster's capacity respected, is the Generalized Quadratic Assignment
// Problem (Cordeau, Gaudioso, Laporte, Moccia, INFORMS J. Computing 18(4),
// 2006). It is NP-hard and hard to approximate in general, so the plan is a
// heuristic whose quality is measured, not assumed: `make bench-placement`
// compares it with the exhaustive optimum and with a MIP solved by CBC on
// hundreds of generated instances (test/bench/placement).
//
// # The method
//
//  1. Start: workloads are grouped along their heaviest edges while a group
//     fits the roomiest cluster, and groups go, heaviest first, to their
//     cheapest cluster with room (what a partitioner's coarsening does, on
//     the true objective). A caller-supplied start (the previous plan, or
//     where workloads run now) is improved as a second candidate; the
//     cheaper result wins, the start on ties, so plans do not flip between
//     rebuilds for nothing.
//  2. Local search to a local optimum of four neighbourhoods: move one
//     workload; move a pair joined by an edge (a pair that talks mostly to
//     each other cannot leave a cluster one at a time); swap two workloads
//     of different clusters (the only improving move when capacity is
//     tight); exchange the whole contents of two clusters (a good grouping
//     laid out on the wrong clusters: no sequence of single improving moves
//     relays it when capacity is tight). A cost table D[u][c] (the cost of
//     u in c given everyone else) is updated incrementally, O(degree x
//     clusters) per move, so the single-workload moves are priced in O(1).
//  3. Tabu search (Glover; the stage of Cordeau et al.'s memetic algorithm
//     that does the work): the best non-tabu move of the whole neighbourhood
//     is taken even when it makes things worse, a workload may not return to
//     the cluster it left for a tenure of iterations, and the best plan seen
//     is kept. It stops after a number of iterations without a new best or
//     when its work budget is spent (MaxWork), whichever comes first, so the
//     result is deterministic and the time bounded at any size.
//  4. Restarts: stages 2 and 3 again from random assignments while a work
//     budget lasts (RestartWork; a tenth of it when a previous plan is the
//     start, which already holds earlier restarts). The local optima of
//     this problem are many and deep: on bench-placement's generated
//     instances many short tabu runs reach the optimum where few long ones
//     do not (worst plan over 85 instances 1.015x the exhaustive optimum,
//     against 1.46x with four restarts of tabu runs twenty times longer).
//
// Solve never fails: malformed input (NaN, negative or out-of-range values)
// is ignored or treated as unknown, and a workload that fits nowhere goes to
// the cluster with the most room, whose slack then turns negative.
//
// Karmada schedules one binding at a time. A score that sees only the
// binding at hand fills the cluster its callers run in with whatever comes
// first, and the heavy pair that comes later is split. The plan gives
// TrafficLocality what a single binding cannot see: where each not-yet-
// placed peer is expected to run, and what a unit of each cluster's
// remaining capacity is worth to the workloads planned there (Price), so a
// light workload does not take the room a heavy one needs.
package plan

import (
	"math"
	"slices"
	"sort"
)

// Resource indexes a Resources vector.
type Resource int

const (
	// CPU in milli-cores.
	CPU Resource = iota
	// Memory in bytes.
	Memory
	// NumResources is the length of Resources.
	NumResources
)

// Resources is an amount of each resource. +Inf is unconstrained; NaN and
// negative amounts are treated as unknown (+Inf free, 0 demanded).
type Resources [NumResources]float64

// Unconstrained is the free capacity of a cluster whose capacity is unknown.
var Unconstrained = math.Inf(1)

// UnconstrainedResources has every resource unconstrained.
var UnconstrainedResources = Resources{Unconstrained, Unconstrained}

// MaxWork bounds the work of the tabu stage in units of one cost-table read
// (about a nanosecond). The local search before it is bounded by MaxPasses.
// 10,000 workloads on 100 clusters stay well under a second.
const MaxWork = 200_000_000

// MaxPasses bounds the local-search passes.
const MaxPasses = 16

// Problem is one planning problem. Cost is bytes/s x ms: the traffic of an
// edge times the link cost between the clusters of its ends.
type Problem struct {
	// Clusters is the number of clusters (indexes 0..Clusters-1).
	Clusters int
	// RTTMs is the Clusters x Clusters RTT matrix in milliseconds; negative
	// entries are unknown: the reverse direction is used if known, else the
	// largest known RTT (an unmeasured pair must not look free).
	RTTMs []float64
	// EgressMs (optional, Clusters x Clusters) adds a per-byte price of
	// sending from a to b, in milliseconds-equivalent: egress prices
	// converted as the score converts them. An edge's bytes flow both ways,
	// so an edge costs the mean of both directions; client traffic is
	// mostly responses, so it costs the serving cluster -> client direction.
	EgressMs []float64
	// Free is each cluster's free capacity; missing entries are
	// unconstrained.
	Free []Resources
	// Nodes are the workloads.
	Nodes []Node
	// Edges are the traffic between workloads, undirected; repeated pairs
	// add up.
	Edges []Edge
	// Start (optional) is a cluster per node to improve on: the previous
	// plan or the current placement; -1 or out of range: none.
	Start []int
}

// Node is one workload.
type Node struct {
	// Demand is the capacity the workload needs (0: unknown, it is planned
	// but never blocks another).
	Demand Resources
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
	Slack []Resources
	// Price is, for each cluster and resource, the least network cost per
	// unit of that resource of moving one of its planned workloads to its
	// next best cluster with room: what taking capacity the plan gave away
	// costs. 0 when nothing planned there needs the resource or the
	// cluster has it without bound.
	Price []Resources
	// Displacement is, for each cluster and resource, what freeing capacity
	// the plan gave away costs: the cheapest planned workloads per unit
	// pushed to their next best cluster first, as many as the amount
	// needs. Price is its first slope. Empty when the cluster has the
	// resource without bound.
	Displacement [][NumResources]Curve
	// Cost is the plan's network cost over edges with a planned end and
	// external traffic of planned nodes.
	Cost float64
}

// Curve is the cost of freeing an amount of one resource in a cluster by
// pushing whole planned workloads out to their next best cluster.
type Curve struct {
	// Amount and Cost are cumulative over the workloads by ascending cost
	// per unit: the greedy way to free a large amount.
	Amount, Cost []float64
	// Each is each workload's amount, ascending; EachMin[i] is the least
	// cost of pushing out one workload holding at least Each[i]: the way
	// to free an amount one workload holds.
	Each, EachMin []float64
}

// At is the cost of freeing q: the cheaper of the greedy prefix and the
// cheapest single workload holding q. Beyond what the planned workloads
// hold, the mean cost per unit continues.
func (c Curve) At(q float64) float64 {
	if q <= 0 || len(c.Amount) == 0 {
		return 0
	}
	var greedy float64
	if i := sort.SearchFloat64s(c.Amount, q); i < len(c.Amount) {
		greedy = c.Cost[i]
	} else {
		last := len(c.Amount) - 1
		greedy = c.Cost[last] * q / c.Amount[last]
	}
	if j := sort.SearchFloat64s(c.Each, q); j < len(c.Each) {
		return math.Min(greedy, c.EachMin[j])
	}
	return greedy
}

// CostOf is the network cost of assigning the planned nodes of p to
// clusters (fixed nodes' entries are ignored), counted as Result.Cost is.
func CostOf(p Problem, cluster []int) float64 {
	if p.Clusters <= 0 {
		return 0
	}
	s := newSolver(p)
	for u := range s.nodes {
		if s.planned(u) && u < len(cluster) && cluster[u] >= 0 && cluster[u] < s.n {
			s.where[u] = cluster[u]
		}
	}
	return s.totalCost()
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
	s.setUnits()
	s.initial()
	s.search()
	// Candidates compare by excess over capacity first, then by cost.
	best, bestExcess, bestCost := slices.Clone(s.where), s.totalExcess(), s.totalCost()
	better := func(orEqual bool) bool {
		e, c := s.totalExcess(), s.totalCost()
		switch {
		case e < bestExcess-1e-9:
		case e > bestExcess+1e-9:
			return false
		case improves(c, bestCost):
		case orEqual && c <= bestCost+eps*(1+math.Abs(bestCost)):
		default:
			return false
		}
		best, bestExcess, bestCost = slices.Clone(s.where), e, c
		return true
	}
	budget := int64(RestartWork)
	if len(p.Start) > 0 {
		budget /= 10
	}
	if s.loadStart(p.Start) {
		s.search()
		// The start wins ties: a plan that is as good as the new one must
		// not move workloads.
		better(true)
	}
	// Random restarts: the local optima of these neighbourhoods are deep,
	// and a fresh start is the cheapest diversification that works
	// (measured: bench-placement's plan-alone gap).
	if len(s.planned_)*s.n <= tabuMaxCells && s.n > 1 {
		rng := uint64(0x853c49e6748fea9b)
		for i := 0; i < MaxRestarts && s.work < budget; i++ {
			w := slices.Clone(best)
			for _, u := range s.planned_ {
				rng = rng*6364136223846793005 + 1442695040888963407
				w[u] = int(rng>>33) % s.n
			}
			s.setAll(w)
			s.search()
			better(false)
		}
	}
	s.setAll(best)
	return s.result()
}

// MaxRestarts bounds the random starts the search makes after the
// constructed one and the caller's.
const MaxRestarts = 4096

// RestartWork is the work (as MaxWork counts it) the random restarts may
// spend: about a tenth of a second on this problem size's small end, where
// the restarts matter, and nothing at fleet size, where one search spends
// it. A solve from a previous plan gets a tenth: that plan already holds
// the earlier solves' restarts, so the search carries forward over rebuilds.
const RestartWork = 10_000_000

const eps = 1e-9

type adj struct {
	to    int
	bytes float64
}

type solver struct {
	n     int
	link  []float64 // n*n: cost per edge byte between clusters (symmetric)
	nodes []Node
	dem   []Resources
	cap   []Resources // free capacity before any planned node
	free  []Resources // under the current assignment
	adj   [][]adj     // planned neighbours of planned nodes
	base  [][]float64 // base[u][c]: cost of u in c from fixed peers and clients
	d     [][]float64 // d[u][c]: cost of u in c given where the others are
	where []int
	// weight is each node's total traffic (heaviest first orders).
	weight []float64
	// list of planned nodes.
	planned_ []int
	// members[c] lists the planned nodes in c; pos[u] is u's index there.
	members [][]int
	pos     []int
	work    int64
	// unit is the tabu stage's unit of excess capacity per resource.
	unit Resources
}

func newSolver(p Problem) *solver {
	n := p.Clusters
	N := len(p.Nodes)
	s := &solver{n: n, nodes: p.Nodes, where: make([]int, N), weight: make([]float64, N), dem: make([]Resources, N), pos: make([]int, N)}
	rtt := make([]float64, n*n)
	var worst float64
	for i := 0; i < n*n && i < len(p.RTTMs); i++ {
		if v := p.RTTMs[i]; !math.IsInf(v, 0) {
			worst = math.Max(worst, v)
		}
	}
	at := func(m []float64, i int) float64 {
		if i < len(m) && m[i] >= 0 && !math.IsInf(m[i], 0) {
			return m[i]
		}
		return -1
	}
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			v := at(p.RTTMs, a*n+b)
			if v < 0 {
				v = at(p.RTTMs, b*n+a)
			}
			if v < 0 && a == b {
				// Unknown within a cluster: free, as the score has it.
				v = 0
			}
			if v < 0 {
				v = worst
			}
			rtt[a*n+b] = v
		}
	}
	egress := func(a, b int) float64 {
		if a == b {
			return 0
		}
		return max(at(p.EgressMs, a*n+b), 0)
	}
	s.link = make([]float64, n*n)
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			s.link[a*n+b] = (rtt[a*n+b]+rtt[b*n+a])/2 + (egress(a, b)+egress(b, a))/2
		}
	}
	s.cap = make([]Resources, n)
	for c := range s.cap {
		s.cap[c] = UnconstrainedResources
		if c < len(p.Free) {
			for r, v := range p.Free[c] {
				if !math.IsNaN(v) {
					s.cap[c][r] = max(v, 0)
				}
			}
		}
	}
	s.free = slices.Clone(s.cap)
	for u, nd := range p.Nodes {
		for r, v := range nd.Demand {
			if v > 0 && !math.IsInf(v, 0) {
				s.dem[u][r] = v
			}
		}
	}
	s.adj = make([][]adj, N)
	weights := map[[2]int]float64{}
	for _, e := range p.Edges {
		if e.A == e.B || e.A < 0 || e.B < 0 || e.A >= N || e.B >= N || !(e.BytesPerSecond > 0) || math.IsInf(e.BytesPerSecond, 0) {
			continue
		}
		s.weight[e.A] += e.BytesPerSecond
		s.weight[e.B] += e.BytesPerSecond
		a, b := min(e.A, e.B), max(e.A, e.B)
		weights[[2]int{a, b}] += e.BytesPerSecond
	}
	// Merge repeated pairs into one adjacency entry per neighbour: the
	// swap and pair moves need the single weight of a pair.
	pairs := make([][2]int, 0, len(weights))
	for k := range weights {
		pairs = append(pairs, k)
	}
	slices.SortFunc(pairs, func(x, y [2]int) int {
		if x[0] != y[0] {
			return x[0] - y[0]
		}
		return x[1] - y[1]
	})
	s.base = make([][]float64, N)
	for u := range p.Nodes {
		s.where[u] = -1
		if s.planned(u) {
			s.base[u] = make([]float64, n)
			s.planned_ = append(s.planned_, u)
		}
	}
	for _, k := range pairs {
		a, b, w := k[0], k[1], weights[k]
		switch {
		case s.planned(a) && s.planned(b):
			s.adj[a] = append(s.adj[a], adj{b, w})
			s.adj[b] = append(s.adj[b], adj{a, w})
		case s.planned(a):
			s.addFixed(a, p.Nodes[b].Fixed, w)
		case s.planned(b):
			s.addFixed(b, p.Nodes[a].Fixed, w)
		}
	}
	for _, u := range s.planned_ {
		for _, l := range p.Nodes[u].External {
			if l.Cluster < 0 || l.Cluster >= n || !(l.BytesPerSecond > 0) || math.IsInf(l.BytesPerSecond, 0) {
				continue
			}
			s.weight[u] += l.BytesPerSecond
			for c := 0; c < n; c++ {
				s.base[u][c] += l.BytesPerSecond * (rtt[l.Cluster*n+c] + egress(c, l.Cluster))
			}
		}
	}
	s.d = make([][]float64, N)
	s.members = make([][]int, n)
	return s
}

func (s *solver) addFixed(u int, fixed []Share, bytes float64) {
	for _, sh := range fixed {
		if sh.Cluster < 0 || sh.Cluster >= s.n || !(sh.Fraction > 0) || math.IsInf(sh.Fraction, 0) {
			continue
		}
		for c := 0; c < s.n; c++ {
			s.base[u][c] += bytes * sh.Fraction * s.link[c*s.n+sh.Cluster]
		}
	}
}

func (s *solver) planned(u int) bool { return len(s.nodes[u].Fixed) == 0 }

// fits reports whether u fits c under the current assignment (u not in c).
func (s *solver) fits(u, c int) bool {
	for r := range s.dem[u] {
		if s.free[c][r] < s.dem[u][r] {
			return false
		}
	}
	return true
}

// fitsAfter reports whether u fits c once out leaves c.
func (s *solver) fitsAfter(u, c, out int) bool {
	for r := range s.dem[u] {
		if s.free[c][r]+s.dem[out][r] < s.dem[u][r] {
			return false
		}
	}
	return true
}

// rawCost is u's cost in c from base and placed neighbours (no table).
func (s *solver) rawCost(u, c int) float64 {
	v := s.base[u][c]
	for _, a := range s.adj[u] {
		if w := s.where[a.to]; w >= 0 {
			v += a.bytes * s.link[c*s.n+w]
		}
	}
	return v
}

// place puts u in c without the cost table (construction).
func (s *solver) place(u, c int) {
	s.where[u] = c
	for r := range s.dem[u] {
		s.free[c][r] -= s.dem[u][r]
	}
	s.pos[u] = len(s.members[c])
	s.members[c] = append(s.members[c], u)
}

// remove takes u out of its cluster without the cost table.
func (s *solver) remove(u int) {
	c := s.where[u]
	for r := range s.dem[u] {
		s.free[c][r] += s.dem[u][r]
	}
	m := s.members[c]
	last := m[len(m)-1]
	m[s.pos[u]] = last
	s.pos[last] = s.pos[u]
	s.members[c] = m[:len(m)-1]
	s.where[u] = -1
}

// move relocates u to c and updates the cost table of its neighbours.
func (s *solver) move(u, c int) {
	from := s.where[u]
	if from == c {
		return
	}
	s.remove(u)
	s.place(u, c)
	n := s.n
	for _, a := range s.adj[u] {
		row := s.d[a.to]
		lf, lt := s.link[from*n:from*n+n], s.link[c*n:c*n+n]
		for k := range row {
			row[k] += a.bytes * (lt[k] - lf[k])
		}
	}
	s.work += int64(len(s.adj[u]) * n)
}

// setAll assigns every planned node and rebuilds the cost table.
func (s *solver) setAll(where []int) {
	for c := range s.members {
		s.members[c] = s.members[c][:0]
	}
	s.free = slices.Clone(s.cap)
	for _, u := range s.planned_ {
		s.where[u] = -1
	}
	for _, u := range s.planned_ {
		s.place(u, where[u])
	}
	s.buildTable()
}

func (s *solver) buildTable() {
	n := s.n
	for _, u := range s.planned_ {
		if s.d[u] == nil {
			s.d[u] = make([]float64, n)
		}
		row := s.d[u]
		copy(row, s.base[u])
		for _, a := range s.adj[u] {
			l := s.link[s.where[a.to]*n : s.where[a.to]*n+n]
			for k := range row {
				row[k] += a.bytes * l[k]
			}
		}
		s.work += int64((len(s.adj[u]) + 1) * n)
	}
}

// loadStart replaces the assignment by p.Start where it is valid (others
// keep the constructed cluster), repairing capacity: a node that does not
// fit its start cluster keeps its constructed one. It reports whether the
// start differed from the current assignment.
func (s *solver) loadStart(start []int) bool {
	if len(start) == 0 {
		return false
	}
	want := slices.Clone(s.where)
	s.free = slices.Clone(s.cap)
	for c := range s.members {
		s.members[c] = s.members[c][:0]
	}
	for _, u := range s.planned_ {
		s.where[u] = -1
	}
	changed := false
	// Nodes whose start is valid first, heaviest first, then the rest in
	// their constructed cluster.
	order := slices.Clone(s.planned_)
	sort.SliceStable(order, func(i, j int) bool { return s.weight[order[i]] > s.weight[order[j]] })
	var rest []int
	for _, u := range order {
		if u < len(start) && start[u] >= 0 && start[u] < s.n && s.fits(u, start[u]) {
			changed = changed || start[u] != want[u]
			s.place(u, start[u])
			continue
		}
		rest = append(rest, u)
	}
	for _, u := range rest {
		c := want[u]
		if !s.fits(u, c) {
			c = s.cheapestWithRoom(u)
		}
		changed = changed || c != want[u]
		s.place(u, c)
	}
	if !changed {
		s.setAll(want)
		return false
	}
	s.buildTable()
	return true
}

// cheapestWithRoom is u's cheapest cluster (by rawCost) with room; when
// none has room, the cluster with the most room relative to u's demand.
func (s *solver) cheapestWithRoom(u int) int {
	best, bestCost := -1, math.Inf(1)
	for c := 0; c < s.n; c++ {
		if !s.fits(u, c) {
			continue
		}
		if v := s.rawCost(u, c); v < bestCost {
			best, bestCost = c, v
		}
	}
	if best >= 0 {
		return best
	}
	return s.roomiest(u)
}

// roomiest is the cluster whose tightest resource leaves the most room for
// u (the one the plan overcommits least).
func (s *solver) roomiest(u int) int {
	best, bestRoom := 0, math.Inf(-1)
	for c := 0; c < s.n; c++ {
		room := math.Inf(1)
		for r := range s.dem[u] {
			if s.dem[u][r] > 0 {
				room = math.Min(room, (s.free[c][r]-s.dem[u][r])/s.dem[u][r])
			}
		}
		if room > bestRoom {
			best, bestRoom = c, room
		}
	}
	return best
}

// initial groups planned workloads along their heaviest edges (while a group
// still fits the roomiest cluster), then places groups, heaviest first, in
// their cheapest cluster with room for the whole group; a group that fits
// nowhere whole is placed member by member.
func (s *solver) initial() {
	N := len(s.nodes)
	parent := make([]int, N)
	demand := slices.Clone(s.dem)
	for u := range parent {
		parent[u] = u
	}
	find := func(u int) int {
		for parent[u] != u {
			parent[u] = parent[parent[u]]
			u = parent[u]
		}
		return u
	}
	var largest Resources
	for _, f := range s.cap {
		for r := range f {
			largest[r] = math.Max(largest[r], f[r])
		}
	}
	type pe struct {
		a, b  int
		bytes float64
	}
	var inner []pe
	for _, u := range s.planned_ {
		for _, a := range s.adj[u] {
			if u < a.to {
				inner = append(inner, pe{u, a.to, a.bytes})
			}
		}
	}
	sort.SliceStable(inner, func(i, j int) bool { return inner[i].bytes > inner[j].bytes })
	for _, e := range inner {
		a, b := find(e.a), find(e.b)
		if a == b {
			continue
		}
		var sum Resources
		fit := true
		for r := range sum {
			sum[r] = demand[a][r] + demand[b][r]
			fit = fit && sum[r] <= largest[r]
		}
		if !fit {
			continue
		}
		if b < a {
			a, b = b, a
		}
		parent[b] = a
		demand[a] = sum
	}
	groups := map[int][]int{}
	var roots []int
	for _, u := range s.planned_ {
		r := find(u)
		if _, ok := groups[r]; !ok {
			roots = append(roots, r)
		}
		groups[r] = append(groups[r], u)
	}
	groupWeight := map[int]float64{}
	for _, r := range roots {
		for _, u := range groups[r] {
			groupWeight[r] += s.weight[u]
		}
	}
	sort.SliceStable(roots, func(i, j int) bool { return groupWeight[roots[i]] > groupWeight[roots[j]] })
	for _, r := range roots {
		members := groups[r]
		best, bestCost := -1, math.Inf(1)
		for c := 0; c < s.n; c++ {
			fit := true
			for k := range demand[r] {
				fit = fit && s.free[c][k] >= demand[r][k]
			}
			if !fit {
				continue
			}
			var v float64
			for _, u := range members {
				v += s.rawCost(u, c)
			}
			if v < bestCost {
				best, bestCost = c, v
			}
		}
		if best >= 0 {
			for _, u := range members {
				s.place(u, best)
			}
			continue
		}
		sort.SliceStable(members, func(i, j int) bool { return s.weight[members[i]] > s.weight[members[j]] })
		for _, u := range members {
			s.place(u, s.cheapestWithRoom(u))
		}
	}
	s.buildTable()
}

// search runs the local search, then the tabu stage from its result, and
// leaves the best assignment seen.
func (s *solver) search() {
	s.localSearch()
	s.tabu()
}

func (s *solver) better(gain, scale float64) bool { return gain > eps*(1+math.Abs(scale)) }

// localSearch applies improving single moves, pair moves and swaps until
// none is left or MaxPasses is reached.
func (s *solver) localSearch() {
	for pass := 0; pass < MaxPasses && s.work < MaxWork; pass++ {
		moved := false
		for _, u := range s.planned_ {
			if s.improveOne(u) {
				moved = true
			}
		}
		for _, u := range s.planned_ {
			if s.improvePair(u) {
				moved = true
			}
		}
		for _, u := range s.planned_ {
			if s.improveSwap(u) {
				moved = true
			}
		}
		if s.improveExchange() {
			moved = true
		}
		if !moved {
			return
		}
	}
}

// improveOne moves u to its cheapest cluster with room, if cheaper.
func (s *solver) improveOne(u int) bool {
	from := s.where[u]
	row := s.d[u]
	best, bestGain := -1, 0.0
	for c := 0; c < s.n; c++ {
		if c == from || !s.fits(u, c) {
			continue
		}
		if g := row[from] - row[c]; g > bestGain && s.better(g, row[from]) {
			best, bestGain = c, g
		}
	}
	s.work += int64(s.n)
	if best < 0 {
		return false
	}
	s.move(u, best)
	return true
}

// pairGain is the gain of moving u and its neighbour v (both in from, edge
// weight w) to c.
func (s *solver) pairGain(u, v, from, c int, w float64) float64 {
	n := s.n
	return s.d[u][from] - s.d[u][c] + s.d[v][from] - s.d[v][c] + w*(2*s.link[c*n+from]-s.link[c*n+c]-s.link[from*n+from])
}

func (s *solver) pairFits(u, v, c int) bool {
	for r := range s.dem[u] {
		if s.free[c][r] < s.dem[u][r]+s.dem[v][r] {
			return false
		}
	}
	return true
}

// improvePair moves u with a neighbour in the same cluster, if cheaper.
func (s *solver) improvePair(u int) bool {
	from := s.where[u]
	for _, a := range s.adj[u] {
		v := a.to
		if v < u || s.where[v] != from {
			continue
		}
		best, bestGain := -1, 0.0
		for c := 0; c < s.n; c++ {
			if c == from || !s.pairFits(u, v, c) {
				continue
			}
			if g := s.pairGain(u, v, from, c, a.bytes); g > bestGain && s.better(g, s.d[u][from]+s.d[v][from]) {
				best, bestGain = c, g
			}
		}
		s.work += int64(s.n)
		if best >= 0 {
			s.move(u, best)
			s.move(v, best)
			return true
		}
	}
	return false
}

// weightBetween is the edge weight between u and v (0 if none).
func (s *solver) weightBetween(u, v int) float64 {
	if len(s.adj[v]) < len(s.adj[u]) {
		u, v = v, u
	}
	for _, a := range s.adj[u] {
		if a.to == v {
			return a.bytes
		}
	}
	return 0
}

// swapGain is the gain of exchanging u (in a) and v (in b).
func (s *solver) swapGain(u, v int) float64 {
	a, b := s.where[u], s.where[v]
	g := s.d[u][a] - s.d[u][b] + s.d[v][b] - s.d[v][a]
	if w := s.weightBetween(u, v); w > 0 {
		// Each end's row prices the other where it is now; after the
		// exchange they are still a link apart.
		n := s.n
		g -= w * (2*s.link[a*n+b] - s.link[a*n+a] - s.link[b*n+b])
	}
	return g
}

func (s *solver) swapFits(u, v int) bool {
	a, b := s.where[u], s.where[v]
	return s.fitsAfter(u, b, v) && s.fitsAfter(v, a, u)
}

// swapClusters bounds the full clusters improveSwap looks into per node:
// the cheapest ones for it.
const swapClusters = 3

// improveSwap exchanges u with a workload of a cluster that would be
// cheaper for u but has no room, if that is cheaper overall.
func (s *solver) improveSwap(u int) bool {
	from := s.where[u]
	row := s.d[u]
	var cands [swapClusters]int
	k := 0
	for c := 0; c < s.n; c++ {
		if c == from || row[c] >= row[from] || s.fits(u, c) {
			continue
		}
		// Keep the swapClusters cheapest, in order.
		i := min(k, swapClusters-1)
		if k == swapClusters && row[c] >= row[cands[i]] {
			continue
		}
		for ; i > 0 && row[cands[i-1]] > row[c]; i-- {
			cands[i] = cands[i-1]
		}
		cands[i] = c
		k = min(k+1, swapClusters)
	}
	s.work += int64(s.n)
	bestV, bestGain := -1, 0.0
	for _, c := range cands[:k] {
		for _, v := range s.members[c] {
			if !s.swapFits(u, v) {
				continue
			}
			if g := s.swapGain(u, v); g > bestGain && s.better(g, row[from]+s.d[v][c]) {
				bestV, bestGain = v, g
			}
		}
		s.work += int64(len(s.members[c]))
	}
	if bestV < 0 {
		return false
	}
	a, b := from, s.where[bestV]
	s.move(u, b)
	s.move(bestV, a)
	return true
}

// exchangeGain is the cost saved by exchanging the whole planned contents
// of clusters a and b, and whether the result fits.
func (s *solver) exchangeGain(a, b int) (float64, bool) {
	A, B := s.members[a], s.members[b]
	for r := range s.free[a] {
		var da, db float64
		for _, u := range A {
			da += s.dem[u][r]
		}
		for _, v := range B {
			db += s.dem[v][r]
		}
		if s.free[a][r]+da-db < 0 || s.free[b][r]+db-da < 0 {
			return 0, false
		}
	}
	n := s.n
	to := func(x int) int {
		switch s.where[x] {
		case a:
			return b
		case b:
			return a
		}
		return s.where[x]
	}
	var g float64
	for _, set := range [2][]int{A, B} {
		for _, u := range set {
			old, nu := s.where[u], to(u)
			g += s.base[u][old] - s.base[u][nu]
			for _, e := range s.adj[u] {
				w := s.where[e.to]
				if (w == a || w == b) && e.to < u {
					continue // counted from the other end
				}
				g += e.bytes * (s.link[old*n+w] - s.link[nu*n+to(e.to)])
			}
			s.work += int64(len(s.adj[u]))
		}
	}
	return g, true
}

// improveExchange exchanges the contents of the two clusters whose
// exchange saves most, if any: the move that relays out a good grouping
// over the clusters, which no sequence of single improving moves makes
// when capacity is tight.
func (s *solver) improveExchange() bool {
	ba, bb, bg := -1, -1, 0.0
	total := s.totalCost()
	for a := 0; a < s.n; a++ {
		for b := a + 1; b < s.n; b++ {
			if len(s.members[a])+len(s.members[b]) == 0 {
				continue
			}
			if g, ok := s.exchangeGain(a, b); ok && g > bg && s.better(g, total) {
				ba, bb, bg = a, b, g
			}
		}
	}
	if ba < 0 {
		return false
	}
	A, B := slices.Clone(s.members[ba]), slices.Clone(s.members[bb])
	for _, u := range A {
		s.move(u, bb)
	}
	for _, v := range B {
		s.move(v, ba)
	}
	return true
}

// totalCost is the network cost of the current assignment.
func (s *solver) totalCost() float64 {
	var v float64
	for _, u := range s.planned_ {
		c := s.where[u]
		v += s.base[u][c]
		for _, a := range s.adj[u] {
			if u < a.to {
				v += a.bytes * s.link[c*s.n+s.where[a.to]]
			}
		}
	}
	return v
}

// tabuMaxCells bounds the problems the tabu stage runs on (planned nodes x
// clusters): each of its iterations reads the whole neighbourhood.
const tabuMaxCells = 20_000

// tabuPatience is how many iterations without a new best end the tabu
// stage, per planned node (at least 10 and at most 5,000 iterations).
// Short tabu runs from many starts beat long ones from few (see the
// package doc).
const tabuPatience = 1

// excess is how far cluster c is over its capacity, in units of an
// average workload's demand of each resource.
func (s *solver) excess(c int, free Resources) float64 {
	var v float64
	for r := range free {
		if free[r] < 0 && s.unit[r] > 0 {
			v -= free[r] / s.unit[r]
		}
	}
	return v
}

// moveExcess is the change in total excess of moving u from a to c.
func (s *solver) moveExcess(u, a, c int) float64 {
	fa, fc := s.free[a], s.free[c]
	before := s.excess(a, fa) + s.excess(c, fc)
	for r := range fa {
		fa[r] += s.dem[u][r]
		fc[r] -= s.dem[u][r]
	}
	return s.excess(a, fa) + s.excess(c, fc) - before
}

// swapExcess is the change in total excess of exchanging u (in a) and v
// (in b).
func (s *solver) swapExcess(u, v int) float64 {
	a, b := s.where[u], s.where[v]
	fa, fb := s.free[a], s.free[b]
	before := s.excess(a, fa) + s.excess(b, fb)
	for r := range fa {
		d := s.dem[u][r] - s.dem[v][r]
		fa[r] += d
		fb[r] -= d
	}
	return s.excess(a, fa) + s.excess(b, fb) - before
}

func (s *solver) totalExcess() float64 {
	var v float64
	for c := range s.free {
		v += s.excess(c, s.free[c])
	}
	return v
}

// tabu runs the tabu stage (see the package doc) and leaves the best
// assignment that fits, then polishes it with the local search. Capacity
// is a penalty, not a wall (strategic oscillation): a move may overfill a
// cluster at a price per unit of excess that rises while the search stays
// infeasible and falls while it is feasible, so that the search can cross
// full clusters to reach a better packing.
func (s *solver) tabu() {
	N := len(s.planned_)
	if N < 2 || s.n < 2 || N*s.n > tabuMaxCells {
		// Nothing to exchange, or an iteration would cost more than a
		// fleet-sized local search: the local optimum stands.
		return
	}
	patience := min(max(tabuPatience*N, 10), 5000)
	// tabuUntil[u*n+c]: u may not enter c before that iteration.
	tabuUntil := make([]int, len(s.nodes)*s.n)
	cost := s.totalCost()
	exc := s.totalExcess()
	feasible := exc <= 1e-9
	best, bestCost := slices.Clone(s.where), cost
	if !feasible {
		bestCost = math.Inf(1)
	}
	// The penalty starts at the mean cost per workload per unit of
	// excess: large enough to matter, small enough to be crossed.
	lambda := max(cost/float64(N), 1)
	rng := uint64(0x9e3779b97f4a7c15)
	since := 0
	for iter := 1; since < patience && s.work < MaxWork; iter++ {
		since++
		type mv struct {
			u, v, c   int // v >= 0: swap u with v; else move u to c
			dc, de, g float64
		}
		choice := mv{u: -1, g: math.Inf(-1)}
		aspire := func(dc, de float64) bool {
			return exc+de <= 1e-9 && improves(cost-dc, bestCost)
		}
		for _, u := range s.planned_ {
			from := s.where[u]
			row := s.d[u]
			for c := 0; c < s.n; c++ {
				if c == from {
					continue
				}
				dc := row[from] - row[c]
				de := s.moveExcess(u, from, c)
				g := dc - lambda*de
				if g > choice.g && (tabuUntil[u*s.n+c] <= iter || aspire(dc, de)) {
					choice = mv{u, -1, c, dc, de, g}
				}
				if de <= 0 {
					continue
				}
				// Moving alone overfills c: the best exchange with a
				// member of c.
				for _, v := range s.members[c] {
					sc := s.swapGain(u, v)
					se := s.swapExcess(u, v)
					sg := sc - lambda*se
					if sg <= choice.g {
						continue
					}
					if (tabuUntil[u*s.n+c] > iter || tabuUntil[v*s.n+from] > iter) && !aspire(sc, se) {
						continue
					}
					choice = mv{u, v, c, sc, se, sg}
				}
				s.work += int64(len(s.members[c]))
			}
		}
		s.work += int64(N * s.n)
		if choice.u < 0 {
			break
		}
		// Tenures vary (a fixed tenure cycles); drawn from a fixed seed.
		rng = rng*6364136223846793005 + 1442695040888963407
		tenure := 5 + int(rng>>33)%max(N/3, 5)
		u, from := choice.u, s.where[choice.u]
		tabuUntil[u*s.n+from] = iter + tenure
		s.move(u, choice.c)
		if choice.v >= 0 {
			tabuUntil[choice.v*s.n+choice.c] = iter + tenure
			s.move(choice.v, from)
		}
		cost -= choice.dc
		exc += choice.de
		if exc <= 1e-9 {
			lambda = max(lambda/1.1, 1e-9)
			if improves(cost, bestCost) {
				// Recompute at each new best: the incremental totals
				// drift.
				cost, exc = s.totalCost(), s.totalExcess()
				if exc <= 1e-9 && improves(cost, bestCost) {
					best, bestCost, since = slices.Clone(s.where), cost, 0
				}
			}
		} else {
			lambda *= 1.1
		}
	}
	s.setAll(best)
	s.localSearch()
}

// improves reports whether cost is lower than best by more than rounding
// (best may be +Inf: nothing feasible seen yet).
func improves(cost, best float64) bool {
	return math.IsInf(best, 1) && !math.IsInf(cost, 1) || cost < best-eps*(1+math.Abs(best))
}

// setUnits sets the excess unit of each resource: the mean demand of the
// planned workloads that request it.
func (s *solver) setUnits() {
	for r := range s.unit {
		var sum float64
		var k int
		for _, u := range s.planned_ {
			if s.dem[u][r] > 0 {
				sum += s.dem[u][r]
				k++
			}
		}
		if k > 0 {
			s.unit[r] = sum / float64(k)
		}
	}
}

func (s *solver) result() Result {
	r := Result{Cluster: make([]int, len(s.nodes)), Slack: slices.Clone(s.free), Price: make([]Resources, s.n)}
	for u := range r.Cluster {
		r.Cluster[u] = -1
	}
	for c := range r.Price {
		for k := range r.Price[c] {
			r.Price[c][k] = math.Inf(1)
		}
	}
	type step struct{ amount, regret float64 }
	steps := make([][NumResources][]step, s.n)
	newCurve := func(st []step) Curve {
		// Cheapest per unit first: what freeing capacity costs at best.
		sort.SliceStable(st, func(i, j int) bool { return st[i].regret*st[j].amount < st[j].regret*st[i].amount })
		var cv Curve
		var a, v float64
		for _, x := range st {
			a += x.amount
			v += x.regret
			cv.Amount = append(cv.Amount, a)
			cv.Cost = append(cv.Cost, v)
		}
		sort.SliceStable(st, func(i, j int) bool { return st[i].amount < st[j].amount })
		cv.Each = make([]float64, len(st))
		cv.EachMin = make([]float64, len(st))
		least := math.Inf(1)
		for i := len(st) - 1; i >= 0; i-- {
			least = math.Min(least, st[i].regret)
			cv.Each[i], cv.EachMin[i] = st[i].amount, least
		}
		return cv
	}
	for _, u := range s.planned_ {
		c := s.where[u]
		r.Cluster[u] = c
		here := s.d[u][c]
		// The next best cluster with room, or, when none has room, the
		// dearest: going nowhere costs at least that.
		alt := math.Inf(1)
		var dearest float64
		for k := 0; k < s.n; k++ {
			if k == c {
				continue
			}
			dearest = math.Max(dearest, s.d[u][k]-here)
			if s.fits(u, k) {
				alt = math.Min(alt, s.d[u][k]-here)
			}
		}
		regret := alt
		if math.IsInf(alt, 1) {
			regret = dearest
		}
		regret = max(regret, 0)
		for k := range s.dem[u] {
			if s.dem[u][k] > 0 {
				r.Price[c][k] = math.Min(r.Price[c][k], regret/s.dem[u][k])
				steps[c][k] = append(steps[c][k], step{s.dem[u][k], regret})
			}
		}
	}
	r.Displacement = make([][NumResources]Curve, s.n)
	for c := range steps {
		for k := range steps[c] {
			if !math.IsInf(s.free[c][k], 1) {
				r.Displacement[c][k] = newCurve(steps[c][k])
			}
		}
	}
	for c := range r.Price {
		for k := range r.Price[c] {
			if math.IsInf(r.Price[c][k], 1) || math.IsInf(s.free[c][k], 1) {
				// Nothing planned needs it, or room without bound.
				r.Price[c][k] = 0
			}
		}
	}
	r.Cost = s.totalCost()
	return r
}
