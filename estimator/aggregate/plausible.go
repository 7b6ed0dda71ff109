package aggregate

import (
	"math"
	"time"

	"github.com/flowplace/flowplace/estimator/otlpwire"
)

// Plausibility bounds: what one data point may claim. A point beyond them
// is refused alone, with a reason, before it touches any state (DESIGN.md,
// "Identity": a point that claims the impossible changes nothing but a
// rejection counter). They are per input series, that is per agent (one
// node): the aggregates sum many nodes, and the API schema bounds those.
const (
	// DefaultMaxClockSkew is how far ahead of the receiver's clock a point
	// may be stamped by default (--max-clock-skew). NTP keeps nodes within
	// milliseconds; a minute leaves room for a badly synced node while a
	// point from the future can hold back its series for at most that long.
	DefaultMaxClockSkew = time.Minute

	// MaxBytesPerSecond is what one node can move: an 800 Gb/s NIC at line
	// rate.
	MaxBytesPerSecond = 800e9 / 8
	// MaxPacketsPerSecond is the same NIC's packet rate at the smallest
	// Ethernet frame (64 B + 20 B of preamble and gap): about 1.19e9/s.
	MaxPacketsPerSecond = 800e9 / 8 / 84
	// MaxConnectionsPerSecond: a new connection takes at least one packet.
	MaxConnectionsPerSecond = MaxPacketsPerSecond
	// MaxRTTSamplesPerSecond: the kernel takes at most one RTT sample per
	// ACK, and an ACK is a packet.
	MaxRTTSamplesPerSecond = MaxPacketsPerSecond

	// MaxRTTSeconds bounds an RTT sample. Light in fibre around the whole
	// planet takes 0.2 s, a geostationary hop 0.6 s; the worst bufferbloat
	// measured on cellular links is a few seconds. 10 s covers all of them
	// with room; longer is not a distance but a broken clock or sender.
	MaxRTTSeconds = 10.0
	// MinRTTSeconds: the kernel measures RTT in microseconds; a bucket
	// wholly below a nanosecond holds no TCP RTT.
	MinRTTSeconds = 1e-9
)

// checkTime refuses a point stamped far from now, or starting after it
// ends. A missing time is left to lookup (ReasonNoTimestamp).
func (s *sink) checkTime(pc *otlpwire.PointCommon) Reason {
	if pc.Time == 0 {
		return ReasonNone
	}
	if pc.Time > s.maxTime || pc.Time < s.minTime || pc.StartTime > pc.Time {
		return ReasonImplausibleTime
	}
	return ReasonNone
}

// plausibleRate reports whether n bytes, connections or RTT samples (by
// metric) fit in interval seconds on one node. The interval is the one
// the delta is spread over in the window, so each accepted point adds at
// most the NIC's rate to a published rate.
func plausibleRate(metric metricID, n, interval float64) bool {
	var perSecond float64
	switch metric {
	case metricBytes:
		perSecond = MaxBytesPerSecond
	case metricConnections:
		perSecond = MaxConnectionsPerSecond
	default:
		perSecond = MaxRTTSamplesPerSecond
	}
	return n <= perSecond*interval
}

var (
	log2MaxRTT = math.Log2(MaxRTTSeconds)
	log2MinRTT = math.Log2(MinRTTSeconds)
)

// plausibleExponential reports whether every populated bucket of an
// exponential histogram (scale, offset, counts in units of unitScale
// seconds) lies within MinRTTSeconds..MaxRTTSeconds: bucket i holds
// (2^(i/2^scale), 2^((i+1)/2^scale)].
func plausibleExponential(scale, offset int32, counts []uint64, unitScale float64) bool {
	lo, hi := -1, -1
	for k, c := range counts {
		if c != 0 {
			if lo < 0 {
				lo = k
			}
			hi = k
		}
	}
	if lo < 0 {
		return true
	}
	width := math.Exp2(-float64(scale)) // octaves per bucket
	u := math.Log2(unitScale)
	lower := (float64(offset)+float64(hi))*width + u   // log2 of the highest bucket's lower bound
	upper := (float64(offset)+float64(lo)+1)*width + u // log2 of the lowest bucket's upper bound
	return lower < log2MaxRTT && upper > log2MinRTT
}

// plausibleExplicit reports whether an explicit-bucket histogram (values
// times unitScale are seconds) holds no sample beyond MaxRTTSeconds: no
// populated bucket starts above it, and the max, if given, is within it.
func plausibleExplicit(bounds []float64, counts []uint64, max float64, hasMax bool, unitScale float64) bool {
	if hasMax && max*unitScale > MaxRTTSeconds {
		return false
	}
	for k, c := range counts {
		if c != 0 && k > 0 && k-1 < len(bounds) && bounds[k-1]*unitScale >= MaxRTTSeconds {
			return false
		}
	}
	return true
}
