package estimator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/world/controlplane"
)

// env is a Karmada API server (real kube-apiserver + etcd with Karmada's
// CRDs and flowplace's) with two Cluster objects and the bindings of the
// test workloads.
type env struct {
	cp *controlplane.ControlPlane
	// matrix, when set, is where replicas also publish the latency
	// matrix for routing.
	matrix types.NamespacedName
}

func setupEnv(t *testing.T) *env {
	t.Helper()
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{filepath.Join("..", "api", "crds")}})
	ctx := context.Background()
	dc := cp.Host.Dynamic
	for name, id := range map[string]string{"member1": uidA, "member2": uidB} {
		c := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": name},
			"spec":     map[string]any{"id": id, "syncMode": "Push"},
		}}
		if _, err := dc.Resource(ClusterGVR).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, ns := range []string{"karmada-system", "shop"} {
		if _, err := cp.Host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []struct{ kind, name string }{{"Deployment", "web"}, {"StatefulSet", "db"}} {
		rb := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
			"metadata": map[string]any{"name": BindingName(w.kind, w.name), "namespace": "shop"},
			"spec": map[string]any{"resource": map[string]any{
				"apiVersion": "apps/v1", "kind": w.kind, "name": w.name, "namespace": "shop",
			}},
		}}
		if _, err := dc.Resource(ResourceBindingGVR).Namespace("shop").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{cp: cp}
}

// replica is one running estimator.
type replica struct {
	e      *Estimator
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err set
	err    error
}

func (r *replica) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case <-r.done:
		if r.err != nil && !errors.Is(r.err, ErrLeadershipLost) {
			t.Errorf("estimator Run: %v", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("estimator did not stop")
	}
}

func (en *env) start(t *testing.T, identity string, window time.Duration) *replica {
	t.Helper()
	e, err := New(Config{
		REST:            en.cp.Host.RESTConfig,
		Aggregator:      aggregate.AggregatorConfig{Window: window},
		Publish:         PublishPolicy{ValidFor: 20 * time.Second},
		PublishInterval: 300 * time.Millisecond,
		OTLPAddress:     "127.0.0.1:0",
		HealthAddress:   "127.0.0.1:0",
		Identity:        identity,
		LeaseDuration:   3 * time.Second,
		RenewDeadline:   2 * time.Second,
		RetryPeriod:     250 * time.Millisecond,
		MatrixConfigMap: en.matrix,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{e: e, cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = e.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
	})
	return r
}

func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last: %v)", what, err, last)
	}
}

func waitLeader(t *testing.T, rs ...*replica) *replica {
	t.Helper()
	var leader *replica
	poll(t, 30*time.Second, "a ready leader", func() (bool, error) {
		for _, r := range rs {
			if r.e.Ready() {
				leader = r
				return true, nil
			}
		}
		return false, nil
	})
	return leader
}

// traffic drives web (cluster A) -> db (cluster B) at a steady rate through
// real agents (SDK + OTLP exporter) for d, and returns the rates expected.
type trafficResult struct {
	bytesPerSec, connsPerSec float64
	samples                  []uint32
}

const (
	tickSent, tickReceived, tickConns = 20_000, 60_000, 4
)

func driveTraffic(t *testing.T, endpoint string, d time.Duration, midpoint func()) trafficResult {
	t.Helper()
	start := time.Now()
	client := newAgent(t, endpoint, uidA, "node-a1")
	server := newAgent(t, endpoint, uidB, "node-b1")
	samples := rttSamples(100)
	ctx := context.Background()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for time.Since(start) < d {
		<-tick.C
		if midpoint != nil && time.Since(start) > d/2 {
			midpoint()
			midpoint = nil
		}
		client.rec.Record(ctx, webToDB, telemetry.Delta{Opened: tickConns, Closed: tickConns, BytesSent: tickSent, BytesReceived: tickReceived, RTT: histOf(samples)})
		server.rec.Record(ctx, dbFromWeb, telemetry.Delta{Opened: tickConns, Closed: tickConns, BytesSent: tickReceived, BytesReceived: tickSent, RTT: histOf(samples)})
		client.flush(t)
		server.flush(t)
		n++
	}
	el := time.Since(start).Seconds()
	return trafficResult{bytesPerSec: float64(n*(tickSent+tickReceived)) / el, connsPerSec: float64(n*tickConns) / el, samples: samples}
}

func getLatency(ctx context.Context, en *env, name string) (*v1.ClusterLatency, error) {
	u, err := en.cp.Host.Dynamic.Resource(v1.ClusterLatencyResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var o v1.ClusterLatency
	return &o, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o)
}

func getTraffic(ctx context.Context, en *env, name string) (*v1.WorkloadTraffic, error) {
	u, err := en.cp.Host.Dynamic.Resource(v1.WorkloadTrafficResource).Namespace("shop").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var o v1.WorkloadTraffic
	return &o, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &o)
}

// waitPublished waits until the three objects of the test traffic exist
// with a status.
func waitPublished(t *testing.T, en *env) (*v1.ClusterLatency, *v1.WorkloadTraffic, *v1.WorkloadTraffic) {
	t.Helper()
	ctx := context.Background()
	var cl *v1.ClusterLatency
	var web, db *v1.WorkloadTraffic
	poll(t, 30*time.Second, "published objects", func() (bool, error) {
		var err error
		if cl, err = getLatency(ctx, en, "member1"); err != nil {
			return false, err
		}
		if web, err = getTraffic(ctx, en, "web-deployment"); err != nil {
			return false, err
		}
		if db, err = getTraffic(ctx, en, "db-statefulset"); err != nil {
			return false, err
		}
		if len(cl.Status.Peers) == 0 || len(web.Status.Peers) == 0 || len(db.Status.Clients) == 0 {
			return false, fmt.Errorf("status not complete yet")
		}
		return true, nil
	})
	return cl, web, db
}

func deleteAll(t *testing.T, en *env) {
	t.Helper()
	ctx := context.Background()
	dc := en.cp.Host.Dynamic
	if err := dc.Resource(v1.ClusterLatencyResource).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := dc.Resource(v1.WorkloadTrafficResource).Namespace("shop").DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
}

func micro(s float64) float64 { return s * 1e6 }

// TestEstimator runs the estimator against a real API server: it publishes
// what the agents measured, writes little, resumes after a restart, and of
// two replicas only the leader writes.
func TestEstimator(t *testing.T) {
	en := setupEnv(t)
	ctx := context.Background()

	t.Run("publishes expected objects with few writes", func(t *testing.T) {
		r := en.start(t, "replica-1", 3*time.Second)
		defer r.stop(t)
		waitLeader(t, r)
		// Steady traffic for 4 s; from its middle on, rates and RTT are
		// what they were when first published, so (almost) nothing is
		// written: the first half's writes are the creation and the
		// first values.
		var mid PublishStats
		want := driveTraffic(t, r.e.OTLPAddr().String(), 4*time.Second, func() { mid = r.e.PublishStats() })
		end := r.e.PublishStats()
		// Writing every round would be one write per object per round
		// (3 x ~7); a scheduling stall on a shared machine can move one
		// decayed rate past the 10% threshold, so allow one write per
		// object, not per round.
		valueWrites := (end.StatusUpdates - end.SampleCountWrites) - (mid.StatusUpdates - mid.SampleCountWrites)
		sampleWrites := end.SampleCountWrites - mid.SampleCountWrites
		t.Logf("status writes over the last %d rounds: %d for values, %d for sample counts", end.Rounds-mid.Rounds, valueWrites, sampleWrites)
		if valueWrites > 3 || mid.Creates != 3 {
			t.Errorf("%d status writes for values over %d rounds of steady traffic for 3 objects (want at most 3); %d creates before (want 3)",
				valueWrites, end.Rounds-mid.Rounds, mid.Creates)
		}
		// A count is written when it doubles. The 3 s window's count
		// grows as 1-exp(-t/3): 1.55x from the midpoint (1.9 s after the
		// first sample) to the end (3.9 s), so at most one doubling per
		// object, plus one decided before the midpoint and counted after.
		if sampleWrites > 2*3 {
			t.Errorf("%d status writes for sample counts in the second half, want at most 2 per object (6)", sampleWrites)
		}
		if end.Errors != 0 {
			t.Errorf("publish errors: %+v", end)
		}
		cl, web, db := waitPublished(t, en)

		// ClusterLatency member1 -> member2, client-side RTT.
		if cl.Spec.ClusterID != uidA || len(cl.Status.Peers) != 1 || cl.Status.Peers[0].Cluster != "member2" {
			t.Fatalf("ClusterLatency: %+v", cl)
		}
		p := cl.Status.Peers[0]
		// Quantiles of fixed samples: no timing in them. The bound is
		// the resolution of the two histograms in the path: the
		// agent's exponential one (scale >= 3 here, buckets <= 9%
		// wide, interpolated to well within one) folded into the
		// estimator's scale 4 (4.4%). Measured: -0.4%, +0.7%, +1.6%.
		within(t, "p50", float64(p.P50Microseconds), micro(exactQuantile(want.samples, 0.5)), 0.08)
		within(t, "p90", float64(p.P90Microseconds), micro(exactQuantile(want.samples, 0.9)), 0.08)
		within(t, "p99", float64(p.P99Microseconds), micro(exactQuantile(want.samples, 0.99)), 0.08)
		if p.SampleCount < 100 || cl.Status.WindowSeconds != 3 || !cl.Status.ValidUntil.After(time.Now()) {
			t.Errorf("ClusterLatency freshness/samples: %+v", cl.Status)
		}
		if o := cl.OwnerReferences; len(o) != 1 || o[0].Kind != "Cluster" || o[0].Name != "member1" {
			t.Errorf("ClusterLatency owner: %+v", o)
		}

		// WorkloadTraffic of web: its peer db, through service db, A -> B.
		if web.Spec.Workload != (v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}) {
			t.Errorf("web spec: %+v", web.Spec)
		}
		if o := web.OwnerReferences; len(o) != 1 || o[0].Kind != "ResourceBinding" || o[0].Name != "web-deployment" {
			t.Errorf("web owner: %+v", o)
		}
		pt := web.Status.Peers[0]
		if pt.Workload == nil || *pt.Workload != (v1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "StatefulSet", Namespace: "shop", Name: "db"}) ||
			pt.Service == nil || *pt.Service != (v1.ServiceReference{Namespace: "shop", Name: "db"}) || len(pt.Clusters) != 1 {
			t.Fatalf("web peer: %+v", pt)
		}
		c := pt.Clusters[0]
		if c.SourceCluster != "member1" || c.DestinationCluster != "member2" {
			t.Errorf("web pair %s -> %s", c.SourceCluster, c.DestinationCluster)
		}
		// The published value is the last one that differed by more than
		// 10% from its predecessor (the publish threshold), and the live
		// estimate of a 4 s stream in a 3 s decaying window is itself off
		// by the stream's start-up and its 100 ms ticks' jitter (a tick
		// late by a stall is 2.5% of the 40): 10% + 15%. Measured over
		// soak runs: -4% to -13%, always low (the estimate trails).
		within(t, "web->db bytes/s", float64(c.BytesPerSecond), want.bytesPerSec, 0.25)
		within(t, "web->db milli-connections/s", float64(c.MilliConnectionsPerSecond), 1000*want.connsPerSec, 0.25)
		within(t, "web->db RTT p50", float64(c.RTTP50Microseconds), micro(exactQuantile(want.samples, 0.5)), 0.1)
		if pt.BytesPerSecond != c.BytesPerSecond {
			t.Errorf("peer total %d != pair %d", pt.BytesPerSecond, c.BytesPerSecond)
		}
		if len(db.Status.Clients) != 1 || db.Status.Clients[0].ClientCluster != "member1" || db.Status.Clients[0].ServingCluster != "member2" {
			t.Fatalf("db clients: %+v", db.Status.Clients)
		}
		within(t, "db client bytes/s", float64(db.Status.Clients[0].BytesPerSecond), want.bytesPerSec, 0.25)

	})

	t.Run("restart resumes from published objects", func(t *testing.T) {
		// A window long against the restart, so that what r1 published
		// has hardly decayed when r2 reads it.
		deleteAll(t, en)
		r1 := en.start(t, "replica-1b", time.Minute)
		waitLeader(t, r1)
		driveTraffic(t, r1.e.OTLPAddr().String(), time.Second, nil)
		waitPublished(t, en)
		r1.stop(t)
		cl, err := getLatency(ctx, en, "member1")
		if err != nil {
			t.Fatal(err)
		}
		r := en.start(t, "replica-2", time.Minute)
		defer r.stop(t)
		waitLeader(t, r)
		snap := r.e.Aggregator().Snapshot()
		got, ok := snap.Latency[uidA][uidB]
		if !ok {
			t.Fatalf("not resumed: %+v", snap.Latency)
		}
		within(t, "resumed p50", micro(got.P50), float64(cl.Status.Peers[0].P50Microseconds), 0.05)
		if got.Samples <= 0 || got.Samples > float64(cl.Status.Peers[0].SampleCount) {
			t.Errorf("resumed samples %.1f, published %d", got.Samples, cl.Status.Peers[0].SampleCount)
		}
		web := snap.Traffic[aggregate.WorkloadKey{Namespace: "shop", Kind: "Deployment", Name: "web"}]
		if web == nil || len(web.Peers) != 1 {
			t.Fatalf("web traffic not resumed: %+v", snap.Traffic)
		}
		// Resumed values are what is published: rounds pass without a write
		// (and without extending validity: no data arrived since).
		poll(t, 10*time.Second, "three publish rounds", func() (bool, error) { return r.e.PublishStats().Rounds >= 3, nil })
		if st := r.e.PublishStats(); st.StatusUpdates != 0 || st.Creates != 0 {
			t.Errorf("a resumed estimator without new data wrote: %+v", st)
		}
		// New data adds to the resumed state instead of replacing it.
		a := newAgent(t, r.e.OTLPAddr().String(), uidA, "node-a9")
		a.rec.Record(ctx, webToDB, telemetry.Delta{RTT: histOf(rttSamples(50))})
		a.flush(t)
		after := r.e.Aggregator().Snapshot().Latency[uidA][uidB]
		if after.Samples <= 50 {
			t.Errorf("samples after resume + 50 new: %.1f, want more than the 50 new ones", after.Samples)
		}
	})

	t.Run("two replicas, one writer", func(t *testing.T) {
		deleteAll(t, en)
		ra, rb := en.start(t, "replica-a", 3*time.Second), en.start(t, "replica-b", 3*time.Second)
		leader := waitLeader(t, ra, rb)
		standby := ra
		if leader == ra {
			standby = rb
		}
		if standby.e.IsLeader() || standby.e.OTLPAddr() != nil {
			t.Fatal("the standby leads or listens")
		}
		for r, want := range map[*replica]int{leader: http.StatusOK, standby: http.StatusServiceUnavailable} {
			resp, err := http.Get("http://" + r.e.HealthAddr().String() + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != want {
				t.Errorf("/readyz of %s: %d, want %d", r.e.cfg.Identity, resp.StatusCode, want)
			}
			if resp, err := http.Get("http://" + r.e.HealthAddr().String() + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
				t.Errorf("/healthz of %s: %v %v", r.e.cfg.Identity, resp, err)
			}
		}
		driveTraffic(t, leader.e.OTLPAddr().String(), time.Second, nil)
		waitPublished(t, en)
		if st := standby.e.PublishStats(); st != (PublishStats{}) {
			t.Errorf("the standby published: %+v", st)
		}
		if st := leader.e.PublishStats(); st.Creates != 3 || st.Errors != 0 {
			t.Errorf("leader: %+v", st)
		}
		// The leader goes away: the standby takes over and resumes.
		leader.stop(t)
		waitLeader(t, standby)
		snap := standby.e.Aggregator().Snapshot()
		if _, ok := snap.Latency[uidA][uidB]; !ok {
			t.Errorf("new leader did not resume: %+v", snap.Latency)
		}
	})

	t.Run("implausible points change nothing but a rejection counter", func(t *testing.T) { testImplausible(t, en) })

	t.Run("published numbers saturate at the schema's bounds", func(t *testing.T) { testSaturation(t, en) })

	t.Run("hostile and unresolvable input writes nothing invalid", func(t *testing.T) {
		deleteAll(t, en)
		r := en.start(t, "replica-h", 3*time.Second)
		defer r.stop(t)
		waitLeader(t, r)
		addr := r.e.OTLPAddr().String()
		// A cluster no Cluster object names, and a workload without a
		// binding: measured, but not publishable.
		stranger := newAgent(t, addr, "uid-of-no-cluster", "n")
		stranger.rec.Record(ctx, webToDB, telemetry.Delta{BytesSent: 100, RTT: histOf(rttSamples(10))})
		stranger.flush(t)
		unbound := newAgent(t, addr, uidA, "n")
		k := webToDB
		k.WorkloadName = "no-binding"
		unbound.rec.Record(ctx, k, telemetry.Delta{BytesSent: 100})
		unbound.flush(t)
		sendHostile(t, addr)
		poll(t, 10*time.Second, "two publish rounds", func() (bool, error) { return r.e.PublishStats().Rounds >= 2, nil })
		st := r.e.PublishStats()
		if st.Errors != 0 || st.UnknownClusters == 0 || st.UnboundWorkloads == 0 {
			t.Errorf("publish stats %+v: want no errors, unknown clusters and unbound workloads counted", st)
		}
		if _, err := getTraffic(ctx, en, "no-binding-deployment"); !apierrors.IsNotFound(err) {
			t.Errorf("object for an unbound workload: %v", err)
		}
		// The stranger's RTT has no source cluster to publish under.
		if l, err := en.cp.Host.Dynamic.Resource(v1.ClusterLatencyResource).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
			t.Errorf("ClusterLatency objects: %v %v, want none", l, err)
		}
		if rej := r.e.Aggregator().Stats().Rejected; rej["invalid_value"] == 0 || rej["bad_attribute"] == 0 {
			t.Errorf("hostile points not counted: %v", rej)
		}
	})
}

// sendHostile sends invalid points with the standard generated client:
// they are answered with a partial success, not an error.
func sendHostile(t *testing.T, addr string) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := colmetrics.NewMetricsServiceClient(conn)
	bad := nanRequest(math.NaN())
	neg := nanRequest(-1)
	role := nanRequest(1)
	role.ResourceMetrics[0].ScopeMetrics[0].Metrics[0].GetSum().DataPoints[0].Attributes[0].Value = &common.AnyValue{Value: &common.AnyValue_IntValue{IntValue: 7}}
	for _, req := range []*colmetrics.ExportMetricsServiceRequest{bad, neg, role} {
		resp, err := client.Export(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetPartialSuccess().GetRejectedDataPoints() != 1 {
			t.Fatalf("hostile point not rejected: %+v", resp)
		}
	}
}
