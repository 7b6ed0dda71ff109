package loghist

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketBoundsAgree(t *testing.T) {
	for _, us := range []uint32{0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 100, 1000, 4999, 5000, 20000, 50000, 1 << 22, 1<<23 - 1} {
		i := Bucket(us)
		lo, hi := Bounds(i)
		if float64(us) < lo || float64(us) >= hi {
			t.Errorf("value %d in bucket %d with bounds [%v,%v)", us, i, lo, hi)
		}
	}
	if got := Bucket(math.MaxUint32); got != Buckets-1 {
		t.Errorf("huge value: bucket %d, want last %d", got, Buckets-1)
	}
	// Buckets are contiguous and increasing.
	for i := 1; i < Buckets; i++ {
		_, prevHi := Bounds(i - 1)
		lo, _ := Bounds(i)
		if lo != prevHi {
			t.Fatalf("gap between bucket %d and %d: %v != %v", i-1, i, prevHi, lo)
		}
	}
	if Buckets != 320 {
		t.Fatalf("Buckets = %d; flow.h declares 320", Buckets)
	}
}

func TestBucketWidthWithinBound(t *testing.T) {
	for i := Sub; i < Buckets-1; i++ {
		lo, hi := Bounds(i)
		if (hi-lo)/lo > 1.0/16+1e-9 {
			t.Fatalf("bucket %d too wide: [%v,%v)", i, lo, hi)
		}
	}
}

func TestResolution(t *testing.T) {
	for _, tc := range []struct{ us, want float64 }{
		{0, 1}, {15, 1}, {16, 1}, {31, 1}, {32, 2},
		{5000, 256}, // the 5 ms: 4096 <= 5000 < 8192, 16 sub-buckets
		{20000, 1024}, {50000, 2048}, {1 << 30, 1 << 18},
	} {
		if got := Resolution(tc.us); got != tc.want {
			t.Errorf("Resolution(%v) = %v, want %v", tc.us, got, tc.want)
		}
	}
	if got := Resolution(-1); !math.IsNaN(got) {
		t.Errorf("Resolution(-1) = %v, want NaN", got)
	}
}

// Quantiles from the histogram stay within 5% of the exact sample quantile
// for distributions shaped like real RTTs.
func TestQuantileAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cases := []struct {
		name string
		gen  func() float64
	}{
		{"constant-5ms", func() float64 { return 5000 }},
		{"narrow-20ms", func() float64 { return 20000 + rng.NormFloat64()*150 }},
		{"lognormal-loopback", func() float64 { return 60 * math.Exp(rng.NormFloat64()*0.5) }},
		{"bimodal", func() float64 {
			if rng.IntN(10) < 7 {
				return 900 + rng.Float64()*200
			}
			return 48000 + rng.Float64()*4000
		}},
		{"uniform-wide", func() float64 { return 50 + rng.Float64()*2e6 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h Histogram
			samples := make([]float64, 20000)
			for i := range samples {
				v := max(tc.gen(), 1)
				samples[i] = math.Floor(v)
				h.Add(uint32(samples[i]))
			}
			slices.Sort(samples)
			for _, q := range []float64{0.5, 0.9, 0.99} {
				exact := samples[int(q*float64(len(samples)-1))]
				got := h.Quantile(q)
				if rel := math.Abs(got-exact) / exact; rel > 0.05 {
					t.Errorf("q%.2f: got %.1f, exact %.1f (%.1f%% off)", q, got, exact, rel*100)
				}
			}
		})
	}
}

func TestEmptyAndMerge(t *testing.T) {
	var a, b Histogram
	if !math.IsNaN(a.Quantile(0.5)) || !math.IsNaN(a.Mean()) {
		t.Fatal("empty histogram must give NaN")
	}
	a.Add(100)
	b.Add(300)
	b.Add(50)
	a.Merge(&b)
	if a.Count != 3 || a.Sum != 450 || a.Min != 50 || a.Total() != 3 {
		t.Fatalf("merge: %+v", a)
	}
}
