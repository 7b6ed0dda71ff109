// Package otlpwire decodes OTLP ExportMetricsServiceRequest messages straight
// from their protobuf wire form, without building the generated Go structs.
//
// Why: the generated types allocate one object per attribute, value and data
// point; at a million points per second that garbage is most of the cost of
// ingestion. This decoder walks the bytes once and hands the caller views
// (sub-slices of the request) that are valid only during the callback, so a
// point whose series is already known costs no allocation at all.
//
// The decoder checks the wire format (tags, lengths, wire types of the fields
// it reads) and returns an error for anything malformed; fields it does not
// use are skipped whatever their content. Semantic checks (NaN, negative
// counts, inconsistent buckets) are the caller's: see the Point types.
package otlpwire

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// Metric data kinds.
type Kind uint8

const (
	KindUnknown Kind = iota
	KindGauge
	KindSum
	KindHistogram
	KindExponentialHistogram
	KindSummary
)

func (k Kind) String() string {
	switch k {
	case KindGauge:
		return "gauge"
	case KindSum:
		return "sum"
	case KindHistogram:
		return "histogram"
	case KindExponentialHistogram:
		return "exponential_histogram"
	case KindSummary:
		return "summary"
	}
	return "unknown"
}

// Temporality values as on the wire.
const (
	TemporalityUnspecified = 0
	TemporalityDelta       = 1
	TemporalityCumulative  = 2
)

// Metric is a metric's header.
type Metric struct {
	Name, Unit  []byte
	Kind        Kind
	Temporality int32
	Monotonic   bool
}

// Attrs is an encoded sequence of KeyValue messages (each one field of the
// enclosing message with the given field number).
type Attrs struct {
	buf   []byte // the enclosing message
	field protowire.Number
}

// Empty reports whether there are no attributes at all (the enclosing
// message may still hold other fields).
func (a Attrs) Empty() bool { return len(a.buf) == 0 }

// Each calls fn with each attribute's key, its encoded KeyValue bytes (for
// hashing) and its value. It returns a wire error, or stops early with nil
// when fn returns false.
func (a Attrs) Each(fn func(key, raw []byte, v Value) bool) error {
	b := a.buf
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireErr("attribute tag", n)
		}
		b = b[n:]
		if num != a.field || typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, b)
			if m < 0 {
				return wireErr("field", m)
			}
			b = b[m:]
			continue
		}
		kv, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return wireErr("attribute", m)
		}
		b = b[m:]
		key, v, err := decodeKeyValue(kv)
		if err != nil {
			return err
		}
		if !fn(key, kv, v) {
			return nil
		}
	}
	return nil
}

// EachRaw calls fn with each attribute's encoded KeyValue bytes, without
// decoding them: enough to hash a series' identity, and several times
// cheaper than Each. Whether the KeyValues themselves are well-formed is
// not checked here.
func (a Attrs) EachRaw(fn func(raw []byte)) error {
	b := a.buf
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireErr("attribute tag", n)
		}
		b = b[n:]
		if num == a.field && typ == protowire.BytesType {
			kv, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return wireErr("attribute", m)
			}
			fn(kv)
			b = b[m:]
			continue
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return wireErr("field", m)
		}
		b = b[m:]
	}
	return nil
}

// ValueType is the AnyValue variant.
type ValueType uint8

const (
	ValueEmpty ValueType = iota
	ValueString
	ValueBool
	ValueInt
	ValueDouble
	ValueOther // array, kvlist, bytes
)

// Value is a decoded AnyValue; Str aliases the request.
type Value struct {
	Type   ValueType
	Str    []byte
	Int    int64
	Double float64
	Bool   bool
}

func decodeKeyValue(b []byte) (key []byte, v Value, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, v, wireErr("key-value tag", n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			key, n = protowire.ConsumeBytes(b)
		case num == 2 && typ == protowire.BytesType:
			var av []byte
			av, n = protowire.ConsumeBytes(b)
			if n >= 0 {
				if v, err = decodeAnyValue(av); err != nil {
					return nil, v, err
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return nil, v, wireErr("key-value", n)
		}
		b = b[n:]
	}
	return key, v, nil
}

func decodeAnyValue(b []byte) (Value, error) {
	var v Value
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return v, wireErr("value tag", n)
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.BytesType:
			v.Type = ValueString
			v.Str, n = protowire.ConsumeBytes(b)
		case num == 2 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			v.Type, v.Bool = ValueBool, x != 0
		case num == 3 && typ == protowire.VarintType:
			var x uint64
			x, n = protowire.ConsumeVarint(b)
			v.Type, v.Int = ValueInt, int64(x)
		case num == 4 && typ == protowire.Fixed64Type:
			var x uint64
			x, n = protowire.ConsumeFixed64(b)
			v.Type, v.Double = ValueDouble, math.Float64frombits(x)
		case num >= 5 && num <= 7:
			v.Type = ValueOther
			n = protowire.ConsumeFieldValue(num, typ, b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return v, wireErr("value", n)
		}
		b = b[n:]
	}
	return v, nil
}

// PointCommon holds the fields every data point kind has.
type PointCommon struct {
	Attrs     Attrs
	StartTime uint64 // unix ns; 0 if unset
	Time      uint64 // unix ns
	Flags     uint32
}

// NumberPoint is a gauge or sum data point.
type NumberPoint struct {
	PointCommon
	IsInt  bool
	HasVal bool
	Int    int64
	Double float64
}

// Float returns the value as a float64.
func (p *NumberPoint) Float() float64 {
	if p.IsInt {
		return float64(p.Int)
	}
	return p.Double
}

// HistogramPoint is an explicit-bucket histogram data point. Counts and
// Bounds are reused between points: copy what must outlive the callback.
type HistogramPoint struct {
	PointCommon
	Count          uint64
	Sum, Min, Max  float64
	HasSum         bool
	HasMin, HasMax bool
	Counts         []uint64
	Bounds         []float64
}

// ExpHistogramPoint is a base-2 exponential histogram data point.
type ExpHistogramPoint struct {
	PointCommon
	Count          uint64
	Sum, Min, Max  float64
	HasSum         bool
	HasMin, HasMax bool
	Scale          int32
	ZeroCount      uint64
	ZeroThreshold  float64
	PositiveOffset int32
	Positive       []uint64
	NegativeCount  uint64 // total count in negative buckets
}

// Sink receives a request's content in order.
type Sink interface {
	// Resource starts a ResourceMetrics. The attributes stay valid until the
	// next call to Resource.
	Resource(attrs Attrs) error
	// Metric starts a metric; return false to skip its points.
	Metric(m *Metric) bool
	// The point methods may return an error (e.g. a wire error found in the
	// point's attributes) to abort the whole request.
	NumberPoint(m *Metric, p *NumberPoint) error
	HistogramPoint(m *Metric, p *HistogramPoint) error
	ExpHistogramPoint(m *Metric, p *ExpHistogramPoint) error
}

// Decoder holds scratch space; reuse one per goroutine.
type Decoder struct {
	tmp []uint64
	num NumberPoint
	hp  HistogramPoint
	ep  ExpHistogramPoint
}

// ErrMalformed wraps every wire-format error.
var ErrMalformed = errors.New("malformed OTLP protobuf")

func wireErr(what string, n int) error {
	return fmt.Errorf("%w: %s: %v", ErrMalformed, what, protowire.ParseError(n))
}

// each calls fn for every field of message b.
func each(b []byte, what string, fn func(num protowire.Number, typ protowire.Type, b []byte) (int, error)) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return wireErr(what+" tag", n)
		}
		b = b[n:]
		m, err := fn(num, typ, b)
		if err != nil {
			return err
		}
		if m == 0 { // not consumed by fn
			m = protowire.ConsumeFieldValue(num, typ, b)
		}
		if m < 0 {
			return wireErr(what, m)
		}
		b = b[m:]
	}
	return nil
}

// sub consumes a length-delimited field of the expected type.
func sub(typ protowire.Type, b []byte, what string) ([]byte, int, error) {
	if typ != protowire.BytesType {
		return nil, 0, fmt.Errorf("%w: %s: wire type %d, want bytes", ErrMalformed, what, typ)
	}
	v, n := protowire.ConsumeBytes(b)
	if n < 0 {
		return nil, 0, wireErr(what, n)
	}
	return v, n, nil
}

func fixed64(typ protowire.Type, b []byte, what string) (uint64, int, error) {
	if typ != protowire.Fixed64Type {
		return 0, 0, fmt.Errorf("%w: %s: wire type %d, want fixed64", ErrMalformed, what, typ)
	}
	v, n := protowire.ConsumeFixed64(b)
	if n < 0 {
		return 0, 0, wireErr(what, n)
	}
	return v, n, nil
}

func varint(typ protowire.Type, b []byte, what string) (uint64, int, error) {
	if typ != protowire.VarintType {
		return 0, 0, fmt.Errorf("%w: %s: wire type %d, want varint", ErrMalformed, what, typ)
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		return 0, 0, wireErr(what, n)
	}
	return v, n, nil
}

// Decode walks an ExportMetricsServiceRequest. A wire error stops the walk
// and is returned; the points the sink received before it were complete and
// well-formed (each point is decoded whole before it is handed out).
func (d *Decoder) Decode(req []byte, s Sink) error {
	return each(req, "request", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		if num != 1 {
			return 0, nil
		}
		rm, n, err := sub(typ, b, "resource_metrics")
		if err != nil {
			return 0, err
		}
		return n, d.resourceMetrics(rm, s)
	})
}

func (d *Decoder) resourceMetrics(rm []byte, s Sink) error {
	// The resource may follow the scope metrics on the wire: find it first.
	var res []byte
	err := each(rm, "resource_metrics", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		if num != 1 {
			return 0, nil
		}
		r, n, err := sub(typ, b, "resource")
		res = r
		return n, err
	})
	if err != nil {
		return err
	}
	if err := s.Resource(Attrs{buf: res, field: 1}); err != nil {
		return err
	}
	return each(rm, "resource_metrics", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		if num != 2 {
			return 0, nil
		}
		sm, n, err := sub(typ, b, "scope_metrics")
		if err != nil {
			return 0, err
		}
		return n, each(sm, "scope_metrics", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
			if num != 2 {
				return 0, nil
			}
			m, n, err := sub(typ, b, "metric")
			if err != nil {
				return 0, err
			}
			return n, d.metric(m, s)
		})
	})
}

func (d *Decoder) metric(mb []byte, s Sink) error {
	var m Metric
	var data []byte
	err := each(mb, "metric", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		switch num {
		case 1:
			v, n, err := sub(typ, b, "metric name")
			m.Name = v
			return n, err
		case 3:
			v, n, err := sub(typ, b, "metric unit")
			m.Unit = v
			return n, err
		case 5, 7, 9, 10, 11:
			v, n, err := sub(typ, b, "metric data")
			if m.Kind != KindUnknown {
				return 0, fmt.Errorf("%w: metric with two data fields", ErrMalformed)
			}
			switch num {
			case 5:
				m.Kind = KindGauge
			case 7:
				m.Kind = KindSum
			case 9:
				m.Kind = KindHistogram
			case 10:
				m.Kind = KindExponentialHistogram
			default:
				m.Kind = KindSummary
			}
			data = v
			return n, err
		}
		return 0, nil
	})
	if err != nil {
		return err
	}
	// Temporality and monotonicity come before the points are handed out.
	if m.Kind == KindSum || m.Kind == KindHistogram || m.Kind == KindExponentialHistogram {
		err := each(data, "metric data", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
			switch {
			case num == 2:
				v, n, err := varint(typ, b, "aggregation_temporality")
				m.Temporality = int32(v)
				return n, err
			case num == 3 && m.Kind == KindSum:
				v, n, err := varint(typ, b, "is_monotonic")
				m.Monotonic = v != 0
				return n, err
			}
			return 0, nil
		})
		if err != nil {
			return err
		}
	}
	want := s.Metric(&m)
	return each(data, "metric data", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		if num != 1 {
			return 0, nil
		}
		p, n, err := sub(typ, b, "data point")
		if err != nil || !want {
			return n, err
		}
		switch m.Kind {
		case KindGauge, KindSum:
			if err := d.numberPoint(p); err != nil {
				return 0, err
			}
			if err := s.NumberPoint(&m, &d.num); err != nil {
				return 0, err
			}
		case KindHistogram:
			if err := d.histogramPoint(p); err != nil {
				return 0, err
			}
			if err := s.HistogramPoint(&m, &d.hp); err != nil {
				return 0, err
			}
		case KindExponentialHistogram:
			if err := d.expHistogramPoint(p); err != nil {
				return 0, err
			}
			if err := s.ExpHistogramPoint(&m, &d.ep); err != nil {
				return 0, err
			}
		}
		return n, nil
	})
}

func (d *Decoder) numberPoint(b []byte) error {
	p := &d.num
	*p = NumberPoint{}
	p.Attrs = Attrs{buf: b, field: 7}
	return each(b, "number point", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		switch num {
		case 2:
			v, n, err := fixed64(typ, b, "start_time_unix_nano")
			p.StartTime = v
			return n, err
		case 3:
			v, n, err := fixed64(typ, b, "time_unix_nano")
			p.Time = v
			return n, err
		case 4:
			v, n, err := fixed64(typ, b, "as_double")
			p.Double, p.IsInt, p.HasVal = math.Float64frombits(v), false, true
			return n, err
		case 6:
			v, n, err := fixed64(typ, b, "as_int")
			p.Int, p.IsInt, p.HasVal = int64(v), true, true
			return n, err
		case 8:
			v, n, err := varint(typ, b, "flags")
			p.Flags = uint32(v)
			return n, err
		}
		return 0, nil
	})
}

// repeatedFixed64 appends a packed or unpacked repeated fixed64 field.
func repeatedFixed64(dst []uint64, typ protowire.Type, b []byte, what string) ([]uint64, int, error) {
	if typ == protowire.Fixed64Type {
		v, n, err := fixed64(typ, b, what)
		return append(dst, v), n, err
	}
	packed, n, err := sub(typ, b, what)
	if err != nil {
		return dst, 0, err
	}
	if len(packed)%8 != 0 {
		return dst, 0, fmt.Errorf("%w: %s: packed length %d not a multiple of 8", ErrMalformed, what, len(packed))
	}
	for len(packed) > 0 {
		v, _ := protowire.ConsumeFixed64(packed)
		dst = append(dst, v)
		packed = packed[8:]
	}
	return dst, n, nil
}

// maxBuckets bounds the buckets of one point: more is not a histogram an
// agent sends but an attempt to make the receiver allocate.
const maxBuckets = 4096

func (d *Decoder) histogramPoint(b []byte) error {
	p := &d.hp
	counts, bounds := p.Counts[:0], p.Bounds[:0]
	*p = HistogramPoint{}
	p.Attrs = Attrs{buf: b, field: 9}
	err := each(b, "histogram point", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		switch num {
		case 2:
			v, n, err := fixed64(typ, b, "start_time_unix_nano")
			p.StartTime = v
			return n, err
		case 3:
			v, n, err := fixed64(typ, b, "time_unix_nano")
			p.Time = v
			return n, err
		case 4:
			v, n, err := fixed64(typ, b, "count")
			p.Count = v
			return n, err
		case 5:
			v, n, err := fixed64(typ, b, "sum")
			p.Sum, p.HasSum = math.Float64frombits(v), true
			return n, err
		case 6:
			var n int
			var err error
			counts, n, err = repeatedFixed64(counts, typ, b, "bucket_counts")
			return n, err
		case 7:
			raw, n, err := repeatedFixed64(d.tmp[:0], typ, b, "explicit_bounds")
			for _, r := range raw {
				bounds = append(bounds, math.Float64frombits(r))
			}
			d.tmp = raw
			return n, err
		case 10:
			v, n, err := varint(typ, b, "flags")
			p.Flags = uint32(v)
			return n, err
		case 11:
			v, n, err := fixed64(typ, b, "min")
			p.Min, p.HasMin = math.Float64frombits(v), true
			return n, err
		case 12:
			v, n, err := fixed64(typ, b, "max")
			p.Max, p.HasMax = math.Float64frombits(v), true
			return n, err
		}
		return 0, nil
	})
	p.Counts, p.Bounds = counts, bounds
	if len(counts) > maxBuckets || len(bounds) > maxBuckets {
		return fmt.Errorf("%w: histogram with %d buckets (limit %d)", ErrMalformed, len(counts), maxBuckets)
	}
	return err
}

func (d *Decoder) expHistogramPoint(b []byte) error {
	p := &d.ep
	pos := p.Positive[:0]
	*p = ExpHistogramPoint{}
	p.Attrs = Attrs{buf: b, field: 1}
	err := each(b, "exponential histogram point", func(num protowire.Number, typ protowire.Type, b []byte) (int, error) {
		switch num {
		case 2:
			v, n, err := fixed64(typ, b, "start_time_unix_nano")
			p.StartTime = v
			return n, err
		case 3:
			v, n, err := fixed64(typ, b, "time_unix_nano")
			p.Time = v
			return n, err
		case 4:
			v, n, err := fixed64(typ, b, "count")
			p.Count = v
			return n, err
		case 5:
			v, n, err := fixed64(typ, b, "sum")
			p.Sum, p.HasSum = math.Float64frombits(v), true
			return n, err
		case 6:
			v, n, err := varint(typ, b, "scale")
			p.Scale = int32(protowire.DecodeZigZag(v))
			return n, err
		case 7:
			v, n, err := fixed64(typ, b, "zero_count")
			p.ZeroCount = v
			return n, err
		case 8, 9:
			bk, n, err := sub(typ, b, "buckets")
			if err != nil {
				return 0, err
			}
			var off int32
			var cs []uint64
			if num == 8 {
				cs = pos
			}
			var total uint64
			err = each(bk, "buckets", func(bnum protowire.Number, btyp protowire.Type, b []byte) (int, error) {
				switch bnum {
				case 1:
					v, n, err := varint(btyp, b, "offset")
					off = int32(protowire.DecodeZigZag(v))
					return n, err
				case 2:
					if btyp == protowire.VarintType {
						v, n, err := varint(btyp, b, "bucket_counts")
						cs = append(cs, v)
						total += v
						return n, err
					}
					packed, n, err := sub(btyp, b, "bucket_counts")
					if err != nil {
						return 0, err
					}
					for len(packed) > 0 {
						v, m := protowire.ConsumeVarint(packed)
						if m < 0 {
							return 0, wireErr("bucket_counts", m)
						}
						if len(cs) >= maxBuckets {
							return 0, fmt.Errorf("%w: exponential histogram with more than %d buckets", ErrMalformed, maxBuckets)
						}
						cs = append(cs, v)
						total += v
						packed = packed[m:]
					}
					return n, nil
				}
				return 0, nil
			})
			if num == 8 {
				pos, p.PositiveOffset = cs, off
			} else {
				p.NegativeCount += total
			}
			return n, err
		case 10:
			v, n, err := varint(typ, b, "flags")
			p.Flags = uint32(v)
			return n, err
		case 12:
			v, n, err := fixed64(typ, b, "min")
			p.Min, p.HasMin = math.Float64frombits(v), true
			return n, err
		case 13:
			v, n, err := fixed64(typ, b, "max")
			p.Max, p.HasMax = math.Float64frombits(v), true
			return n, err
		case 14:
			v, n, err := fixed64(typ, b, "zero_threshold")
			p.ZeroThreshold = math.Float64frombits(v)
			return n, err
		}
		return 0, nil
	})
	p.Positive = pos
	if len(pos) > maxBuckets {
		return fmt.Errorf("%w: exponential histogram with %d buckets (limit %d)", ErrMalformed, len(pos), maxBuckets)
	}
	return err
}
