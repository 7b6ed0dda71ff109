package otlpwire

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// A small hand encoder: each helper returns one encoded field, cat joins
// fields into a message. It writes what generated code never does
// (repeats, unpacked or split packed runs, over-long varints, groups).

func cat(fs ...[]byte) []byte { return bytes.Join(fs, nil) }

func tag(num protowire.Number, typ protowire.Type) []byte {
	return protowire.AppendTag(nil, num, typ)
}

func vint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(tag(num, protowire.VarintType), v)
}

func f64(num protowire.Number, v uint64) []byte {
	return protowire.AppendFixed64(tag(num, protowire.Fixed64Type), v)
}

func dbl(num protowire.Number, v float64) []byte { return f64(num, math.Float64bits(v)) }

func f32(num protowire.Number, v uint32) []byte {
	return protowire.AppendFixed32(tag(num, protowire.Fixed32Type), v)
}

// lenf is a length-delimited field holding the concatenated fields.
func lenf(num protowire.Number, fs ...[]byte) []byte {
	return protowire.AppendBytes(tag(num, protowire.BytesType), cat(fs...))
}

func str(num protowire.Number, s string) []byte { return lenf(num, []byte(s)) }

func group(num protowire.Number, fs ...[]byte) []byte {
	return cat(tag(num, protowire.StartGroupType), cat(fs...), tag(num, protowire.EndGroupType))
}

// longVarint encodes v in exactly width bytes (non-minimal when width is
// more than needed); width is at most 10.
func longVarint(v uint64, width int) []byte {
	b := make([]byte, width)
	for i := range width - 1 {
		b[i] = byte(v&0x7f) | 0x80
		v >>= 7
	}
	b[width-1] = byte(v)
	return b
}

func longTag(num protowire.Number, typ protowire.Type, width int) []byte {
	return longVarint(protowire.EncodeTag(num, typ), width)
}

func packedF64(num protowire.Number, vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendFixed64(b, v)
	}
	return lenf(num, b)
}

func packedVarint(num protowire.Number, vs ...uint64) []byte {
	var b []byte
	for _, v := range vs {
		b = protowire.AppendVarint(b, v)
	}
	return lenf(num, b)
}

// Field numbers of the OTLP messages the cases use.
const (
	reqRM          = 1
	rmResource     = 1
	rmScope        = 2
	rmSchema       = 3
	resAttrs       = 1
	resEntityRefs  = 3
	smScope        = 1
	smMetric       = 2
	smSchema       = 3
	scName         = 1
	scVersion      = 2
	scAttrs        = 3
	mName          = 1
	mDesc          = 2
	mUnit          = 3
	mGauge         = 5
	mSum           = 7
	mHist          = 9
	mExp           = 10
	mSummary       = 11
	mMetadata      = 12
	dPoints        = 1
	dTemporality   = 2
	dMonotonic     = 3
	npAttrs        = 7
	npStart        = 2
	npTime         = 3
	npDouble       = 4
	npExemplar     = 5
	npInt          = 6
	npFlags        = 8
	hpAttrs        = 9
	hpCount        = 4
	hpSum          = 5
	hpCounts       = 6
	hpBounds       = 7
	hpExemplar     = 8
	hpFlags        = 10
	hpMin          = 11
	hpMax          = 12
	epAttrs        = 1
	epScale        = 6
	epZeroCount    = 7
	epPositive     = 8
	epNegative     = 9
	epExemplar     = 11
	epMin          = 12
	epMax          = 13
	epZeroThresh   = 14
	bkOffset       = 1
	bkCounts       = 2
	kvKey          = 1
	kvValue        = 2
	kvKeyStrindex  = 3
	avString       = 1
	avBool         = 2
	avInt          = 3
	avDouble       = 4
	avArray        = 5
	avKVList       = 6
	avBytes        = 7
	avStrindex     = 8
	exFilteredAttr = 7
	exTime         = 2
	exDouble       = 3
	exSpanID       = 4
	sdpQuantiles   = 6
	cumulative     = 2
	delta          = 1
)

// kv is a KeyValue with a string value.
func kv(k, v string) []byte { return cat(str(kvKey, k), lenf(kvValue, str(avString, v))) }

var clusterAttr = lenf(resAttrs, kv("k8s.cluster.uid", "c1"))

// req wraps a ResourceMetrics' content in a request.
func req(rm ...[]byte) []byte { return lenf(reqRM, rm...) }

// withMetrics is a request of one resource and one scope holding the
// given metrics' contents.
func withMetrics(ms ...[]byte) []byte {
	var fs [][]byte
	for _, m := range ms {
		fs = append(fs, lenf(smMetric, m))
	}
	return req(lenf(rmResource, clusterAttr), lenf(rmScope, fs...))
}

func gauge(points ...[]byte) []byte {
	var fs [][]byte
	for _, p := range points {
		fs = append(fs, lenf(dPoints, p))
	}
	return cat(str(mName, "g"), lenf(mGauge, fs...))
}

func numPoint(v int64) []byte {
	return cat(lenf(npAttrs, kv("a", "b")), f64(npStart, 10), f64(npTime, 20), f64(npInt, uint64(v)))
}

// expIn is a request with one exponential histogram point.
func expIn(point ...[]byte) []byte {
	return withMetrics(cat(str(mName, "e"), lenf(mExp, lenf(dPoints, point...), vint(dTemporality, cumulative))))
}

// histIn is a request with one explicit histogram point.
func histIn(point ...[]byte) []byte {
	return withMetrics(cat(str(mName, "h"), lenf(mHist, lenf(dPoints, point...), vint(dTemporality, delta))))
}

// nested is an AnyValue's content nested so that, inside a resource
// attribute, its innermost message sits at the given depth (request = 1).
func nested(depth int) []byte {
	// resource attribute value: request 1, rm 2, resource 3, KV 4,
	// AnyValue 5; an array level adds 2, a kvlist level 3.
	extra := depth - 5
	var av []byte // innermost AnyValue
	if extra%2 == 1 {
		av = lenf(avKVList, lenf(1, lenf(kvValue))) // kvlist, KV, AnyValue: 3
		extra -= 3
	}
	for range extra / 2 {
		av = lenf(avArray, lenf(1, av))
	}
	return av
}

func repeat(f func(i int) []byte, n int) []byte {
	var b []byte
	for i := range n {
		b = append(b, f(i)...)
	}
	return b
}

// unknowns are unknown fields of every wire type, a group holding fields
// and a nested group among them.
var unknowns = cat(vint(1000, 7), f64(1001, 8), f32(1002, 9), str(1003, "\xff not utf-8 but unknown"),
	group(1004, vint(1, 1), str(2, "x"), group(3, f32(4, 4))), vint(protowire.MaxValidNumber, 1))

type verdict int

const (
	agree     verdict = iota // both accept with equal output
	bothFail                 // both reject
	overBound                // proto accepts, the decoder's bucket bound rejects
	wrongType                // proto accepts, the decoder refuses the wrong wire type
)

type differentialCase struct {
	name    string
	req     []byte
	verdict verdict
	// check asserts on the decoder's output, so that each case is known to
	// reach what it names (equal outputs alone could both be empty).
	check func(t *testing.T, out []resourceOut)
}

func onlyPoint(t *testing.T, out []resourceOut) pointOut {
	t.Helper()
	if len(out) != 1 || len(out[0].Metrics) != 1 || len(out[0].Metrics[0].Points) != 1 {
		t.Fatalf("want one resource, metric and point, got %+v", out)
	}
	return out[0].Metrics[0].Points[0]
}

func onlyMetric(t *testing.T, out []resourceOut) metricOut {
	t.Helper()
	if len(out) != 1 || len(out[0].Metrics) != 1 {
		t.Fatalf("want one resource and metric, got %+v", out)
	}
	return out[0].Metrics[0]
}

func str1(s string) kvOut { return kvOut{Key: "k", Type: ValueString, Str: s} }

func cases() []differentialCase {
	allKinds := withMetrics(
		gauge(cat(lenf(npAttrs, kv("a", "b")), f64(npTime, 5), dbl(npDouble, 1.5))),
		cat(str(mName, "s"), str(mUnit, "By"), lenf(mSum, lenf(dPoints, numPoint(7)), vint(dTemporality, cumulative), vint(dMonotonic, 1))),
		cat(str(mName, "h"), lenf(mHist, lenf(dPoints, f64(hpCount, 3), dbl(hpSum, 2), packedF64(hpCounts, 1, 2), packedF64(hpBounds, math.Float64bits(1))), vint(dTemporality, delta))),
		cat(str(mName, "e"), lenf(mExp, lenf(dPoints, f64(hpCount, 3), vint(epScale, protowire.EncodeZigZag(-2)), lenf(epPositive, vint(bkOffset, protowire.EncodeZigZag(-1)), packedVarint(bkCounts, 1, 2))), vint(dTemporality, cumulative))),
		cat(str(mName, "q"), lenf(mSummary, lenf(dPoints, f64(4, 1), lenf(sdpQuantiles, dbl(1, 0.5), dbl(2, 1))))),
		cat(str(mName, "none")),
	)
	return []differentialCase{
		{name: "all-kinds", req: allKinds, check: func(t *testing.T, out []resourceOut) {
			if len(out) != 1 || len(out[0].Metrics) != 6 {
				t.Fatalf("got %+v", out)
			}
			kinds := []Kind{KindGauge, KindSum, KindHistogram, KindExponentialHistogram, KindSummary, KindUnknown}
			for i, m := range out[0].Metrics {
				if m.Kind != kinds[i] {
					t.Errorf("metric %d kind %v, want %v", i, m.Kind, kinds[i])
				}
			}
		}},
		{name: "empty-request", req: nil},
		{name: "zero-length-submessages", req: cat(req(), req(lenf(rmResource), lenf(rmScope)),
			req(lenf(rmScope, lenf(smMetric))),
			withMetrics(cat(str(mName, "g"), lenf(mGauge)), cat(str(mName, "g2"), lenf(mGauge, lenf(dPoints, lenf(npAttrs), lenf(npAttrs, lenf(kvValue))))),
				cat(str(mName, "e"), lenf(mExp, lenf(dPoints, lenf(epPositive), lenf(epNegative)))))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 4 || len(out[3].Metrics) != 3 || len(out[3].Metrics[1].Points) != 1 ||
					!reflect.DeepEqual(out[3].Metrics[1].Points[0].Attrs, []kvOut{{}, {Type: ValueEmpty}}) {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "resource-twice-merged", req: req(lenf(rmResource, lenf(resAttrs, kv("k", "1"))), lenf(rmScope), lenf(rmResource, lenf(resAttrs, kv("k", "2")), vint(2, 3))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || !reflect.DeepEqual(out[0].Attrs, []kvOut{str1("1"), str1("2")}) {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "resource-after-scope-metrics", req: req(lenf(rmScope, lenf(smMetric, gauge(numPoint(1)))), clusterAttrResource()),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || len(out[0].Attrs) != 1 || len(out[0].Metrics) != 1 {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "kv-value-twice-merged", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "k"), lenf(kvValue, str(avString, "x")), lenf(kvValue)))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || !reflect.DeepEqual(out[0].Attrs, []kvOut{str1("x")}) {
					t.Fatalf("an empty second value must leave the first: got %+v", out)
				}
			}},
		{name: "kv-value-twice-oneof-replaced", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "k"), lenf(kvValue, str(avString, "x")), lenf(kvValue, vint(avInt, 5))))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || !reflect.DeepEqual(out[0].Attrs, []kvOut{{Key: "k", Type: ValueInt, Int: 5}}) {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "kv-key-twice-last-wins", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "a"), lenf(kvValue, str(avString, "x")), str(kvKey, "k")))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || !reflect.DeepEqual(out[0].Attrs, []kvOut{str1("x")}) {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "anyvalue-oneof-last-wins", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "k"), lenf(kvValue, str(avString, "x"), vint(avInt, 3), dbl(avDouble, 2.5), vint(avBool, 1))))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || !reflect.DeepEqual(out[0].Attrs, []kvOut{{Key: "k", Type: ValueBool, Bool: true}}) {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "anyvalue-other-kinds", req: req(lenf(rmResource,
			lenf(resAttrs, str(kvKey, "arr"), lenf(kvValue, lenf(avArray, lenf(1, str(avString, "x")), lenf(1, vint(avInt, 1))))),
			lenf(resAttrs, str(kvKey, "kvl"), lenf(kvValue, lenf(avKVList, lenf(1, kv("a", "b"))))),
			lenf(resAttrs, str(kvKey, "bytes"), lenf(kvValue, str(avBytes, "\xff\x00"))),
			lenf(resAttrs, str(kvKey, "strindex"), lenf(kvValue, str(avString, "x"), vint(avStrindex, 4))),
			lenf(resAttrs, vint(kvKeyStrindex, 2), lenf(kvValue, str(avString, "v"))),
		)), check: func(t *testing.T, out []resourceOut) {
			want := []kvOut{{Key: "arr", Type: ValueOther}, {Key: "kvl", Type: ValueOther}, {Key: "bytes", Type: ValueOther}, {Key: "strindex", Type: ValueOther}, {Type: ValueString, Str: "v"}}
			if len(out) != 1 || !reflect.DeepEqual(out[0].Attrs, want) {
				t.Fatalf("got %+v", out)
			}
		}},
		{name: "utf8-multibyte", req: req(lenf(rmResource, lenf(resAttrs, kv("ключ", "値 ü 🙂")))), check: func(t *testing.T, out []resourceOut) {
			if len(out) != 1 || out[0].Attrs[0].Str != "値 ü 🙂" {
				t.Fatalf("got %+v", out)
			}
		}},
		{name: "metric-scalars-last-wins", req: withMetrics(cat(str(mName, "a"), str(mUnit, "ms"), lenf(mGauge), str(mName, "b"), str(mUnit, "s"), str(mDesc, "d"), str(mDesc, "e"))),
			check: func(t *testing.T, out []resourceOut) {
				if m := onlyMetric(t, out); m.Name != "b" || m.Unit != "s" {
					t.Fatalf("got %+v", m)
				}
			}},
		{name: "metric-data-before-name", req: withMetrics(cat(lenf(mGauge, lenf(dPoints, numPoint(1))), str(mName, "late"))),
			check: func(t *testing.T, out []resourceOut) {
				if m := onlyMetric(t, out); m.Name != "late" || len(m.Points) != 1 {
					t.Fatalf("got %+v", m)
				}
			}},
		{name: "metric-data-same-member-merged", req: withMetrics(cat(str(mName, "s"),
			lenf(mSum, lenf(dPoints, numPoint(1)), vint(dTemporality, delta), vint(dMonotonic, 1)),
			lenf(mSum, vint(dTemporality, cumulative), lenf(dPoints, numPoint(2))))),
			check: func(t *testing.T, out []resourceOut) {
				m := onlyMetric(t, out)
				if m.Kind != KindSum || m.Temporality != cumulative || !m.Monotonic || len(m.Points) != 2 || m.Points[0].Int != 1 || m.Points[1].Int != 2 {
					t.Fatalf("got %+v", m)
				}
			}},
		{name: "metric-data-member-replaced", req: withMetrics(cat(str(mName, "x"),
			lenf(mGauge, lenf(dPoints, numPoint(1))), lenf(mSum, lenf(dPoints, numPoint(2)), vint(dTemporality, delta)))),
			check: func(t *testing.T, out []resourceOut) {
				m := onlyMetric(t, out)
				if m.Kind != KindSum || m.Temporality != delta || len(m.Points) != 1 || m.Points[0].Int != 2 {
					t.Fatalf("got %+v", m)
				}
			}},
		{name: "metric-data-replaced-then-merged", req: withMetrics(cat(str(mName, "x"),
			lenf(mGauge, lenf(dPoints, numPoint(1))), lenf(mHist, lenf(dPoints, f64(hpCount, 1)), vint(dTemporality, delta)),
			lenf(mGauge, lenf(dPoints, numPoint(3))), lenf(mGauge, lenf(dPoints, numPoint(4))))),
			check: func(t *testing.T, out []resourceOut) {
				m := onlyMetric(t, out)
				if m.Kind != KindGauge || m.Temporality != 0 || len(m.Points) != 2 || m.Points[0].Int != 3 || m.Points[1].Int != 4 {
					t.Fatalf("got %+v", m)
				}
			}},
		{name: "point-scalars-last-wins-out-of-order", req: withMetrics(gauge(cat(vint(npFlags, 1), f64(npTime, 1), f64(npInt, 1), f64(npStart, 3),
			lenf(npAttrs, kv("a", "1")), f64(npTime, 2), f64(npStart, 4), vint(npFlags, 0), lenf(npAttrs, kv("b", "2"))))),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if p.Time != 2 || p.Start != 4 || p.Flags != 0 || p.Int != 1 || len(p.Attrs) != 2 || p.Attrs[1].Key != "b" {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "number-value-oneof-last-wins", req: withMetrics(gauge(cat(dbl(npDouble, 1.5), f64(npInt, 9))), gauge(cat(f64(npInt, 9), dbl(npDouble, 1.5)))),
			check: func(t *testing.T, out []resourceOut) {
				ms := out[0].Metrics
				if a, b := ms[0].Points[0], ms[1].Points[0]; !a.IsInt || a.Int != 9 || b.IsInt || b.Double != math.Float64bits(1.5) {
					t.Fatalf("got %+v %+v", a, b)
				}
			}},
		{name: "hist-optionals-twice", req: histIn(dbl(hpSum, 1), dbl(hpMin, 2), dbl(hpMax, 3), dbl(hpSum, 4), dbl(hpMin, 5), dbl(hpMax, math.NaN()), f64(hpCount, 1), f64(hpCount, 2)),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if !p.HasSum || p.Sum != math.Float64bits(4) || p.Min != math.Float64bits(5) || !math.IsNaN(math.Float64frombits(p.Max)) || p.Count != 2 {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "hist-unpacked", req: histIn(f64(hpCounts, 1), f64(hpCounts, 2), dbl(hpBounds, 0.5), f64(hpCounts, 3), dbl(hpBounds, 1)),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if !reflect.DeepEqual(p.Counts, []uint64{1, 2, 3}) || !reflect.DeepEqual(p.Bounds, floatBits([]float64{0.5, 1})) {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "hist-packed-split-and-mixed", req: histIn(packedF64(hpCounts, 1), packedF64(hpBounds, math.Float64bits(0.5)), f64(hpCounts, 2), packedF64(hpCounts), packedF64(hpCounts, 3, 4), dbl(hpBounds, 1), packedF64(hpBounds, math.Float64bits(2))),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if !reflect.DeepEqual(p.Counts, []uint64{1, 2, 3, 4}) || !reflect.DeepEqual(p.Bounds, floatBits([]float64{0.5, 1, 2})) {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "exp-positive-merged", req: expIn(lenf(epPositive, vint(bkOffset, protowire.EncodeZigZag(-3)), packedVarint(bkCounts, 1, 2)), lenf(epPositive, vint(bkCounts, 3))),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if p.PositiveOffset != -3 || !reflect.DeepEqual(p.Positive, []uint64{1, 2, 3}) {
					t.Fatalf("the second positive must keep the first's offset and append: got %+v", p)
				}
			}},
		{name: "exp-buckets-unpacked-and-negative-merged", req: expIn(lenf(epPositive, vint(bkCounts, 4), vint(bkCounts, 5), vint(bkOffset, protowire.EncodeZigZag(2))),
			lenf(epNegative, vint(bkCounts, 1), packedVarint(bkCounts, 2)), lenf(epNegative, packedVarint(bkCounts, 3), vint(bkOffset, 9))),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if p.PositiveOffset != 2 || !reflect.DeepEqual(p.Positive, []uint64{4, 5}) || p.NegativeCount != 6 {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "exp-sint32-high-bits", req: expIn(vint(epScale, 1<<32|3), lenf(epPositive, vint(bkOffset, 0xffffffff00000004))),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if p.Scale != -2 || p.PositiveOffset != 2 {
					t.Fatalf("sint32 takes the low 32 bits: got scale %d offset %d", p.Scale, p.PositiveOffset)
				}
			}},
		{name: "exp-scalars", req: expIn(vint(epScale, protowire.EncodeZigZag(20)), f64(epZeroCount, 3), dbl(epZeroThresh, 1e-9), dbl(epMin, -1), dbl(epMax, 2), dbl(hpSum, 0)),
			check: func(t *testing.T, out []resourceOut) {
				p := onlyPoint(t, out)
				if p.Scale != 20 || p.ZeroCount != 3 || p.ZeroThreshold != math.Float64bits(1e-9) || !p.HasMin || !p.HasMax || !p.HasSum {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "varints-over-long", req: withMetrics(cat(str(mName, "s"), lenf(mSum,
			lenf(dPoints, f64(npInt, 1), tag(npFlags, protowire.VarintType), longVarint(1<<40|3, 10)),
			tag(dTemporality, protowire.VarintType), longVarint(math.MaxUint64, 10), // int32(-1)
			tag(dMonotonic, protowire.VarintType), longVarint(1<<63, 10)))), // bool: any non-zero
			check: func(t *testing.T, out []resourceOut) {
				m := onlyMetric(t, out)
				if m.Temporality != -1 || !m.Monotonic || m.Points[0].Flags != 3 {
					t.Fatalf("got %+v", m)
				}
			}},
		{name: "tags-and-lengths-over-long", req: cat(longTag(reqRM, protowire.BytesType, 5), longVarint(uint64(len(withMetrics(gauge(numPoint(5))))-2), 10),
			withMetrics(gauge(numPoint(5)))[2:]),
			check: func(t *testing.T, out []resourceOut) {
				if p := onlyPoint(t, out); p.Int != 5 {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "tag-over-long-inside-point", req: withMetrics(gauge(cat(longTag(npInt, protowire.Fixed64Type, 10), protowire.AppendFixed64(nil, 8)))),
			check: func(t *testing.T, out []resourceOut) {
				if p := onlyPoint(t, out); p.Int != 8 {
					t.Fatalf("got %+v", p)
				}
			}},
		{name: "unknown-fields-everywhere", req: cat(unknowns, lenf(reqRM, unknowns, lenf(rmResource, unknowns, lenf(resAttrs, unknowns, str(kvKey, "k"), lenf(kvValue, unknowns, str(avString, "v")))),
			lenf(rmScope, unknowns, lenf(smScope, unknowns), lenf(smMetric, unknowns, str(mName, "s"), lenf(mSum, unknowns, vint(dTemporality, delta),
				lenf(dPoints, unknowns, f64(npInt, 1), lenf(npExemplar, unknowns)))),
				lenf(smMetric, str(mName, "e"), lenf(mExp, lenf(dPoints, unknowns, lenf(epPositive, unknowns, vint(bkCounts, 1)))))))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || len(out[0].Metrics) != 2 || out[0].Attrs[0] != str1("v") || out[0].Metrics[1].Points[0].Positive[0] != 1 {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "wrong-wire-type-outside-the-walk-skipped", req: cat(req(lenf(rmResource, vint(resAttrs, 1), f32(resEntityRefs, 1),
			lenf(resAttrs, f64(kvKey, 1), str(kvKey, "k"), vint(kvValue, 1), lenf(kvValue, vint(avString, 1), f64(avInt, 1), vint(avArray, 1), vint(avKVList, 1), vint(avBytes, 2), f64(avStrindex, 1))))),
			req(lenf(rmScope, lenf(smScope, vint(scName, 1), f64(scAttrs, 1)))),
			withMetrics(gauge(cat(f64(npInt, 1), lenf(npExemplar, vint(exTime, 1), vint(exFilteredAttr, 1)))),
				cat(str(mName, "q"), lenf(mSummary, vint(dPoints, 1), lenf(dPoints, vint(4, 1), vint(sdpQuantiles, 1)))),
				cat(str(mName, "replaced"), lenf(mGauge, vint(dPoints, 1), lenf(dPoints, vint(npTime, 1))), lenf(mSum)))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 3 || out[0].Attrs[0].Type != ValueEmpty || out[0].Attrs[0].Key != "k" || len(out[2].Metrics) != 3 || out[2].Metrics[2].Kind != KindSum {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "optional-content-valid", req: req(lenf(rmResource, clusterAttr, lenf(resEntityRefs, str(1, "u"), str(2, "t"), str(3, "id"), str(4, "d"))), str(rmSchema, "https://x"),
			lenf(rmScope, lenf(smScope, str(scName, "n"), str(scVersion, "v"), lenf(scAttrs, kv("a", "b")), vint(4, 1)), str(smSchema, "s"),
				lenf(smMetric, str(mName, "g"), str(mDesc, "d"), lenf(mMetadata, kv("m", "d")),
					lenf(mGauge, lenf(dPoints, f64(npInt, 1), lenf(npExemplar, lenf(exFilteredAttr, kv("f", "v")), f64(exTime, 1), dbl(exDouble, 1), str(exSpanID, "\xff\xfe"), str(5, "\x00")))))))},
		{name: "field-number-max-valid", req: cat(vint(protowire.MaxValidNumber, 1), withMetrics(gauge(cat(numPoint(1), f64(protowire.MaxValidNumber, 1)))))},
		{name: "nesting-at-recursion-limit", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "deep"), lenf(kvValue, nested(10000))))),
			check: func(t *testing.T, out []resourceOut) {
				if len(out) != 1 || out[0].Attrs[0].Type != ValueOther {
					t.Fatalf("got %+v", out)
				}
			}},
		{name: "buckets-at-bound", req: histIn(packedF64(hpCounts, make([]uint64, maxBuckets)...), packedF64(hpBounds, make([]uint64, maxBuckets)...)),
			check: func(t *testing.T, out []resourceOut) {
				if p := onlyPoint(t, out); len(p.Counts) != maxBuckets {
					t.Fatalf("got %d counts", len(p.Counts))
				}
			}},
		{name: "declined-metric-points-valid", req: withMetrics(gauge(numPoint(1)), cat(str(mName, "x"), lenf(mSummary, lenf(dPoints, lenf(7, kv("a", "b"))))))},

		// Both reject.
		{name: "truncated-tag", req: []byte{0x8a}, verdict: bothFail},
		{name: "truncated-length", req: withMetrics(gauge(numPoint(1)))[:20], verdict: bothFail},
		{name: "truncated-fixed64", req: withMetrics(gauge(cat(tag(npTime, protowire.Fixed64Type), []byte{1, 2, 3}))), verdict: bothFail},
		{name: "length-past-end", req: cat(tag(reqRM, protowire.BytesType), []byte{5, 0}), verdict: bothFail},
		{name: "field-number-zero", req: []byte{0x00, 0x00}, verdict: bothFail},
		{name: "field-number-zero-in-point", req: withMetrics(gauge(cat(numPoint(1), []byte{0x01, 0, 0, 0, 0, 0, 0, 0, 0}))), verdict: bothFail},
		{name: "field-number-too-large", req: vint(protowire.MaxValidNumber+1, 1), verdict: bothFail},
		{name: "field-number-too-large-in-kv", req: req(lenf(rmResource, lenf(resAttrs, kv("a", "b"), vint(protowire.MaxValidNumber+1, 1)))), verdict: bothFail},
		{name: "field-number-too-large-in-point", req: withMetrics(gauge(cat(numPoint(1), vint(1<<30, 1)))), verdict: bothFail},
		{name: "end-group-alone", req: withMetrics(gauge(cat(numPoint(1), tag(9, protowire.EndGroupType)))), verdict: bothFail},
		{name: "group-mismatched-end", req: cat(tag(50, protowire.StartGroupType), tag(51, protowire.EndGroupType)), verdict: bothFail},
		{name: "group-unterminated", req: cat(tag(50, protowire.StartGroupType), vint(1, 1)), verdict: bothFail},
		{name: "wire-type-6", req: cat(tag(50, 6), []byte{0}), verdict: bothFail},
		{name: "wire-type-7-in-anyvalue", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "k"), lenf(kvValue, tag(9, 7))))), verdict: bothFail},
		{name: "varint-11-bytes", req: cat(tag(50, protowire.VarintType), longVarint(0, 10)[:9], []byte{0x80, 0x00}), verdict: bothFail},
		{name: "varint-10th-byte-overflow", req: withMetrics(gauge(cat(numPoint(1), tag(npFlags, protowire.VarintType), []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02}))), verdict: bothFail},
		{name: "packed-fixed64-bad-length", req: histIn(lenf(hpCounts, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9})), verdict: bothFail},
		{name: "packed-bounds-bad-length", req: histIn(lenf(hpBounds, []byte{1, 2, 3})), verdict: bothFail},
		{name: "packed-varint-truncated", req: expIn(lenf(epPositive, lenf(bkCounts, []byte{0x81}))), verdict: bothFail},
		{name: "packed-varint-truncated-negative", req: expIn(lenf(epNegative, lenf(bkCounts, []byte{0x01, 0x81}))), verdict: bothFail},
		{name: "utf8-metric-name", req: withMetrics(cat(str(mName, "a\xffb"), lenf(mGauge))), verdict: bothFail},
		{name: "utf8-metric-unit", req: withMetrics(cat(str(mName, "a"), str(mUnit, "\xc0"))), verdict: bothFail},
		{name: "utf8-metric-description", req: withMetrics(cat(str(mName, "a"), str(mDesc, "\xed\xa0\x80"))), verdict: bothFail}, // a surrogate
		{name: "utf8-resource-key", req: req(lenf(rmResource, lenf(resAttrs, kv("\xff", "v")))), verdict: bothFail},
		{name: "utf8-point-attr-value", req: withMetrics(gauge(cat(lenf(npAttrs, kv("k", "\xe2\x82")), f64(npInt, 1)))), verdict: bothFail},
		{name: "utf8-point-attr-value-declined-metric", req: withMetrics(cat(str(mName, "q"), lenf(mSummary, lenf(dPoints, lenf(7, kv("k", "\xff")))))), verdict: bothFail},
		{name: "utf8-hist-attr-key", req: histIn(lenf(hpAttrs, kv("\x80", "v"))), verdict: bothFail},
		{name: "utf8-exp-attr-in-array", req: expIn(lenf(epAttrs, str(kvKey, "k"), lenf(kvValue, lenf(avArray, lenf(1, str(avString, "\xff")))))), verdict: bothFail},
		{name: "utf8-kvlist-key", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "k"), lenf(kvValue, lenf(avKVList, lenf(1, kv("\xff", "v"))))))), verdict: bothFail},
		{name: "utf8-scope-name", req: req(lenf(rmScope, lenf(smScope, str(scName, "\xff")))), verdict: bothFail},
		{name: "utf8-scope-version", req: req(lenf(rmScope, lenf(smScope, str(scVersion, "\xff")))), verdict: bothFail},
		{name: "utf8-scope-attr", req: req(lenf(rmScope, lenf(smScope, lenf(scAttrs, kv("k", "\xff"))))), verdict: bothFail},
		{name: "utf8-rm-schema-url", req: req(str(rmSchema, "\xff")), verdict: bothFail},
		{name: "utf8-sm-schema-url", req: req(lenf(rmScope, str(smSchema, "\xff"))), verdict: bothFail},
		{name: "utf8-metadata", req: withMetrics(cat(str(mName, "a"), lenf(mMetadata, kv("k", "\xff")))), verdict: bothFail},
		{name: "utf8-exemplar-filtered-attr", req: withMetrics(gauge(cat(f64(npInt, 1), lenf(npExemplar, lenf(exFilteredAttr, kv("k", "\xff")))))), verdict: bothFail},
		{name: "utf8-entity-ref", req: req(lenf(rmResource, lenf(resEntityRefs, str(3, "\xff")))), verdict: bothFail},
		{name: "utf8-second-resource", req: req(lenf(rmResource, clusterAttr), lenf(rmResource, lenf(resAttrs, kv("k", "\xff")))), verdict: bothFail},
		{name: "malformed-scope", req: req(lenf(rmScope, lenf(smScope, []byte{0xff}))), verdict: bothFail},
		{name: "malformed-exemplar", req: histIn(f64(hpCount, 1), lenf(hpExemplar, []byte{0x0a, 0x05})), verdict: bothFail},
		{name: "malformed-exp-exemplar", req: expIn(lenf(epExemplar, tag(2, protowire.Fixed64Type))), verdict: bothFail},
		{name: "malformed-summary-point", req: withMetrics(cat(str(mName, "q"), lenf(mSummary, lenf(dPoints, lenf(sdpQuantiles, []byte{0x09, 0x01}))))), verdict: bothFail},
		{name: "malformed-replaced-data", req: withMetrics(cat(str(mName, "x"), lenf(mHist, lenf(dPoints, []byte{0x31, 0x01})), lenf(mGauge))), verdict: bothFail},
		{name: "malformed-array-value", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "k"), lenf(kvValue, lenf(avArray, []byte{0x0a, 0x09}))))), verdict: bothFail},
		{name: "malformed-entity-ref", req: req(lenf(rmResource, lenf(resEntityRefs, []byte{0x0a}))), verdict: bothFail},
		{name: "malformed-metadata", req: withMetrics(cat(str(mName, "a"), lenf(mMetadata, []byte{0x12, 0x01}))), verdict: bothFail},
		{name: "nesting-over-recursion-limit", req: req(lenf(rmResource, lenf(resAttrs, str(kvKey, "deep"), lenf(kvValue, nested(10001))))), verdict: bothFail},

		// A field the decoder walks with the wrong wire type: refused as
		// documented (proto would keep it as an unknown field).
		{name: "wrong-type-resource-metrics-as-fixed32", req: []byte{0x0d, 1, 2, 3, 4}, verdict: wrongType},
		{name: "wrong-type-resource-as-varint", req: req(vint(rmResource, 1)), verdict: wrongType},
		{name: "wrong-type-scope-metrics-as-group", req: req(group(rmScope)), verdict: wrongType},
		{name: "wrong-type-rm-schema-url-as-varint", req: req(vint(rmSchema, 1)), verdict: wrongType},
		{name: "wrong-type-scope-as-varint", req: req(lenf(rmScope, vint(smScope, 1))), verdict: wrongType},
		{name: "wrong-type-metric-as-fixed64", req: req(lenf(rmScope, f64(smMetric, 1))), verdict: wrongType},
		{name: "wrong-type-sm-schema-url-as-fixed32", req: req(lenf(rmScope, f32(smSchema, 1))), verdict: wrongType},
		{name: "wrong-type-metric-name-as-varint", req: withMetrics(vint(mName, 1)), verdict: wrongType},
		{name: "wrong-type-metric-unit-as-fixed64", req: withMetrics(f64(mUnit, 1)), verdict: wrongType},
		{name: "wrong-type-metric-description-as-varint", req: withMetrics(vint(mDesc, 1)), verdict: wrongType},
		{name: "wrong-type-metric-metadata-as-varint", req: withMetrics(vint(mMetadata, 1)), verdict: wrongType},
		{name: "wrong-type-gauge-as-varint", req: withMetrics(vint(mGauge, 1)), verdict: wrongType},
		{name: "wrong-type-sum-as-group", req: withMetrics(group(mSum)), verdict: wrongType},
		{name: "wrong-type-summary-as-fixed32", req: withMetrics(f32(mSummary, 1)), verdict: wrongType},
		{name: "wrong-type-gauge-points-as-fixed64", req: withMetrics(cat(str(mName, "g"), lenf(mGauge, f64(dPoints, 1)))), verdict: wrongType},
		{name: "wrong-type-sum-points-as-varint", req: withMetrics(cat(str(mName, "s"), lenf(mSum, vint(dPoints, 1)))), verdict: wrongType},
		{name: "wrong-type-sum-temporality-as-fixed64", req: withMetrics(cat(str(mName, "s"), lenf(mSum, f64(dTemporality, 1)))), verdict: wrongType},
		{name: "wrong-type-sum-monotonic-as-bytes", req: withMetrics(cat(str(mName, "s"), lenf(mSum, str(dMonotonic, "")))), verdict: wrongType},
		{name: "wrong-type-histogram-temporality-as-bytes", req: withMetrics(cat(str(mName, "h"), lenf(mHist, str(dTemporality, "")))), verdict: wrongType},
		{name: "wrong-type-number-time-as-varint", req: withMetrics(gauge(vint(npTime, 1))), verdict: wrongType},
		{name: "wrong-type-number-int-as-varint", req: withMetrics(gauge(vint(npInt, 1))), verdict: wrongType},
		{name: "wrong-type-number-double-as-bytes", req: withMetrics(gauge(str(npDouble, "12345678"))), verdict: wrongType},
		{name: "wrong-type-number-flags-as-fixed64", req: withMetrics(gauge(f64(npFlags, 1))), verdict: wrongType},
		{name: "wrong-type-number-attrs-as-varint", req: withMetrics(gauge(vint(npAttrs, 1))), verdict: wrongType},
		{name: "wrong-type-number-exemplar-as-fixed32", req: withMetrics(gauge(f32(npExemplar, 1))), verdict: wrongType},
		{name: "wrong-type-hist-count-as-varint", req: histIn(vint(hpCount, 3)), verdict: wrongType},
		{name: "wrong-type-hist-counts-as-varint", req: histIn(vint(hpCounts, 1)), verdict: wrongType},
		{name: "wrong-type-hist-bounds-as-fixed32", req: histIn(f32(hpBounds, 1)), verdict: wrongType},
		{name: "wrong-type-hist-sum-as-varint", req: histIn(vint(hpSum, 1)), verdict: wrongType},
		{name: "wrong-type-hist-max-as-varint", req: histIn(vint(hpMax, 1)), verdict: wrongType},
		{name: "wrong-type-hist-flags-as-bytes", req: histIn(str(hpFlags, "")), verdict: wrongType},
		{name: "wrong-type-hist-attrs-as-fixed64", req: histIn(f64(hpAttrs, 1)), verdict: wrongType},
		{name: "wrong-type-exp-scale-as-fixed64", req: expIn(f64(epScale, 1)), verdict: wrongType},
		{name: "wrong-type-exp-zero-count-as-bytes", req: expIn(str(epZeroCount, "")), verdict: wrongType},
		{name: "wrong-type-exp-zero-threshold-as-varint", req: expIn(vint(epZeroThresh, 1)), verdict: wrongType},
		{name: "wrong-type-exp-positive-as-varint", req: expIn(vint(epPositive, 1)), verdict: wrongType},
		{name: "wrong-type-exp-negative-as-group", req: expIn(group(epNegative)), verdict: wrongType},
		{name: "wrong-type-exp-attrs-as-varint", req: expIn(vint(epAttrs, 1)), verdict: wrongType},
		{name: "wrong-type-buckets-offset-as-fixed64", req: expIn(lenf(epPositive, f64(bkOffset, 1))), verdict: wrongType},
		{name: "wrong-type-buckets-counts-as-fixed64", req: expIn(lenf(epNegative, f64(bkCounts, 1))), verdict: wrongType},

		// The decoder's documented bound: proto accepts, the decoder refuses.
		{name: "bound-explicit-counts", req: histIn(packedF64(hpCounts, make([]uint64, maxBuckets+1)...)), verdict: overBound},
		{name: "bound-explicit-bounds-unpacked", req: histIn(repeat(func(int) []byte { return dbl(hpBounds, 1) }, maxBuckets+1)), verdict: overBound},
		{name: "bound-exp-positive-merged", req: expIn(lenf(epPositive, packedVarint(bkCounts, make([]uint64, maxBuckets/2+1)...)), lenf(epPositive, packedVarint(bkCounts, make([]uint64, maxBuckets/2)...))), verdict: overBound},
		{name: "bound-exp-negative-unpacked", req: expIn(lenf(epNegative, repeat(func(int) []byte { return vint(bkCounts, 1) }, maxBuckets+1))), verdict: overBound},
		{name: "bound-declined-metric", req: withMetrics(cat(str(mName, "h"), lenf(mHist, lenf(dPoints, packedF64(hpCounts, make([]uint64, maxBuckets+1)...))))), verdict: overBound},
	}
}

func clusterAttrResource() []byte { return lenf(rmResource, clusterAttr) }

// TestDifferentialCases checks each legal-but-unusual and each illegal
// encoding by name: the decoder agrees with proto.Unmarshal (or, past
// the bucket bound, refuses as documented), and reads what the case says.
func TestDifferentialCases(t *testing.T) {
	for _, c := range cases() {
		t.Run(c.name, func(t *testing.T) {
			if err := differential(c.req); err != nil {
				t.Fatal(err)
			}
			o := run(c.req)
			switch c.verdict {
			case agree:
				if o.refErr != nil || o.gotErr != nil || o.overBound || o.wrongType {
					t.Fatalf("want both to accept: proto %v, decoder %v", o.refErr, o.gotErr)
				}
				if c.check != nil {
					c.check(t, o.got)
				}
			case bothFail:
				if o.refErr == nil {
					t.Fatal("want proto to reject the case")
				}
			case wrongType:
				if o.refErr != nil || !o.wrongType || o.overBound || !errors.Is(o.gotErr, ErrWrongWireType) {
					t.Fatalf("want proto to accept and the decoder to refuse with ErrWrongWireType: proto %v, decoder %v", o.refErr, o.gotErr)
				}
			case overBound:
				if o.refErr != nil || !o.overBound || o.wrongType || !errors.Is(o.gotErr, ErrTooManyBuckets) {
					t.Fatalf("want proto to accept and the decoder to refuse with ErrTooManyBuckets: proto %v, decoder %v", o.refErr, o.gotErr)
				}
			}
		})
	}
}
