package estimator

import (
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/estimator/coordinates"
)

// rttFiller fills the pairs of the latency matrix that no agent measured
// in either direction, from network coordinates fitted to the measured
// medians (package coordinates). A pair measured in one direction only is
// left to readers, which take the reverse direction (RTT is a round trip:
// the reverse measurement is better than any model).
//
// The fit is deterministic, but it is not free (about 0.2 s for 100
// clusters), so it is redone only when its input moved: a new or vanished
// pair, or a median that moved by more than refitRelative. Estimates made
// from medians that moved less than that differ from a refit by far less
// than their expected error, which is at least coordinates'
// MinRelativeError (2.5%).
type rttFiller struct {
	disabled bool
	cfg      coordinates.Config

	// mu serialises fill: PublishOnce may run beside the leader's loop.
	mu    sync.Mutex
	input []coordinates.Measurement // of the last fit, sorted
	est   []coordinates.Estimate
}

const refitRelative = 0.01

// filled is one estimated directed entry.
type filled struct {
	src, dst string // cluster UIDs
	rtt, err float64
	lastSeen time.Time
}

// peerLatency is the entry as published. The quantiles of an estimate are
// all the estimate (the model predicts one number, the median; a tail it
// has no data for is not invented), and min is one expected error below
// it, so that min..p50 spans what a measurement would likely show.
func (f filled) peerLatency(dst string) v1.PeerLatency {
	us := micros(f.rtt / 1e6)
	errUs := min(max(micros(f.err/1e6), 1), v1.MaxRTTMicroseconds)
	return v1.PeerLatency{
		Cluster:         dst,
		MinMicroseconds: max(us-errUs, 0), P50Microseconds: us, P90Microseconds: us, P99Microseconds: us,
		SampleCount:               0,
		LastSampleTime:            metav1.NewTime(f.lastSeen.Truncate(time.Second)),
		Estimated:                 true,
		ExpectedErrorMicroseconds: errUs,
	}
}

// fill returns the estimated entries for lat (source UID -> destination
// UID -> measured stats), both directions of every estimated pair, in a
// deterministic order. Its last-sample time is the newest sample of any
// measured pair of either cluster: the estimate rests on those.
func (r *rttFiller) fill(lat map[string]map[string]aggregate.PairStat) []filled {
	if r.disabled {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	newest := map[string]time.Time{}
	var in []coordinates.Measurement
	for src, peers := range lat {
		for dst, st := range peers {
			if src == dst {
				continue
			}
			rtt := st.P50 * 1e6
			if !(rtt > 0) || math.IsInf(rtt, 0) {
				continue
			}
			in = append(in, coordinates.Measurement{A: src, B: dst, RTT: rtt})
			for _, c := range []string{src, dst} {
				if st.LastSeen.After(newest[c]) {
					newest[c] = st.LastSeen
				}
			}
		}
	}
	slices.SortFunc(in, func(a, b coordinates.Measurement) int {
		if c := strings.Compare(a.A, b.A); c != 0 {
			return c
		}
		return strings.Compare(a.B, b.B)
	})
	if !r.current(in) {
		start := time.Now()
		res, err := coordinates.Fit(in, r.cfg)
		if err != nil {
			// Only invalid input fails, and the input is filtered above:
			// publish the measurements alone rather than nothing.
			klog.ErrorS(err, "Estimating unmeasured cluster pairs failed")
			r.input, r.est = nil, nil
			return nil
		}
		r.input, r.est = in, res.Estimates
		klog.V(2).InfoS("Fitted network coordinates", "pairs", len(in), "estimated", len(res.Estimates),
			"unconstrained", res.Unconstrained, "components", res.Components, "took", time.Since(start))
	}
	out := make([]filled, 0, 2*len(r.est))
	for _, e := range r.est {
		seen := newest[e.A]
		if newest[e.B].After(seen) {
			seen = newest[e.B]
		}
		out = append(out,
			filled{src: e.A, dst: e.B, rtt: e.RTT, err: e.Error, lastSeen: seen},
			filled{src: e.B, dst: e.A, rtt: e.RTT, err: e.Error, lastSeen: seen})
	}
	return out
}

// current reports whether in is close enough to the last fit's input to
// reuse its estimates.
func (r *rttFiller) current(in []coordinates.Measurement) bool {
	if r.input == nil || len(in) != len(r.input) {
		return false
	}
	for i, m := range in {
		o := r.input[i]
		if m.A != o.A || m.B != o.B || math.Abs(m.RTT-o.RTT) > refitRelative*o.RTT {
			return false
		}
	}
	return true
}
