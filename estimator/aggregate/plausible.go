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

var log2MinRTT = math.Log2(MinRTTSeconds)

// plausibleExponential reports whether no populated bucket of an
// exponential histogram (scale, offset, counts in units of unitScale
// seconds) lies wholly below MinRTTSeconds: bucket i holds
// (2^(i/2^scale), 2^((i+1)/2^scale)]. No kernel measures such an RTT, so a
// point holding one is refused whole. The upper bound is judged on what a
// point adds (beyondMaxRTT), not on the point: a cumulative histogram keeps
// a real sample beyond MaxRTTSeconds (a peer that froze for a while) in
// every later point, and judging points would silence its series for ever.
func plausibleExponential(scale, offset int32, counts []uint64, unitScale float64) bool {
	lo := -1
	for k, c := range counts {
		if c != 0 {
			lo = k
			break
		}
	}
	if lo < 0 {
		return true
	}
	width := math.Exp2(-float64(scale)) // octaves per bucket
	upper := (float64(offset)+float64(lo)+1)*width + math.Log2(unitScale)
	return upper > log2MinRTT
}

// maxRTTBucket is the last internal bucket wholly below MaxRTTSeconds:
// samples past it (from 9.93 s, the bucket's 4.4% short of 10 s) are
// implausible, and so are values clamped into the end bucket (64 s). The
// explicit histograms' open last bucket above a 10 s bound lands there.
var maxRTTBucket = bucketOf(MaxRTTSeconds) - 1

// beyondMaxRTT reports whether the samples a point adds (its delta, or the
// whole point where it starts a series) reach past MaxRTTSeconds.
func beyondMaxRTT(added *hist) bool { return added.beyond(maxRTTBucket) }
