// Package loghist is the log-linear histogram the kernel probes fill: exact
// below 16 µs, then 16 linear sub-buckets per power of two up to 2^23 µs.
// It mirrors RTT_* in bpf/include/flow.h; both must change together.
//
// With 16 sub-buckets a bucket is at most 1/16 as wide as its lower bound,
// so any value inside a bucket is within 3.2% of the bucket's midpoint:
// quantiles read from it are well within 5%.
package loghist

import (
	"math"
	"math/bits"
)

const (
	SubBits = 4
	Sub     = 1 << SubBits
	MaxExp  = 22
	// Buckets is the number of buckets; the last one is open-ended.
	Buckets = (MaxExp - SubBits + 2) * Sub
)

// Bucket returns the bucket index of a value in µs.
func Bucket(us uint32) int {
	if us < Sub {
		return int(us)
	}
	e := bits.Len32(us) - 1
	if e > MaxExp {
		return Buckets - 1
	}
	return (e-SubBits+1)*Sub + int((us>>(e-SubBits))&(Sub-1))
}

// Bounds returns the inclusive lower and exclusive upper bound of bucket i in
// µs. The last bucket's upper bound is +Inf.
func Bounds(i int) (lower, upper float64) {
	if i < Sub {
		return float64(i), float64(i + 1)
	}
	g, s := i/Sub, i%Sub
	shift := uint(g - 1)
	lower = float64(uint64(Sub+s) << shift)
	upper = float64(uint64(Sub+s+1) << shift)
	if i == Buckets-1 {
		upper = math.Inf(1)
	}
	return lower, upper
}

// Resolution is the width in µs of the bucket that holds us: a quantile read
// from the histogram (interpolated inside its bucket) is within one
// Resolution of the exact sample quantile. Tests derive their tolerances
// from it. Values at or past the last bucket have no upper bound; their
// resolution is the last finite bucket's width.
func Resolution(us float64) float64 {
	if !(us >= 0) {
		return math.NaN()
	}
	i := Bucket(uint32(min(us, float64(math.MaxUint32))))
	if i == Buckets-1 {
		i--
	}
	lo, hi := Bounds(i)
	return hi - lo
}

// Histogram is a snapshot of bucket counts with the exact sum and count of
// the samples.
type Histogram struct {
	Counts [Buckets]uint64
	Sum    uint64 // µs
	Count  uint64
	Min    uint32 // µs; 0 = unknown
}

// Add records one sample.
func (h *Histogram) Add(us uint32) {
	h.Counts[Bucket(us)]++
	h.Sum += uint64(us)
	h.Count++
	if h.Min == 0 || (us != 0 && us < h.Min) {
		h.Min = us
	}
}

// Merge adds o into h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
	h.Sum += o.Sum
	h.Count += o.Count
	if o.Min != 0 && (h.Min == 0 || o.Min < h.Min) {
		h.Min = o.Min
	}
}

// Total is the sum of bucket counts (can differ from Count while the kernel
// is between its two updates).
func (h *Histogram) Total() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// Mean in µs, or NaN with no samples.
func (h *Histogram) Mean() float64 {
	if h.Count == 0 {
		return math.NaN()
	}
	return float64(h.Sum) / float64(h.Count)
}

// Quantile estimates the q-quantile (0..1) in µs by linear interpolation
// inside the bucket that holds it; NaN with no samples.
func (h *Histogram) Quantile(q float64) float64 {
	total := h.Total()
	if total == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	rank := q * float64(total)
	var seen float64
	for i, c := range h.Counts {
		if c == 0 {
			continue
		}
		next := seen + float64(c)
		if rank <= next {
			lo, hi := Bounds(i)
			if math.IsInf(hi, 1) {
				return lo
			}
			return lo + (hi-lo)*(rank-seen)/float64(c)
		}
		seen = next
	}
	lo, _ := Bounds(Buckets - 1)
	return lo
}
