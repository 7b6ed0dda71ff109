package plan

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// Three clusters: a and b 10 ms apart, c 100 ms from both.
var rtt3 = []float64{
	0, 10, 100,
	10, 0, 100,
	100, 100, 0,
}

// cpu is a demand or capacity of CPU only (memory unconstrained).
func cpu(v float64) Resources { return Resources{v, 0} }

// cpus is free CPU per cluster, memory unconstrained.
func cpus(v ...float64) []Resources {
	out := make([]Resources, len(v))
	for i, x := range v {
		out[i] = Resources{x, Unconstrained}
	}
	return out
}

func TestSolve(t *testing.T) {
	inf := Unconstrained
	for _, tc := range []struct {
		name  string
		p     Problem
		want  []int       // planned cluster per node (-1: fixed)
		slack []Resources // nil: not checked
		// priced: clusters whose price must be > 0; others must be 0.
		priced []int
	}{
		{
			name: "empty problem",
			p:    Problem{Clusters: 3, RTTMs: rtt3},
			want: []int{},
		},
		{
			name: "unplaced peer joins its fixed caller",
			p: Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(inf, inf, inf),
				Nodes: []Node{{Fixed: []Share{{2, 1}}}, {Demand: cpu(1)}},
				Edges: []Edge{{0, 1, 1000}}},
			want: []int{-1, 2},
		},
		{
			name: "external clients pull a lone workload",
			p: Problem{Clusters: 3, RTTMs: rtt3,
				Nodes: []Node{{Demand: cpu(1), External: []Load{{1, 100}, {2, 10}}}}},
			want: []int{1},
		},
		{
			name: "heavy pair stays together where it fits, light one is pushed out",
			// a holds 6: the pair (4+2) takes it; the light workload (2),
			// whose clients are in a, goes to b, 10 ms away.
			p: Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(6, 10, 10),
				Nodes: []Node{
					{Demand: cpu(4), External: []Load{{0, 1000}}},
					{Demand: cpu(2)},
					{Demand: cpu(2), External: []Load{{0, 10}}},
				},
				Edges: []Edge{{0, 1, 5000}, {0, 2, 10}}},
			want:   []int{0, 0, 1},
			slack:  cpus(0, 8, 10),
			priced: []int{0, 1},
		},
		{
			name: "nothing fits: the roomiest cluster is overcommitted",
			p: Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(1, 3, 2),
				Nodes: []Node{{Demand: cpu(5), External: []Load{{0, 10}}}}},
			want:   []int{1},
			slack:  cpus(1, -2, 2),
			priced: []int{1},
		},
		{
			name: "unknown RTT costs the worst known one",
			// b -> c unknown both ways: the clients in c are better served
			// from a (100 ms) than from b (assumed 100 ms, tie broken by
			// index).
			p: Problem{Clusters: 3, RTTMs: []float64{0, 10, 100, 10, 0, -1, 100, -1, 0},
				Nodes: []Node{{Demand: cpu(1), External: []Load{{2, 10}, {0, 1}}}}},
			want: []int{2},
		},
		{
			name: "zero demand never blocks",
			p: Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(0, 0, 0),
				Nodes: []Node{{External: []Load{{1, 10}}}}},
			want:  []int{1},
			slack: cpus(0, 0, 0),
		},
		{
			name: "no clusters: nothing planned",
			p:    Problem{Nodes: []Node{{Demand: cpu(1)}, {Demand: cpu(2)}}, Edges: []Edge{{0, 1, 10}}},
			want: []int{-1, -1},
		},
		{
			name: "bad edges are ignored",
			p: Problem{Clusters: 3, RTTMs: rtt3,
				Nodes: []Node{{Demand: cpu(1), External: []Load{{1, 10}}}},
				Edges: []Edge{{0, 0, 1e9}, {0, 7, 1e9}, {-1, 0, 1e9}, {0, 0, math.NaN()}}},
			want: []int{1},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Solve(tc.p)
			if !slices.Equal(r.Cluster, tc.want) {
				t.Fatalf("plan %v, want %v", r.Cluster, tc.want)
			}
			if tc.slack != nil && !slices.Equal(r.Slack, tc.slack) {
				t.Errorf("slack %v, want %v", r.Slack, tc.slack)
			}
			for c, price := range r.Price {
				if slices.Contains(tc.priced, c) != (price[CPU] > 0) {
					t.Errorf("price of cluster %d = %v (priced clusters: %v)", c, price, tc.priced)
				}
			}
		})
	}
}

// TestImprovePairMove starts a pair in the wrong cluster: moving either
// alone splits the 1 MB/s edge between them, so only a pair move helps.
func TestImprovePairMove(t *testing.T) {
	s := newSolver(Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(4, 4, 4),
		Nodes: []Node{
			{Demand: cpu(2), External: []Load{{2, 500}}},
			{Demand: cpu(2), External: []Load{{2, 500}}},
		},
		Edges: []Edge{{0, 1, 1e6}}})
	s.setAll([]int{0, 0})
	s.localSearch()
	if got := s.where; !slices.Equal(got, []int{2, 2}) {
		t.Fatalf("after improve: %v, want both in c", got)
	}
	if r := s.result(); r.Cost != 0 || r.Price[2][CPU] <= 0 || r.Slack[2][CPU] != 0 {
		t.Errorf("result %+v", r)
	}
}

// TestImproveExchange lays out two tight groups on each other's clusters:
// every cluster is full, so no single move, pair move or swap of two
// workloads helps; exchanging the clusters' contents does.
func TestImproveExchange(t *testing.T) {
	p := Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(3, 3, 0),
		Nodes: []Node{
			{Demand: cpu(1), External: []Load{{0, 1000}}}, {Demand: cpu(1)}, {Demand: cpu(1)},
			{Demand: cpu(1), External: []Load{{1, 1000}}}, {Demand: cpu(1)}, {Demand: cpu(1)},
		},
		Edges: []Edge{{0, 1, 1e6}, {1, 2, 1e6}, {0, 2, 1e6}, {3, 4, 1e6}, {4, 5, 1e6}, {3, 5, 1e6}}}
	s := newSolver(p)
	s.setAll([]int{1, 1, 1, 0, 0, 0})
	before := s.totalCost()
	s.localSearch()
	if got := s.where; !slices.Equal(got, []int{0, 0, 0, 1, 1, 1}) {
		t.Fatalf("after local search: %v, want the groups exchanged", got)
	}
	if s.totalCost() != 0 || before != 2*1000*10 {
		t.Errorf("cost %v -> %v, want 20000 -> 0", before, s.totalCost())
	}
}

// TestDeterministic: the same problem gives the same plan, restarts and
// all (the scheduler and the advisor must agree run after run).
func TestDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	p := randomProblem(rng, 60, 8)
	first := Solve(p)
	for range 3 {
		if again := Solve(p); !slices.Equal(again.Cluster, first.Cluster) || again.Cost != first.Cost {
			t.Fatalf("plan changed between solves: %v (%v) then %v (%v)", first.Cluster, first.Cost, again.Cluster, again.Cost)
		}
	}
}

// TestPrice checks the price's value: the cheapest planned workload's cost
// per unit of capacity of moving to its next best cluster.
func TestPrice(t *testing.T) {
	// Cluster a (free 4) gets both workloads; each would cost more in b:
	// x: 100 B/s of clients in a, 10 ms away -> 1000 for 2 units = 500/unit.
	// y: 1000 B/s of clients in a -> 10000 for 2 units = 5000/unit.
	r := Solve(Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(4, 10, 10),
		Nodes: []Node{{Demand: cpu(2), External: []Load{{0, 100}}}, {Demand: cpu(2), External: []Load{{0, 1000}}}}})
	if !slices.Equal(r.Cluster, []int{0, 0}) {
		t.Fatalf("plan %v", r.Cluster)
	}
	if r.Price[0][CPU] != 500 {
		t.Errorf("price of a = %v, want 500", r.Price[0])
	}
	if r.Cost != 0 {
		t.Errorf("cost %v, want 0", r.Cost)
	}
}

// TestCostCountsEdgesOnce checks Result.Cost on a split pair.
func TestCostCountsEdgesOnce(t *testing.T) {
	r := Solve(Problem{Clusters: 3, RTTMs: rtt3, Free: cpus(1, 1, 0),
		Nodes: []Node{{Demand: cpu(1), External: []Load{{0, 1}}}, {Demand: cpu(1), External: []Load{{1, 1}}}},
		Edges: []Edge{{0, 1, 7}}})
	if !slices.Equal(r.Cluster, []int{0, 1}) {
		t.Fatalf("plan %v", r.Cluster)
	}
	if r.Cost != 70 {
		t.Errorf("cost %v, want 70 (7 B/s x 10 ms, once)", r.Cost)
	}
}

// BenchmarkSolve is a fleet-sized problem: 2000 workloads, each calling 5
// others, on 100 clusters (the model rebuild pays this at most once per
// rebuild interval, never a Score call).
func BenchmarkSolve(b *testing.B) {
	const clusters, nodes = 100, 2000
	p := Problem{Clusters: clusters, RTTMs: make([]float64, clusters*clusters), Free: make([]Resources, clusters)}
	for a := 0; a < clusters; a++ {
		p.Free[a] = cpu(50)
		for c := 0; c < clusters; c++ {
			p.RTTMs[a*clusters+c] = math.Abs(float64(a-c)) * 2
		}
	}
	for u := 0; u < nodes; u++ {
		nd := Node{Demand: cpu(float64(1 + u%4)), External: []Load{{u % clusters, float64(100 + u%7)}}}
		if u%3 == 0 {
			nd.Fixed = []Share{{u % clusters, 1}}
		}
		p.Nodes = append(p.Nodes, nd)
		for k := 1; k <= 5; k++ {
			p.Edges = append(p.Edges, Edge{u, (u*7 + k*13) % nodes, float64(1000 * k)})
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		Solve(p)
	}
}

// FuzzSolve: any problem, however malformed, gives a result of the right
// shape without panicking (the plan runs inside the scheduler process).
func FuzzSolve(f *testing.F) {
	f.Add([]byte{3, 2, 0, 1, 5, 9, 1, 0, 200, 7})
	f.Add([]byte{0, 4, 1, 1, 1})
	f.Add([]byte{5, 9, 255, 0, 3, 3, 3, 128, 64, 32, 16, 8, 4, 2, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		next := func() int {
			if len(data) == 0 {
				return 0
			}
			v := int(data[0])
			data = data[1:]
			return v
		}
		val := func() float64 {
			switch v := next(); v {
			case 255:
				return math.Inf(1)
			case 254:
				return math.NaN()
			case 253:
				return -1
			default:
				return float64(v)
			}
		}
		p := Problem{Clusters: next() % 6}
		for range p.Clusters * p.Clusters {
			p.RTTMs = append(p.RTTMs, val())
		}
		for range p.Clusters {
			p.Free = append(p.Free, Resources{val(), val()})
		}
		nodes := next() % 8
		for range nodes {
			nd := Node{Demand: Resources{val(), val()}}
			if next()%3 == 0 {
				nd.Fixed = []Share{{next() % 7, val()}}
			}
			nd.External = []Load{{next() % 7, val()}}
			p.Nodes = append(p.Nodes, nd)
		}
		for range next() % 10 {
			p.Edges = append(p.Edges, Edge{next() % 9, next() % 9, val()})
		}
		r := Solve(p)
		if len(r.Cluster) != len(p.Nodes) {
			t.Fatalf("%d planned for %d nodes", len(r.Cluster), len(p.Nodes))
		}
		for u, c := range r.Cluster {
			if c < -1 || c >= p.Clusters || (c >= 0) != (len(p.Nodes[u].Fixed) == 0 && p.Clusters > 0) {
				t.Fatalf("node %d (fixed %v) planned in %d of %d clusters", u, p.Nodes[u].Fixed, c, p.Clusters)
			}
		}
	})
}
