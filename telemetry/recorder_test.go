package telemetry

import (
	"context"
	"math"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowplace/flowplace/internal/loghist"
)

func newTestRecorder(t *testing.T, maxSeries int) (*Recorder, *sdkmetric.ManualReader) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithView(sdkmetric.NewView(
		sdkmetric.Instrument{Name: MetricRTT},
		sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}},
	)))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	r, err := NewRecorder(mp.Meter(ScopeName), maxSeries)
	if err != nil {
		t.Fatal(err)
	}
	return r, reader
}

func collect(t *testing.T, reader *sdkmetric.ManualReader) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

func sumFor(m metricdata.Metrics, match attribute.KeyValue) int64 {
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		if v, ok := dp.Attributes.Value(match.Key); ok && v == match.Value {
			n += dp.Value
		}
	}
	return n
}

var frontendToCart = SeriesKey{
	Role: RoleClient, Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "frontend",
	ServiceNamespace: "shop", ServiceName: "cart", ServerPort: 8080,
	Peer: Peer{ClusterName: "eu-west-1", ClusterUID: "uid-eu", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "cart"},
}

func TestRecorderSumsAndAttributes(t *testing.T) {
	r, reader := newTestRecorder(t, 0)
	ctx := context.Background()
	var h loghist.Histogram
	for _, us := range []uint32{20100, 20300, 19900, 20500, 50000} {
		h.Add(us)
	}
	r.Record(ctx, frontendToCart, Delta{Opened: 3, Closed: 1, BytesSent: 1000, BytesReceived: 5000, Retransmits: 2, RTT: &h})
	r.Record(ctx, frontendToCart, Delta{Opened: 0, Closed: 2, BytesSent: 24, BytesReceived: 0})

	ms := collect(t, reader)
	tx := sumFor(ms[MetricBytes], directionTransmit)
	rx := sumFor(ms[MetricBytes], directionReceive)
	if tx != 1024 || rx != 5000 {
		t.Errorf("bytes tx %d rx %d, want 1024 and 5000", tx, rx)
	}
	if n := sumFor(ms[MetricConnections], AttrServiceName.String("cart")); n != 3 {
		t.Errorf("connections %d, want 3", n)
	}
	if n := sumFor(ms[MetricConnectionsActive], AttrServiceName.String("cart")); n != 0 {
		t.Errorf("active connections %d, want 0", n)
	}
	if n := sumFor(ms[MetricRetransmits], AttrPeerClusterName.String("eu-west-1")); n != 2 {
		t.Errorf("retransmits %d, want 2", n)
	}
	hist := ms[MetricRTT].Data.(metricdata.ExponentialHistogram[float64])
	if len(hist.DataPoints) != 1 {
		t.Fatalf("want one RTT series, got %d", len(hist.DataPoints))
	}
	dp := hist.DataPoints[0]
	wantSum := float64(h.Sum) / 1e6
	if dp.Count != 5 || math.Abs(dp.Sum-wantSum) > 1e-9 {
		t.Errorf("RTT count %d sum %g, want 5 and exactly %g", dp.Count, dp.Sum, wantSum)
	}
	if dp.Scale < 3 {
		t.Errorf("exponential histogram scale %d: too coarse for 5%% quantiles", dp.Scale)
	}
	for _, kv := range []attribute.KeyValue{
		AttrRole.String("client"), AttrWorkloadName.String("frontend"), AttrServiceName.String("cart"),
		AttrServerPort.Int(8080), AttrPeerClusterUID.String("uid-eu"), AttrPeerWorkloadName.String("cart"),
	} {
		if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
			t.Errorf("RTT series lacks %s=%v (has %v)", kv.Key, kv.Value.Emit(), dp.Attributes.Encoded(attribute.DefaultEncoder()))
		}
	}
}

func TestRecorderOverflowIsBoundedAndCounted(t *testing.T) {
	r, reader := newTestRecorder(t, 3)
	ctx := context.Background()
	for i := range 10 {
		k := frontendToCart
		k.ServerPort = uint16(9000 + i)
		r.Record(ctx, k, Delta{Opened: 1, BytesSent: 10})
	}
	if r.Series() != 3 {
		t.Fatalf("series = %d, want the limit 3", r.Series())
	}
	ms := collect(t, reader)
	var overflowed int64
	for _, dp := range ms[MetricSeriesOverflow].Data.(metricdata.Sum[int64]).DataPoints {
		overflowed += dp.Value
	}
	if overflowed != 7 {
		t.Errorf("overflowed updates = %d, want 7", overflowed)
	}
	if got := sumFor(ms[MetricBytes], AttrOverflow.Bool(true)); got != 70 {
		t.Errorf("overflow series carries %d bytes, want 70", got)
	}
	if got := sumFor(ms[MetricBytes], AttrRole.String("client")); got != 30 {
		t.Errorf("named series carry %d bytes, want 30", got)
	}
	// Idle series are forgotten, freeing room.
	if n := r.Forget(time.Now().Add(time.Second)); n != 0 {
		t.Errorf("forgot %d series with open connections", n)
	}
}

// Attribute sets are built once per series, not per update.
func BenchmarkRecordExisting(b *testing.B) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	r, _ := NewRecorder(mp.Meter(ScopeName), 0)
	ctx := context.Background()
	d := Delta{Opened: 1, Closed: 1, BytesSent: 100, BytesReceived: 200}
	b.ReportAllocs()
	for b.Loop() {
		r.Record(ctx, frontendToCart, d)
	}
}

// Every attribute of a series reaches both directions of the bytes counter
// (attribute.NewSet sorts in place; sharing a backing array lost the
// attribute that sorts last).
func TestRecorderDirectionsKeepAllAttributes(t *testing.T) {
	r, reader := newTestRecorder(t, 0)
	r.Record(context.Background(), frontendToCart, Delta{BytesSent: 1, BytesReceived: 2})
	want := len(frontendToCart.attributes()) + 1
	for _, dp := range collect(t, reader)[MetricBytes].Data.(metricdata.Sum[int64]).DataPoints {
		if dp.Attributes.Len() != want {
			t.Errorf("series %v has %d attributes, want %d", dp.Attributes.Encoded(attribute.DefaultEncoder()), dp.Attributes.Len(), want)
		}
		if _, ok := dp.Attributes.Value(AttrServerPort); !ok {
			t.Errorf("series lost %s: %v", AttrServerPort, dp.Attributes.Encoded(attribute.DefaultEncoder()))
		}
	}
}

// Connections already open when the agent started count as open, never as
// established.
func TestRecorderAdoptedAreActiveNotEstablished(t *testing.T) {
	r, reader := newTestRecorder(t, 0)
	ctx := context.Background()
	r.Record(ctx, frontendToCart, Delta{Adopted: 3})
	r.Record(ctx, frontendToCart, Delta{Opened: 1, Closed: 2})
	ms := collect(t, reader)
	cart := AttrServiceName.String("cart")
	if n := sumFor(ms[MetricConnections], cart); n != 1 {
		t.Errorf("connections established %d, want 1", n)
	}
	if n := sumFor(ms[MetricConnectionsActive], cart); n != 2 {
		t.Errorf("connections active %d, want 2", n)
	}
}
