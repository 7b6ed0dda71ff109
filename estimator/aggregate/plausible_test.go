package aggregate

import (
	"math"
	"testing"
	"time"

	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// TestImplausiblePointsRefusedAlone: a point that claims the impossible is
// refused with its reason and counted, the other points of its request go
// in, and its series goes on as if it had not come: the next true point
// counts exactly what it would have without it.
func TestImplausiblePointsRefusedAlone(t *testing.T) {
	delta := metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	t0 := time.Now()
	base := uint64(t0.UnixNano())
	at := func(s float64) uint64 { return base + uint64(s*1e9) }
	bytesAt := func(v float64, start, end uint64, temp metricspb.AggregationTemporality) *metricspb.Metric {
		m := bytesSum(webAttrs(), v, temp, true)
		p := m.GetSum().DataPoints[0]
		p.StartTimeUnixNano, p.TimeUnixNano = start, end
		return m
	}
	rttAt := func(start, end uint64, f func(*metricspb.ExponentialHistogramDataPoint)) *metricspb.Metric {
		return expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) {
			p.StartTimeUnixNano, p.TimeUnixNano = start, end
			// 3 samples at ~5 ms (scale 4, index -123: 2^(-123/16) s).
			p.Count, p.Positive.Offset, p.Positive.BucketCounts = 3, -123, []uint64{3}
			if f != nil {
				f(p)
			}
		})
	}
	type step struct {
		m    *metricspb.Metric
		want Reason // ReasonNone: accepted
	}
	cases := []struct {
		name  string
		steps []step
		// Expected state from the true points alone.
		bytes, samples float64
	}{
		{"RTT count near 2^63", []step{
			{rttAt(base, at(1), nil), ReasonNone},
			{rttAt(base, at(2), func(p *metricspb.ExponentialHistogramDataPoint) {
				p.Count, p.Positive.BucketCounts = 1<<63-1, []uint64{1<<63 - 1}
			}), ReasonImplausibleRate},
			{rttAt(base, at(3), func(p *metricspb.ExponentialHistogramDataPoint) { p.Count, p.Positive.BucketCounts = 7, []uint64{7} }), ReasonNone},
		}, 0, 7},
		{"point stamped in 2096", []step{
			{bytesAt(100, base, at(1), cumulative), ReasonNone},
			{bytesAt(200, base, uint64(time.Date(2096, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()), cumulative), ReasonImplausibleTime},
			{bytesAt(300, base, at(2), cumulative), ReasonNone},
			{bytesAt(400, base, at(3), cumulative), ReasonNone},
		}, 400, 0},
		{"start after end", []step{
			{bytesAt(100, at(2), at(1), cumulative), ReasonImplausibleTime},
			{bytesAt(100, base, at(1), cumulative), ReasonNone},
		}, 100, 0},
		{"stamped before the series TTL", []step{
			{bytesAt(100, base-uint64(time.Hour), base-uint64(59*time.Minute), delta), ReasonImplausibleTime},
			{bytesAt(100, base, at(1), delta), ReasonNone},
		}, 100, 0},
		{"1e300 bytes over 1 ns", []step{
			{bytesAt(100, base, at(1), cumulative), ReasonNone},
			{bytesAt(1e300, base, at(1)+1, cumulative), ReasonImplausibleRate},
			{bytesAt(250, base, at(2), cumulative), ReasonNone},
		}, 250, 0},
		{"1e300 bytes over 1 ns from its start", []step{
			{bytesAt(1e300, base, base+1, cumulative), ReasonImplausibleRate},
			{bytesAt(100, base, at(1), cumulative), ReasonNone},
		}, 100, 0},
		{"delta beyond the NIC", []step{
			{bytesAt(MaxBytesPerSecond*1.01, base, at(1), delta), ReasonImplausibleRate},
			{bytesAt(MaxBytesPerSecond*0.99, at(1), at(2), delta), ReasonNone},
		}, MaxBytesPerSecond * 0.99, 0},
		{"exponential histogram at offset 2000", []step{
			{rttAt(base, at(1), nil), ReasonNone},
			{rttAt(base, at(2), func(p *metricspb.ExponentialHistogramDataPoint) { p.Positive.Offset = 2000 }), ReasonImplausibleRTT},
			{rttAt(base, at(3), func(p *metricspb.ExponentialHistogramDataPoint) { p.Count, p.Positive.BucketCounts = 5, []uint64{5} }), ReasonNone},
		}, 0, 5},
		{"exponential histogram at offset -2000", []step{
			{rttAt(base, at(1), func(p *metricspb.ExponentialHistogramDataPoint) { p.Positive.Offset = -2000 }), ReasonImplausibleRTT},
		}, 0, 0},
		{"explicit histogram max of a minute", []step{
			// Its samples are all under 2 ms: the max contradicts them.
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(1)
				mx := 60.0
				p.Max = &mx
			}), ReasonInconsistentHistogram},
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(2)
				p.ExplicitBounds, p.BucketCounts = []float64{0.001, 1}, []uint64{0, 0, 3}
				mx := 60.0
				p.Max = &mx
			}), ReasonImplausibleRTT},
		}, 0, 0},
		{"a real 12 s sample refuses what adds it, not the series", []step{
			// Cumulative: the sample stays in every later point. Judged
			// on what each point adds, the series refuses the point
			// that added it and the next one against the old baseline,
			// then rebases, and counts again.
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(1)
				p.ExplicitBounds, p.BucketCounts, p.Count = []float64{0.001, 0.002, 10}, []uint64{0, 3, 0, 0}, 3
			}), ReasonNone},
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(2)
				p.ExplicitBounds, p.BucketCounts, p.Count = []float64{0.001, 0.002, 10}, []uint64{0, 5, 0, 1}, 6
			}), ReasonImplausibleRTT},
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(3)
				p.ExplicitBounds, p.BucketCounts, p.Count = []float64{0.001, 0.002, 10}, []uint64{0, 7, 0, 1}, 8
			}), ReasonImplausibleRTT},
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(4)
				p.ExplicitBounds, p.BucketCounts, p.Count = []float64{0.001, 0.002, 10}, []uint64{0, 11, 0, 1}, 12
			}), ReasonNone},
		}, 0, 3 + 4},
		{"explicit histogram bucket beyond 10 s", []step{
			{explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) {
				p.StartTimeUnixNano, p.TimeUnixNano = base, at(1)
				p.ExplicitBounds, p.BucketCounts = []float64{0.001, 10}, []uint64{0, 0, 3}
			}), ReasonImplausibleRTT},
		}, 0, 0},
		{"a lying baseline is rebased, not obeyed for ever", []step{
			// A first point that is only a baseline (start before the
			// estimator) at 1e300: every true point after it reads as a
			// reset worth more than the NIC carries. The second in a row
			// rebases the series, and it counts again from there.
			{bytesAt(1e300, base-uint64(time.Hour), at(1), cumulative), ReasonNone},
			{bytesAt(1e15, base, at(2), cumulative), ReasonImplausibleRate},
			{bytesAt(1e15+100, base, at(3), cumulative), ReasonImplausibleRate},
			{bytesAt(1e15+300, base, at(4), cumulative), ReasonNone},
		}, 200, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			agg := NewAggregator(AggregatorConfig{Window: time.Hour, Now: func() time.Time { return now }})
			var want [NumReasons]int64
			for i, st := range tc.steps {
				now = t0.Add(time.Duration(i+1) * time.Second)
				// Each hostile point travels with a valid point of
				// another series, which must go in regardless.
				other := bytesSum(webAttrs(), float64(i+1), cumulative, true)
				other.GetSum().DataPoints[0].Attributes[3] = kv(AttrWorkloadName, "bystander")
				other.GetSum().DataPoints[0].StartTimeUnixNano = base - uint64(time.Hour)
				other.GetSum().DataPoints[0].TimeUnixNano = at(float64(i + 1))
				res, err := agg.Ingest(marshal(t, request(resA, st.m, other)))
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				wantRej := int64(0)
				if st.want != ReasonNone {
					wantRej = 1
					want[st.want]++
				}
				if res.Rejected != wantRej || res.Reasons[st.want] != wantRej || res.Accepted != 2-wantRej {
					t.Fatalf("step %d: %+v (%q), want %d rejected as %q and the rest accepted", i, res, res.Message(), wantRej, st.want)
				}
			}
			if got := agg.RejectedByReason(); got != want {
				t.Errorf("rejection counters %v, want %v", got, want)
			}
			// One hour window: the decay over these seconds is below 0.1%.
			within(t, "bytes", flowBytes(t, agg), tc.bytes, 0.001)
			if got := agg.Snapshot().Latency[uidA][uidB].Samples; math.Abs(got-tc.samples) > 0.001*max(tc.samples, 1) {
				t.Errorf("RTT samples %.3f, want %.3f", got, tc.samples)
			}
		})
	}
}
