package estimator

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/telemetry"
)

// TestModelView checks the model metrics derived from one round's objects:
// the values, the cross-cluster split, the bound on workload pairs with its
// overflow series, data age and staleness.
func TestModelView(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	cl := &v1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Status: v1.ClusterLatencyStatus{Peers: []v1.PeerLatency{
		{Cluster: "a", P50Microseconds: 500, P90Microseconds: 900, P99Microseconds: 2000, LastSampleTime: metav1.NewTime(now.Add(-10 * time.Second))},
		{Cluster: "b", P50Microseconds: 80_000, P90Microseconds: 80_000, P99Microseconds: 80_000, Estimated: true, LastSampleTime: metav1.NewTime(now)},
	}}}
	peer := func(name string, pairs ...v1.ClusterPairTraffic) v1.PeerTraffic {
		p := v1.PeerTraffic{Workload: &v1.PeerWorkloadReference{Kind: "Deployment", Namespace: "shop", Name: name}, Clusters: pairs}
		for _, c := range pairs {
			p.BytesPerSecond += c.BytesPerSecond
		}
		return p
	}
	pair := func(src, dst string, b int64) v1.ClusterPairTraffic {
		return v1.ClusterPairTraffic{SourceCluster: src, DestinationCluster: dst, TrafficRates: v1.TrafficRates{BytesPerSecond: b}}
	}
	wt := &v1.WorkloadTraffic{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-deployment"},
		Spec: v1.WorkloadTrafficSpec{Workload: v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}},
		Status: v1.WorkloadTrafficStatus{Peers: []v1.PeerTraffic{
			peer("cart", pair("a", "a", 1000), pair("a", "b", 3000)),
			peer("search", pair("a", "b", 500)),
			peer("ads", pair("a", "a", 100)),
		}}}
	stale := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"validUntil": now.Add(-time.Second).Format(time.RFC3339)}}}
	fresh := &unstructured.Unstructured{Object: map[string]any{"status": map[string]any{"validUntil": now.Add(time.Minute).Format(time.RFC3339)}}}
	v := buildModelView([]desired{{obj: cl}, {obj: wt}}, map[string][]*unstructured.Unstructured{"WorkloadTraffic": {stale, fresh, fresh}}, now, 2)

	value := func(obs []observation, kv ...string) (float64, int) {
		var sum float64
		n := 0
	next:
		for _, o := range obs {
			for i := 0; i < len(kv); i += 2 {
				if got, ok := o.set.Value(attribute.Key(kv[i])); !ok || got.Emit() != kv[i+1] {
					continue next
				}
			}
			sum += o.value
			n++
		}
		return sum, n
	}
	for _, tc := range []struct {
		name  string
		obs   []observation
		kv    []string
		want  float64
		wantN int
	}{
		{"p90 RTT a->a in seconds", v.rtt, []string{"k8s.cluster.name", "a", "flowplace.peer.cluster.name", "a", "flowplace.rtt.quantile", "0.9"}, 0.0009, 1},
		{"the estimated pair is marked", v.rtt, []string{"flowplace.peer.cluster.name", "b", "flowplace.rtt.estimated", "true"}, 0.24, 3},
		{"three quantiles per pair", v.rtt, nil, 0.0005 + 0.0009 + 0.002 + 0.24, 6},
		{"cross-cluster bytes a->b", v.clusterTraffic, []string{"flowplace.peer.cluster.name", "b", "flowplace.cross_cluster", "true"}, 3500, 1},
		{"intra-cluster bytes a->a", v.clusterTraffic, []string{"flowplace.cross_cluster", "false"}, 1100, 1},
		{"heaviest pair first, total", v.workload, []string{"flowplace.peer.workload.name", "cart"}, 4000, 1},
		{"its cross-cluster part", v.workloadCross, []string{"flowplace.peer.workload.name", "cart"}, 3000, 1},
		{"the third pair is in the overflow", v.workload, []string{"otel.metric.overflow", "true"}, 100, 1},
		{"bounded to 2 pairs + overflow", v.workload, nil, 4600, 3},
		{"data age from the newest measured sample", v.age, []string{"k8s.cluster.name", "a"}, 10, 1},
		{"stale objects", v.objects, []string{"flowplace.object.kind", "WorkloadTraffic", "flowplace.object.state", "stale"}, 1, 1},
		{"fresh objects", v.objects, []string{"flowplace.object.state", "fresh"}, 2, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, n := value(tc.obs, tc.kv...)
			if n != tc.wantN || got < tc.want*0.999999 || got > tc.want*1.000001 {
				t.Errorf("got %g over %d series, want %g over %d", got, n, tc.want, tc.wantN)
			}
		})
	}
	if telemetry.ModelWorkloadPairs < 1 {
		t.Fatal("no default bound")
	}
}

// TestModelSeriesAtFleetScale counts the model's series at 100 clusters
// and 10,000 workloads (5 peers each, every pair measured), read through
// the OTel SDK: the bound telemetry/names.go documents.
func TestModelSeriesAtFleetScale(t *testing.T) {
	const clusters, workloads, peers = 100, 10_000, 5
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	name := func(i int) string { return fmt.Sprintf("member-%03d", i) }
	var built []desired
	for s := range clusters {
		cl := &v1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: name(s)}}
		for d := range clusters {
			cl.Status.Peers = append(cl.Status.Peers, v1.PeerLatency{Cluster: name(d), P50Microseconds: 1000, P90Microseconds: 2000, P99Microseconds: 3000, LastSampleTime: metav1.NewTime(now)})
		}
		built = append(built, desired{obj: cl})
	}
	for w := range workloads {
		wt := &v1.WorkloadTraffic{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("team-%d", w%50), Name: fmt.Sprintf("w%d-deployment", w)},
			Spec: v1.WorkloadTrafficSpec{Workload: v1.WorkloadReference{Kind: "Deployment", Name: fmt.Sprintf("w%d", w)}}}
		for p := range peers {
			src, dst := name(w%clusters), name((w+p)%clusters)
			wt.Status.Peers = append(wt.Status.Peers, v1.PeerTraffic{
				Workload:       &v1.PeerWorkloadReference{Kind: "Deployment", Namespace: "team-0", Name: fmt.Sprintf("w%d", (w+p+1)%workloads)},
				BytesPerSecond: int64(1000 + w*peers + p),
				Clusters:       []v1.ClusterPairTraffic{{SourceCluster: src, DestinationCluster: dst, TrafficRates: v1.TrafficRates{BytesPerSecond: int64(1000 + w*peers + p)}}},
			})
		}
		built = append(built, desired{obj: wt})
	}
	inAPI := map[string][]*unstructured.Unstructured{"ClusterLatency": nil, "WorkloadTraffic": nil}
	start := time.Now()
	v := buildModelView(built, inAPI, now, telemetry.ModelWorkloadPairs)
	took := time.Since(start)

	reader := sdkmetric.NewManualReader()
	// The estimator's limit (cmd/flowplace-estimator --metrics-max-series).
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithCardinalityLimit(telemetry.ModelSeriesLimit))
	m := &selfMetrics{}
	if err := m.registerModelMetrics(mp.Meter(ScopeName)); err != nil {
		t.Fatal(err)
	}
	m.model.Store(v)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	total := 0
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			n := len(mt.Data.(metricdata.Gauge[float64]).DataPoints)
			got[mt.Name] = n
			total += n
		}
	}
	pairs := telemetry.ModelWorkloadPairs + 1
	want := map[string]int{
		telemetry.MetricClusterRTT:                  3 * clusters * clusters,
		telemetry.MetricClusterTraffic:              clusters * peers, // the pairs that carry traffic here
		telemetry.MetricWorkloadTraffic:             pairs,
		telemetry.MetricWorkloadCrossClusterTraffic: pairs,
		telemetry.MetricDataAge:                     clusters,
		telemetry.MetricObjectsPublished:            4,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d series, want %d", k, got[k], n)
		}
	}
	// At most: every cluster pair carrying traffic.
	t.Logf("model series at %d clusters x %d workloads (%d workload pairs): %d in all (%v); bound with every cluster pair carrying traffic: %d; view built in %s",
		clusters, workloads, workloads*peers, total, got, 3*clusters*clusters+clusters*clusters+clusters+2*pairs+4, took.Round(time.Millisecond))
}
