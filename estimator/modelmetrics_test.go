package estimator

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
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
