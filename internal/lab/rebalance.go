package lab

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

// measuredGraph is what the estimator measured of the running shop.
type measuredGraph struct {
	// edges are bytes/s from each caller to each callee, summed over the
	// clusters they ran in. Callers include the load generators.
	edges map[[2]string]float64
	// clients are the entry's callers that are no service of the app, by
	// cluster: the load generators as their own agents saw them (pods in
	// the Kubernetes lab), else what the entry's server side saw.
	clients map[string]float64
}

func graphOf(app *demo.App, snap *aggregate.Snapshot, clusterOf func(uid string) string) measuredGraph {
	g := measuredGraph{edges: map[[2]string]float64{}}
	var fromLoad map[string]float64
	for w, stat := range snap.Traffic {
		for peer, pairs := range stat.Peers {
			// A remote endpoint's workload is unknown to the caller's
			// agent (it learns only the Service and the cluster from the
			// dispatched EndpointSlice); the demo's Services are named for
			// their Deployments.
			callee := peer.Name
			if callee == "" {
				callee = peer.ServiceName
			}
			for pair, r := range pairs {
				g.edges[[2]string{w.Name, callee}] += r.BytesPerSecond
				if callee == app.Entry && strings.HasPrefix(w.Name, loadGeneratorPrefix) {
					if fromLoad == nil {
						fromLoad = map[string]float64{}
					}
					fromLoad[clusterOf(pair.Src)] += r.BytesPerSecond
				}
			}
		}
	}
	g.clients = fromLoad
	if g.clients == nil {
		g.clients = map[string]float64{}
		if stat, ok := snap.Traffic[aggregate.WorkloadKey{Namespace: app.Namespace, Kind: "Deployment", Name: app.Entry}]; ok {
			for pair, r := range stat.Clients {
				g.clients[clusterOf(pair.Src)] += r.BytesPerSecond
			}
		}
	}
	return g
}

// Replacement is the rebalance advisor's plan for the running shop and
// the optimum of the same measured problem.
type Replacement struct {
	// Placement is where the advisor's plan puts each service.
	Placement map[string]string
	// Optimal is the exhaustive optimum of the same problem.
	Optimal map[string]string
	// Costs, bytes/s x ms of measured RTT: of the running placement, the
	// plan and the optimum.
	CostBefore, CostPlanned, CostOptimal float64

	problem  plan.Problem
	services []string
	clusters []string
}

// CostOf prices placement on the same measured problem; ok is false when
// it names a cluster outside the lab, leaves a service out or overfills a
// cluster.
func (r Replacement) CostOf(placement map[string]string) (cost float64, ok bool) {
	where := make([]int, len(r.services))
	for i, s := range r.services {
		where[i] = slices.Index(r.clusters, placement[s])
		if where[i] < 0 {
			return 0, false
		}
	}
	return plan.CostOf(r.problem, where), fitsCapacity(r.problem, where)
}

// Gap is the plan's cost over the optimum's (1 when both are free).
func (r Replacement) Gap() float64 {
	if r.CostOptimal <= 0 {
		if r.CostPlanned <= 0 {
			return 1
		}
		return math.Inf(1)
	}
	return r.CostPlanned / r.CostOptimal
}

// maxOptimalAssignments bounds the exhaustive search of the optimum: the
// lab's largest world (7 services on MaxClusters) is 280k assignments.
const maxOptimalAssignments = 1 << 22

// Rebalance plans the running shop the way the estimator's rebalance
// advisor does (estimator/rebalance): the whole measured traffic graph at
// once, every running service movable, plan.Solve started from where the
// services run (so a plan as good as the running placement keeps it), RTT
// at the advisor's default quantile (p50). It also searches the same
// problem exhaustively, so the lab can report how far the plan is from
// the optimum of what it measured.
func Rebalance(app *demo.App, snap *aggregate.Snapshot, clusters []string, capacity Capacity, before map[string]string, clusterOf func(uid string) string) (Replacement, error) {
	p, names, err := measuredProblem(app, snap, clusters, capacity, before, clusterOf)
	if err != nil {
		return Replacement{}, err
	}
	r := plan.Solve(p)
	for _, c := range r.Cluster {
		if c < 0 {
			return Replacement{}, fmt.Errorf("lab: rebalance: a service was left unplanned")
		}
	}
	if !fitsCapacity(p, r.Cluster) {
		return Replacement{}, fmt.Errorf("lab: rebalance: no placement of the shop fits the clusters' capacity")
	}
	opt, err := optimum(p)
	if err != nil {
		return Replacement{}, err
	}
	rep := Replacement{Placement: map[string]string{}, Optimal: map[string]string{},
		CostBefore: plan.CostOf(p, p.Start), CostPlanned: plan.CostOf(p, r.Cluster), CostOptimal: plan.CostOf(p, opt),
		problem: p, services: names, clusters: clusters}
	for i, s := range names {
		rep.Placement[s] = clusters[r.Cluster[i]]
		rep.Optimal[s] = clusters[opt[i]]
	}
	return rep, nil
}

// measuredProblem is the plan problem of the measured shop: a node per
// service (one replica, one unit of the lab's capacity), the measured
// edges between services, the entry's clients by cluster, and the
// measured p50 RTT; a pair never measured costs what plan.Problem makes
// of an unknown pair.
func measuredProblem(app *demo.App, snap *aggregate.Snapshot, clusters []string, capacity Capacity, before map[string]string, clusterOf func(uid string) string) (plan.Problem, []string, error) {
	n := len(clusters)
	index := map[string]int{}
	for i, c := range clusters {
		index[c] = i
	}
	p := plan.Problem{Clusters: n, RTTMs: make([]float64, n*n), Free: make([]plan.Resources, n)}
	for i := range p.RTTMs {
		p.RTTMs[i] = -1
	}
	for src, peers := range snap.Latency {
		a, ok := index[clusterOf(src)]
		if !ok {
			continue
		}
		for dst, st := range peers {
			if b, ok := index[clusterOf(dst)]; ok && st.Samples > 0 {
				p.RTTMs[a*n+b] = st.P50 * 1e3
			}
		}
	}
	for i, c := range clusters {
		p.Free[i] = plan.Resources{float64(capacity[c]), plan.Unconstrained}
	}
	names := Order(app)
	node := map[string]int{}
	p.Start = make([]int, len(names))
	for i, s := range names {
		node[s] = i
		c, ok := index[before[s]]
		if !ok {
			return plan.Problem{}, nil, fmt.Errorf("lab: rebalance: %s runs in no cluster of the lab (%q)", s, before[s])
		}
		p.Start[i] = c
		p.Nodes = append(p.Nodes, plan.Node{Demand: plan.Resources{1, 0}})
	}
	g := graphOf(app, snap, clusterOf)
	for e, b := range g.edges {
		a, okA := node[e[0]]
		c, okB := node[e[1]]
		if okA && okB {
			p.Edges = append(p.Edges, plan.Edge{A: a, B: c, BytesPerSecond: b})
		}
	}
	for _, c := range clusters {
		if b := g.clients[c]; b > 0 {
			e := &p.Nodes[node[app.Entry]]
			e.External = append(e.External, plan.Load{Cluster: index[c], BytesPerSecond: b})
		}
	}
	// Deterministic edge order: the plan is deterministic for a given
	// problem, and map order is not.
	slices.SortFunc(p.Edges, func(x, y plan.Edge) int {
		if x.A != y.A {
			return x.A - y.A
		}
		return x.B - y.B
	})
	return p, names, nil
}

func fitsCapacity(p plan.Problem, where []int) bool {
	used := make([]float64, p.Clusters)
	for u, c := range where {
		used[c] += p.Nodes[u].Demand[plan.CPU]
	}
	for c := range used {
		if used[c] > p.Free[c][plan.CPU] {
			return false
		}
	}
	return true
}

// optimum searches every assignment of the problem that fits capacity
// and returns the cheapest (plan.CostOf); the lab's problems are small
// enough (maxOptimalAssignments).
func optimum(p plan.Problem) ([]int, error) {
	N, n := len(p.Nodes), p.Clusters
	if math.Pow(float64(n), float64(N)) > maxOptimalAssignments {
		return nil, fmt.Errorf("lab: rebalance: %d services on %d clusters: too many assignments to search for the optimum", N, n)
	}
	where := make([]int, N)
	used := make([]float64, n)
	var best []int
	bestCost := math.Inf(1)
	var rec func(u int)
	rec = func(u int) {
		if u == N {
			if c := plan.CostOf(p, where); c < bestCost {
				best, bestCost = append(best[:0], where...), c
			}
			return
		}
		for c := range n {
			d := p.Nodes[u].Demand[plan.CPU]
			if used[c]+d > p.Free[c][plan.CPU] {
				continue
			}
			used[c] += d
			where[u] = c
			rec(u + 1)
			used[c] -= d
		}
	}
	rec(0)
	if best == nil {
		return nil, fmt.Errorf("lab: rebalance: no placement of the shop fits the clusters' capacity")
	}
	return best, nil
}
