package lab

import (
	"time"

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
