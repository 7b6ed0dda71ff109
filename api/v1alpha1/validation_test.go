package v1alpha1_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/world/controlplane"
)

func toUnstructured(t *testing.T, obj runtime.Object) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatalf("to unstructured: %v", err)
	}
	u := &unstructured.Unstructured{Object: m}
	return u
}

func validFreshness() v1.Freshness {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	return v1.Freshness{
		ValidUntil:     metav1.NewTime(now.Add(5 * time.Minute)),
		LastUpdateTime: now,
		WindowSeconds:  300,
		SampleCount:    100,
	}
}

func validLatency(name string) *v1.ClusterLatency {
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	return &v1.ClusterLatency{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.SchemeGroupVersion.String(), Kind: "ClusterLatency"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1.ClusterLatencySpec{ClusterID: "0b9d4c52-1d5e-4b8e-9f3a-000000000001"},
		Status: v1.ClusterLatencyStatus{
			Freshness: validFreshness(),
			Peers: []v1.PeerLatency{{
				Cluster: "member2", MinMicroseconds: 900, P50Microseconds: 1000,
				P90Microseconds: 1200, P99Microseconds: 2000, SampleCount: 100, LastSampleTime: now,
			}, {
				// An estimate: no samples, all quantiles the estimate, min
				// one expected error below it.
				Cluster: "member3", MinMicroseconds: 8000, P50Microseconds: 9000,
				P90Microseconds: 9000, P99Microseconds: 9000, LastSampleTime: now,
				Estimated: true, ExpectedErrorMicroseconds: 1000,
			}},
		},
	}
}

func validTraffic(ns string) *v1.WorkloadTraffic {
	return &v1.WorkloadTraffic{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.SchemeGroupVersion.String(), Kind: "WorkloadTraffic"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-deployment"},
		Spec:       v1.WorkloadTrafficSpec{Workload: v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}},
		Status: v1.WorkloadTrafficStatus{
			Freshness: validFreshness(),
			Peers: []v1.PeerTraffic{{
				Workload:       &v1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "StatefulSet", Namespace: ns, Name: "db"},
				Service:        &v1.ServiceReference{Namespace: ns, Name: "db"},
				BytesPerSecond: 5000,
				Clusters: []v1.ClusterPairTraffic{{
					SourceCluster: "member1", DestinationCluster: "member2",
					TrafficRates: v1.TrafficRates{BytesPerSecond: 5000, MilliConnectionsPerSecond: 1500, RTTP50Microseconds: 1000, SampleCount: 40},
				}},
			}},
			Clients: []v1.ClientTraffic{{
				ClientCluster: "member3", ServingCluster: "member1",
				TrafficRates: v1.TrafficRates{BytesPerSecond: 100, MilliConnectionsPerSecond: 10, SampleCount: 0},
			}},
		},
	}
}

// create writes obj and then its status through the status subresource, as
// the estimator does.
func create(ctx context.Context, t *testing.T, r dynamic.ResourceInterface, obj runtime.Object) error {
	t.Helper()
	u := toUnstructured(t, obj)
	created, err := r.Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	u.SetResourceVersion(created.GetResourceVersion())
	_, err = r.UpdateStatus(ctx, u, metav1.UpdateOptions{})
	return err
}

// TestSchemaValidation installs the generated CRDs into a real kube-apiserver
// and checks that valid objects are stored and each kind of invalid object is
// rejected as Invalid by the server itself.
func TestSchemaValidation(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{filepath.Join("..", "crds")}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dc := cp.Host.Dynamic
	lat := dc.Resource(v1.ClusterLatencyResource)
	const ns = "default"
	wt := dc.Resource(v1.WorkloadTrafficResource).Namespace(ns)

	if err := create(ctx, t, lat, validLatency("member1")); err != nil {
		t.Fatalf("valid ClusterLatency rejected: %v", err)
	}
	if err := create(ctx, t, wt, validTraffic(ns)); err != nil {
		t.Fatalf("valid WorkloadTraffic rejected: %v", err)
	}
	// The stored object reads back into the typed struct unchanged.
	got, err := wt.Get(ctx, "web-deployment", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var back v1.WorkloadTraffic
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(got.Object, &back); err != nil {
		t.Fatal(err)
	}
	if back.Status.Peers[0].Clusters[0].MilliConnectionsPerSecond != 1500 || back.Status.Clients[0].ClientCluster != "member3" {
		t.Fatalf("round trip lost data: %+v", back.Status)
	}
	gotL, err := lat.Get(ctx, "member1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var backL v1.ClusterLatency
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(gotL.Object, &backL); err != nil {
		t.Fatal(err)
	}
	if p := backL.Status.Peers; len(p) != 2 || p[0].Estimated || p[0].ExpectedErrorMicroseconds != 0 ||
		!p[1].Estimated || p[1].ExpectedErrorMicroseconds != 1000 || p[1].SampleCount != 0 {
		t.Fatalf("round trip lost the estimated entry: %+v", p)
	}

	latencyCases := []struct {
		name   string
		mutate func(*v1.ClusterLatency)
		want   string // substring of the server's message
	}{
		{"p50 above p90", func(o *v1.ClusterLatency) { o.Status.Peers[0].P50Microseconds = 5000 }, "min <= p50 <= p90 <= p99"},
		{"negative min", func(o *v1.ClusterLatency) { o.Status.Peers[0].MinMicroseconds = -1 }, "minMicroseconds"},
		{"absurd p99", func(o *v1.ClusterLatency) { o.Status.Peers[0].P99Microseconds = 61_000_000 }, "p99Microseconds"},
		{"zero samples", func(o *v1.ClusterLatency) { o.Status.Peers[0].SampleCount = 0 }, "sampleCount must be 0 on an estimated entry and at least 1"},
		{"negative samples", func(o *v1.ClusterLatency) { o.Status.Peers[0].SampleCount = -1 }, "sampleCount"},
		{"estimate with samples", func(o *v1.ClusterLatency) { o.Status.Peers[1].SampleCount = 3 }, "sampleCount must be 0 on an estimated entry"},
		{"estimate without error", func(o *v1.ClusterLatency) { o.Status.Peers[1].ExpectedErrorMicroseconds = 0 }, "expectedErrorMicroseconds is set on estimated entries"},
		{"error on a measured entry", func(o *v1.ClusterLatency) { o.Status.Peers[0].ExpectedErrorMicroseconds = 10 }, "expectedErrorMicroseconds is set on estimated entries"},
		{"negative expected error", func(o *v1.ClusterLatency) { o.Status.Peers[1].ExpectedErrorMicroseconds = -1 }, "expectedErrorMicroseconds"},
		{"absurd expected error", func(o *v1.ClusterLatency) { o.Status.Peers[1].ExpectedErrorMicroseconds = 61_000_000 }, "expectedErrorMicroseconds"},
		{"bad cluster name", func(o *v1.ClusterLatency) { o.Status.Peers[0].Cluster = "Member_2" }, "cluster"},
		{"window zero", func(o *v1.ClusterLatency) { o.Status.WindowSeconds = 0 }, "windowSeconds"},
		{"duplicate peer", func(o *v1.ClusterLatency) { o.Status.Peers = append(o.Status.Peers, o.Status.Peers[0]) }, "Duplicate"},
		{"too many peers", func(o *v1.ClusterLatency) {
			for len(o.Status.Peers) <= v1.MaxPeerClusters {
				p := o.Status.Peers[0]
				p.Cluster = "m" + itoa(len(o.Status.Peers))
				o.Status.Peers = append(o.Status.Peers, p)
			}
		}, "must have at most 1000 items"},
	}
	for i, tc := range latencyCases {
		t.Run("ClusterLatency/"+tc.name, func(t *testing.T) {
			o := validLatency("bad" + itoa(i))
			tc.mutate(o)
			expectInvalid(t, create(ctx, t, lat, o), tc.want)
		})
	}
	t.Run("ClusterLatency/missing clusterID", func(t *testing.T) {
		o := validLatency("noid")
		o.Spec.ClusterID = ""
		expectInvalid(t, create(ctx, t, lat, o), "clusterID")
	})

	trafficCases := []struct {
		name   string
		mutate func(*v1.WorkloadTraffic)
		want   string
	}{
		{"name not like the binding", func(o *v1.WorkloadTraffic) { o.Name = "web" }, "metadata.name must be"},
		{"peer without workload or service", func(o *v1.WorkloadTraffic) {
			o.Status.Peers[0].Workload, o.Status.Peers[0].Service = nil, nil
		}, "a peer names a workload, a service or both"},
		{"negative bytes", func(o *v1.WorkloadTraffic) { o.Status.Peers[0].Clusters[0].BytesPerSecond = -5 }, "bytesPerSecond"},
		{"no cluster pairs", func(o *v1.WorkloadTraffic) { o.Status.Peers[0].Clusters = nil }, "clusters"},
		{"empty client cluster", func(o *v1.WorkloadTraffic) { o.Status.Clients[0].ClientCluster = "" }, "clientCluster"},
		{"missing workload kind", func(o *v1.WorkloadTraffic) { o.Spec.Workload.Kind = ""; o.Name = "web-" }, "kind"},
		{"rtt above bound", func(o *v1.WorkloadTraffic) { o.Status.Clients[0].RTTP50Microseconds = 1 << 40 }, "rttP50Microseconds"},
	}
	for i, tc := range trafficCases {
		t.Run("WorkloadTraffic/"+tc.name, func(t *testing.T) {
			o := validTraffic(ns)
			o.Spec.Workload.Name = "w" + itoa(i)
			o.Name = o.Spec.Workload.Name + "-deployment"
			tc.mutate(o)
			expectInvalid(t, create(ctx, t, wt, o), tc.want)
		})
	}
	t.Run("WorkloadTraffic/workload immutable", func(t *testing.T) {
		u, err := wt.Get(ctx, "web-deployment", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := unstructured.SetNestedField(u.Object, "apps/v2", "spec", "workload", "apiVersion"); err != nil {
			t.Fatal(err)
		}
		_, err = wt.Update(ctx, u, metav1.UpdateOptions{})
		expectInvalid(t, err, "spec.workload is immutable")
	})
	// Nothing invalid was stored: the objects whose status was rejected
	// exist (their create was valid) but hold no status.
	for _, r := range []dynamic.ResourceInterface{lat, wt} {
		l, err := r.List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range l.Items {
			_, hasStatus := o.Object["status"]
			if valid := o.GetName() == "member1" || o.GetName() == "web-deployment"; hasStatus != valid {
				t.Errorf("%s %s: has status %v, want %v", o.GetKind(), o.GetName(), hasStatus, valid)
			}
		}
	}
}

func expectInvalid(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted, want Invalid mentioning %q", want)
	}
	if !apierrors.IsInvalid(err) {
		t.Fatalf("error %v is not Invalid", err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not mention %q", err, want)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
