package aggregate

import (
	"errors"
	"math"
	"runtime"
	"strconv"
	"testing"
	"time"

	common "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	respb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flowplace/flowplace/estimator/otlpwire"
)

const (
	uidA = "0b9d4c52-0000-4000-8000-00000000000a"
	uidB = "0b9d4c52-0000-4000-8000-00000000000b"
)

// flowBytes is the decayed byte total of web's client flow.
func flowBytes(t *testing.T, a *Aggregator) float64 {
	t.Helper()
	b, _ := a.FlowTotals(RoleClient, WorkloadKey{"shop", "Deployment", "web"})
	return b
}

func within(t testing.TB, what string, got, want, rel float64) {
	t.Helper()
	if math.Abs(got-want) > rel*math.Abs(want) {
		t.Errorf("%s = %.6g, want %.6g ± %.0f%%", what, got, want, rel*100)
	}
}

// TestMalformed: bytes that are not an OTLP request are refused as a whole.
func TestMalformed(t *testing.T) {
	agg := NewAggregator(AggregatorConfig{})
	valid := marshal(t, request(resA, bytesSum(webAttrs(), 5, cumulative, true)))
	for name, b := range malformedInputs(valid) {
		if _, err := agg.Ingest(b); !errors.Is(err, otlpwire.ErrMalformed) {
			t.Errorf("%s: Ingest: %v, want ErrMalformed", name, err)
		}
	}
	if st := agg.Stats(); st.Flows != 0 {
		t.Fatalf("malformed requests left flows: %+v", st)
	}
}

// malformedInputs are requests broken at the wire level.
func malformedInputs(valid []byte) map[string][]byte {
	return map[string][]byte{
		"garbage":         []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
		"truncated":       valid[:len(valid)-3],
		"wrong wire type": {0x0d, 1, 2, 3, 4}, // field 1 as fixed32
		"length overflow": {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
	}
}

// Builders for hand-made OTLP requests.

func kv(k, v string) *common.KeyValue {
	return &common.KeyValue{Key: k, Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: v}}}
}

func webAttrs() []*common.KeyValue {
	return []*common.KeyValue{
		kv(AttrRole, "client"), kv(AttrNamespace, "shop"),
		kv(AttrWorkloadKind, "Deployment"), kv(AttrWorkloadName, "web"),
		kv(AttrServiceNamespace, "shop"), kv(AttrServiceName, "db"),
		kv(AttrPeerClusterUID, uidB), kv(AttrPeerNamespace, "shop"),
		kv(AttrPeerWorkloadKind, "StatefulSet"), kv(AttrPeerWorkloadName, "db"),
	}
}

// exportRequest is an ExportMetricsServiceRequest; it is encoded by hand
// (field 1, repeated ResourceMetrics) so that these tests need not import
// the collector package and its gRPC stubs (see names.go on weight).
type exportRequest struct{ rms []*metricspb.ResourceMetrics }

func request(resAttrs []*common.KeyValue, ms ...*metricspb.Metric) *exportRequest {
	return &exportRequest{rms: []*metricspb.ResourceMetrics{{
		Resource:     &respb.Resource{Attributes: resAttrs},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: ms}},
	}}}
}

var now0 = uint64(time.Now().UnixNano())

func bytesSum(attrs []*common.KeyValue, v float64, temporality metricspb.AggregationTemporality, monotonic bool) *metricspb.Metric {
	return &metricspb.Metric{Name: MetricBytes, Unit: "By", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
		AggregationTemporality: temporality, IsMonotonic: monotonic,
		DataPoints: []*metricspb.NumberDataPoint{{
			Attributes: append(attrs, kv(AttrDirection, "transmit")), StartTimeUnixNano: now0, TimeUnixNano: now0 + 1e9,
			Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v},
		}},
	}}}
}

func expRTT(attrs []*common.KeyValue, f func(*metricspb.ExponentialHistogramDataPoint)) *metricspb.Metric {
	dp := &metricspb.ExponentialHistogramDataPoint{
		Attributes: attrs, StartTimeUnixNano: now0, TimeUnixNano: now0 + 1e9,
		Count: 3, Scale: 4, Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -150, BucketCounts: []uint64{1, 2}},
	}
	if f != nil {
		f(dp)
	}
	return &metricspb.Metric{Name: MetricRTT, Unit: "s", Data: &metricspb.Metric_ExponentialHistogram{
		ExponentialHistogram: &metricspb.ExponentialHistogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, DataPoints: []*metricspb.ExponentialHistogramDataPoint{dp}},
	}}
}

func explicitRTT(attrs []*common.KeyValue, f func(*metricspb.HistogramDataPoint)) *metricspb.Metric {
	dp := &metricspb.HistogramDataPoint{
		Attributes: attrs, StartTimeUnixNano: now0, TimeUnixNano: now0 + 1e9,
		Count: 3, BucketCounts: []uint64{0, 3, 0}, ExplicitBounds: []float64{0.001, 0.002},
	}
	if f != nil {
		f(dp)
	}
	return &metricspb.Metric{Name: MetricRTT, Unit: "s", Data: &metricspb.Metric_Histogram{
		Histogram: &metricspb.Histogram{AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, DataPoints: []*metricspb.HistogramDataPoint{dp}},
	}}
}

var (
	cumulative = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	resA       = []*common.KeyValue{kv(AttrClusterUID, uidA)}
)

func marshal(t testing.TB, r *exportRequest) []byte {
	t.Helper()
	var out []byte
	for _, rm := range r.rms {
		b, err := proto.Marshal(rm)
		if err != nil {
			t.Fatal(err)
		}
		out = protowire.AppendTag(out, 1, protowire.BytesType)
		out = protowire.AppendBytes(out, b)
	}
	return out
}

// TestHostilePoints: each kind of invalid point is rejected with its
// reason, and none reaches an aggregate.
func TestHostilePoints(t *testing.T) {
	withAttr := func(k string, v *common.AnyValue) []*common.KeyValue {
		out := []*common.KeyValue{}
		for _, a := range webAttrs() {
			if a.Key != k {
				out = append(out, a)
			}
		}
		return append(out, &common.KeyValue{Key: k, Value: v})
	}
	str := func(s string) *common.AnyValue {
		return &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: s}}
	}
	cases := []struct {
		name string
		req  *exportRequest
		want Reason
	}{
		{"bytes as gauge", request(resA, &metricspb.Metric{Name: MetricBytes, Data: &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{
			DataPoints: []*metricspb.NumberDataPoint{{Attributes: webAttrs(), TimeUnixNano: now0, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 5}}}}}}), ReasonWrongType},
		{"non-monotonic sum", request(resA, bytesSum(webAttrs(), 5, cumulative, false)), ReasonNotMonotonic},
		{"unspecified temporality", request(resA, bytesSum(webAttrs(), 5, 0, true)), ReasonTemporality},
		{"NaN", request(resA, bytesSum(webAttrs(), math.NaN(), cumulative, true)), ReasonInvalidValue},
		{"+Inf", request(resA, bytesSum(webAttrs(), math.Inf(1), cumulative, true)), ReasonInvalidValue},
		{"negative", request(resA, bytesSum(webAttrs(), -5, cumulative, true)), ReasonInvalidValue},
		{"role of wrong type", request(resA, bytesSum(withAttr(AttrRole, &common.AnyValue{Value: &common.AnyValue_IntValue{IntValue: 1}}), 5, cumulative, true)), ReasonBadAttribute},
		{"unknown role", request(resA, bytesSum(withAttr(AttrRole, str("attacker")), 5, cumulative, true)), ReasonBadAttribute},
		{"invalid workload name", request(resA, bytesSum(withAttr(AttrWorkloadName, str("Web!!")), 5, cumulative, true)), ReasonBadAttribute},
		{"invalid kind", request(resA, bytesSum(withAttr(AttrWorkloadKind, str("Deploy ment")), 5, cumulative, true)), ReasonBadAttribute},
		{"overlong peer cluster", request(resA, bytesSum(withAttr(AttrPeerClusterUID, str(string(make([]byte, 200)))), 5, cumulative, true)), ReasonBadAttribute},
		{"no cluster uid", request(nil, bytesSum(webAttrs(), 5, cumulative, true)), ReasonMissingCluster},
		{"cluster uid not a string", request([]*common.KeyValue{{Key: AttrClusterUID, Value: &common.AnyValue{Value: &common.AnyValue_BoolValue{BoolValue: true}}}}, bytesSum(webAttrs(), 5, cumulative, true)), ReasonBadAttribute},
		{"histogram count mismatch", request(resA, explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) { p.Count = 7 })), ReasonInconsistentHistogram},
		{"histogram bounds unsorted", request(resA, explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) { p.ExplicitBounds = []float64{0.002, 0.001} })), ReasonInconsistentHistogram},
		{"histogram bounds NaN", request(resA, explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) { p.ExplicitBounds = []float64{0.001, math.NaN()} })), ReasonInconsistentHistogram},
		{"histogram bucket count mismatch", request(resA, explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) { p.BucketCounts = []uint64{3} })), ReasonInconsistentHistogram},
		{"histogram negative sum", request(resA, explicitRTT(webAttrs(), func(p *metricspb.HistogramDataPoint) { s := -1.0; p.Sum = &s })), ReasonInvalidValue},
		{"negative RTT buckets", request(resA, expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) {
			p.Negative = &metricspb.ExponentialHistogramDataPoint_Buckets{BucketCounts: []uint64{4}}
			p.Count += 4
		})), ReasonNegativeBuckets},
		{"absurd scale", request(resA, expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) { p.Scale = 50 })), ReasonInconsistentHistogram},
		{"absurd offset", request(resA, expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) { p.Positive.Offset = math.MaxInt32 })), ReasonInconsistentHistogram},
		{"exponential count mismatch", request(resA, expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) { p.Count = 1 })), ReasonInconsistentHistogram},
		{"RTT in hours", request(resA, func() *metricspb.Metric { m := expRTT(webAttrs(), nil); m.Unit = "h"; return m }()), ReasonBadUnit},
		{"RTT as a sum", request(resA, &metricspb.Metric{Name: MetricRTT, Unit: "s", Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
			AggregationTemporality: cumulative, IsMonotonic: true,
			DataPoints: []*metricspb.NumberDataPoint{{Attributes: webAttrs(), TimeUnixNano: now0, Value: &metricspb.NumberDataPoint_AsInt{AsInt: 5}}}}}}), ReasonWrongType},
		{"no timestamp", request(resA, func() *metricspb.Metric {
			m := bytesSum(webAttrs(), 5, cumulative, true)
			m.GetSum().DataPoints[0].TimeUnixNano = 0
			return m
		}()), ReasonNoTimestamp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			agg := NewAggregator(AggregatorConfig{})
			res, err := agg.Ingest(marshal(t, tc.req))
			if err != nil {
				t.Fatalf("Ingest: %v", err)
			}
			if res.Rejected != 1 || res.Reasons[tc.want] != 1 || res.Accepted != 0 {
				t.Fatalf("result %+v (%s), want one %s rejection", res, res.Message(), tc.want)
			}
			if st := agg.Stats(); st.Flows != 0 || st.Pairs != 0 || st.Series != 0 {
				t.Fatalf("an invalid point left state behind: %+v", st)
			}
			if snap := agg.Snapshot(); len(snap.Latency)+len(snap.Traffic) != 0 {
				t.Fatalf("invalid point visible in snapshot: %+v", snap)
			}
		})
	}
	t.Run("valid control", func(t *testing.T) {
		agg := NewAggregator(AggregatorConfig{})
		res, err := agg.Ingest(marshal(t, request(resA, bytesSum(webAttrs(), 5, cumulative, true), expRTT(webAttrs(), nil), explicitRTT(withAttr(AttrServiceName, str("db2")), nil))))
		if err != nil || res.Accepted != 3 || res.Rejected != 0 {
			t.Fatalf("valid request: %+v %v (%s)", res, err, res.Message())
		}
	})
	t.Run("duplicate and out of order", func(t *testing.T) {
		agg := NewAggregator(AggregatorConfig{})
		b := marshal(t, request(resA, bytesSum(webAttrs(), 5, cumulative, true)))
		if res, _ := agg.Ingest(b); res.Accepted != 1 {
			t.Fatalf("first: %+v", res)
		}
		if res, _ := agg.Ingest(b); res.Reasons[ReasonOutOfOrder] != 1 {
			t.Fatalf("replayed point: %+v, want out_of_order", res)
		}
	})
	t.Run("counter reset without new start time", func(t *testing.T) {
		agg := NewAggregator(AggregatorConfig{Window: time.Hour})
		base := uint64(time.Now().UnixNano()) // after the aggregator started
		send := func(v float64, at uint64) {
			m := bytesSum(webAttrs(), v, cumulative, true)
			m.GetSum().DataPoints[0].StartTimeUnixNano = base // one run: counted from its start
			m.GetSum().DataPoints[0].TimeUnixNano = at
			if res, err := agg.Ingest(marshal(t, request(resA, m))); err != nil || res.Accepted != 1 {
				t.Fatalf("ingest %v: %+v %v", v, res, err)
			}
		}
		send(100, base+1e9)
		send(150, base+2e9)
		send(30, base+3e9) // reset: 30 new since
		within(t, "bytes", flowBytes(t, agg), 180, 0.001)
	})
}

// TestCardinalityBounded: a flood of distinct series is cut at MaxSeries,
// the excess counted, and memory stays flat.
func TestCardinalityBounded(t *testing.T) {
	const limit = 1000
	agg := NewAggregator(AggregatorConfig{MaxSeries: limit, MaxFlows: limit})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var accepted, rejected int64
	for r := range 50 {
		var ms []*metricspb.Metric
		for i := range 2000 {
			attrs := webAttrs()
			attrs[3] = kv(AttrWorkloadName, "w"+strconv.Itoa(r*2000+i))
			ms = append(ms, bytesSum(attrs, 5, cumulative, true))
		}
		res, err := agg.Ingest(marshal(t, request(resA, ms...)))
		if err != nil {
			t.Fatal(err)
		}
		accepted += res.Accepted
		rejected += res.Reasons[ReasonSeriesLimit]
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if accepted != limit || rejected != 100_000-limit {
		t.Fatalf("accepted %d, series_limit %d; want %d and %d", accepted, rejected, limit, 100_000-limit)
	}
	if st := agg.Stats(); st.Series != limit || st.Flows != limit {
		t.Fatalf("stats %+v", st)
	}
	// 100,000 series offered; state for 1,000 kept. A few MB at most.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 8<<20 {
		t.Fatalf("heap grew %d bytes for %d series", grew, limit)
	}
}

// TestExpire: series not reported for SeriesTTL are forgotten, and their
// aggregates once decayed for ten windows.
func TestExpire(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	agg := NewAggregator(AggregatorConfig{Window: time.Minute, SeriesTTL: 5 * time.Minute, Now: clock})
	base := uint64(now.UnixNano())
	m := bytesSum(webAttrs(), 100, cumulative, true)
	m.GetSum().DataPoints[0].StartTimeUnixNano, m.GetSum().DataPoints[0].TimeUnixNano = base, base+1e9
	rtt := expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) {
		p.StartTimeUnixNano, p.TimeUnixNano = base, base+1e9 // counted from its start
	})
	if res, err := agg.Ingest(marshal(t, request(resA, m, rtt))); err != nil || res.Accepted != 2 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	if s, f := agg.Expire(); s+f != 0 {
		t.Fatalf("expired fresh state: %d series, %d flows", s, f)
	}
	now = now.Add(6 * time.Minute)
	if s, f := agg.Expire(); s != 2 || f != 0 {
		t.Fatalf("after the TTL: expired %d series, %d flows; want 2 and 0 (flows outlive their series while they decay)", s, f)
	}
	if st := agg.Stats(); st.Series != 0 || st.Flows != 1 || st.Pairs != 1 {
		t.Fatalf("stats after series expiry: %+v", st)
	}
	now = now.Add(10 * time.Minute)
	if _, f := agg.Expire(); f != 1 {
		t.Fatalf("after ten windows: expired %d flows, want 1", f)
	}
	if st := agg.Stats(); st.Flows != 0 || st.Pairs != 0 {
		t.Fatalf("stats at the end: %+v", st)
	}
	// Decay: what is left of 100 bytes after 16 minutes with τ = 1 min
	// is below anything a snapshot shows.
	if snap := agg.Snapshot(); len(snap.Traffic)+len(snap.Latency) != 0 {
		t.Fatalf("decayed data still in the snapshot: %+v", snap)
	}
}

// TestPeerClusterByName: a series that names its peer cluster but not its
// UID (a Karmada-dispatched endpoint) is attributed through
// PeerClusterUID, and stays unattributed without it or for an unknown name.
func TestPeerClusterByName(t *testing.T) {
	byName := func() []*common.KeyValue {
		var out []*common.KeyValue
		for _, a := range webAttrs() {
			if a.Key != AttrPeerClusterUID {
				out = append(out, a)
			}
		}
		return append(out, kv(AttrPeerClusterName, "member-b"))
	}
	for _, c := range []struct {
		name    string
		resolve func(string) (string, bool)
		want    bool
	}{
		{"resolved", func(n string) (string, bool) { return uidB, n == "member-b" }, true},
		{"unknown name", func(string) (string, bool) { return "", false }, false},
		{"no resolver", nil, false},
	} {
		agg := NewAggregator(AggregatorConfig{PeerClusterUID: c.resolve})
		if _, err := agg.Ingest(marshal(t, request(resA, bytesSum(byName(), 100, cumulative, true), expRTT(byName(), nil)))); err != nil {
			t.Fatal(err)
		}
		st := agg.Stats()
		if got := st.Flows == 1 && st.Pairs == 1 && st.Unattributed == 0; got != c.want {
			t.Errorf("%s: stats %+v: attributed to the peer cluster %v, want %v", c.name, st, got, c.want)
		}
		if !c.want && st.Unattributed != 2 {
			t.Errorf("%s: stats %+v: want both series unattributed", c.name, st)
		}
	}
}
