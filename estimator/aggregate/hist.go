package aggregate

import (
	"math"
)

// RTT distributions are kept as base-2 exponential histograms at a fixed
// scale over values in seconds, like the OTel exponential histogram the
// agents send: bucket j holds values in (2^(j/16), 2^((j+1)/16)]. Scale 4 (16
// buckets per power of two, each 4.4% wide) bounds the quantile error to
// about 2.2% with log-linear interpolation, close to the agents' own
// resolution, while any finer input scale folds into it exactly (index >>
// (scale-4)). Values outside 1 µs..60 s clamp to the end buckets.
const (
	histScale    = 4
	histPerOct   = 1 << histScale
	histMinIndex = -320 // 2^(-320/16) s = 0.95 µs
	histMaxIndex = 95   // 2^(96/16) s = 64 s
)

// hist is a histogram over a dense, growable span of bucket indexes: RTTs of
// one path sit within a few powers of two, so a span of tens of buckets
// covers a series, not the full 416.
type hist struct {
	lo     int32 // bucket index of counts[0]
	counts []float64
}

func clampIndex(j int64) int32 {
	if j < histMinIndex {
		return histMinIndex
	}
	if j > histMaxIndex {
		return histMaxIndex
	}
	return int32(j)
}

// bucketOf returns the bucket holding value v (seconds).
func bucketOf(v float64) int32 {
	if !(v > 0) {
		return histMinIndex
	}
	return clampIndex(int64(math.Ceil(math.Log2(v)*histPerOct)) - 1)
}

func (h *hist) reset() {
	h.counts = h.counts[:0]
	h.lo = 0
}

func (h *hist) empty() bool { return len(h.counts) == 0 }

// grow makes bucket j addressable.
func (h *hist) grow(j int32) {
	if len(h.counts) == 0 {
		h.lo = j
		h.counts = append(h.counts, 0)
		return
	}
	if j < h.lo {
		n := int(h.lo - j)
		h.counts = append(h.counts, make([]float64, n)...)
		copy(h.counts[n:], h.counts[:len(h.counts)-n])
		clear(h.counts[:n])
		h.lo = j
		return
	}
	if hi := h.lo + int32(len(h.counts)) - 1; j > hi {
		h.counts = append(h.counts, make([]float64, j-hi)...)
	}
}

func (h *hist) add(j int32, c float64) {
	h.grow(j)
	h.counts[j-h.lo] += c
}

// addScaled adds o times w.
func (h *hist) addScaled(o *hist, w float64) {
	if len(o.counts) == 0 {
		return
	}
	h.grow(o.lo)
	h.grow(o.lo + int32(len(o.counts)) - 1)
	base := o.lo - h.lo
	for i, c := range o.counts {
		h.counts[int32(i)+base] += c * w
	}
}

func (h *hist) scale(f float64) {
	for i := range h.counts {
		h.counts[i] *= f
	}
}

func (h *hist) total() float64 {
	var t float64
	for _, c := range h.counts {
		t += c
	}
	return t
}

// beyond reports whether any bucket past j holds samples.
func (h *hist) beyond(j int32) bool {
	for i := len(h.counts) - 1; i >= 0 && h.lo+int32(i) > j; i-- {
		if h.counts[i] > 0 {
			return true
		}
	}
	return false
}

// copyFrom makes h equal to o, reusing h's storage.
func (h *hist) copyFrom(o *hist) {
	h.lo = o.lo
	h.counts = append(h.counts[:0], o.counts...)
}

// sub sets h to cur - prev per bucket, clamping at zero, and reports
// whether any bucket went down by more than rounding: for cumulative data
// that means the source restarted.
func (h *hist) sub(cur, prev *hist) (decreased bool) {
	h.copyFrom(cur)
	if len(prev.counts) == 0 {
		return false
	}
	for i, c := range prev.counts {
		j := prev.lo + int32(i)
		if j < h.lo || j >= h.lo+int32(len(h.counts)) {
			if c > 0.5 {
				decreased = true
			}
			continue
		}
		d := h.counts[j-h.lo] - c
		if d < 0 {
			// Input scales coarser than ours are split evenly, and a scale
			// change can move a fraction of a count between neighbours.
			if d < -0.5 {
				decreased = true
			}
			d = 0
		}
		h.counts[j-h.lo] = d
	}
	return decreased
}

// quantile returns the q-quantile in seconds, interpolating log-linearly
// inside the bucket; 0 for an empty histogram.
func (h *hist) quantile(q float64) float64 {
	t := h.total()
	if t <= 0 {
		return 0
	}
	rank := q * t
	var cum float64
	for i, c := range h.counts {
		if c <= 0 {
			continue
		}
		if cum+c >= rank {
			f := (rank - cum) / c
			return math.Exp2((float64(h.lo+int32(i)) + f) / histPerOct)
		}
		cum += c
	}
	return math.Exp2(float64(h.lo+int32(len(h.counts))) / histPerOct)
}

// mean returns the mean in seconds, each bucket counted at its geometric
// midpoint (within 2.2% of the values in it); 0 for an empty histogram.
func (h *hist) mean() float64 {
	var sum, n float64
	for i, c := range h.counts {
		if c > 0 {
			sum += c * math.Exp2((float64(h.lo+int32(i))+0.5)/histPerOct)
			n += c
		}
	}
	if n <= 0 {
		return 0
	}
	return sum / n
}

// min returns the lower bound of the lowest bucket that holds at least
// threshold (so that one decayed sample from long ago does not define the
// minimum for ever); 0 if none does.
func (h *hist) min(threshold float64) float64 {
	for i, c := range h.counts {
		if c >= threshold {
			return math.Exp2(float64(h.lo+int32(i)) / histPerOct)
		}
	}
	return 0
}

// addExponential adds an OTel exponential histogram's positive buckets
// (scale, offset, counts) and zero count, with values in seconds times
// unitScale. It returns false if the scale is outside what OTLP allows.
func (h *hist) addExponential(scale, offset int32, counts []uint64, zero uint64, unitScale float64) bool {
	if scale < -10 || scale > 20 {
		return false
	}
	if zero > 0 {
		h.add(histMinIndex, float64(zero))
	}
	if unitScale != 1 {
		// Buckets of other units do not align with ours: place each at its
		// geometric midpoint.
		base := math.Exp2(math.Exp2(-float64(scale)))
		for k, c := range counts {
			if c == 0 {
				continue
			}
			i := float64(offset) + float64(k)
			mid := math.Pow(base, i+0.5) * unitScale
			h.add(bucketOf(mid), float64(c))
		}
		return true
	}
	if scale >= histScale {
		// The agents' case: each input bucket folds into exactly one of
		// ours. Grow once to the whole span, then index directly.
		if len(counts) == 0 {
			return true
		}
		shift := scale - histScale
		lo := clampIndex(int64(offset) >> shift)
		hi := clampIndex((int64(offset) + int64(len(counts)) - 1) >> shift)
		h.grow(lo)
		h.grow(hi)
		for k, c := range counts {
			if c != 0 {
				h.counts[clampIndex((int64(offset)+int64(k))>>shift)-h.lo] += float64(c)
			}
		}
		return true
	}
	// A coarser bucket spans 2^(4-scale) of ours: spread it evenly.
	var sp spreader
	shift := histScale - scale
	for k, c := range counts {
		if c != 0 {
			first := (int64(offset) + int64(k)) << shift
			sp.add(first, first+int64(1)<<shift-1, float64(c))
		}
	}
	sp.flush(h)
	return true
}

// spreader spreads counts evenly over ranges of buckets in O(1) per range
// (a difference array), so that a hostile point with thousands of wide
// buckets costs thousands of steps, not millions.
type spreader struct {
	diff [histMaxIndex - histMinIndex + 2]float64
	used bool
}

// add spreads total evenly over buckets first..last (inclusive); the part
// outside our range goes to the end buckets.
func (s *spreader) add(first, last int64, total float64) {
	s.used = true
	per := total / float64(last-first+1)
	if first < histMinIndex {
		lo := min(last, histMinIndex-1)
		s.diff[0] += per * float64(lo-first+1)
		s.diff[1] -= per * float64(lo-first+1)
		first = histMinIndex
	}
	if last > histMaxIndex {
		hi := max(first, histMaxIndex+1)
		s.diff[histMaxIndex-histMinIndex] += per * float64(last-hi+1)
		s.diff[histMaxIndex-histMinIndex+1] -= per * float64(last-hi+1)
		last = histMaxIndex
	}
	if first > last {
		return
	}
	s.diff[first-histMinIndex] += per
	s.diff[last-histMinIndex+1] -= per
}

func (s *spreader) flush(h *hist) {
	if !s.used {
		return
	}
	var run float64
	for k := 0; k < len(s.diff)-1; k++ {
		run += s.diff[k]
		if run > 1e-9 { // not the rounding residue of a range that ended
			h.add(int32(k+histMinIndex), run)
		}
	}
}

// addExplicit adds an explicit-bucket histogram (values times unitScale
// give seconds). Each finite bucket's count is spread evenly over our
// buckets between its bounds (log-uniform within a bucket); the open-ended
// first and last buckets go to their finite bound, or are spread to the
// point's min or max when given.
func (h *hist) addExplicit(bounds []float64, counts []uint64, min, max float64, hasMin, hasMax bool, unitScale float64) {
	n := len(bounds)
	var sp spreader
	for k, c := range counts {
		if c == 0 {
			continue
		}
		var lo, hi float64
		switch {
		case n == 0:
			lo, hi = min, max
			if !hasMin || !hasMax {
				lo, hi = 0, 0
			}
		case k == 0:
			lo, hi = bounds[0], bounds[0]
			if hasMin && min < bounds[0] {
				lo = min
			}
		case k == n:
			lo, hi = bounds[n-1], bounds[n-1]
			if hasMax && max > bounds[n-1] {
				hi = max
			}
		default:
			lo, hi = bounds[k-1], bounds[k]
		}
		jlo, jhi := bucketOf(lo*unitScale), bucketOf(hi*unitScale)
		if lo <= 0 {
			jlo = jhi
		}
		sp.add(int64(jlo), int64(jhi), float64(c))
	}
	sp.flush(h)
}
