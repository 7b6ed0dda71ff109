package plan

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randomProblem is a dense problem with asymmetric RTT, egress, a non-zero
// diagonal and some fixed nodes.
func randomProblem(rng *rand.Rand, nodes, clusters int) Problem {
	p := Problem{Clusters: clusters, RTTMs: make([]float64, clusters*clusters), EgressMs: make([]float64, clusters*clusters), Free: make([]Resources, clusters)}
	for i := range p.RTTMs {
		p.RTTMs[i] = 1 + 100*rng.Float64()
		p.EgressMs[i] = 10 * rng.Float64()
	}
	for c := range p.Free {
		p.Free[c] = Resources{float64(nodes) * 2 / float64(clusters) * 1.3, Unconstrained}
	}
	for u := range nodes {
		nd := Node{Demand: Resources{1 + float64(rng.IntN(3)), 0}, External: []Load{{rng.IntN(clusters), 100 * rng.Float64()}}}
		if u%7 == 3 {
			nd.Fixed = []Share{{rng.IntN(clusters), 1}}
		}
		p.Nodes = append(p.Nodes, nd)
	}
	for range nodes * 2 {
		p.Edges = append(p.Edges, Edge{rng.IntN(nodes), rng.IntN(nodes), 1000 * rng.Float64()})
	}
	return p
}

// TestCostTable checks the incremental cost table and the move gains
// against costs recomputed from scratch, after many moves and swaps.
func TestCostTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	p := randomProblem(rng, 40, 6)
	s := newSolver(p)
	s.initial()
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-6*(1+math.Abs(a)+math.Abs(b)) }
	exchanges := 0
	for step := range 500 {
		u := s.planned_[rng.IntN(len(s.planned_))]
		v := s.planned_[rng.IntN(len(s.planned_))]
		before := s.totalCost()
		switch step % 4 {
		case 0:
			c := rng.IntN(s.n)
			want := s.d[u][s.where[u]] - s.d[u][c]
			s.move(u, c)
			if got := before - s.totalCost(); !near(got, want) {
				t.Fatalf("step %d: move gain %v, table says %v", step, got, want)
			}
		case 1:
			if u == v || s.where[u] == s.where[v] {
				continue
			}
			want := s.swapGain(u, v)
			a, b := s.where[u], s.where[v]
			s.move(u, b)
			s.move(v, a)
			if got := before - s.totalCost(); !near(got, want) {
				t.Fatalf("step %d: swap gain %v, table says %v", step, got, want)
			}
		case 2:
			w := s.weightBetween(u, v)
			if u == v || w == 0 || s.where[u] != s.where[v] {
				continue
			}
			c := (s.where[u] + 1) % s.n
			want := s.pairGain(u, v, s.where[u], c, w)
			s.move(u, c)
			s.move(v, c)
			if got := before - s.totalCost(); !near(got, want) {
				t.Fatalf("step %d: pair gain %v, table says %v", step, got, want)
			}
		case 3:
			a, b := s.where[u], s.where[v]
			want, ok := s.exchangeGain(a, b)
			if a == b || !ok {
				continue
			}
			A, B := slices.Clone(s.members[a]), slices.Clone(s.members[b])
			for _, x := range A {
				s.move(x, b)
			}
			for _, x := range B {
				s.move(x, a)
			}
			if got := before - s.totalCost(); !near(got, want) {
				t.Fatalf("step %d: exchange gain %v, computed %v", step, got, want)
			}
			exchanges++
		}
		for _, x := range s.planned_ {
			for c := range s.n {
				if !near(s.d[x][c], s.rawCost(x, c)) {
					t.Fatalf("step %d: table[%d][%d] = %v, recomputed %v", step, x, c, s.d[x][c], s.rawCost(x, c))
				}
			}
		}
	}
	if exchanges == 0 {
		t.Fatal("no exchange fitted: the exchange gain was never checked")
	}
}
