package otlpwire

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The comparable form of what a request holds for a receiver: resources
// with their attributes, and the metrics (scopes flattened away, as the
// Sink sees them) with their points. Floats are kept as bits so that NaN
// compares equal to itself and -0 differs from 0.

type kvOut struct {
	Key    string
	Type   ValueType
	Str    string
	Int    int64
	Double uint64
	Bool   bool
}

type pointOut struct {
	Attrs       []kvOut
	Start, Time uint64
	Flags       uint32
	// number points
	IsInt, HasVal bool
	Int           int64
	Double        uint64
	// histograms
	Count                  uint64
	HasSum, HasMin, HasMax bool
	Sum, Min, Max          uint64
	Counts, Bounds         []uint64
	// exponential histograms
	Scale          int32
	ZeroCount      uint64
	ZeroThreshold  uint64
	PositiveOffset int32
	Positive       []uint64
	NegativeCount  uint64
}

type metricOut struct {
	Name, Unit  string
	Kind        Kind
	Temporality int32
	Monotonic   bool
	Points      []pointOut
}

type resourceOut struct {
	Attrs   []kvOut
	Metrics []metricOut
}

func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}

func valueOut(key []byte, v Value) kvOut {
	o := kvOut{Key: string(key), Type: v.Type}
	switch v.Type {
	case ValueString:
		o.Str = string(v.Str)
	case ValueInt:
		o.Int = v.Int
	case ValueDouble:
		o.Double = math.Float64bits(v.Double)
	case ValueBool:
		o.Bool = v.Bool
	}
	return o
}

// collectSink records what the decoder hands out, checking on the way
// that the Attrs views agree with each other (Each, EachRaw, Empty).
type collectSink struct {
	want bool // what Metric returns
	out  []resourceOut
}

func (s *collectSink) attrs(a Attrs) ([]kvOut, error) {
	var out []kvOut
	var raws [][]byte
	if err := a.Each(func(key, raw []byte, v Value) bool {
		out = append(out, valueOut(key, v))
		raws = append(raws, raw)
		return true
	}); err != nil {
		return nil, fmt.Errorf("Each on a request the decoder accepted: %w", err)
	}
	var raws2 [][]byte
	if err := a.EachRaw(func(raw []byte) { raws2 = append(raws2, raw) }); err != nil {
		return nil, fmt.Errorf("EachRaw on a request the decoder accepted: %w", err)
	}
	if !reflect.DeepEqual(raws, raws2) {
		return nil, fmt.Errorf("EachRaw yields %q, Each %q", raws2, raws)
	}
	if a.Empty() && len(out) > 0 {
		return nil, fmt.Errorf("Empty attrs with %d attributes", len(out))
	}
	return out, nil
}

func (s *collectSink) Resource(a Attrs) error {
	kvs, err := s.attrs(a)
	if err != nil {
		return err
	}
	s.out = append(s.out, resourceOut{Attrs: kvs})
	return nil
}

func (s *collectSink) Metric(m *Metric) bool {
	r := &s.out[len(s.out)-1]
	r.Metrics = append(r.Metrics, metricOut{Name: string(m.Name), Unit: string(m.Unit), Kind: m.Kind, Temporality: m.Temporality, Monotonic: m.Monotonic})
	return s.want
}

func (s *collectSink) point(m *Metric, pc *PointCommon, p pointOut) error {
	r := &s.out[len(s.out)-1]
	if !s.want || len(r.Metrics) == 0 {
		return errors.New("point delivered for a metric the sink declined")
	}
	mo := &r.Metrics[len(r.Metrics)-1]
	if string(m.Name) != mo.Name || m.Kind != mo.Kind || m.Temporality != mo.Temporality || m.Monotonic != mo.Monotonic {
		return fmt.Errorf("point's metric %+v differs from the header delivered before", m)
	}
	kvs, err := s.attrs(pc.Attrs)
	if err != nil {
		return err
	}
	p.Attrs, p.Start, p.Time, p.Flags = kvs, pc.StartTime, pc.Time, pc.Flags
	mo.Points = append(mo.Points, p)
	return nil
}

func (s *collectSink) NumberPoint(m *Metric, p *NumberPoint) error {
	o := pointOut{IsInt: p.IsInt, HasVal: p.HasVal}
	switch {
	case p.HasVal && p.IsInt:
		o.Int = p.Int
	case p.HasVal:
		o.Double = math.Float64bits(p.Double)
	}
	return s.point(m, &p.PointCommon, o)
}

func floatBits(fs []float64) []uint64 {
	var out []uint64
	for _, f := range fs {
		out = append(out, math.Float64bits(f))
	}
	return out
}

func optBits(has bool, f float64) uint64 {
	if !has {
		return 0
	}
	return math.Float64bits(f)
}

func (s *collectSink) HistogramPoint(m *Metric, p *HistogramPoint) error {
	return s.point(m, &p.PointCommon, pointOut{
		Count: p.Count, HasSum: p.HasSum, HasMin: p.HasMin, HasMax: p.HasMax,
		Sum: optBits(p.HasSum, p.Sum), Min: optBits(p.HasMin, p.Min), Max: optBits(p.HasMax, p.Max),
		Counts: nilIfEmpty(append([]uint64(nil), p.Counts...)), Bounds: floatBits(p.Bounds),
	})
}

func (s *collectSink) ExpHistogramPoint(m *Metric, p *ExpHistogramPoint) error {
	return s.point(m, &p.PointCommon, pointOut{
		Count: p.Count, HasSum: p.HasSum, HasMin: p.HasMin, HasMax: p.HasMax,
		Sum: optBits(p.HasSum, p.Sum), Min: optBits(p.HasMin, p.Min), Max: optBits(p.HasMax, p.Max),
		Scale: p.Scale, ZeroCount: p.ZeroCount, ZeroThreshold: math.Float64bits(p.ZeroThreshold),
		PositiveOffset: p.PositiveOffset, Positive: nilIfEmpty(append([]uint64(nil), p.Positive...)),
		NegativeCount: p.NegativeCount,
	})
}

// decodeOut runs the decoder; want is what the sink's Metric returns.
func decodeOut(b []byte, want bool) ([]resourceOut, error) {
	var d Decoder
	s := &collectSink{want: want}
	err := d.Decode(b, s)
	return s.out, err
}

// The reference: proto.Unmarshal into the generated types, then the same
// extraction walked over the structs.

func refKVs(kvs []*commonpb.KeyValue) []kvOut {
	var out []kvOut
	for _, kv := range kvs {
		o := kvOut{Key: kv.GetKey()}
		switch v := kv.GetValue().GetValue().(type) {
		case nil:
			o.Type = ValueEmpty
		case *commonpb.AnyValue_StringValue:
			o.Type, o.Str = ValueString, v.StringValue
		case *commonpb.AnyValue_BoolValue:
			o.Type, o.Bool = ValueBool, v.BoolValue
		case *commonpb.AnyValue_IntValue:
			o.Type, o.Int = ValueInt, v.IntValue
		case *commonpb.AnyValue_DoubleValue:
			o.Type, o.Double = ValueDouble, math.Float64bits(v.DoubleValue)
		default: // array, kvlist, bytes, string_value_strindex
			o.Type = ValueOther
		}
		out = append(out, o)
	}
	return out
}

func refOpt(f *float64) (bool, uint64) {
	if f == nil {
		return false, 0
	}
	return true, math.Float64bits(*f)
}

// refExtract returns what the decoder must produce from req, and whether
// the decoder must refuse it for its documented bucket bound.
func refExtract(req *colmetricpb.ExportMetricsServiceRequest) (out []resourceOut, overBound bool) {
	for _, rm := range req.GetResourceMetrics() {
		r := resourceOut{Attrs: refKVs(rm.GetResource().GetAttributes())}
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				mo := metricOut{Name: m.GetName(), Unit: m.GetUnit()}
				num := func(dps []*metricpb.NumberDataPoint) {
					for _, dp := range dps {
						p := pointOut{Attrs: refKVs(dp.GetAttributes()), Start: dp.GetStartTimeUnixNano(), Time: dp.GetTimeUnixNano(), Flags: dp.GetFlags()}
						switch v := dp.GetValue().(type) {
						case *metricpb.NumberDataPoint_AsInt:
							p.IsInt, p.HasVal, p.Int = true, true, v.AsInt
						case *metricpb.NumberDataPoint_AsDouble:
							p.HasVal, p.Double = true, math.Float64bits(v.AsDouble)
						}
						mo.Points = append(mo.Points, p)
					}
				}
				switch d := m.GetData().(type) {
				case nil:
					mo.Kind = KindUnknown
				case *metricpb.Metric_Gauge:
					mo.Kind = KindGauge
					num(d.Gauge.GetDataPoints())
				case *metricpb.Metric_Sum:
					mo.Kind, mo.Temporality, mo.Monotonic = KindSum, int32(d.Sum.GetAggregationTemporality()), d.Sum.GetIsMonotonic()
					num(d.Sum.GetDataPoints())
				case *metricpb.Metric_Histogram:
					mo.Kind, mo.Temporality = KindHistogram, int32(d.Histogram.GetAggregationTemporality())
					for _, dp := range d.Histogram.GetDataPoints() {
						p := pointOut{Attrs: refKVs(dp.GetAttributes()), Start: dp.GetStartTimeUnixNano(), Time: dp.GetTimeUnixNano(), Flags: dp.GetFlags(),
							Count: dp.GetCount(), Counts: nilIfEmpty(dp.GetBucketCounts()), Bounds: floatBits(dp.GetExplicitBounds())}
						p.HasSum, p.Sum = refOpt(dp.Sum)
						p.HasMin, p.Min = refOpt(dp.Min)
						p.HasMax, p.Max = refOpt(dp.Max)
						if len(dp.GetBucketCounts()) > maxBuckets || len(dp.GetExplicitBounds()) > maxBuckets {
							overBound = true
						}
						mo.Points = append(mo.Points, p)
					}
				case *metricpb.Metric_ExponentialHistogram:
					mo.Kind, mo.Temporality = KindExponentialHistogram, int32(d.ExponentialHistogram.GetAggregationTemporality())
					for _, dp := range d.ExponentialHistogram.GetDataPoints() {
						p := pointOut{Attrs: refKVs(dp.GetAttributes()), Start: dp.GetStartTimeUnixNano(), Time: dp.GetTimeUnixNano(), Flags: dp.GetFlags(),
							Count: dp.GetCount(), Scale: dp.GetScale(), ZeroCount: dp.GetZeroCount(), ZeroThreshold: math.Float64bits(dp.GetZeroThreshold()),
							PositiveOffset: dp.GetPositive().GetOffset(), Positive: nilIfEmpty(dp.GetPositive().GetBucketCounts())}
						p.HasSum, p.Sum = refOpt(dp.Sum)
						p.HasMin, p.Min = refOpt(dp.Min)
						p.HasMax, p.Max = refOpt(dp.Max)
						for _, c := range dp.GetNegative().GetBucketCounts() {
							p.NegativeCount += c
						}
						if len(dp.GetPositive().GetBucketCounts()) > maxBuckets || len(dp.GetNegative().GetBucketCounts()) > maxBuckets {
							overBound = true
						}
						mo.Points = append(mo.Points, p)
					}
				case *metricpb.Metric_Summary:
					mo.Kind = KindSummary
				}
				r.Metrics = append(r.Metrics, mo)
			}
		}
		out = append(out, r)
	}
	return out, overBound
}

// walked are the messages the decoder walks itself, where a known field
// with the wrong wire type is refused (proto keeps it as unknown).
var walked = map[protoreflect.FullName]bool{
	"opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest": true,
	"opentelemetry.proto.metrics.v1.ResourceMetrics":                       true,
	"opentelemetry.proto.metrics.v1.ScopeMetrics":                          true,
	"opentelemetry.proto.metrics.v1.Metric":                                true,
	"opentelemetry.proto.metrics.v1.Gauge":                                 true,
	"opentelemetry.proto.metrics.v1.Sum":                                   true,
	"opentelemetry.proto.metrics.v1.Histogram":                             true,
	"opentelemetry.proto.metrics.v1.ExponentialHistogram":                  true,
	"opentelemetry.proto.metrics.v1.NumberDataPoint":                       true,
	"opentelemetry.proto.metrics.v1.HistogramDataPoint":                    true,
	"opentelemetry.proto.metrics.v1.ExponentialHistogramDataPoint":         true,
	"opentelemetry.proto.metrics.v1.ExponentialHistogramDataPoint.Buckets": true,
}

// refWrongType reports whether proto kept, in a walked message, an
// unknown field whose number is a known field's: one with the wrong wire
// type.
func refWrongType(m protoreflect.Message) bool {
	if walked[m.Descriptor().FullName()] {
		u := m.GetUnknown()
		for len(u) > 0 {
			num, typ, n := protowire.ConsumeTag(u)
			if n < 0 {
				panic("proto kept malformed unknown fields")
			}
			if m.Descriptor().Fields().ByNumber(num) != nil {
				return true
			}
			u = u[n:]
			u = u[protowire.ConsumeFieldValue(num, typ, u):]
		}
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil:
		case fd.IsList():
			for i := range v.List().Len() {
				if found = refWrongType(v.List().Get(i).Message()); found {
					break
				}
			}
		default:
			found = refWrongType(v.Message())
		}
		return !found
	})
	return found
}

// outcome of one input through both decoders.
type outcome struct {
	ref, got       []resourceOut
	refErr, gotErr error
	// proto accepted, but the decoder must refuse, as documented:
	overBound bool // past the bucket bound
	wrongType bool // a walked field with the wrong wire type
}

func run(b []byte) outcome {
	var o outcome
	var req colmetricpb.ExportMetricsServiceRequest
	o.refErr = proto.Unmarshal(b, &req)
	if o.refErr == nil {
		o.ref, o.overBound = refExtract(&req)
		o.wrongType = refWrongType(req.ProtoReflect())
	}
	o.got, o.gotErr = decodeOut(b, true)
	return o
}

// differential returns why the decoder and the reference disagree on b,
// or nil when they agree.
func differential(b []byte) error {
	o := run(b)
	switch {
	case o.refErr != nil && o.gotErr == nil:
		return fmt.Errorf("proto rejects (%v), the decoder accepts", o.refErr)
	case o.refErr != nil:
		// Both reject; the decoder's error must still be of its kind.
		if !errors.Is(o.gotErr, ErrMalformed) {
			return fmt.Errorf("decoder error not ErrMalformed: %v", o.gotErr)
		}
	case o.overBound || o.wrongType:
		if !errors.Is(o.gotErr, ErrMalformed) ||
			!(o.overBound && errors.Is(o.gotErr, ErrTooManyBuckets)) && !(o.wrongType && errors.Is(o.gotErr, ErrWrongWireType)) {
			return fmt.Errorf("documented refusal (bucket bound %v, wrong wire type %v) expected, decoder: %v", o.overBound, o.wrongType, o.gotErr)
		}
	case o.gotErr != nil:
		return fmt.Errorf("proto accepts, the decoder rejects: %v", o.gotErr)
	case !reflect.DeepEqual(o.got, o.ref):
		return fmt.Errorf("outputs differ:\ndecoder:   %+v\nreference: %+v", o.got, o.ref)
	}
	// A sink that declines every metric gets the same headers, no points,
	// and the same verdict: skipped points are checked all the same.
	skipped, err := decodeOut(b, false)
	if (err == nil) != (o.gotErr == nil) {
		return fmt.Errorf("declining sink: error %v, accepting sink: %v", err, o.gotErr)
	}
	if err == nil {
		want := stripPoints(o.got)
		if !reflect.DeepEqual(skipped, want) {
			return fmt.Errorf("declining sink got %+v, want %+v", skipped, want)
		}
	}
	return nil
}

func stripPoints(rs []resourceOut) []resourceOut {
	var out []resourceOut
	for _, r := range rs {
		c := resourceOut{Attrs: r.Attrs}
		for _, m := range r.Metrics {
			m.Points = nil
			c.Metrics = append(c.Metrics, m)
		}
		out = append(out, c)
	}
	return out
}

// readCorpus reads the []byte inputs of a "go test fuzz v1" corpus folder.
func readCorpus(tb testing.TB, dir string) map[string][]byte {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatalf("corpus %s: %v", dir, err)
	}
	out := map[string][]byte{}
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		if len(lines) != 2 || lines[0] != "go test fuzz v1" || !strings.HasPrefix(lines[1], "[]byte(") {
			continue // not a single-[]byte corpus entry
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			tb.Fatalf("corpus file %s: %v", e.Name(), err)
		}
		out[filepath.Base(dir)+"/"+e.Name()] = []byte(s)
	}
	return out
}

// seeds are every input the differential starts from: the decoder's and
// the aggregator's corpora, requests exported by the real OTel SDK, and
// the hand-made legal and illegal encodings of TestDifferentialCases.
func seeds(tb testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for _, dir := range []string{
		filepath.Join("testdata", "fuzz", "FuzzDecode"),
		filepath.Join("..", "aggregate", "testdata", "fuzz", "FuzzIngest"),
	} {
		for k, v := range readCorpus(tb, dir) {
			out[k] = v
		}
	}
	for k, v := range sdkRequests(tb) {
		out["sdk/"+k] = v
	}
	for _, c := range cases() {
		out["case/"+c.name] = c.req
	}
	return out
}

const maxFuzzSeed = 8 << 10

// FuzzDifferential: for every input the decoder and proto.Unmarshal plus
// the reference extraction yield the same resources, metrics and points,
// or both reject; the differences allowed are the two documented
// refusals (ErrTooManyBuckets, ErrWrongWireType).
func FuzzDifferential(f *testing.F) {
	for _, b := range seeds(f) {
		// Large seeds (deep nesting, bucket bounds) stay in the table
		// test: the fuzzer spends minutes minimizing inputs that size.
		if len(b) <= maxFuzzSeed {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := differential(b); err != nil {
			t.Fatalf("input %q: %v", b, err)
		}
	})
}

// TestSeedsDecode guards the SDK seeds: a differential over empty or
// one-sided outputs would prove little, so they must hold every kind the
// SDK makes, both temporalities, negative buckets and exemplars.
func TestSeedsDecode(t *testing.T) {
	kinds := map[Kind]int{}
	temporalities := map[int32]bool{}
	negative := false
	for name, b := range sdkRequests(t) {
		o := run(b)
		if o.refErr != nil || o.gotErr != nil {
			t.Fatalf("%s: proto %v, decoder %v", name, o.refErr, o.gotErr)
		}
		if err := differential(b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, r := range o.got {
			for _, m := range r.Metrics {
				kinds[m.Kind] += len(m.Points)
				temporalities[m.Temporality] = true
				for _, p := range m.Points {
					negative = negative || p.NegativeCount > 0
				}
			}
		}
		if !bytes.Contains(b, []byte("connection.id")) {
			t.Errorf("%s: no exemplar's filtered attribute", name)
		}
	}
	for _, k := range []Kind{KindGauge, KindSum, KindHistogram, KindExponentialHistogram} {
		if kinds[k] < 6 {
			t.Errorf("SDK seeds hold %d %v points, want at least 6", kinds[k], k)
		}
	}
	if !temporalities[TemporalityDelta] || !temporalities[TemporalityCumulative] || !negative {
		t.Errorf("SDK seeds: temporalities %v, negative buckets %v", temporalities, negative)
	}
}
