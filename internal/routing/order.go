package routing

import (
	"slices"
	"time"
)

// RTT is what is known of the round-trip time from this cluster to one
// other.
type RTT struct {
	Value time.Duration
	// Source says where Value comes from; Unknown means there is none.
	Source RTTSource
}

// RTTSource ranks where an RTT comes from: measured by this agent beats
// the fleet's measured matrix, which beats the estimator's estimate.
type RTTSource int

const (
	Unknown RTTSource = iota
	Estimated
	Matrix
	Measured
)

func (s RTTSource) String() string {
	return [...]string{"unknown", "estimated", "matrix", "measured"}[s]
}

// significant reports whether b is faster than a by more than noise: 1 ms
// (twice the median bias of one path's RTT, world/wan.MedianBias) or 10%
// of a's RTT (three histogram buckets of 3.2%, loghist.Resolution),
// whichever is larger. An RTT against no RTT is always significant.
func significant(a, b RTT) bool {
	switch {
	case a.Source == Unknown:
		return b.Source != Unknown
	case b.Source == Unknown:
		return false
	}
	margin := max(time.Millisecond, a.Value/10)
	return b.Value < a.Value-margin
}

// orderer keeps one service's order of the other clusters, with
// hysteresis.
type orderer struct {
	order []string
	// betterSince is when the current order first had a significantly
	// faster cluster behind a slower one; zero while it has none.
	betterSince time.Time
}

// Nearest is the ideal order of clusters from here: known RTTs ascending,
// then unknown ones, ties by name. A controller follows it with
// hysteresis; a one-shot user (the lab) takes it as is.
func Nearest(clusters []string, rtt map[string]RTT) []string {
	out := slices.Clone(clusters)
	slices.SortFunc(out, func(a, b string) int {
		ra, rb := rtt[a], rtt[b]
		switch {
		case (ra.Source == Unknown) != (rb.Source == Unknown):
			if ra.Source == Unknown {
				return 1
			}
			return -1
		case ra.Source != Unknown && ra.Value != rb.Value:
			if ra.Value < rb.Value {
				return -1
			}
			return 1
		}
		if a < b {
			return -1
		} else if a > b {
			return 1
		}
		return 0
	})
	return out
}

// next returns the order to use at now for clusters (the other clusters
// that have endpoints). The current order keeps its clusters' places
// unless a significantly better order has held for hold; clusters that
// appear are placed by their RTT at once, and those that disappear leave.
func (o *orderer) next(clusters []string, rtt map[string]RTT, now time.Time, hold time.Duration) []string {
	ideal := Nearest(clusters, rtt)
	present := map[string]bool{}
	for _, c := range clusters {
		present[c] = true
	}
	var cur []string
	known := map[string]bool{}
	for _, c := range o.order {
		if present[c] {
			cur = append(cur, c)
			known[c] = true
		}
	}
	for _, c := range ideal {
		if known[c] {
			continue
		}
		// Insert before the first cluster it beats.
		at := len(cur)
		for i, d := range cur {
			if significant(rtt[d], rtt[c]) || (rtt[c].Source != Unknown && rtt[d].Source != Unknown && rtt[c].Value < rtt[d].Value) {
				at = i
				break
			}
		}
		cur = slices.Insert(cur, at, c)
	}
	o.order = cur
	if !inverted(cur, rtt) {
		o.betterSince = time.Time{}
		return cur
	}
	// The inversion must hold, not one particular better order: among
	// clusters within the noise margin of each other the ideal order may
	// change from sync to sync.
	if o.betterSince.IsZero() {
		o.betterSince = now
	}
	if now.Sub(o.betterSince) >= hold {
		o.order, o.betterSince = ideal, time.Time{}
	}
	return o.order
}

// inverted reports whether some cluster is significantly faster than one
// placed before it.
func inverted(order []string, rtt map[string]RTT) bool {
	for i := range order {
		for j := i + 1; j < len(order); j++ {
			if significant(rtt[order[i]], rtt[order[j]]) {
				return true
			}
		}
	}
	return false
}
