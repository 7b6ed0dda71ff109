package estimator

import (
	"context"
	"math"
	"net"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/telemetry"
)

// startReceiver serves the OTLP MetricsService on agg on a loopback port.
func startReceiver(t testing.TB, agg *aggregate.Aggregator) string {
	t.Helper()
	srv, err := NewGRPCServer(agg, ServerTLS{}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// agent is one synthetic flowplace agent: the real telemetry provider and
// recorder, exporting with the real OTLP gRPC exporter. Exports happen on
// Flush only (the periodic interval is an hour).
type agent struct {
	p   *telemetry.Provider
	rec *telemetry.Recorder
}

func newAgent(t testing.TB, endpoint, clusterUID, node string) *agent {
	t.Helper()
	p, err := telemetry.NewProvider(context.Background(), telemetry.Config{
		Resource: []attribute.KeyValue{telemetry.AttrClusterUID.String(clusterUID), telemetry.AttrNodeName.String(node)},
		OTLP:     telemetry.OTLPConfig{Endpoint: endpoint, Insecure: true, Interval: time.Hour, Timeout: 10 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := telemetry.NewRecorder(p.Meter(), 0)
	if err != nil {
		t.Fatal(err)
	}
	a := &agent{p: p, rec: rec}
	t.Cleanup(func() {
		// The receiver may be gone by now: do not let the exporter's
		// retries hold the test up.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return a
}

func (a *agent) flush(t testing.TB) {
	t.Helper()
	if err := a.p.ForceFlush(context.Background()); err != nil {
		t.Fatalf("export: %v", err)
	}
}

// deltaTemporalityAgent exports with delta temporality and, unless exp is
// set, explicit-bucket RTT histograms with the given bounds (seconds).
func newCustomAgent(t testing.TB, endpoint, clusterUID string, delta, exp bool, bounds []float64) *agent {
	t.Helper()
	opts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithEndpoint(endpoint), otlpmetricgrpc.WithInsecure()}
	if delta {
		opts = append(opts, otlpmetricgrpc.WithTemporalitySelector(func(sdkmetric.InstrumentKind) metricdata.Temporality {
			return metricdata.DeltaTemporality
		}))
	}
	exporter, err := otlpmetricgrpc.New(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	agg := sdkmetric.Aggregation(sdkmetric.AggregationExplicitBucketHistogram{Boundaries: bounds})
	if exp {
		agg = sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithResource(resource.NewSchemaless(telemetry.AttrClusterUID.String(clusterUID))),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exporter, sdkmetric.WithInterval(time.Hour))),
		sdkmetric.WithView(sdkmetric.NewView(sdkmetric.Instrument{Name: telemetry.MetricRTT}, sdkmetric.Stream{Aggregation: agg})),
	)
	rec, err := telemetry.NewRecorder(mp.Meter(telemetry.ScopeName), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = mp.Shutdown(ctx)
	})
	return &agent{p: &telemetry.Provider{MeterProvider: mp}, rec: rec}
}

// Keys of the test topology: web (Deployment, cluster A) calls db
// (StatefulSet, cluster B) through service db.
const (
	uidA = "0b9d4c52-0000-4000-8000-00000000000a"
	uidB = "0b9d4c52-0000-4000-8000-00000000000b"
)

var (
	webToDB = telemetry.SeriesKey{
		Role: telemetry.RoleClient, Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "web",
		ServiceNamespace: "shop", ServiceName: "db", ServerPort: 5432,
		Peer: telemetry.Peer{ClusterUID: uidB, ClusterName: "member2", Namespace: "shop", WorkloadKind: "StatefulSet", WorkloadName: "db"},
	}
	dbFromWeb = telemetry.SeriesKey{
		Role: telemetry.RoleServer, Namespace: "shop", WorkloadKind: "StatefulSet", WorkloadName: "db",
		ServiceNamespace: "shop", ServiceName: "db", ServerPort: 5432,
		Peer: telemetry.Peer{ClusterUID: uidA, ClusterName: "member1", Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "web"},
	}
)

// rttSamples are deterministic RTTs in µs, log-uniform over 2..20 ms.
func rttSamples(n int) []uint32 {
	out := make([]uint32, n)
	for i := range out {
		out[i] = uint32(2000 * math.Pow(10, float64(i)/float64(n)))
	}
	return out
}

func histOf(us []uint32) *loghist.Histogram {
	var h loghist.Histogram
	for _, v := range us {
		h.Add(v)
	}
	return &h
}

// exactQuantile is the nearest-rank quantile of the raw samples, in seconds.
func exactQuantile(us []uint32, q float64) float64 {
	s := slices.Clone(us)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return float64(s[max(i, 0)]) / 1e6
}

func within(t testing.TB, what string, got, want, rel float64) {
	t.Helper()
	if testing.Verbose() {
		t.Logf("measured: %s off by %+.2f%% (bound %.0f%%)", what, 100*(got-want)/want, rel*100)
	}
	if math.Abs(got-want) > rel*math.Abs(want) {
		t.Errorf("%s = %.6g, want %.6g ± %.0f%%", what, got, want, rel*100)
	}
}
