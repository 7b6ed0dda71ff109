package rebalance

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/world/controlplane"
)

// world is a Karmada API server (real kube-apiserver + etcd, Karmada's
// CRDs, flowplace's) with two member clusters 20 ms apart (0.5 ms inside
// each), and a clock the test moves.
type world struct {
	cp  *controlplane.ControlPlane
	now time.Time
}

const (
	east, west = "east", "west"
	scheduler  = "flowplace-scheduler"
)

func newWorld(t *testing.T) *world {
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{filepath.Join("..", "..", "api", "crds")}})
	w := &world{cp: cp, now: time.Now().Truncate(time.Second)}
	ctx := context.Background()
	for i, name := range []string{east, west} {
		c := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": name},
			"spec":     map[string]any{"id": fmt.Sprintf("0b9d4c52-0000-4000-8000-00000000000%d", i), "syncMode": "Push"},
		}}
		if _, err := cp.Host.Dynamic.Resource(ClusterGVR).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for i, src := range []string{east, west} {
		cl := &v1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: src}, Spec: v1.ClusterLatencySpec{ClusterID: fmt.Sprint("id-", i)}}
		cl.Status.Freshness = w.freshness()
		for _, dst := range []string{east, west} {
			us := int64(20_000)
			if dst == src {
				us = 500
			}
			cl.Status.Peers = append(cl.Status.Peers, v1.PeerLatency{Cluster: dst, MinMicroseconds: us, P50Microseconds: us,
				P90Microseconds: us, P99Microseconds: us, SampleCount: 1000, LastSampleTime: metav1.NewTime(w.now)})
		}
		w.createWithStatus(t, v1.ClusterLatencyResource, "ClusterLatency", "", cl)
	}
	return w
}

func (w *world) freshness() v1.Freshness {
	// Valid for the whole test, however far its clock runs.
	return v1.Freshness{ValidUntil: metav1.NewTime(w.now.Add(1000 * time.Hour)), LastUpdateTime: metav1.NewTime(w.now),
		WindowSeconds: 300, SampleCount: 1000}
}

func (w *world) createWithStatus(t *testing.T, gvr schema.GroupVersionResource, kind, ns string, obj runtime.Object) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetAPIVersion(gvr.GroupVersion().String())
	u.SetKind(kind)
	status := m["status"]
	ctx := context.Background()
	created, err := w.cp.Host.Dynamic.Resource(gvr).Namespace(ns).Create(ctx, u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create %s %s/%s: %v", gvr.Resource, ns, u.GetName(), err)
	}
	created.Object["status"] = status
	if _, err := w.cp.Host.Dynamic.Resource(gvr).Namespace(ns).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of %s %s/%s: %v", gvr.Resource, ns, u.GetName(), err)
	}
}

// spec of one test workload (a Deployment).
type spec struct {
	name      string
	cluster   string  // where its binding puts it ("" : unscheduled)
	clients   float64 // bytes/s from clients in west, served where it runs
	scheduler string  // the binding's schedulerName (default flowplace's)
	kind      string  // resource kind in the binding (default Deployment)
	noTraffic bool
}

func (w *world) namespace(t *testing.T, ns string, specs ...spec) {
	t.Helper()
	ctx := context.Background()
	if _, err := w.cp.Host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range specs {
		kind := s.kind
		if kind == "" {
			kind = "Deployment"
		}
		sched := s.scheduler
		if sched == "" {
			sched = scheduler
		}
		rb := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
			"metadata": map[string]any{"name": bindingName("Deployment", s.name), "namespace": ns},
			"spec": map[string]any{
				"resource":            map[string]any{"apiVersion": "apps/v1", "kind": kind, "name": s.name, "namespace": ns},
				"replicas":            int64(2),
				"replicaRequirements": map[string]any{"resourceRequest": map[string]any{"cpu": "250m", "memory": "128Mi"}},
				"clusters":            []any{map[string]any{"name": s.cluster, "replicas": int64(2)}},
				"schedulerName":       sched,
			},
		}}
		if _, err := w.cp.Host.Dynamic.Resource(ResourceBindingGVR).Namespace(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if s.noTraffic {
			continue
		}
		wt := &v1.WorkloadTraffic{ObjectMeta: metav1.ObjectMeta{Name: bindingName("Deployment", s.name), Namespace: ns},
			Spec: v1.WorkloadTrafficSpec{Workload: v1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: s.name}}}
		wt.Status.Freshness = w.freshness()
		wt.Status.Clients = []v1.ClientTraffic{{ClientCluster: west, ServingCluster: s.cluster,
			TrafficRates: v1.TrafficRates{BytesPerSecond: int64(s.clients), MilliConnectionsPerSecond: 1000, SampleCount: 100}}}
		w.createWithStatus(t, v1.WorkloadTrafficResource, "WorkloadTraffic", ns, wt)
	}
	t.Cleanup(func() {
		// No namespace controller runs here: remove the workloads so the
		// next scenario's advisor does not see them.
		for _, gvr := range []schema.GroupVersionResource{ResourceBindingGVR, v1.WorkloadTrafficResource} {
			if err := w.cp.Host.Dynamic.Resource(gvr).Namespace(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
				t.Errorf("clean up %s in %s: %v", gvr.Resource, ns, err)
			}
		}
	})
}

type probe struct {
	reader *sdkmetric.ManualReader
}

func (w *world) advisor(t *testing.T, cfg Config) (*Advisor, *probe) {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	cfg.Meter = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	cfg.Now = func() time.Time { return w.now }
	if cfg.SchedulerName == "" {
		cfg.SchedulerName = scheduler
	}
	a, err := New(w.cp.Host.Dynamic, w.cp.Host.Client, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a, &probe{reader: reader}
}

// sum is the value of an Int64 counter's point with attribute key=value.
func (p *probe) sum(t *testing.T, name string, key attribute.Key, value string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := p.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				if v, ok := dp.Attributes.Value(key); ok && v.AsString() == value {
					return dp.Value
				}
			}
		}
	}
	return 0
}

// round advances the clock by 5 minutes and runs one round.
func (w *world) round(t *testing.T, a *Advisor) Report {
	t.Helper()
	w.now = w.now.Add(5 * time.Minute)
	r, err := a.Round(context.Background())
	if err != nil {
		t.Fatalf("round: %v", err)
	}
	return r
}

// rebalancers are flowplace's WorkloadRebalancers naming workloads of ns.
func (w *world) rebalancers(t *testing.T, ns string) []rebalancer {
	t.Helper()
	l, err := w.cp.Host.Dynamic.Resource(WorkloadRebalancerGVR).List(context.Background(), metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedBy})
	if err != nil {
		t.Fatal(err)
	}
	var out []rebalancer
	for _, u := range l.Items {
		var wr rebalancer
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &wr); err != nil {
			t.Fatal(err)
		}
		if len(wr.Spec.Workloads) > 0 && wr.Spec.Workloads[0].Namespace == ns {
			out = append(out, wr)
		}
	}
	return out
}

func (w *world) events(t *testing.T, ns, reason string) []corev1.Event {
	t.Helper()
	l, err := w.cp.Host.Client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range l.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// The move that pays: web runs in east, its clients (1 MB/s) are in west.
// Staying costs 1e6 x 20 = 2e7 B/s*ms; moving saves 1e6 x 19.5. The move
// costs 10 minutes of its own cost, 1.2e10 B*ms; each 5-minute round
// credits 1.95e7 x 300 = 5.85e9 after the first: rounds 2, 3 reach
// 1.17e10 (short), round 4 reaches 1.755e10 (past).
func TestAdvisor(t *testing.T) {
	w := newWorld(t)

	t.Run("past the threshold once, then cooldown, also across restarts", func(t *testing.T) {
		ns := "threshold"
		w.namespace(t, ns, spec{name: "web", cluster: east, clients: 1e6})
		a, _ := w.advisor(t, Config{})
		key := ns + "/web-deployment"
		for i := 1; i <= 3; i++ {
			r := w.round(t, a)
			mv, ok := r.Outcome(key)
			if !ok || mv.To != west || mv.Outcome != "" || mv.Rounds != i {
				t.Fatalf("round %d: %+v (planned %v), want web accumulating towards west", i, mv, ok)
			}
			if got := len(w.rebalancers(t, ns)); got != 0 {
				t.Fatalf("round %d: %d WorkloadRebalancers below the threshold (accumulated %.3g < move cost %.3g)", i, got, mv.Accumulated, mv.MoveCost)
			}
		}
		r := w.round(t, a)
		mv, _ := r.Outcome(key)
		if mv.Outcome != OutcomeRequested || mv.Accumulated < mv.MoveCost || mv.MoveCost != 600*2e7 {
			t.Fatalf("round 4: %+v, want requested past a move cost of 1.2e10", mv)
		}
		wrs := w.rebalancers(t, ns)
		if len(wrs) != 1 {
			t.Fatalf("%d WorkloadRebalancers after round 4, want 1", len(wrs))
		}
		got := wrs[0]
		if want := (rebalancerWorkload{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", Namespace: ns}); len(got.Spec.Workloads) != 1 || got.Spec.Workloads[0] != want {
			t.Errorf("workloads %+v, want [%+v]", got.Spec.Workloads, want)
		}
		if got.Spec.TTLSecondsAfterFinished == nil || *got.Spec.TTLSecondsAfterFinished != 3600 {
			t.Errorf("ttlSecondsAfterFinished %v, want the cooldown, 3600", got.Spec.TTLSecondsAfterFinished)
		}
		if ev := w.events(t, ns, ReasonRequested); len(ev) != 1 || !strings.Contains(ev[0].Message, "east -> west") ||
			!strings.Contains(ev[0].Message, got.Name) || ev[0].InvolvedObject.Name != "web-deployment" {
			t.Errorf("events %+v, want one RebalanceRequested on web-deployment naming %s", ev, got.Name)
		}
		// Nothing moved (no Karmada here): the advice holds again and
		// reaches the threshold after four more rounds, inside the hour.
		for i := 5; i <= 9; i++ {
			r := w.round(t, a)
			if mv, _ := r.Outcome(key); i == 8 && mv.Outcome != OutcomeCooldown {
				t.Errorf("round %d: %+v, want cooldown", i, mv)
			}
		}
		if got := len(w.rebalancers(t, ns)); got != 1 {
			t.Fatalf("%d WorkloadRebalancers within the cooldown, want 1", got)
		}
		// A new leader knows nothing but what the objects say.
		b, _ := w.advisor(t, Config{})
		for i := 1; i <= 4; i++ {
			r := w.round(t, b)
			if mv, _ := r.Outcome(key); i == 4 && mv.Outcome != OutcomeCooldown {
				t.Errorf("restarted, round %d: %+v, want cooldown from the WorkloadRebalancer", i, mv)
			}
		}
		if got := len(w.rebalancers(t, ns)); got != 1 {
			t.Fatalf("%d WorkloadRebalancers after a restart within the cooldown, want 1", got)
		}
		// 9 + 4 rounds of 5 minutes since the first: past the hour.
		w.now = w.now.Add(time.Hour)
		for i := 1; i <= 4; i++ {
			w.round(t, b)
		}
		if got := len(w.rebalancers(t, ns)); got != 2 {
			t.Fatalf("%d WorkloadRebalancers after the cooldown, want 2", got)
		}
	})

	t.Run("dry run writes an Event and a metric, no rebalancer", func(t *testing.T) {
		ns := "dryrun"
		w.namespace(t, ns, spec{name: "web", cluster: east, clients: 1e6})
		a, p := w.advisor(t, Config{DryRun: true})
		for range 4 {
			w.round(t, a)
		}
		if got := len(w.rebalancers(t, ns)); got != 0 {
			t.Errorf("dry run created %d WorkloadRebalancers", got)
		}
		ev := w.events(t, ns, ReasonAdvised)
		if len(ev) != 1 || !strings.Contains(ev[0].Message, "east -> west") || !strings.Contains(ev[0].Message, "dry run") ||
			ev[0].InvolvedObject.Kind != "ResourceBinding" || ev[0].InvolvedObject.UID == "" {
			t.Fatalf("events %+v, want one RebalanceAdvised on the binding", ev)
		}
		if got := p.sum(t, telemetry.MetricRebalanceAdvice, telemetry.AttrRebalanceOutcome, OutcomeDryRun); got != 1 {
			t.Errorf("advice{outcome=dry_run} = %d, want 1", got)
		}
		if got := p.sum(t, telemetry.MetricRebalanceAdvice, telemetry.AttrRebalanceOutcome, OutcomeRequested); got != 0 {
			t.Errorf("advice{outcome=requested} = %d in a dry run", got)
		}
	})

	t.Run("a gain below the noise band is never advised", func(t *testing.T) {
		ns := "noise"
		// 1000 B/s: within the publisher's 1 KiB/s resolution, so the
		// saving (1.95e4) is below the band however long it holds.
		w.namespace(t, ns, spec{name: "quiet", cluster: east, clients: 1000})
		a, p := w.advisor(t, Config{MinRounds: 1, MoveCost: time.Nanosecond})
		for i := range 6 {
			r := w.round(t, a)
			mv, ok := r.Outcome(ns + "/quiet-deployment")
			if !ok || mv.Outcome != OutcomeBelowNoise || !(mv.GroupSaving > 0) || mv.GroupSaving >= mv.Noise {
				t.Fatalf("round %d: %+v (planned %v), want below_noise with 0 < saving < band", i, mv, ok)
			}
		}
		if got := len(w.rebalancers(t, ns)); got != 0 {
			t.Errorf("%d WorkloadRebalancers for noise", got)
		}
		if got := p.sum(t, telemetry.MetricRebalanceAdvice, telemetry.AttrRebalanceOutcome, OutcomeBelowNoise); got != 6 {
			t.Errorf("advice{outcome=below_noise} = %d, want 6", got)
		}
	})

	t.Run("never more than the cap per round, highest saving first", func(t *testing.T) {
		ns := "cap"
		w.namespace(t, ns, spec{name: "a", cluster: east, clients: 3e6}, spec{name: "b", cluster: east, clients: 2e6},
			spec{name: "c", cluster: east, clients: 1e6})
		a, _ := w.advisor(t, Config{MaxMoves: 2})
		var counts []int
		var r Report
		for range 5 {
			r = w.round(t, a)
			counts = append(counts, len(w.rebalancers(t, ns)))
			if len(counts) == 4 {
				if mv, _ := r.Outcome(ns + "/c-deployment"); mv.Outcome != OutcomeCap {
					t.Errorf("round 4: c %+v, want capped (the two bigger savings go first)", mv)
				}
			}
		}
		// All three pass the threshold in round 4 (each move's cost
		// scales with its own saving); two go, the third next round.
		if fmt.Sprint(counts) != "[0 0 0 2 3]" {
			t.Errorf("WorkloadRebalancers after each round %v, want [0 0 0 2 3]", counts)
		}
		moved := map[string]bool{}
		for _, wr := range w.rebalancers(t, ns) {
			moved[wr.Spec.Workloads[0].Name] = true
		}
		if len(moved) != 3 {
			t.Errorf("moved %v, want a, b and c once each", moved)
		}
	})

	t.Run("invalid and unknown workloads are skipped with a reason", func(t *testing.T) {
		ns := "invalid"
		w.namespace(t, ns,
			spec{name: "mismatch", cluster: east, clients: 1e6, kind: "StatefulSet"}, // binding name is not its resource's
			spec{name: "lost", cluster: "mars", clients: 1e6},
			spec{name: "silent", cluster: east, noTraffic: true},
			spec{name: "foreign", cluster: east, clients: 1e6, scheduler: "default-scheduler"},
		)
		a, p := w.advisor(t, Config{MinRounds: 1, MoveCost: time.Nanosecond})
		r := w.round(t, a)
		r = w.round(t, a)
		want := map[string]string{
			ReasonNoResource: ns + "/mismatch-deployment", ReasonUnknownCluster: ns + "/lost-deployment",
			ReasonNoTraffic: ns + "/silent-deployment", ReasonOtherScheduler: ns + "/foreign-deployment",
		}
		for reason, key := range want {
			if fmt.Sprint(r.Skipped[reason]) != fmt.Sprint([]string{key}) {
				t.Errorf("skipped %s: %v, want [%s]", reason, r.Skipped[reason], key)
			}
			if got := p.sum(t, telemetry.MetricRebalanceSkipped, telemetry.AttrRebalanceReason, reason); got != 2 {
				t.Errorf("skipped{reason=%s} = %d after 2 rounds, want 2", reason, got)
			}
		}
		if len(r.Planned) != 0 || len(w.rebalancers(t, ns)) != 0 {
			t.Errorf("planned %+v, want no move of an invalid workload", r.Planned)
		}
	})
}
