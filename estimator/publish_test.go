package estimator

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
)

// TestSampleCountWorthAWrite: with the values unchanged and the validity
// fresh, a sample count is written once it has doubled or halved, so a
// reader's minimum number of samples is met soon after the estimator has
// them; smaller moves of a steady window's count write nothing.
func TestSampleCountWorthAWrite(t *testing.T) {
	now := time.Now()
	p := &publisher{}
	p.policy.setDefaults()
	fresh := v1.Freshness{ValidUntil: metav1.NewTime(now.Add(p.policy.ValidFor).Truncate(time.Second)),
		LastUpdateTime: metav1.NewTime(now.Truncate(time.Second)), WindowSeconds: 300, SampleCount: 1}
	asUnstructured := func(o runtime.Object) *unstructured.Unstructured {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: m}
	}
	latency := func(n int64) *v1.ClusterLatency {
		return &v1.ClusterLatency{Status: v1.ClusterLatencyStatus{Freshness: fresh, Peers: []v1.PeerLatency{{Cluster: "member2",
			MinMicroseconds: 19000, P50Microseconds: 20000, P90Microseconds: 21000, P99Microseconds: 21000, SampleCount: n}}}}
	}
	traffic := func(n int64) *v1.WorkloadTraffic {
		return &v1.WorkloadTraffic{Status: v1.WorkloadTrafficStatus{Freshness: fresh, Peers: []v1.PeerTraffic{{
			Workload: &v1.PeerWorkloadReference{Namespace: "shop", Kind: "Deployment", Name: "cart"},
			Clusters: []v1.ClusterPairTraffic{{SourceCluster: "member1", DestinationCluster: "member2", TrafficRates: v1.TrafficRates{
				BytesPerSecond: 1 << 20, MilliConnectionsPerSecond: 2000, RTTP50Microseconds: 20000, SampleCount: n}}}}}}}
	}
	for _, c := range []struct {
		cur, want int64
		why       string
	}{
		{1, 1, ""},
		{5, 9, ""},
		{5, 10, reasonSampleCount}, // past the plugins' default minSamples of 10
		{10, 5, reasonSampleCount},
		{10, 6, ""},
		{1000, 1999, ""},
		{1000, 2000, reasonSampleCount},
	} {
		for kind, objs := range map[string][2]runtime.Object{
			"ClusterLatency":  {latency(c.cur), latency(c.want)},
			"WorkloadTraffic": {traffic(c.cur), traffic(c.want)},
		} {
			ok, why := p.decide(desired{obj: objs[1], lastSeen: now}, asUnstructured(objs[0]), now)
			if ok != (c.why != "") || why != c.why {
				t.Errorf("%s samples %d -> %d: write %v (%q), want %q", kind, c.cur, c.want, ok, why, c.why)
			}
		}
	}
}
