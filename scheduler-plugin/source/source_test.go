package source_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/model/modeltest"
	fpruntime "github.com/flowplace/flowplace/scheduler-plugin/runtime"
	"github.com/flowplace/flowplace/scheduler-plugin/source"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
	"github.com/flowplace/flowplace/world/controlplane"
)

const ns = "shop"

var (
	frontend = model.KeyFor(ns, "Deployment", "frontend")
	use1     = modeltest.ClusterName("us-east-1")
	usw2     = modeltest.ClusterName("us-west-2")
	euw1     = modeltest.ClusterName("eu-west-1")
	euc1     = modeltest.ClusterName("eu-central-1")
	apne1    = modeltest.ClusterName("ap-northeast-1")
	all      = []string{use1, usw2, euw1, euc1, apne1}
)

// TestInformerBackedPlugins runs both plugins on a model filled from a real
// API server holding Karmada's CRDs and flowplace's, with objects shaped like
// the estimator's and peer ResourceBindings shaped like Karmada's.
func TestInformerBackedPlugins(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{"../../api/crds"}})
	ctx := t.Context()
	host := cp.Host
	dc := host.Dynamic

	if _, err := host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range modeltest.AWSClusters() {
		create(t, dc, source.ClusterGVR, "", &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": c.Name},
			"spec":     map[string]any{"provider": c.Provider, "region": c.Region, "syncMode": "Push", "apiEndpoint": "https://127.0.0.1:1"},
		}})
	}
	createLatency(t, dc, time.Now().Add(10*time.Minute))
	// Peers: cart (heavy) in Ireland, catalog (light) in Virginia.
	createBinding(t, dc, "cart", map[string]int64{euw1: 3})
	createBinding(t, dc, "catalog", map[string]int64{use1: 2})
	createBinding(t, dc, "frontend", nil)
	// The workload template carries the latency budget.
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: ns, Annotations: map[string]string{model.BudgetAnnotation: "100ms"}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "frontend"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "frontend"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/frontend:1"}}},
			},
		},
	}
	if _, err := host.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	createWithStatus(t, dc, flowplacev1alpha1.WorkloadTrafficResource, ns, frontendTraffic(time.Now().Add(10*time.Minute)))

	cfg := config.Default()
	cfg.Model.RebuildInterval = 50 * time.Millisecond
	mc, err := metadata.NewForConfig(host.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	src := source.NewForClients(dc, mc, cfg.Model)
	runCtx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	src.Start(runCtx)
	syncCtx, cancelSync := context.WithTimeout(ctx, 30*time.Second)
	defer cancelSync()
	if err := src.WaitForSync(syncCtx); err != nil {
		t.Fatal(err)
	}
	score := trafficlocality.New(src, cfg.TrafficLocality, nil)
	filter := latencybudget.New(src, cfg.LatencyBudget, nil)

	scores := func() []int64 {
		raw := make([]int64, len(all))
		for i, c := range all {
			raw[i] = score.Score(frontend, c).Raw
		}
		score.Normalize(raw)
		return raw
	}
	neutral := []int64{50, 50, 50, 50, 50}

	t.Run("heavy peer's cluster scores highest", func(t *testing.T) {
		s := waitFor(t, scores, func(s []int64) bool { return s[2] == 100 })
		// Ireland (the heavy peer) 100, Frankfurt next, Tokyo last.
		if !(s[3] > s[0] && s[0] > s[1] && s[1] > s[4]) {
			t.Errorf("scores %v", s)
		}
		t.Logf("scores %v; %s", s, score.Explain(frontend, apne1))
	})
	t.Run("budget annotation from the template filters", func(t *testing.T) {
		var fit []string
		for _, c := range all {
			v := filter.Filter(frontend, c)
			if v.Fit {
				fit = append(fit, c)
			} else if !strings.Contains(v.Reason, "exceeds the budget 100ms") {
				t.Errorf("%s: %s", c, v.Reason)
			}
		}
		if want := []string{use1, euw1, euc1}; !slices.Equal(fit, want) {
			t.Errorf("fit %v, want %v", fit, want)
		}
	})
	t.Run("estimated entries reach the model", func(t *testing.T) {
		// A cluster whose agents never dialed anyone gets a row of
		// estimates from the estimator; the schema accepts it and the
		// model reads it, with its errors.
		const newc = "member-new"
		cl := &flowplacev1alpha1.ClusterLatency{
			TypeMeta:   metav1.TypeMeta{APIVersion: flowplacev1alpha1.SchemeGroupVersion.String(), Kind: "ClusterLatency"},
			ObjectMeta: metav1.ObjectMeta{Name: newc},
			Spec:       flowplacev1alpha1.ClusterLatencySpec{ClusterID: "uid-" + newc},
			Status:     flowplacev1alpha1.ClusterLatencyStatus{Freshness: freshness(time.Now().Add(10 * time.Minute))},
		}
		cl.Status.SampleCount = 0
		for dst, us := range map[string]int64{euw1: 30_000, euc1: 25_000, use1: 70_000} {
			cl.Status.Peers = append(cl.Status.Peers, flowplacev1alpha1.PeerLatency{Cluster: dst, MinMicroseconds: us - 5_000,
				P50Microseconds: us, P90Microseconds: us, P99Microseconds: us, LastSampleTime: metav1.Now(),
				Estimated: true, ExpectedErrorMicroseconds: 5_000})
		}
		createWithStatus(t, dc, flowplacev1alpha1.ClusterLatencyResource, "", cl)
		t.Cleanup(func() {
			_ = dc.Resource(flowplacev1alpha1.ClusterLatencyResource).Delete(ctx, newc, metav1.DeleteOptions{})
		})
		type got struct {
			us, bound int32
			est, ok   bool
		}
		lookup := func() got {
			s := src.Snapshot()
			a, okA := s.ClusterIndex(newc)
			b, _ := s.ClusterIndex(euw1)
			if !okA {
				return got{}
			}
			now := time.Now().UnixNano()
			us, _ := s.RTT(model.QuantileP90, b, a, now)
			bound, est, ok := s.RTTBound(model.QuantileP90, a, b, now)
			return got{us, bound, est, ok}
		}
		if g := waitFor(t, lookup, func(g got) bool { return g.ok }); g != (got{30_000, 35_000, true, true}) {
			t.Errorf("eu-west-1 <-> %s: %+v, want the estimate 30 ms and its bound 35 ms", newc, g)
		}
		// The heavy peer in Ireland is 35 ms by the bound from the new
		// cluster, the clients in Frankfurt 30 ms, within the template's
		// 100 ms (without the estimates the filter would fail open for
		// want of an RTT).
		if v := filter.Filter(frontend, newc); !v.Fit || v.Reason != "within latency budget" {
			t.Errorf("filter on %s: %+v", newc, v)
		}
	})
	t.Run("peer moves with its binding", func(t *testing.T) {
		rb, err := dc.Resource(source.ResourceBindingGVR).Namespace(ns).Get(ctx, "cart-deployment", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedSlice(rb.Object, []any{map[string]any{"name": apne1, "replicas": int64(3)}}, "spec", "clusters")
		if _, err := dc.Resource(source.ResourceBindingGVR).Namespace(ns).Update(ctx, rb, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		s := waitFor(t, scores, func(s []int64) bool { return s[4] == 100 })
		if s[1] <= s[2] {
			t.Errorf("Oregon should now beat Ireland: %v", s)
		}
	})
	t.Run("deleting the traffic object returns to neutral", func(t *testing.T) {
		if err := dc.Resource(flowplacev1alpha1.WorkloadTrafficResource).Namespace(ns).Delete(ctx, frontend.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, scores, func(s []int64) bool { return slices.Equal(s, neutral) })
		if v := filter.Filter(frontend, apne1); !v.Fit || !strings.Contains(v.Reason, "fail open") {
			t.Errorf("filter without traffic: %+v", v)
		}
	})
	t.Run("expiry returns to neutral without any event", func(t *testing.T) {
		expires := time.Now().Add(3 * time.Second)
		createWithStatus(t, dc, flowplacev1alpha1.WorkloadTrafficResource, ns, frontendTraffic(expires))
		waitFor(t, scores, func(s []int64) bool { return s[4] == 100 })
		rebuilds := src.Rebuilds()
		time.Sleep(time.Until(expires) + 100*time.Millisecond)
		if got := scores(); !slices.Equal(got, neutral) {
			t.Errorf("after validUntil: %v", got)
		}
		if src.Rebuilds() != rebuilds {
			t.Logf("note: %d rebuilds during the wait", src.Rebuilds()-rebuilds)
		}
	})
	t.Run("deleting latency rows returns to neutral", func(t *testing.T) {
		createOrReplaceTraffic(t, dc, frontendTraffic(time.Now().Add(10*time.Minute)))
		waitFor(t, scores, func(s []int64) bool { return s[4] == 100 })
		if err := dc.Resource(flowplacev1alpha1.ClusterLatencyResource).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, scores, func(s []int64) bool { return slices.Equal(s, neutral) })
	})
	t.Run("runtime wires both plugins from a kubeconfig and a config file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "scheduler-config.yaml")
		doc := "profiles:\n- schedulerName: flowplace-scheduler\n  pluginConfig:\n  - name: LatencyBudget\n    args: {defaultBudget: 100ms}\n"
		if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"--kubeconfig", host.Kubeconfig, "--scheduler-name=flowplace-scheduler", "--leader-elect=false"}
		env := map[string]string{fpruntime.ConfigEnv: p}
		// The previous subtest deleted the latency rows.
		createLatency(t, dc, time.Now().Add(10*time.Minute))
		rt, err := fpruntime.New(runCtx, fpruntime.OptionsFrom(args, func(k string) string { return env[k] }))
		if err != nil {
			t.Fatal(err)
		}
		if rt.Config.LatencyBudget.DefaultBudget != 100*time.Millisecond || rt.Source.Snapshot().NumClusters() != len(all) {
			t.Errorf("runtime: config %+v, %d clusters", rt.Config.LatencyBudget, rt.Source.Snapshot().NumClusters())
		}
		// New waited for the caches: the runtime's own plugins see the
		// traffic object and the heavy peer, now in Tokyo, at once.
		if r := rt.TrafficLocality.Score(frontend, apne1); r.Reason != trafficlocality.ReasonCost {
			t.Errorf("runtime score: %+v", r)
		}
		if v := rt.LatencyBudget.Filter(frontend, euw1); v.Fit || !strings.Contains(v.Reason, "exceeds the budget 100ms") {
			t.Errorf("Ireland is 233 ms (p90) from Tokyo, over 100ms: %+v", v)
		}
		// One scheduling attempt, as the adapter reports it: an Event on
		// the ResourceBinding (found by UID) sums it up.
		for _, c := range all {
			if v := rt.LatencyBudget.Filter(frontend, c); !v.Fit {
				rt.Events.Excluded(frontend, c, v)
				continue
			}
			rt.Events.Scored(frontend, c, rt.TrafficLocality.Score(frontend, c))
		}
		rt.Events.Flush(true)
		rb, err := dc.Resource(source.ResourceBindingGVR).Namespace(ns).Get(ctx, frontend.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ev := waitFor(t, func() *corev1.Event {
			list, err := host.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FlowplacePlacement,involvedObject.name=" + frontend.Name})
			if err != nil || len(list.Items) == 0 {
				return nil
			}
			return &list.Items[0]
		}, func(e *corev1.Event) bool { return e != nil })
		// cart now runs in Tokyo and the clients are in Frankfurt: no
		// cluster is within 100ms of both, so every one is excluded.
		if ev.InvolvedObject.UID != rb.GetUID() || ev.InvolvedObject.Kind != "ResourceBinding" || ev.Source.Component != "flowplace-scheduler" {
			t.Errorf("event: %+v", ev)
		}
		for _, c := range all {
			if !strings.Contains(ev.Message, "LatencyBudget excluded "+c+": p90 RTT") {
				t.Errorf("event message lacks the exclusion of %s: %s", c, ev.Message)
			}
		}
		t.Logf("event: %s", ev.Message)
		env[fpruntime.ConfigEnv] = filepath.Join(t.TempDir(), "missing.yaml")
		if _, err := fpruntime.New(runCtx, fpruntime.OptionsFrom(args, func(k string) string { return env[k] })); err == nil {
			t.Error("explicit missing config file accepted")
		}
	})
	t.Run("capacity plan from cluster resource summaries and binding requests", func(t *testing.T) {
		const orders = "orders"
		if _, err := host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: orders}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Virginia has 2 cores free (8 - 5 allocated - 1 allocating),
		// Ireland 16, the others 1.
		setCPU(t, dc, use1, "8", "5", "1")
		setCPU(t, dc, euw1, "16", "0", "0")
		for _, c := range []string{usw2, euc1, apne1} {
			setCPU(t, dc, c, "4", "3", "0")
		}
		api := model.KeyFor(orders, "Deployment", "api")
		db := model.KeyFor(orders, "Deployment", "db")
		// Unplaced: api 2 x 500m, db 2 x 2 cores.
		for name, cpu := range map[string]string{"api": "500m", "db": "2"} {
			create(t, dc, source.ResourceBindingGVR, orders, &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
				"metadata": map[string]any{"name": model.BindingName("Deployment", name), "namespace": orders},
				"spec": map[string]any{
					"resource":            map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": orders, "name": name},
					"replicas":            int64(2),
					"replicaRequirements": map[string]any{"resourceRequest": map[string]any{"cpu": cpu, "memory": "1Gi"}},
				},
			}})
		}
		// api: 5 MB/s from clients in Virginia, 20 MB/s to db, measured
		// when db last ran in Tokyo; db's binding now waits to be
		// scheduled, so the plan, not the old observation, says where it
		// will be.
		wt := frontendTraffic(time.Now().Add(10 * time.Minute))
		wt.Name, wt.Namespace, wt.Spec.Workload.Name = api.Name, orders, "api"
		rate := flowplacev1alpha1.TrafficRates{BytesPerSecond: 20_000_000, MilliConnectionsPerSecond: 1000, SampleCount: 100}
		wt.Status.Peers = []flowplacev1alpha1.PeerTraffic{{Workload: &flowplacev1alpha1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: orders, Name: "db"},
			BytesPerSecond: 20_000_000, Clusters: []flowplacev1alpha1.ClusterPairTraffic{{SourceCluster: use1, DestinationCluster: apne1, TrafficRates: rate}}}}
		wt.Status.Clients = []flowplacev1alpha1.ClientTraffic{{ClientCluster: use1, ServingCluster: use1, TrafficRates: flowplacev1alpha1.TrafficRates{BytesPerSecond: 5_000_000, SampleCount: 100}}}
		createWithStatus(t, dc, flowplacev1alpha1.WorkloadTrafficResource, orders, wt)

		apiScores := func() []int64 {
			raw := make([]int64, len(all))
			for i, c := range all {
				raw[i] = score.Score(api, c).Raw
			}
			score.Normalize(raw)
			return raw
		}
		// api and db (5 cores together) fit only in Ireland: db is planned
		// there, and api follows its 20 MB/s rather than its clients.
		waitFor(t, apiScores, func(s []int64) bool { return s[2] == 100 })
		snap := src.Snapshot()
		w := snap.Workload(db)
		if i, _ := snap.ClusterIndex(euw1); w.DemandMilliCPU != 4000 || w.Planned != i {
			t.Errorf("db: demand %v planned %d, want 4000 in %s", w.DemandMilliCPU, w.Planned, euw1)
		}
		if i, _ := snap.ClusterIndex(use1); snap.Slack(i) != 2000 {
			t.Errorf("Virginia slack %v, want 2000", snap.Slack(i))
		}
		// Virginia frees up: the pair is planned beside the clients.
		setCPU(t, dc, use1, "8", "0", "0")
		s := waitFor(t, apiScores, func(s []int64) bool { return s[0] == 100 })
		t.Logf("api scores after Virginia freed up: %v; %s", s, score.Explain(api, euw1))
	})
	t.Run("invalid config files are refused", func(t *testing.T) {
		dir := t.TempDir()
		for name, doc := range map[string]string{
			"unknown-field.yaml": "profiles: [{pluginConfig: [{name: LatencyBudget, args: {budget: 10ms}}]}]",
			"bad-quantile.yaml":  "profiles: [{pluginConfig: [{name: TrafficLocality, args: {rttQuantile: p95}}]}]",
			"no-profiles.yaml":   "apiVersion: scheduler.flowplace.io/v1alpha1\nkind: SchedulerConfiguration\n",
		} {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			if c, err := config.Load(p, ""); err == nil {
				t.Errorf("%s accepted: %+v", name, c)
			} else {
				t.Logf("%s: %v", name, err)
			}
		}
	})
}

// createLatency writes one ClusterLatency per AWS region, as the estimator
// would.
func createLatency(t *testing.T, dc dynamic.Interface, validUntil time.Time) {
	t.Helper()
	for _, row := range modeltest.AWSLatency(validUntil) {
		cl := &flowplacev1alpha1.ClusterLatency{
			TypeMeta:   metav1.TypeMeta{APIVersion: flowplacev1alpha1.SchemeGroupVersion.String(), Kind: "ClusterLatency"},
			ObjectMeta: metav1.ObjectMeta{Name: row.Source},
			Spec:       flowplacev1alpha1.ClusterLatencySpec{ClusterID: "uid-" + row.Source},
			Status:     flowplacev1alpha1.ClusterLatencyStatus{Freshness: freshness(validUntil)},
		}
		for _, p := range row.Peers {
			cl.Status.Peers = append(cl.Status.Peers, flowplacev1alpha1.PeerLatency{Cluster: p.Cluster, MinMicroseconds: p.MinUs,
				P50Microseconds: p.P50Us, P90Microseconds: p.P90Us, P99Microseconds: p.P99Us, SampleCount: p.Samples, LastSampleTime: metav1.Now()})
		}
		createWithStatus(t, dc, flowplacev1alpha1.ClusterLatencyResource, "", cl)
	}
}

func freshness(validUntil time.Time) flowplacev1alpha1.Freshness {
	return flowplacev1alpha1.Freshness{ValidUntil: metav1.NewTime(validUntil), LastUpdateTime: metav1.Now(), WindowSeconds: 60, SampleCount: 5000}
}

func frontendTraffic(validUntil time.Time) *flowplacev1alpha1.WorkloadTraffic {
	rates := func(b int64) flowplacev1alpha1.TrafficRates {
		return flowplacev1alpha1.TrafficRates{BytesPerSecond: b, MilliConnectionsPerSecond: 1000, RTTP50Microseconds: 500, SampleCount: 100}
	}
	return &flowplacev1alpha1.WorkloadTraffic{
		TypeMeta:   metav1.TypeMeta{APIVersion: flowplacev1alpha1.SchemeGroupVersion.String(), Kind: "WorkloadTraffic"},
		ObjectMeta: metav1.ObjectMeta{Name: frontend.Name, Namespace: ns},
		Spec:       flowplacev1alpha1.WorkloadTrafficSpec{Workload: flowplacev1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "frontend"}},
		Status: flowplacev1alpha1.WorkloadTrafficStatus{
			Freshness: freshness(validUntil),
			Peers: []flowplacev1alpha1.PeerTraffic{
				{Workload: &flowplacev1alpha1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "cart"},
					BytesPerSecond: 10_000_000, Clusters: []flowplacev1alpha1.ClusterPairTraffic{{SourceCluster: use1, DestinationCluster: euw1, TrafficRates: rates(10_000_000)}}},
				{Workload: &flowplacev1alpha1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "catalog"},
					BytesPerSecond: 100_000, Clusters: []flowplacev1alpha1.ClusterPairTraffic{{SourceCluster: use1, DestinationCluster: use1, TrafficRates: rates(100_000)}}},
			},
			Clients: []flowplacev1alpha1.ClientTraffic{{ClientCluster: euc1, ServingCluster: use1, TrafficRates: rates(1_000_000)}},
		},
	}
}

func createBinding(t *testing.T, dc dynamic.Interface, name string, clusters map[string]int64) {
	t.Helper()
	var cl []any
	for _, c := range all {
		if r, ok := clusters[c]; ok {
			cl = append(cl, map[string]any{"name": c, "replicas": r})
		}
	}
	spec := map[string]any{"resource": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": name}}
	if cl != nil {
		spec["clusters"] = cl
	}
	create(t, dc, source.ResourceBindingGVR, ns, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
		"metadata": map[string]any{"name": model.BindingName("Deployment", name), "namespace": ns},
		"spec":     spec,
	}})
}

// setCPU sets a Cluster's status.resourceSummary CPU, as Karmada's cluster
// status controller reports it.
func setCPU(t *testing.T, dc dynamic.Interface, cluster, allocatable, allocated, allocating string) {
	t.Helper()
	u, err := dc.Resource(source.ClusterGVR).Get(t.Context(), cluster, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Object["status"] = map[string]any{"resourceSummary": map[string]any{
		"allocatable": map[string]any{"cpu": allocatable, "memory": "64Gi"},
		"allocated":   map[string]any{"cpu": allocated},
		"allocating":  map[string]any{"cpu": allocating},
	}}
	if _, err := dc.Resource(source.ClusterGVR).UpdateStatus(t.Context(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of cluster %s: %v", cluster, err)
	}
}

func create(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, namespace string, u *unstructured.Unstructured) *unstructured.Unstructured {
	t.Helper()
	out, err := dc.Resource(gvr).Namespace(namespace).Create(t.Context(), u, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s %s: %v", gvr.Resource, u.GetName(), err)
	}
	return out
}

// createWithStatus creates obj and then sets its status through the status
// subresource, as the estimator does.
func createWithStatus(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, namespace string, obj runtime.Object) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: m}
	status := u.Object["status"]
	created := create(t, dc, gvr, namespace, u)
	created.Object["status"] = status
	if _, err := dc.Resource(gvr).Namespace(namespace).UpdateStatus(t.Context(), created, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("status of %s %s: %v", gvr.Resource, u.GetName(), err)
	}
}

func createOrReplaceTraffic(t *testing.T, dc dynamic.Interface, wt *flowplacev1alpha1.WorkloadTraffic) {
	t.Helper()
	err := dc.Resource(flowplacev1alpha1.WorkloadTrafficResource).Namespace(ns).Delete(t.Context(), wt.Name, metav1.DeleteOptions{})
	if err != nil && !strings.Contains(err.Error(), "not found") {
		t.Fatal(err)
	}
	createWithStatus(t, dc, flowplacev1alpha1.WorkloadTrafficResource, ns, wt)
}

// waitFor polls f until ok (the model is rebuilt asynchronously).
func waitFor[T any](t *testing.T, f func() T, ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		v := f()
		if ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 15s; last value %v", fmt.Sprint(v))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
