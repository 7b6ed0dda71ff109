package otlpwire

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/exemplar"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// rawCodec is gRPC's proto codec that also keeps the request bytes as
// they arrived: the seeds are exactly what the SDK's exporter sent.
type rawCodec struct {
	mu   sync.Mutex
	reqs [][]byte
}

func (c *rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }
func (c *rawCodec) Unmarshal(data []byte, v any) error {
	c.mu.Lock()
	c.reqs = append(c.reqs, append([]byte(nil), data...))
	c.mu.Unlock()
	return proto.Unmarshal(data, v.(proto.Message))
}
func (c *rawCodec) Name() string { return "proto" }

type nopMetricsServer struct {
	colmetricpb.UnimplementedMetricsServiceServer
}

func (nopMetricsServer) Export(context.Context, *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

// sdkRequests exports measurements of every instrument kind through the
// OTel SDK's OTLP gRPC exporter into an in-process receiver, once with
// cumulative and once with delta temporality, and returns the requests.
func sdkRequests(tb testing.TB) map[string][]byte {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	codec := &rawCodec{}
	srv := grpc.NewServer(grpc.ForceServerCodec(codec))
	colmetricpb.RegisterMetricsServiceServer(srv, nopMetricsServer{})
	go srv.Serve(ln)
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := resource.New(ctx, resource.WithAttributes(
		attribute.String("k8s.cluster.uid", "0d6c2f1e-6a5e-4a57-9d4b-6b1f0c7e9a10"),
		attribute.String("service.name", "flowplace-agent"),
		attribute.Int("host.cpus", 2), attribute.Bool("lab", true), attribute.Float64("weight", 0.5),
		attribute.StringSlice("tags", []string{"a", "ü"}),
	))
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string][]byte{}
	for _, temporality := range []string{"cumulative", "delta"} {
		sel := sdkmetric.DefaultTemporalitySelector
		if temporality == "delta" {
			sel = func(sdkmetric.InstrumentKind) metricdata.Temporality { return metricdata.DeltaTemporality }
		}
		exp, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(ln.Addr().String()), otlpmetricgrpc.WithInsecure(),
			otlpmetricgrpc.WithTemporalitySelector(sel))
		if err != nil {
			tb.Fatal(err)
		}
		reader := sdkmetric.NewManualReader(sdkmetric.WithTemporalitySelector(sel))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(res),
			sdkmetric.WithExemplarFilter(exemplar.AlwaysOnFilter),
			sdkmetric.WithView(
				sdkmetric.NewView(sdkmetric.Instrument{Name: "flowplace.test.rtt.exp"},
					sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 16, MaxScale: 20}}),
				// Dropping an attribute moves it into the exemplars'
				// filtered_attributes.
				sdkmetric.NewView(sdkmetric.Instrument{Name: "flowplace.test.bytes"},
					sdkmetric.Stream{AttributeFilter: attribute.NewDenyKeysFilter("connection.id")}),
			))
		m := mp.Meter("github.com/flowplace/flowplace/estimator/otlpwire", metric.WithInstrumentationVersion("0.1.0"),
			metric.WithInstrumentationAttributes(attribute.String("scope.attr", "x")))
		must := func(err error) {
			if err != nil {
				tb.Fatal(err)
			}
		}
		bytesC, err := m.Int64Counter("flowplace.test.bytes", metric.WithUnit("By"), metric.WithDescription("bytes"))
		must(err)
		upDown, err := m.Float64UpDownCounter("flowplace.test.inflight")
		must(err)
		gauge, err := m.Float64Gauge("flowplace.test.gauge", metric.WithUnit("1"))
		must(err)
		rtt, err := m.Float64Histogram("flowplace.test.rtt", metric.WithUnit("s"))
		must(err)
		rttExp, err := m.Float64Histogram("flowplace.test.rtt.exp", metric.WithUnit("s"))
		must(err)
		_, err = m.Int64ObservableGauge("flowplace.test.observed", metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			o.Observe(-7, metric.WithAttributes(attribute.String("k", "v")))
			return nil
		}))
		must(err)
		for i := range 6 {
			a := metric.WithAttributes(attribute.String("flowplace.role", []string{"client", "server"}[i%2]),
				attribute.Int("connection.id", i), attribute.String("k8s.namespace.name", "shop"))
			bytesC.Add(ctx, int64(1000*i), a)
			upDown.Add(ctx, float64(i)-9.5, a)
			gauge.Record(ctx, float64(i)*0.25, a)
			rtt.Record(ctx, float64(i)*1e-3, a)
			rttExp.Record(ctx, float64(i)*1e-4-2e-4, a) // some negative: negative buckets, zero count
		}
		var rm metricdata.ResourceMetrics
		must(reader.Collect(ctx, &rm))
		must(exp.Export(ctx, &rm))
		must(exp.Shutdown(ctx))
		must(mp.Shutdown(ctx))
		codec.mu.Lock()
		if len(codec.reqs) == 0 {
			tb.Fatal("the SDK exported nothing")
		}
		out[temporality] = codec.reqs[len(codec.reqs)-1]
		codec.mu.Unlock()
	}
	return out
}
