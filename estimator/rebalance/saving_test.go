package rebalance

import (
	"fmt"
	"math"
	"testing"

	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

func nan() float64 { return math.NaN() }

// problemOf makes the advisor's view of a plan problem whose planned nodes
// run at current (actual free capacity: p.Free).
func problemOf(p plan.Problem, current []int) *built {
	n := p.Clusters
	if p.Free == nil {
		for range n {
			p.Free = append(p.Free, plan.UnconstrainedResources)
		}
	}
	b := &built{p: p, current: current, actual: p.Free, linkMs: make([]float64, n*n), member: make([]bool, n)}
	for c := range n {
		b.names = append(b.names, fmt.Sprintf("c%d", c))
		b.member[c] = true
		for d := range n {
			b.linkMs[c*n+d] = (p.RTTMs[c*n+d] + p.RTTMs[d*n+c]) / 2
		}
	}
	for u, c := range current {
		b.nodes = append(b.nodes, &workload{key: fmt.Sprintf("ns/w%d", u), current: c, movable: c >= 0})
		if c >= 0 {
			b.movables = append(b.movables, u)
		}
	}
	return b
}

// Two regions 10 ms apart, 1 ms inside each.
var rtt2 = []float64{1, 10, 10, 1}

func TestSavingAttribution(t *testing.T) {
	clients := func(c int, bps float64) []plan.Load { return []plan.Load{{Cluster: c, BytesPerSecond: bps}} }
	for _, tc := range []struct {
		name    string
		p       plan.Problem
		current []int
		planned []int
		// groups of node indexes with their shares and group saving
		groups [][]int
		shares map[int]float64
		saving []float64
		fits   []bool
	}{
		{
			name: "independent moves are priced alone",
			p: plan.Problem{Clusters: 2, RTTMs: rtt2, Nodes: []plan.Node{
				{External: clients(1, 1000)}, {External: clients(1, 500)},
			}},
			current: []int{0, 0}, planned: []int{1, 1},
			groups: [][]int{{0}, {1}}, shares: map[int]float64{0: 9000, 1: 4500}, saving: []float64{9000, 4500}, fits: []bool{true, true},
		},
		{
			// Alone each move loses 8100 (the pair's edge crosses regions);
			// together they save 1800, shared equally by symmetry.
			name: "a pair that must move together shares its joint saving",
			p: plan.Problem{Clusters: 2, RTTMs: rtt2, Nodes: []plan.Node{
				{External: clients(1, 100)}, {External: clients(1, 100)},
			}, Edges: []plan.Edge{{A: 0, B: 1, BytesPerSecond: 1000}}},
			current: []int{0, 0}, planned: []int{1, 1},
			groups: [][]int{{0, 1}}, shares: map[int]float64{0: 900, 1: 900}, saving: []float64{1800}, fits: []bool{true},
		},
		{
			// The heavy caller gains more from the joint move: it has more
			// clients there. Shares still add up to the group's saving.
			name: "unequal partners: Shapley shares add up",
			p: plan.Problem{Clusters: 2, RTTMs: rtt2, Nodes: []plan.Node{
				{External: clients(1, 300)}, {External: clients(1, 100)}, {Fixed: []plan.Share{{Cluster: 0, Fraction: 1}}},
			}, Edges: []plan.Edge{{A: 0, B: 1, BytesPerSecond: 1000}, {A: 1, B: 2, BytesPerSecond: 10}}},
			current: []int{0, 0, -1}, planned: []int{1, 1, -1},
			// solo0 = 2700-9000 = -6300; solo1 = 900-9000-90 = -8190;
			// joint = 2700+900-90 = 3510; I = 3510+6300+8190 = 18000.
			groups: [][]int{{0, 1}}, shares: map[int]float64{0: -6300 + 9000, 1: -8190 + 9000}, saving: []float64{3510}, fits: []bool{true},
		},
		{
			// Both clusters are full: each move fits only because the other
			// leaves. They do not talk, yet they are one group.
			name: "a capacity swap is one group",
			p: plan.Problem{Clusters: 2, RTTMs: rtt2, Free: []plan.Resources{{0, 0}, {0, 0}}, Nodes: []plan.Node{
				{Demand: plan.Resources{1000, 0}, External: clients(1, 1000)},
				{Demand: plan.Resources{1000, 0}, External: clients(0, 200)},
			}},
			current: []int{0, 1}, planned: []int{1, 0},
			groups: [][]int{{0, 1}}, shares: map[int]float64{0: 9000, 1: 1800}, saving: []float64{10800}, fits: []bool{true},
		},
		{
			name: "a move into a full cluster nobody leaves does not fit",
			p: plan.Problem{Clusters: 2, RTTMs: rtt2, Free: []plan.Resources{{5000, 0}, {0, 0}}, Nodes: []plan.Node{
				{Demand: plan.Resources{1000, 0}, External: clients(1, 1000)},
			}},
			current: []int{0}, planned: []int{1},
			groups: [][]int{{0}}, shares: map[int]float64{0: 9000}, saving: []float64{9000}, fits: []bool{false},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := problemOf(tc.p, tc.current)
			ms := b.moves(tc.planned, 0.1, 0)
			if len(ms) != len(tc.groups) {
				t.Fatalf("%d groups, want %d", len(ms), len(tc.groups))
			}
			for i, m := range ms {
				if fmt.Sprint(m.members) != fmt.Sprint(tc.groups[i]) {
					t.Errorf("group %d = %v, want %v", i, m.members, tc.groups[i])
				}
				if math.Abs(m.saving-tc.saving[i]) > 1e-6 {
					t.Errorf("group %d saving = %g, want %g", i, m.saving, tc.saving[i])
				}
				if math.Abs(sum(m.share)-m.saving) > 1e-6 {
					t.Errorf("group %d shares %v add up to %g, not the group's %g", i, m.share, sum(m.share), m.saving)
				}
				for j, u := range m.members {
					if math.Abs(m.share[j]-tc.shares[u]) > 1e-6 {
						t.Errorf("node %d share = %g, want %g", u, m.share[j], tc.shares[u])
					}
				}
				if m.fits != tc.fits[i] {
					t.Errorf("group %d fits = %v, want %v", i, m.fits, tc.fits[i])
				}
			}
		})
	}
}

// The band of one client term, by hand: 1 MB/s from c1, 10 ms to c0 where
// the workload runs, 1 ms inside c1. Rates: ±10%; RTTs: ±max(10%, one
// histogram bucket, 50 µs): ±1 ms at 10 ms, ±0.1 ms at 1 ms.
func TestNoiseBand(t *testing.T) {
	p := plan.Problem{Clusters: 2, RTTMs: rtt2, Nodes: []plan.Node{{External: []plan.Load{{Cluster: 1, BytesPerSecond: 1e6}}}}}
	b := problemOf(p, []int{0})
	own, band := b.ownAndBand(0, map[int]int{0: 1}, 0.1)
	if own != 1e7 {
		t.Errorf("own cost = %g, want 1e7", own)
	}
	if want := 1e5*9 + 1e6*(1+0.1); math.Abs(band-want) > 1e-6 {
		t.Errorf("band = %g, want %g", band, want)
	}
	// A small flow is within the publisher's 1 KiB/s floor.
	p.Nodes[0].External[0].BytesPerSecond = 1000
	b = problemOf(p, []int{0})
	if _, band := b.ownAndBand(0, map[int]int{0: 1}, 0.1); band <= 9000 {
		t.Errorf("band of a 1000 B/s flow = %g: want above its whole saving (9000)", band)
	}
}
