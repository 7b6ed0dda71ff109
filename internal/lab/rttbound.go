package lab

import (
	"fmt"
	"time"

	"github.com/flowplace/flowplace/internal/lab/ui"
	"github.com/flowplace/flowplace/world/wan"
)

// aggregateMeanResolution: the estimator's mean of a pair's merged RTT
// distribution (scale-4 buckets, 4.4% wide) is within 2.2% of the mean of
// the samples in it (estimator/aggregate's PairStat.Mean).
const aggregateMeanResolution = 0.022

// RTTBound is where the lab's measured mean RTT of a pair must lie for an
// injected RTT, from the instruments' bounds rather than a guess: the hub
// never releases early and its kernel samples exceed the injected RTT by at
// most wan.MeanTolerance(samples) on the mean; the estimator's bucketed
// mean adds up to 2.2% either way.
func RTTBound(injected time.Duration, samples int64) (lo, hi time.Duration) {
	res := time.Duration(aggregateMeanResolution * float64(injected))
	return injected - res, injected + res + wan.MeanTolerance(int(min(samples, 1<<31-1)))
}

// RTTOutOfBounds describes each measured pair of a matrix that lies outside
// RTTBound, and a matrix with no measured pair at all; nil when all is well.
func RTTOutOfBounds(cells []ui.RTTCell) []string {
	var out []string
	measured := 0
	for _, c := range cells {
		if c.Samples == 0 {
			continue
		}
		measured++
		injected := time.Duration(c.InjectedMs * float64(time.Millisecond))
		lo, hi := RTTBound(injected, c.Samples)
		if got := time.Duration(c.MeasuredMs * float64(time.Millisecond)); got < lo || got > hi {
			out = append(out, fmt.Sprintf("%s -> %s: measured mean %v over %d samples, injected %v: want within [%v, %v]",
				c.From, c.To, got, c.Samples, injected, lo, hi))
		}
	}
	if measured == 0 {
		out = append(out, "no cluster pair was measured")
	}
	return out
}
