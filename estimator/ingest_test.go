package estimator

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	respb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/estimator/otlpwire"
	"github.com/flowplace/flowplace/telemetry"
	"go.opentelemetry.io/otel/attribute"
)

// TestSDKQuantilesAndRates sends what agents send (real SDK, real OTLP
// exporter, real gRPC) at a steady rate and checks the aggregates against
// values computed here from the raw inputs.
func TestSDKQuantilesAndRates(t *testing.T) {
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{Window: 2 * time.Second})
	addr := startReceiver(t, agg)
	start := time.Now()
	client := newAgent(t, addr, uidA, "node-a1")
	server := newAgent(t, addr, uidB, "node-b1")
	samples := rttSamples(200)
	const ticks = 20
	const sent, received, conns = 10_000, 30_000, 5
	ctx := context.Background()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range ticks {
		<-tick.C
		client.rec.Record(ctx, webToDB, telemetry.Delta{Opened: conns, Closed: conns, BytesSent: sent, BytesReceived: received, RTT: histOf(samples)})
		server.rec.Record(ctx, dbFromWeb, telemetry.Delta{Opened: conns, Closed: conns, BytesSent: received, BytesReceived: sent, RTT: histOf(samples)})
		client.flush(t)
		server.flush(t)
	}
	elapsed := time.Since(start).Seconds()
	snap := agg.Snapshot()
	if st := agg.Stats(); len(st.Rejected) > 0 {
		t.Fatalf("rejected points: %v", st.Rejected)
	}

	// RTT: the merged client-side histogram of A -> B.
	lat, ok := snap.Latency[uidA][uidB]
	if !ok {
		t.Fatalf("no latency A->B in %+v", snap.Latency)
	}
	// The agent's buckets are 6.25% wide, ours 4.4%: 8% covers both.
	within(t, "p50", lat.P50, exactQuantile(samples, 0.5), 0.08)
	within(t, "p90", lat.P90, exactQuantile(samples, 0.9), 0.08)
	within(t, "p99", lat.P99, exactQuantile(samples, 0.99), 0.08)
	within(t, "min", lat.Min, exactQuantile(samples, 0), 0.1)
	if lat.Samples < 200 || lat.Samples > ticks*200 {
		t.Errorf("samples %.0f, want between one tick's 200 and all %d", lat.Samples, ticks*200)
	}
	if _, ok := snap.Latency[uidB]; ok {
		t.Errorf("server-side RTT must not make a B->A latency entry: %+v", snap.Latency[uidB])
	}

	// Rates: steady traffic, so the decayed rate is the plain rate.
	wantBytes := float64(ticks*(sent+received)) / elapsed
	wantConns := float64(ticks*conns) / elapsed
	web := snap.Traffic[aggregate.WorkloadKey{Namespace: "shop", Kind: "Deployment", Name: "web"}]
	if web == nil {
		t.Fatalf("no traffic for web: %+v", snap.Traffic)
	}
	peer := aggregate.PeerKey{Namespace: "shop", Kind: "StatefulSet", Name: "db", ServiceNamespace: "shop", ServiceName: "db"}
	r, ok := web.Peers[peer][aggregate.ClusterPair{Src: uidA, Dst: uidB}]
	if !ok {
		t.Fatalf("no web -> db A->B: %+v", web.Peers)
	}
	within(t, "web->db bytes/s", r.BytesPerSecond, wantBytes, 0.15)
	within(t, "web->db connections/s", r.ConnectionsPerSecond, wantConns, 0.15)
	within(t, "web->db RTT p50", r.RTTP50, exactQuantile(samples, 0.5), 0.08)
	db := snap.Traffic[aggregate.WorkloadKey{Namespace: "shop", Kind: "StatefulSet", Name: "db"}]
	if db == nil {
		t.Fatal("no traffic for db")
	}
	c, ok := db.Clients[aggregate.ClusterPair{Src: uidA, Dst: uidB}]
	if !ok {
		t.Fatalf("no db clients from A served in B: %+v", db.Clients)
	}
	within(t, "db client bytes/s", c.BytesPerSecond, wantBytes, 0.15)
}

// flowBytes is the decayed byte total of web's client flows.
func flowBytes(t *testing.T, a *aggregate.Aggregator) float64 {
	t.Helper()
	b, _ := a.FlowTotals(telemetry.RoleClient, aggregate.WorkloadKey{Namespace: "shop", Kind: "Deployment", Name: "web"})
	return b
}

// TestAgentRestart: an agent that restarts (new start time, counters from
// zero) loses nothing and counts nothing twice.
func TestAgentRestart(t *testing.T) {
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{Window: time.Hour})
	addr := startReceiver(t, agg)
	ctx := context.Background()
	a1 := newAgent(t, addr, uidA, "n1")
	a1.rec.Record(ctx, webToDB, telemetry.Delta{BytesSent: 1000})
	a1.flush(t)
	a1.rec.Record(ctx, webToDB, telemetry.Delta{BytesSent: 500})
	a1.flush(t)
	a1.flush(t) // no change: a duplicate cumulative value adds nothing
	if err := a1.p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a2 := newAgent(t, addr, uidA, "n1") // same resource: same series
	a2.rec.Record(ctx, webToDB, telemetry.Delta{BytesSent: 700})
	a2.flush(t)
	// With a one-hour window the decay over this test is below 0.01%.
	within(t, "bytes after restart", flowBytes(t, agg), 2200, 0.001)
	if st := agg.Stats(); len(st.Rejected) > 0 {
		t.Errorf("rejected: %v", st.Rejected)
	}
}

// TestDeltaTemporalityAndHistogramKinds: delta sums and both histogram
// kinds, as other SDK configurations or collectors send them.
func TestDeltaTemporalityAndHistogramKinds(t *testing.T) {
	bounds := []float64{}
	for b := 0.001; b < 0.05; b *= 1.25 {
		bounds = append(bounds, b)
	}
	samples := rttSamples(500)
	for _, tc := range []struct {
		name       string
		delta, exp bool
		tol        float64
	}{
		{"delta exponential", true, true, 0.08},
		{"delta explicit", true, false, 0.13}, // buckets 25% wide
		{"cumulative explicit", false, false, 0.13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			agg := aggregate.NewAggregator(aggregate.AggregatorConfig{Window: time.Hour})
			addr := startReceiver(t, agg)
			a := newCustomAgent(t, addr, uidA, tc.delta, tc.exp, bounds)
			ctx := context.Background()
			for range 3 {
				a.rec.Record(ctx, webToDB, telemetry.Delta{BytesSent: 100, BytesReceived: 200, RTT: histOf(samples)})
				a.flush(t)
			}
			within(t, "bytes", flowBytes(t, agg), 900, 0.001)
			lat := agg.Snapshot().Latency[uidA][uidB]
			within(t, "p50", lat.P50, exactQuantile(samples, 0.5), tc.tol)
			within(t, "p90", lat.P90, exactQuantile(samples, 0.9), tc.tol)
			within(t, "samples", lat.Samples, 1500, 0.001)
			if st := agg.Stats(); len(st.Rejected) > 0 {
				t.Errorf("rejected: %v", st.Rejected)
			}
		})
	}
}

// TestMalformedRequests: bytes that are not an OTLP request are refused
// as a whole with InvalidArgument, through the real gRPC path.
func TestMalformedRequests(t *testing.T) {
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{})
	addr := startReceiver(t, agg)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	valid, err := proto.Marshal(nanRequest(5))
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"garbage":         []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"),
		"truncated":       valid[:len(valid)-3],
		"wrong wire type": {0x0d, 1, 2, 3, 4}, // field 1 as fixed32
		"length overflow": {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := agg.Ingest(b); !errors.Is(err, otlpwire.ErrMalformed) {
				t.Fatalf("Ingest: %v, want ErrMalformed", err)
			}
			var resp colmetrics.ExportMetricsServiceResponse
			err := conn.Invoke(context.Background(), "/"+metricsServiceName+"/"+exportMethod, rawBytes(b), &resp, grpc.ForceCodec(bytesCodec{}))
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("gRPC: %v, want InvalidArgument", err)
			}
		})
	}
	if st := agg.Stats(); st.Flows != 0 {
		t.Fatalf("malformed requests left flows: %+v", st)
	}
	// The standard generated client gets a partial success for bad points.
	client := colmetrics.NewMetricsServiceClient(conn)
	req := nanRequest(5)
	req.ResourceMetrics[0].ScopeMetrics[0].Metrics = append(req.ResourceMetrics[0].ScopeMetrics[0].Metrics, nanRequest(math.NaN()).ResourceMetrics[0].ScopeMetrics[0].Metrics...)
	resp, err := client.Export(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if ps := resp.GetPartialSuccess(); ps.GetRejectedDataPoints() != 1 || ps.GetErrorMessage() != "rejected data points: invalid_value=1" {
		t.Fatalf("partial success %+v", ps)
	}
}

type rawBytes []byte

// bytesCodec sends rawBytes as they are and decodes responses with proto.
type bytesCodec struct{}

func (bytesCodec) Name() string { return "proto" }
func (bytesCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(rawBytes); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (bytesCodec) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }

// nanRequest is one cumulative bytes point of web -> db with value v, as
// the generated OTLP types build it.
func nanRequest(v float64) *colmetrics.ExportMetricsServiceRequest {
	kv := func(k attribute.Key, v string) *common.KeyValue {
		return &common.KeyValue{Key: string(k), Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: v}}}
	}
	now := uint64(time.Now().UnixNano())
	return &colmetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &respb.Resource{Attributes: []*common.KeyValue{kv(telemetry.AttrClusterUID, uidA)}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{{
			Name: telemetry.MetricBytes, Unit: telemetry.UnitBytes,
			Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, IsMonotonic: true,
				DataPoints: []*metricspb.NumberDataPoint{{
					Attributes: []*common.KeyValue{
						kv(telemetry.AttrRole, "client"), kv(telemetry.AttrNamespace, "shop"),
						kv(telemetry.AttrWorkloadKind, "Deployment"), kv(telemetry.AttrWorkloadName, "web"),
						kv(telemetry.AttrServiceNamespace, "shop"), kv(telemetry.AttrServiceName, "db"),
						kv(telemetry.AttrPeerClusterUID, uidB), kv(telemetry.AttrDirection, "transmit"),
					},
					StartTimeUnixNano: now, TimeUnixNano: now + 1e9,
					Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v},
				}},
			}},
		}}}},
	}}}
}

// TestNamesMatchTelemetry: the aggregate package repeats the agents' names
// (to stay light); they must be the ones telemetry defines.
func TestNamesMatchTelemetry(t *testing.T) {
	for got, want := range map[string]string{
		aggregate.MetricRTT: telemetry.MetricRTT, aggregate.MetricBytes: telemetry.MetricBytes,
		aggregate.MetricConnections: telemetry.MetricConnections, aggregate.UnitBytes: telemetry.UnitBytes,
		aggregate.AttrClusterUID: string(telemetry.AttrClusterUID), aggregate.AttrRole: string(telemetry.AttrRole),
		aggregate.AttrNamespace: string(telemetry.AttrNamespace), aggregate.AttrWorkloadKind: string(telemetry.AttrWorkloadKind),
		aggregate.AttrWorkloadName: string(telemetry.AttrWorkloadName), aggregate.AttrServiceNamespace: string(telemetry.AttrServiceNamespace),
		aggregate.AttrServiceName: string(telemetry.AttrServiceName), aggregate.AttrPeerClusterUID: string(telemetry.AttrPeerClusterUID),
		aggregate.AttrPeerNamespace: string(telemetry.AttrPeerNamespace), aggregate.AttrPeerWorkloadKind: string(telemetry.AttrPeerWorkloadKind),
		aggregate.AttrPeerWorkloadName: string(telemetry.AttrPeerWorkloadName), aggregate.AttrDirection: string(telemetry.AttrDirection),
		aggregate.RoleClient: telemetry.RoleClient, aggregate.RoleServer: telemetry.RoleServer,
	} {
		if got != want {
			t.Errorf("aggregate has %q where telemetry has %q", got, want)
		}
	}
}
