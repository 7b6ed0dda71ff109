package otlpwire

import (
	"hash/maphash"
	"strconv"
	"testing"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/proto"
)

func strKV(k, v string) *commonpb.KeyValue {
	return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
}

// benchRequest is shaped like an agent's export: one resource, and per
// metric kind 100 series with the attributes flowplace's agents attach.
func benchRequest(tb testing.TB) []byte {
	attrs := func(i int) []*commonpb.KeyValue {
		return []*commonpb.KeyValue{
			strKV("flowplace.role", "client"), strKV("k8s.namespace.name", "shop"),
			strKV("flowplace.workload.kind", "Deployment"), strKV("flowplace.workload.name", "web-"+strconv.Itoa(i)),
			strKV("flowplace.peer.cluster.uid", "6b1f0c7e-6a5e-4a57-9d4b-0d6c2f1e9a10"),
			strKV("flowplace.peer.namespace", "shop"), strKV("flowplace.peer.workload.kind", "StatefulSet"),
			strKV("flowplace.peer.workload.name", "db"), strKV("network.io.direction", "transmit"),
		}
	}
	var sum []*metricpb.NumberDataPoint
	var hist []*metricpb.HistogramDataPoint
	var exp []*metricpb.ExponentialHistogramDataPoint
	for i := range 100 {
		sum = append(sum, &metricpb.NumberDataPoint{Attributes: attrs(i), StartTimeUnixNano: 1e18, TimeUnixNano: 1e18 + 1e10,
			Value: &metricpb.NumberDataPoint_AsInt{AsInt: int64(1000 * i)}})
		s := 0.5
		hist = append(hist, &metricpb.HistogramDataPoint{Attributes: attrs(i), StartTimeUnixNano: 1e18, TimeUnixNano: 1e18 + 1e10,
			Count: 300, Sum: &s, BucketCounts: make([]uint64, 16), ExplicitBounds: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000}})
		counts := make([]uint64, 40)
		for j := range counts {
			counts[j] = uint64(j * 3)
		}
		exp = append(exp, &metricpb.ExponentialHistogramDataPoint{Attributes: attrs(i), StartTimeUnixNano: 1e18, TimeUnixNano: 1e18 + 1e10,
			Count: 2340, Sum: &s, Scale: 3, Positive: &metricpb.ExponentialHistogramDataPoint_Buckets{Offset: -7, BucketCounts: counts}})
	}
	cum := metricpb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	req := &colmetricpb.ExportMetricsServiceRequest{ResourceMetrics: []*metricpb.ResourceMetrics{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{strKV("k8s.cluster.uid", "0d6c2f1e-6a5e-4a57-9d4b-6b1f0c7e9a10"), strKV("service.name", "flowplace-agent"), strKV("k8s.node.name", "node-1")}},
		ScopeMetrics: []*metricpb.ScopeMetrics{{
			Scope: &commonpb.InstrumentationScope{Name: "github.com/flowplace/flowplace/telemetry", Version: "0.1.0"},
			Metrics: []*metricpb.Metric{
				{Name: "flowplace.network.io", Unit: "By", Data: &metricpb.Metric_Sum{Sum: &metricpb.Sum{DataPoints: sum, AggregationTemporality: cum, IsMonotonic: true}}},
				{Name: "flowplace.network.rtt", Unit: "s", Data: &metricpb.Metric_Histogram{Histogram: &metricpb.Histogram{DataPoints: hist, AggregationTemporality: cum}}},
				{Name: "flowplace.network.rtt.exp", Unit: "s", Data: &metricpb.Metric_ExponentialHistogram{ExponentialHistogram: &metricpb.ExponentialHistogram{DataPoints: exp, AggregationTemporality: cum}}},
			},
		}},
	}}}
	b, err := proto.Marshal(req)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// hashSink does what estimator/aggregate does for known series: decode the
// resource's attributes, hash each point's raw attributes.
type hashSink struct {
	h   maphash.Hash
	sum uint64
}

func (s *hashSink) Resource(a Attrs) error {
	return a.Each(func(_, _ []byte, _ Value) bool { return true })
}
func (s *hashSink) Metric(*Metric) bool { return true }
func (s *hashSink) raw(a Attrs) error {
	return a.EachRaw(func(raw []byte) {
		s.h.Reset()
		s.h.Write(raw)
		s.sum += s.h.Sum64()
	})
}
func (s *hashSink) NumberPoint(_ *Metric, p *NumberPoint) error       { return s.raw(p.Attrs) }
func (s *hashSink) HistogramPoint(_ *Metric, p *HistogramPoint) error { return s.raw(p.Attrs) }
func (s *hashSink) ExpHistogramPoint(_ *Metric, p *ExpHistogramPoint) error {
	return s.raw(p.Attrs)
}

// BenchmarkDecode: the known-series path (points hashed by their raw
// attributes), the one every steady-state export takes.
func BenchmarkDecode(b *testing.B) {
	req := benchRequest(b)
	var d Decoder
	s := &hashSink{}
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(req, s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEach: the new-series path (every attribute decoded).
func BenchmarkDecodeEach(b *testing.B) {
	req := benchRequest(b)
	var d Decoder
	s := &nopSink{}
	b.SetBytes(int64(len(req)))
	b.ReportAllocs()
	for b.Loop() {
		if err := d.Decode(req, s); err != nil {
			b.Fatal(err)
		}
	}
}
