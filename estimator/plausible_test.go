package estimator

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	respb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/telemetry"
)

// Hand-built OTLP points, as a buggy or hostile agent would send them, with
// the generated types.

func skv(k, v string) *common.KeyValue {
	return &common.KeyValue{Key: k, Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: v}}}
}

// clientAttrs are the point attributes of workload (Deployment, shop) as a
// client of db in cluster B.
func clientAttrs(workload string) []*common.KeyValue {
	return []*common.KeyValue{
		skv(string(telemetry.AttrRole), "client"), skv(string(telemetry.AttrNamespace), "shop"),
		skv(string(telemetry.AttrWorkloadKind), "Deployment"), skv(string(telemetry.AttrWorkloadName), workload),
		skv(string(telemetry.AttrServiceNamespace), "shop"), skv(string(telemetry.AttrServiceName), "db"),
		skv(string(telemetry.AttrPeerClusterUID), uidB), skv(string(telemetry.AttrPeerNamespace), "shop"),
		skv(string(telemetry.AttrPeerWorkloadKind), "StatefulSet"), skv(string(telemetry.AttrPeerWorkloadName), "db"),
	}
}

func exportOf(node string, m *metricspb.Metric) *colmetrics.ExportMetricsServiceRequest {
	return &colmetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource:     &respb.Resource{Attributes: []*common.KeyValue{skv(string(telemetry.AttrClusterUID), uidA), skv(string(telemetry.AttrNodeName), node)}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{Metrics: []*metricspb.Metric{m}}},
	}}}
}

func bytesPoint(workload string, v float64, start, end time.Time) *metricspb.Metric {
	return &metricspb.Metric{Name: telemetry.MetricBytes, Unit: telemetry.UnitBytes, Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
		AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, IsMonotonic: true,
		DataPoints: []*metricspb.NumberDataPoint{{
			Attributes:        append(clientAttrs(workload), skv(string(telemetry.AttrDirection), "transmit")),
			StartTimeUnixNano: uint64(start.UnixNano()), TimeUnixNano: uint64(end.UnixNano()),
			Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v},
		}},
	}}}
}

// rttPoint is a delta exponential histogram (seconds, scale 4) of web -> db.
func rttPoint(offset int32, counts []uint64, start, end time.Time) *metricspb.Metric {
	var n uint64
	for _, c := range counts {
		n += c
	}
	return &metricspb.Metric{Name: telemetry.MetricRTT, Unit: "s", Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
		AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA,
		DataPoints: []*metricspb.ExponentialHistogramDataPoint{{
			Attributes:        clientAttrs("web"),
			StartTimeUnixNano: uint64(start.UnixNano()), TimeUnixNano: uint64(end.UnixNano()),
			Count: n, Scale: 4,
			Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: offset, BucketCounts: counts},
		}},
	}}}
}

// exportExpect sends req and checks the partial success: rejected points
// and the message naming their reason.
func exportExpect(t *testing.T, client colmetrics.MetricsServiceClient, req *colmetrics.ExportMetricsServiceRequest, reason string) {
	t.Helper()
	resp, err := client.Export(context.Background(), req)
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	ps := resp.GetPartialSuccess()
	want := int64(0)
	msg := ""
	if reason != "" {
		want, msg = 1, "rejected data points: "+reason+"=1"
	}
	if ps.GetRejectedDataPoints() != want || ps.GetErrorMessage() != msg {
		t.Errorf("partial success %d %q, want %d %q", ps.GetRejectedDataPoints(), ps.GetErrorMessage(), want, msg)
	}
}

// testImplausible: points that claim the impossible, sent between a real
// agent's exports, are refused alone; what is published is what the real
// agents measured, and the series the hostile points aimed at go on.
func testImplausible(t *testing.T, en *env) {
	ctx := context.Background()
	deleteAll(t, en)
	// probe is a workload only the hand-built series below report.
	rb := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
		"metadata": map[string]any{"name": "probe-deployment", "namespace": "shop"},
		"spec":     map[string]any{"resource": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": "probe", "namespace": "shop"}},
	}}
	if _, err := en.cp.Host.Dynamic.Resource(ResourceBindingGVR).Namespace("shop").Create(ctx, rb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// A one-hour window: over this test's seconds the decay is below 0.1%,
	// so totals are what was sent.
	r := en.start(t, "replica-p", time.Hour)
	defer r.stop(t)
	waitLeader(t, r)
	addr := r.e.OTLPAddr().String()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := colmetrics.NewMetricsServiceClient(conn)

	// The probe's series: true cumulative points, and one stamped in 2096
	// among them. Before the fix, the 2096 point was taken and every true
	// point after it refused as out_of_order.
	t0 := time.Now()
	exportExpect(t, client, exportOf("node-p", bytesPoint("probe", 1000, t0, t0.Add(time.Second))), "")
	exportExpect(t, client, exportOf("node-p", bytesPoint("probe", 5000, t0, time.Date(2096, 1, 1, 0, 0, 0, 0, time.UTC))), "implausible_time")
	exportExpect(t, client, exportOf("node-p", bytesPoint("probe", 3000, t0, t0.Add(2*time.Second))), "")
	exportExpect(t, client, exportOf("node-p", bytesPoint("probe", 6000, t0, t0.Add(3*time.Second))), "")

	// Real traffic web -> db for 2 s; halfway, hostile points about the
	// same flow and cluster pair from another node of cluster A.
	const d = 2 * time.Second
	want := driveTraffic(t, addr, d, func() {
		now := time.Now()
		// An RTT histogram claiming 2^63-1 samples in a second.
		exportExpect(t, client, exportOf("node-h", rttPoint(-123, []uint64{1<<63 - 1}, now.Add(-time.Second), now)), "implausible_rate")
		// 1000 RTT samples at offset 2000: 2^125 s.
		exportExpect(t, client, exportOf("node-h", rttPoint(2000, []uint64{1000}, now.Add(-time.Second), now)), "implausible_rtt")
		// 1e300 bytes over 1 ns, counted from the series' start.
		exportExpect(t, client, exportOf("node-h", bytesPoint("web", 1e300, now.Add(-time.Nanosecond), now)), "implausible_rate")
	})
	cl, web, _ := waitPublished(t, en)
	var probe *v1.WorkloadTraffic
	poll(t, 30*time.Second, "the probe's WorkloadTraffic", func() (bool, error) {
		var err error
		probe, err = getTraffic(ctx, en, "probe-deployment")
		if err == nil && len(probe.Status.Peers) == 0 {
			err = fmt.Errorf("no status yet")
		}
		return err == nil, err
	})

	// Nothing but the rejection counters moved.
	var wantRej [aggregate.NumReasons]int64
	wantRej[aggregate.ReasonImplausibleTime] = 1
	wantRej[aggregate.ReasonImplausibleRate] = 2
	wantRej[aggregate.ReasonImplausibleRTT] = 1
	if got := r.e.Aggregator().RejectedByReason(); got != wantRej {
		t.Errorf("rejections by reason %v, want %v", got, wantRej)
	}
	if st := r.e.PublishStats(); st.Errors != 0 {
		t.Errorf("publish errors: %+v", st)
	}
	// The probe's series went on: 6000 bytes, all true points counted.
	if b, _ := r.e.Aggregator().FlowTotals("client", aggregate.WorkloadKey{Namespace: "shop", Kind: "Deployment", Name: "probe"}); math.Abs(b-6000) > 6 {
		t.Errorf("probe bytes %.1f, want 6000 (±0.1%% of decay)", b)
	}
	if len(probe.Status.Peers) != 1 || probe.Status.Peers[0].BytesPerSecond <= 0 || probe.Status.Peers[0].BytesPerSecond > 6000 {
		// 6000 bytes over a window at least the 1 s of the first point's interval.
		t.Errorf("probe published %+v, want one peer with 0 < bytes/s <= 6000", probe.Status.Peers)
	}
	// The latency row is the real agent's: quantiles within the test's
	// usual 8% (bucket widths), and no more samples than it sent (100 per
	// 100 ms tick).
	if len(cl.Status.Peers) != 1 {
		t.Fatalf("ClusterLatency peers %+v", cl.Status.Peers)
	}
	p := cl.Status.Peers[0]
	maxSamples := int64(100 * (d/(100*time.Millisecond) + 1))
	if p.SampleCount < 100 || p.SampleCount > maxSamples || cl.Status.SampleCount != p.SampleCount {
		t.Errorf("samples: peer %d, row %d; want 100..%d from the real agent", p.SampleCount, cl.Status.SampleCount, maxSamples)
	}
	within(t, "p50", float64(p.P50Microseconds), micro(exactQuantile(want.samples, 0.5)), 0.08)
	within(t, "p99", float64(p.P99Microseconds), micro(exactQuantile(want.samples, 0.99)), 0.08)
	// web's traffic to db is the real agent's (the test's usual 25%: 10%
	// write threshold on top of the rate estimate).
	if len(web.Status.Peers) != 1 || len(web.Status.Peers[0].Clusters) != 1 {
		t.Fatalf("web peers %+v", web.Status.Peers)
	}
	within(t, "web->db bytes/s", float64(web.Status.Peers[0].Clusters[0].BytesPerSecond), want.bytesPerSec, 0.25)
}

// testSaturation: whatever the aggregates hold, every published number is
// within the schema (the API server's validation is the judge), and
// saturates at its bound rather than wrapping.
func testSaturation(t *testing.T, en *env) {
	ctx := context.Background()
	deleteAll(t, en)
	r := en.start(t, "replica-s", time.Minute)
	defer r.stop(t)
	waitLeader(t, r)
	now := time.Now()
	huge := aggregate.Rates{BytesPerSecond: 1e300, ConnectionsPerSecond: math.Inf(1), RTTP50: 1e9, Samples: 1e30}
	snap := &aggregate.Snapshot{
		Now: now, WindowSeconds: math.MaxInt32,
		Latency: map[string]map[string]aggregate.PairStat{uidB: {
			uidA: {Min: 1e9, P50: 1e9, P90: math.Inf(1), P99: 1e300, Mean: 1e9, Samples: 1e30, LastSeen: now},
			uidB: {Min: math.NaN(), P50: -1, P90: 0.001, P99: 0.002, Samples: math.Pow(2, 63), LastSeen: now},
		}},
		Traffic: map[aggregate.WorkloadKey]*aggregate.WorkloadStat{{Namespace: "shop", Kind: "StatefulSet", Name: "db"}: {
			Peers: map[aggregate.PeerKey]map[aggregate.ClusterPair]aggregate.Rates{
				{Namespace: "shop", Kind: "Deployment", Name: "web"}: {{Src: uidB, Dst: uidA}: huge, {Src: uidB, Dst: uidB}: huge},
			},
			Clients:  map[aggregate.ClusterPair]aggregate.Rates{{Src: uidA, Dst: uidB}: huge},
			LastSeen: now,
		}},
	}
	if n, err := r.e.pub.publish(ctx, snap); err != nil || n != 2 {
		t.Fatalf("publish: %d objects, %v; want both written", n, err)
	}
	cl, err := getLatency(ctx, en, "member2")
	if err != nil {
		t.Fatal(err)
	}
	if cl.Status.SampleCount != math.MaxInt64 || cl.Status.WindowSeconds != maxWindowSeconds {
		t.Errorf("ClusterLatency freshness %+v, want sampleCount 2^63-1 and windowSeconds %d", cl.Status.Freshness, maxWindowSeconds)
	}
	wantPeers := []v1.PeerLatency{
		{Cluster: "member1", MinMicroseconds: v1.MaxRTTMicroseconds, P50Microseconds: v1.MaxRTTMicroseconds, P90Microseconds: v1.MaxRTTMicroseconds, P99Microseconds: v1.MaxRTTMicroseconds, SampleCount: math.MaxInt64},
		{Cluster: "member2", MinMicroseconds: 0, P50Microseconds: 0, P90Microseconds: 1000, P99Microseconds: 2000, SampleCount: math.MaxInt64},
	}
	for i := range wantPeers {
		if i >= len(cl.Status.Peers) {
			t.Fatalf("peers %+v", cl.Status.Peers)
		}
		got := cl.Status.Peers[i]
		got.LastSampleTime = metav1.Time{}
		if got != wantPeers[i] {
			t.Errorf("peer %d = %+v, want %+v", i, got, wantPeers[i])
		}
	}
	db, err := getTraffic(ctx, en, "db-statefulset")
	if err != nil {
		t.Fatal(err)
	}
	sat := v1.TrafficRates{BytesPerSecond: 1e13, MilliConnectionsPerSecond: 1e12, RTTP50Microseconds: v1.MaxRTTMicroseconds, SampleCount: math.MaxInt64}
	if db.Status.SampleCount != math.MaxInt64 || len(db.Status.Clients) != 1 || db.Status.Clients[0].TrafficRates != sat ||
		len(db.Status.Peers) != 1 || db.Status.Peers[0].BytesPerSecond != 1e13 || len(db.Status.Peers[0].Clusters) != 2 ||
		db.Status.Peers[0].Clusters[0].TrafficRates != sat || db.Status.Peers[0].Clusters[1].TrafficRates != sat {
		t.Errorf("WorkloadTraffic status %+v, want every rate saturated at its bound (%+v)", db.Status, sat)
	}
}
