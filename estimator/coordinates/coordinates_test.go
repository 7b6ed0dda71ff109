package coordinates

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// plane is a synthetic fleet: clusters on a square plane of side 100 ms
// with heights of 0.5-3 ms, so that the true RTT is exactly the model's.
type plane struct {
	x, y, h []float64
}

func newPlane(n int, seed uint64) *plane {
	r := rand.New(rand.NewPCG(seed, uint64(n)))
	p := &plane{x: make([]float64, n), y: make([]float64, n), h: make([]float64, n)}
	for i := range n {
		p.x[i], p.y[i], p.h[i] = r.Float64()*100_000, r.Float64()*100_000, 500+r.Float64()*2500
	}
	return p
}

func (p *plane) rtt(a, b int) float64 {
	return math.Hypot(p.x[a]-p.x[b], p.y[a]-p.y[b]) + p.h[a] + p.h[b]
}

func name(i int) string { return fmt.Sprintf("c%03d", i) }

func index(t *testing.T, s string) int {
	t.Helper()
	var i int
	if _, err := fmt.Sscanf(s, "c%03d", &i); err != nil {
		t.Fatalf("name %q: %v", s, err)
	}
	return i
}

// measure drops each pair with probability drop and measures the rest with
// Gaussian relative noise, in a random direction.
func (p *plane) measure(seed uint64, drop, noise float64) []Measurement {
	r := rand.New(rand.NewPCG(seed, 7))
	var ms []Measurement
	for a := range p.x {
		for b := a + 1; b < len(p.x); b++ {
			if r.Float64() < drop {
				continue
			}
			m := Measurement{A: name(a), B: name(b), RTT: p.rtt(a, b) * (1 + noise*r.NormFloat64())}
			if r.IntN(2) == 0 {
				m.A, m.B = m.B, m.A
			}
			ms = append(ms, m)
		}
	}
	return ms
}

// coverage bounds: if the reported error is a calibrated standard
// deviation of a Gaussian error, |estimate - truth| <= error holds with
// probability 0.683 and <= 3 error with 0.9973. Over N filled pairs the
// count within is binomial; the bounds are its 1% tail (2.33 standard
// deviations), so a calibrated error fails the test once in a hundred
// seeds, and an error reported too small by a factor 1.5 (coverage 0.48)
// fails it for N >= 40. The errors here are in fact conservative for the
// truth: they include the measurement noise, which the true RTT has not.
func lowerBound(p float64, n int) float64 {
	return float64(n)*p - 2.33*math.Sqrt(float64(n)*p*(1-p))
}

// TestRecoversPlane: on synthetic fleets whose RTTs are exactly
// distance + heights, measured with noise and with pairs removed, the
// filled pairs are near the truth and within their reported error as
// often as a calibrated error would be.
func TestRecoversPlane(t *testing.T) {
	cases := []struct {
		n           int
		drop, noise float64
		// minFilled is the share of unmeasured pairs that must be filled.
		minFilled float64
	}{
		{n: 12, drop: 0.3, noise: 0.03, minFilled: 0.5},
		{n: 20, drop: 0.4, noise: 0.03, minFilled: 0.8},
		{n: 40, drop: 0.5, noise: 0.02, minFilled: 0.9},
		{n: 100, drop: 0.5, noise: 0.02, minFilled: 0.95},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("n=%d/drop=%.1f/noise=%.2f", tc.n, tc.drop, tc.noise), func(t *testing.T) {
			p := newPlane(tc.n, 1)
			ms := p.measure(2, tc.drop, tc.noise)
			start := time.Now()
			res, err := Fit(ms, Config{})
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			unmeasured := tc.n*(tc.n-1)/2 - len(ms)
			var within1, within3 int
			var se, reported float64
			for _, e := range res.Estimates {
				truth := p.rtt(index(t, e.A), index(t, e.B))
				d := math.Abs(e.RTT - truth)
				if d <= e.Error {
					within1++
				}
				if d <= 3*e.Error {
					within3++
				}
				se += (d / truth) * (d / truth)
				reported += (e.Error / e.RTT) * (e.Error / e.RTT)
			}
			n := len(res.Estimates)
			rms := math.Sqrt(se / float64(max(n, 1)))
			rep := math.Sqrt(reported / float64(max(n, 1)))
			t.Logf("%d clusters, %d measured, %d filled of %d unmeasured in %s: relative RMS error %.4f (reported %.4f), %d within 1 error, %d within 3; components %+v",
				tc.n, len(ms), n, unmeasured, took.Round(time.Millisecond), rms, rep, within1, within3, res.Components)
			if float64(n) < tc.minFilled*float64(unmeasured) {
				t.Errorf("filled %d of %d unmeasured pairs, want at least %.0f%%", n, unmeasured, 100*tc.minFilled)
			}
			if lb := lowerBound(0.683, n); float64(within1) < lb {
				t.Errorf("%d of %d within the reported error, want at least %.1f", within1, n, lb)
			}
			if lb := lowerBound(0.9973, n); float64(within3) < min(lb, float64(n-1)) {
				t.Errorf("%d of %d within 3 times the reported error, want at least %.1f", within3, n, min(lb, float64(n-1)))
			}
			// On average the reported error is not optimistic: the RMS
			// error is at most the RMS reported one (the coverage counts
			// above would pass errors too small for a few large misses),
			// up to the 1% tail of a chi-square with n degrees of freedom
			// (a sum of n squared errors that are calibrated).
			if ub := rep * math.Sqrt((float64(n)+2.33*math.Sqrt(2*float64(n)))/float64(n)); rms > ub {
				t.Errorf("relative RMS error %.4f above the reported %.4f (bound %.4f)", rms, rep, ub)
			}
			// And the estimates are useful: the model is exact here, the
			// noise of a few measurements per coordinate is what is left.
			if rms > 2*tc.noise {
				t.Errorf("relative RMS error %.4f above twice the measurement noise %.2f", rms, tc.noise)
			}
		})
	}
}

// awsRTT are the average RTTs (ms) between six AWS regions that the lab's
// default profile uses (internal/lab/profile.go, from "Latency Between AWS
// Global Regions", 2017): real inter-region RTTs, which no plane fits
// exactly.
var awsRTT = map[[2]string]float64{
	{"us-east-1", "us-west-2"}:           87.8,
	{"us-east-1", "eu-west-1"}:           80.5,
	{"us-east-1", "eu-central-1"}:        88.6,
	{"us-east-1", "ap-northeast-1"}:      145.3,
	{"us-east-1", "ap-southeast-1"}:      216.7,
	{"us-west-2", "eu-west-1"}:           137.0,
	{"us-west-2", "eu-central-1"}:        159.5,
	{"us-west-2", "ap-northeast-1"}:      89.1,
	{"us-west-2", "ap-southeast-1"}:      161.4,
	{"eu-west-1", "eu-central-1"}:        19.6,
	{"eu-west-1", "ap-northeast-1"}:      212.4,
	{"eu-west-1", "ap-southeast-1"}:      238.6,
	{"eu-central-1", "ap-northeast-1"}:   236.5,
	{"eu-central-1", "ap-southeast-1"}:   325.9,
	{"ap-northeast-1", "ap-southeast-1"}: 73.8,
}

func awsTruth(a, b string) float64 {
	if v, ok := awsRTT[[2]string{a, b}]; ok {
		return v * 1000
	}
	return awsRTT[[2]string{b, a}] * 1000
}

// TestLeaveOneOutAWS holds out each of the 15 pairs of six real regions in
// turn and estimates it from the other 14. Six clusters cannot carry
// heights (18 parameters for 14 pairs), so this exercises the plane
// without heights and the cross-validated error of small fleets. The
// estimate is off by tens of ms for some pairs (a plane is a poor map of
// the globe), so what is checked is that the error says so: as many
// within one error as a calibrated error gives (binomial 1% bound), and no
// more truths above estimate + error (where a conservative filter would
// wrongly pass) than a calibrated error gives (15.9% each, same bound).
func TestLeaveOneOutAWS(t *testing.T) {
	var keys [][2]string
	for k := range awsRTT {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+a[1], b[0]+b[1]) })
	var filled, within, above int
	var se float64
	for _, out := range keys {
		var ms []Measurement
		for _, k := range keys {
			if k != out {
				ms = append(ms, Measurement{A: k[0], B: k[1], RTT: awsTruth(k[0], k[1])})
			}
		}
		res, err := Fit(ms, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Estimates) > 1 {
			t.Fatalf("holding out %v filled %d pairs: %+v", out, len(res.Estimates), res.Estimates)
		}
		for _, e := range res.Estimates {
			truth := awsTruth(e.A, e.B)
			filled++
			d := e.RTT - truth
			if math.Abs(d) <= e.Error {
				within++
			}
			if truth > e.RTT+e.Error {
				above++
			}
			se += (d / truth) * (d / truth)
			t.Logf("%s-%s: truth %.1f ms, estimate %.1f ± %.1f ms (%+.1f errors)", e.A, e.B, truth/1000, e.RTT/1000, e.Error/1000, d/e.Error)
		}
	}
	t.Logf("filled %d of 15, %d within the error, %d truths above estimate + error, relative RMS error %.3f",
		filled, within, above, math.Sqrt(se/float64(max(filled, 1))))
	if filled < 8 {
		t.Errorf("filled %d of 15 held-out pairs, want at least half", filled)
	}
	if lb := lowerBound(0.683, filled); float64(within) < lb {
		t.Errorf("%d of %d within the reported error, want at least %.1f", within, filled, lb)
	}
	// Upper 1% bound of a binomial(filled, 0.159).
	if ub := float64(filled)*0.159 + 2.33*math.Sqrt(float64(filled)*0.159*0.841); float64(above) > ub {
		t.Errorf("%d of %d truths above estimate + error, want at most %.1f", above, filled, ub)
	}
}

// TestWhatIsFilled: the rules of the package doc, case by case.
func TestWhatIsFilled(t *testing.T) {
	p := newPlane(16, 3)
	full := func(from, to int) []Measurement {
		var ms []Measurement
		for a := from; a < to; a++ {
			for b := a + 1; b < to; b++ {
				ms = append(ms, Measurement{A: name(a), B: name(b), RTT: p.rtt(a, b) * (1 + 0.01*math.Sin(float64(a*31+b)))})
			}
		}
		return ms
	}
	without := func(ms []Measurement, pairs ...[2]int) []Measurement {
		var out []Measurement
		for _, m := range ms {
			drop := false
			for _, pr := range pairs {
				if (m.A == name(pr[0]) && m.B == name(pr[1])) || (m.A == name(pr[1]) && m.B == name(pr[0])) {
					drop = true
				}
			}
			if !drop {
				out = append(out, m)
			}
		}
		return out
	}
	m := func(a, b int) Measurement { return Measurement{A: name(a), B: name(b), RTT: p.rtt(a, b)} }
	type pair = [2]int
	cases := []struct {
		name string
		ms   []Measurement
		// want are the pairs that must be filled, never those that must
		// not; unconstrained the clusters outside the core.
		want, never   []pair
		unconstrained []string
	}{
		{name: "complete matrix: nothing to fill", ms: full(0, 10)},
		{
			name: "holes in a well-measured fleet are filled",
			ms:   without(full(0, 12), pair{0, 1}, pair{2, 7}, pair{5, 11}),
			want: []pair{{0, 1}, {2, 7}, {5, 11}},
		},
		{
			name:          "a cluster with two measured peers gets nothing",
			ms:            append(full(0, 10), m(10, 0), m(10, 1)),
			never:         []pair{{2, 10}, {3, 10}, {9, 10}},
			unconstrained: []string{name(10)},
		},
		{
			// 10 has two peers (0 and 11), 11 three (10, 2, 3): removing
			// 10 leaves 11 with two.
			name:          "the core is pruned in cascade",
			ms:            append(full(0, 10), m(10, 0), m(11, 10), m(11, 2), m(11, 3)),
			never:         []pair{{4, 10}, {4, 11}, {0, 11}},
			unconstrained: []string{name(10), name(11)},
		},
		{
			name:  "two unconnected groups: nothing across",
			ms:    append(without(full(0, 8), pair{0, 1}), without(full(8, 16), pair{8, 13})...),
			want:  []pair{{0, 1}, {8, 13}},
			never: []pair{{0, 8}, {3, 12}, {7, 15}},
		},
		{
			// One measured pair between the groups fixes one distance; the
			// groups can still turn about it, so pairs across are
			// undetermined (rule 4).
			name:  "two groups joined by one pair: nothing across",
			ms:    append(append(full(0, 8), full(8, 16)...), m(0, 8)),
			never: []pair{{1, 9}, {3, 12}, {7, 15}, {0, 9}},
		},
		{
			name:  "self pairs are ignored",
			ms:    append(without(full(0, 10), pair{0, 1}), Measurement{A: name(0), B: name(0), RTT: 100}),
			want:  []pair{{0, 1}},
			never: []pair{{0, 0}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Fit(tc.ms, Config{})
			if err != nil {
				t.Fatal(err)
			}
			got := map[pair]Estimate{}
			measured := map[pair]bool{}
			for _, m := range tc.ms {
				a, b := index(t, m.A), index(t, m.B)
				measured[pair{min(a, b), max(a, b)}] = true
			}
			for _, e := range res.Estimates {
				a, b := index(t, e.A), index(t, e.B)
				if a >= b {
					t.Errorf("estimate %s-%s not ordered", e.A, e.B)
				}
				if measured[pair{a, b}] {
					t.Errorf("measured pair %s-%s was estimated", e.A, e.B)
				}
				if !(e.Error >= 1 && e.Error >= DefaultMinRelativeError*e.RTT*0.999) {
					t.Errorf("%s-%s: error %g below its floor", e.A, e.B, e.Error)
				}
				got[pair{a, b}] = e
			}
			for _, w := range tc.want {
				e, ok := got[w]
				if !ok {
					t.Errorf("pair %v not filled; components %+v", w, res.Components)
					continue
				}
				if truth := p.rtt(w[0], w[1]); math.Abs(e.RTT-truth) > 3*e.Error {
					t.Errorf("pair %v: estimate %.0f ± %.0f µs, truth %.0f", w, e.RTT, e.Error, truth)
				}
			}
			for _, nv := range tc.never {
				if e, ok := got[pair{min(nv[0], nv[1]), max(nv[0], nv[1])}]; ok {
					t.Errorf("pair %v filled (%+v), want absent; components %+v", nv, e, res.Components)
				}
			}
			if !slices.Equal(res.Unconstrained, tc.unconstrained) {
				t.Errorf("unconstrained %v, want %v", res.Unconstrained, tc.unconstrained)
			}
		})
	}
}

// TestDeterministic: the same measurements, in any order and direction,
// give bit-identical estimates.
func TestDeterministic(t *testing.T) {
	for _, n := range []int{8, 30} {
		p := newPlane(n, 5)
		ms := p.measure(6, 0.3, 0.03)
		first, err := Fit(ms, Config{})
		if err != nil {
			t.Fatal(err)
		}
		if len(first.Estimates) == 0 {
			t.Fatalf("n=%d: nothing filled", n)
		}
		r := rand.New(rand.NewPCG(9, 9))
		for round := range 3 {
			shuffled := slices.Clone(ms)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			for i := range shuffled {
				if r.IntN(2) == 0 {
					shuffled[i].A, shuffled[i].B = shuffled[i].B, shuffled[i].A
				}
			}
			again, err := Fit(shuffled, Config{})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(first.Estimates, again.Estimates) {
				t.Fatalf("n=%d round %d: estimates differ", n, round)
			}
		}
	}
}

// TestBothDirectionsAveraged: a pair measured both ways is one constraint,
// at the mean of the two.
func TestBothDirectionsAveraged(t *testing.T) {
	p := newPlane(10, 8)
	ms := p.measure(9, 0.2, 0)
	base, err := Fit(ms, Config{})
	if err != nil {
		t.Fatal(err)
	}
	var split []Measurement
	for _, m := range ms {
		split = append(split, Measurement{A: m.A, B: m.B, RTT: m.RTT * 0.9}, Measurement{A: m.B, B: m.A, RTT: m.RTT * 1.1})
	}
	both, err := Fit(split, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(base.Estimates) == 0 || len(base.Estimates) != len(both.Estimates) {
		t.Fatalf("filled %d, then %d", len(base.Estimates), len(both.Estimates))
	}
	for i := range base.Estimates {
		if d := math.Abs(base.Estimates[i].RTT - both.Estimates[i].RTT); d > 1e-6*base.Estimates[i].RTT {
			t.Errorf("%s-%s: %g alone, %g from both directions", base.Estimates[i].A, base.Estimates[i].B, base.Estimates[i].RTT, both.Estimates[i].RTT)
		}
	}
}

func TestInvalidInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		ms   []Measurement
		cfg  Config
		want string
	}{
		{"NaN RTT", []Measurement{{A: "a", B: "b", RTT: math.NaN()}}, Config{}, "a-b: RTT NaN"},
		{"negative RTT", []Measurement{{A: "a", B: "b", RTT: -3}}, Config{}, "a-b: RTT -3"},
		{"zero RTT", []Measurement{{A: "a", B: "b", RTT: 0}}, Config{}, "not a positive finite number"},
		{"infinite RTT", []Measurement{{A: "a", B: "b", RTT: math.Inf(1)}}, Config{}, "not a positive finite number"},
		{"no name", []Measurement{{A: "", B: "b", RTT: 3}}, Config{}, "without a cluster name"},
		{"too many dimensions", nil, Config{Dimensions: 9}, "9 dimensions"},
		{"MinPeers 1", nil, Config{MinPeers: 1}, "MinPeers 1"},
		{"negative leverage", nil, Config{MaxLeverage: -1}, "MaxLeverage"},
		{"relative error 1", nil, Config{MinRelativeError: 1}, "MinRelativeError"},
		{"max below min error", nil, Config{MinRelativeError: 0.1, MaxRelativeError: 0.05}, "MaxRelativeError 0.05"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Fit(tc.ms, tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	res, err := Fit(nil, Config{})
	if err != nil || len(res.Estimates) != 0 {
		t.Fatalf("no measurements: %+v, %v", res, err)
	}
}
