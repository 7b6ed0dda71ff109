package main

import (
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
)

// TestExhaustiveIsOptimal: the branch and bound's optimum equals the best
// of every assignment enumerated, on small random instances with tight
// CPU and memory and an asymmetric link matrix, from no upper bound and
// from a feasible one; an instance nothing fits is not solved.
func TestExhaustiveIsOptimal(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	solved, infeasible := 0, 0
	for trial := range 300 {
		o := randomObjective(rng)
		want, wantPlace := o.enumerate()
		got, cost, ok := o.exhaustive(math.Inf(1), nil)
		if wantPlace == nil {
			infeasible++
			if ok {
				t.Errorf("trial %d: nothing fits, yet solved at %v (%g)", trial, got, cost)
			}
			continue
		}
		if !ok || math.Abs(cost-want) > 1e-9*want || !o.fits(got) || math.Abs(o.cost(got)-cost) > 1e-9*want {
			t.Errorf("trial %d (%d services, %d clusters): %v at %g (ok %v), want %g (%v)", trial, len(o.cpu), o.k, got, cost, ok, want, wantPlace)
			continue
		}
		solved++
		// From a feasible start that is not optimal, or is: the same.
		if _, cost2, ok := o.exhaustive(o.cost(wantPlace)*1.5+1, nil); !ok || math.Abs(cost2-want) > 1e-9*want {
			t.Errorf("trial %d: from an upper bound %g, want %g", trial, cost2, want)
		}
		if got3, cost3, ok := o.exhaustive(want, wantPlace); !ok || cost3 != want || o.cost(got3) != want {
			t.Errorf("trial %d: started at the optimum, ended at %g", trial, cost3)
		}
	}
	t.Logf("%d instances solved, %d with no assignment that fits", solved, infeasible)
	if solved < 200 || infeasible == 0 {
		t.Errorf("%d solved and %d infeasible of 300: the draw no longer tests both", solved, infeasible)
	}
}

// TestMIPMatchesTheOptimum: CBC's answer, on the plain MIP and on the one
// with capacity products, is the enumerated optimum when CBC proves it and
// never above it when it is only a bound: a cut that removed a feasible
// assignment would show here as an optimum above the enumerated one.
func TestMIPMatchesTheOptimum(t *testing.T) {
	if _, err := exec.LookPath("cbc"); err != nil {
		if os.Getenv("FLOWPLACE_REQUIRE_CBC") == "1" {
			t.Fatalf("FLOWPLACE_REQUIRE_CBC=1 but cbc is not installed (make test-deps installs Debian's coinor-cbc): %v", err)
		}
		t.Skipf("cbc is not installed (make test-deps installs Debian's coinor-cbc): %v", err)
	}
	rng := rand.New(rand.NewPCG(13, 17))
	dir := t.TempDir()
	tested, tightened := 0, 0
	for trial := 0; tested < 40; trial++ {
		o := randomObjective(rng)
		want, wantPlace := o.enumerate()
		if wantPlace == nil {
			continue
		}
		tested++
		var bounds [2]float64
		for i, products := range []bool{false, true} {
			ref, err := o.mip(t.Context(), dir, products)
			if err != nil {
				t.Fatalf("trial %d, capacity products %v: %v", trial, products, err)
			}
			// CBC stops within ratioGap 1e-7 of its bound, in scaled units.
			switch {
			case ref.method == "cbc" && math.Abs(ref.cost-want) > 1e-6*want:
				t.Errorf("trial %d, capacity products %v: CBC's optimum %g at %v, enumerated %g at %v", trial, products, ref.cost, ref.place, want, wantPlace)
			case ref.method == "cbc-bound" && ref.cost > want*(1+1e-6):
				t.Errorf("trial %d, capacity products %v: lower bound %g above the optimum %g", trial, products, ref.cost, want)
			case !o.fits(ref.place):
				t.Errorf("trial %d, capacity products %v: CBC's placement %v is over capacity", trial, products, ref.place)
			}
			bounds[i] = ref.cost
		}
		if bounds[1] > bounds[0]*(1+1e-6) {
			tightened++
		}
	}
	t.Logf("%d instances, %d where the capacity products raised the reference", tested, tightened)
}

// randomObjective draws a small instance with tight CPU and memory, an
// asymmetric link matrix and about half of the service pairs talking.
func randomObjective(rng *rand.Rand) objective {
	n, k := 2+rng.IntN(6), 2+rng.IntN(3)
	o := objective{k: k, link: make([][]float64, k), capCPU: make([]int, k), capMem: make([]float64, k)}
	demand := 0
	for range n {
		o.cpu = append(o.cpu, 1+rng.IntN(4))
		o.mem = append(o.mem, rng.Float64()*2)
		row := make([]float64, k)
		for c := range row {
			row[c] = math.Floor(rng.ExpFloat64() * 100)
		}
		o.client = append(o.client, row)
		demand += o.cpu[len(o.cpu)-1]
	}
	for a := range k {
		o.link[a] = make([]float64, k)
		for b := range k {
			if a != b {
				o.link[a][b] = 1 + math.Floor(rng.Float64()*50)
			}
		}
		o.capCPU[a] = demand*(2+rng.IntN(3))/(2*k) + rng.IntN(3)
		o.capMem[a] = float64(n) * (0.3 + rng.Float64()) / float64(k) * 2
	}
	for a := range n {
		for b := a + 1; b < n; b++ {
			if rng.IntN(2) == 0 {
				o.edges = append(o.edges, wedge{a, b, math.Floor(rng.ExpFloat64() * 20)})
			}
		}
	}
	return o
}

// enumerate returns the cheapest of every assignment that fits (k^n <=
// 4^7 here), nil when none does.
func (o objective) enumerate() (float64, []int) {
	n := len(o.cpu)
	want, wantPlace := math.Inf(1), []int(nil)
	place := make([]int, n)
	var rec func(u int)
	rec = func(u int) {
		if u == n {
			if o.fits(place) && o.cost(place) < want {
				want, wantPlace = o.cost(place), append([]int(nil), place...)
			}
			return
		}
		for c := range o.k {
			place[u] = c
			rec(u + 1)
		}
	}
	rec(0)
	return want, wantPlace
}
