// Package e2e runs the custom karmada-scheduler (built from the nested
// module scheduler-plugin/karmada) against a real API server holding
// Karmada's CRDs and flowplace's. CI cannot build that binary (the module
// proxy does not serve Karmada), so the test runs only when
// FLOWPLACE_KARMADA_SCHEDULER names a built binary; see
// scheduler-plugin/README.md.
package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/charts"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/model/modeltest"
	"github.com/flowplace/flowplace/scheduler-plugin/source"
	"github.com/flowplace/flowplace/world/controlplane"
)

// SchedulerEnv names the custom karmada-scheduler binary.
const SchedulerEnv = "FLOWPLACE_KARMADA_SCHEDULER"

const (
	ns            = "shop"
	schedulerName = "flowplace-scheduler"
)

var (
	use1 = modeltest.ClusterName("us-east-1")
	euw1 = modeltest.ClusterName("eu-west-1")
)

func TestCustomKarmadaScheduler(t *testing.T) {
	bin := os.Getenv(SchedulerEnv)
	if bin == "" {
		t.Skipf("%s not set: build scheduler-plugin/karmada/cmd/karmada-scheduler against Karmada's source to run this", SchedulerEnv)
	}
	// Nodes: the API server takes client certificates, so the scheduler
	// runs as its own user with the chart's ClusterRole, not as an admin.
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{"../../api/crds"}, Nodes: true})
	ctx := t.Context()
	dc := cp.Host.Dynamic
	for _, n := range []string{ns, "karmada-system"} {
		if _, err := cp.Host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := schedulerIdentity(t, cp)

	// Ready clusters that serve Deployments, as karmada-controller-manager
	// would report them.
	for _, c := range modeltest.AWSClusters() {
		u := create(t, dc, source.ClusterGVR, "", map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": c.Name},
			"spec":     map[string]any{"provider": c.Provider, "region": c.Region, "syncMode": "Push", "apiEndpoint": "https://127.0.0.1:1"},
		})
		u.Object["status"] = map[string]any{
			"conditions": []any{map[string]any{"type": "Ready", "status": "True", "reason": "ClusterReady", "message": "ok",
				"lastTransitionTime": time.Now().UTC().Format(time.RFC3339)}},
			"apiEnablements": []any{map[string]any{"groupVersion": "apps/v1", "resources": []any{map[string]any{"name": "deployments", "kind": "Deployment"}}}},
			"resourceSummary": map[string]any{
				"allocatable": map[string]any{"cpu": "100", "memory": "400Gi", "pods": "1000"},
			},
		}
		if _, err := dc.Resource(source.ClusterGVR).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	until := time.Now().Add(time.Hour)
	for _, row := range modeltest.AWSLatency(until) {
		cl := &flowplacev1alpha1.ClusterLatency{
			TypeMeta:   metav1.TypeMeta{APIVersion: flowplacev1alpha1.SchemeGroupVersion.String(), Kind: "ClusterLatency"},
			ObjectMeta: metav1.ObjectMeta{Name: row.Source},
			Spec:       flowplacev1alpha1.ClusterLatencySpec{ClusterID: "uid-" + row.Source},
			Status:     flowplacev1alpha1.ClusterLatencyStatus{Freshness: freshness(until)},
		}
		for _, p := range row.Peers {
			cl.Status.Peers = append(cl.Status.Peers, flowplacev1alpha1.PeerLatency{Cluster: p.Cluster, MinMicroseconds: p.MinUs,
				P50Microseconds: p.P50Us, P90Microseconds: p.P90Us, P99Microseconds: p.P99Us, SampleCount: p.Samples, LastSampleTime: metav1.Now()})
		}
		createWithStatus(t, dc, flowplacev1alpha1.ClusterLatencyResource, "", cl)
	}
	// The heavy peer (cart) already runs in Ireland, placed by the default
	// scheduler (which is not running here).
	binding(t, dc, "cart", "", []any{map[string]any{"name": euw1, "replicas": int64(2)}})
	createWithStatus(t, dc, flowplacev1alpha1.WorkloadTrafficResource, ns, &flowplacev1alpha1.WorkloadTraffic{
		TypeMeta:   metav1.TypeMeta{APIVersion: flowplacev1alpha1.SchemeGroupVersion.String(), Kind: "WorkloadTraffic"},
		ObjectMeta: metav1.ObjectMeta{Name: model.BindingName("Deployment", "frontend"), Namespace: ns},
		Spec:       flowplacev1alpha1.WorkloadTrafficSpec{Workload: flowplacev1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "frontend"}},
		Status: flowplacev1alpha1.WorkloadTrafficStatus{
			Freshness: freshness(until),
			Peers: []flowplacev1alpha1.PeerTraffic{{
				Workload:       &flowplacev1alpha1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "cart"},
				BytesPerSecond: 10_000_000,
				Clusters: []flowplacev1alpha1.ClusterPairTraffic{{SourceCluster: use1, DestinationCluster: euw1,
					TrafficRates: flowplacev1alpha1.TrafficRates{BytesPerSecond: 10_000_000, MilliConnectionsPerSecond: 1000, SampleCount: 10}}},
			}},
		},
	})

	cfgPath := filepath.Join(t.TempDir(), "scheduler-config.yaml")
	cfg := fmt.Sprintf(`apiVersion: scheduler.flowplace.io/v1alpha1
kind: SchedulerConfiguration
model: {rebuildInterval: 100ms}
profiles:
- schedulerName: %s
  pluginConfig:
  - name: LatencyBudget
    args: {defaultBudget: 100ms}
`, schedulerName)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "scheduler.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	metricsAddr := "127.0.0.1:" + freePort(t)
	cmd := exec.Command(bin, "--kubeconfig="+kubeconfig, "--scheduler-name="+schedulerName,
		"--leader-elect=true", "--leader-elect-resource-name=flowplace-scheduler", "--leader-elect-resource-namespace=karmada-system",
		"--metrics-bind-address="+metricsAddr, "--health-probe-bind-address=127.0.0.1:"+freePort(t), "-v=4")
	cmd.Env = append(os.Environ(), "FLOWPLACE_SCHEDULER_CONFIG="+cfgPath)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("scheduler log:\n%s", tail(string(b), 20000))
			}
		}
	})

	// frontend talks to cart; api has no traffic data (all scores equal:
	// Karmada then picks by name, as the default scheduler would).
	placement := map[string]any{
		"spreadConstraints": []any{map[string]any{"spreadByField": "cluster", "maxGroups": int64(1), "minGroups": int64(1)}},
		"replicaScheduling": map[string]any{"replicaSchedulingType": "Duplicated"},
	}
	binding(t, dc, "frontend", schedulerName, nil, placement)
	binding(t, dc, "api", schedulerName, nil, placement)

	got := waitPlaced(t, dc, "frontend", "api")
	if want := []string{euw1}; !slices.Equal(got["frontend"], want) {
		t.Errorf("frontend placed in %v, want %v (where its heavy peer runs)", got["frontend"], want)
	}
	if want := []string{modeltest.ClusterName("ap-northeast-1")}; !slices.Equal(got["api"], want) {
		t.Errorf("api (no data) placed in %v, want %v (name order, as without the plugin)", got["api"], want)
	}
	t.Logf("placements: %v", got)
	// The capacity plan through the real scheduler: web's clients are in
	// Virginia, but 10x more of its traffic goes to search, whose binding
	// waits to be scheduled (by a scheduler not running here) and whose
	// own clients are in Tokyo. Traffic to search was last observed in
	// Virginia; the plan expects Karmada to put search in Tokyo. Tokyo
	// itself is filtered out (p90 160 ms from web's clients, over the
	// 100ms budget), so web goes to the cluster nearest Tokyo within the
	// budget: Oregon. Without the plan it would stay in Virginia.
	binding(t, dc, "search", "scheduler-not-running", nil, placement)
	traffic := func(name string, st flowplacev1alpha1.WorkloadTrafficStatus) {
		st.Freshness = freshness(until)
		createWithStatus(t, dc, flowplacev1alpha1.WorkloadTrafficResource, ns, &flowplacev1alpha1.WorkloadTraffic{
			TypeMeta:   metav1.TypeMeta{APIVersion: flowplacev1alpha1.SchemeGroupVersion.String(), Kind: "WorkloadTraffic"},
			ObjectMeta: metav1.ObjectMeta{Name: model.BindingName("Deployment", name), Namespace: ns},
			Spec:       flowplacev1alpha1.WorkloadTrafficSpec{Workload: flowplacev1alpha1.WorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Name: name}},
			Status:     st,
		})
	}
	rates := func(b int64) flowplacev1alpha1.TrafficRates {
		return flowplacev1alpha1.TrafficRates{BytesPerSecond: b, MilliConnectionsPerSecond: 1000, SampleCount: 10}
	}
	apne1 := modeltest.ClusterName("ap-northeast-1")
	traffic("search", flowplacev1alpha1.WorkloadTrafficStatus{
		Clients: []flowplacev1alpha1.ClientTraffic{{ClientCluster: apne1, ServingCluster: use1, TrafficRates: rates(50_000_000)}},
	})
	traffic("web", flowplacev1alpha1.WorkloadTrafficStatus{
		Peers: []flowplacev1alpha1.PeerTraffic{{
			Workload:       &flowplacev1alpha1.PeerWorkloadReference{APIVersion: "apps/v1", Kind: "Deployment", Namespace: ns, Name: "search"},
			BytesPerSecond: 10_000_000,
			Clusters:       []flowplacev1alpha1.ClusterPairTraffic{{SourceCluster: use1, DestinationCluster: use1, TrafficRates: rates(10_000_000)}},
		}},
		Clients: []flowplacev1alpha1.ClientTraffic{{ClientCluster: use1, ServingCluster: use1, TrafficRates: rates(1_000_000)}},
	})
	// Give the model a rebuild (100ms) to see the new objects first.
	time.Sleep(500 * time.Millisecond)
	binding(t, dc, "web", schedulerName, nil, placement)
	usw2 := modeltest.ClusterName("us-west-2")
	if got := waitPlaced(t, dc, "web"); !slices.Equal(got["web"], []string{usw2}) {
		t.Errorf("web placed in %v, want %v (within budget, nearest where the plan expects search)", got["web"], usw2)
	} else {
		t.Logf("web placed in %v", got["web"])
	}
	// The attempt's verdicts as one Event on web's ResourceBinding.
	var msg string
	for deadline := time.Now().Add(10 * time.Second); msg == "" && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		list, err := cp.Host.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=FlowplacePlacement,involvedObject.name=web-deployment"})
		if err != nil {
			t.Fatal(err)
		}
		if len(list.Items) > 0 {
			msg = list.Items[0].Message
		}
	}
	if !strings.HasPrefix(msg, "TrafficLocality expected cost (B/s*ms): "+usw2+" ") || !strings.Contains(msg, "LatencyBudget excluded "+apne1+": p90 RTT") {
		t.Errorf("FlowplacePlacement event on web-deployment: %q", msg)
	} else {
		t.Logf("event: %s", msg)
	}

	// The attempts as decision metrics on the scheduler's own /metrics:
	// web's exclusion of Tokyo (client over budget) and its preference.
	wantSeries := []string{
		`flowplace_scheduler_exclusions_total{flowplace_scheduler_reason="client_over_budget",k8s_cluster_name="` + apne1 + `"`,
		`flowplace_scheduler_preferred_total{k8s_cluster_name="` + usw2 + `"`,
		`flowplace_scheduler_attempts_total{flowplace_scheduler_outcome="costed"`,
	}
	var exposition string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if exposition = string(b); !slices.ContainsFunc(wantSeries, func(w string) bool { return !strings.Contains(exposition, w) }) {
			break
		}
	}
	for _, w := range wantSeries {
		if !strings.Contains(exposition, w) {
			t.Errorf("scheduler /metrics lacks %s", w)
		}
	}

	// The scheduler's own log shows the plugins ran: flowplace's ready
	// line, Karmada's per-plugin score lines and the filter's rejection
	// (klog flushes every 5 s, so read until they are all there).
	wants := []string{"flowplace plugins ready", "Plugin TrafficLocality scores on shop/frontend", "Plugin TrafficLocality scores on shop/web =>",
		`"LatencyBudget excluded cluster" binding="shop/web-deployment" cluster="member-ap-northeast-1"`}
	var b []byte
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var err error
		if b, err = os.ReadFile(logPath); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) || !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(string(b), w) }) {
			break
		}
	}
	for _, want := range wants {
		i := strings.Index(string(b), want)
		if i < 0 {
			t.Errorf("scheduler log lacks %q", want)
			continue
		}
		line, _, _ := strings.Cut(string(b[i:]), "\n")
		t.Logf("scheduler log: %s", line)
	}
	// The chart's ClusterRole is enough: nothing was refused.
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "forbidden") {
			t.Errorf("the scheduler, as system:flowplace:scheduler with the chart's RBAC, was refused: %s", l)
		}
	}
}

// waitPlaced waits up to 60 s for the named bindings to get clusters and
// returns them by name (missing names were not placed in time).
func waitPlaced(t *testing.T, dc dynamic.Interface, names ...string) map[string][]string {
	t.Helper()
	got := map[string][]string{}
	deadline := time.Now().Add(60 * time.Second)
	for len(got) < len(names) && time.Now().Before(deadline) {
		for _, name := range names {
			rb, err := dc.Resource(source.ResourceBindingGVR).Namespace(ns).Get(t.Context(), model.BindingName("Deployment", name), metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cl, _, _ := unstructured.NestedSlice(rb.Object, "spec", "clusters")
			if len(cl) > 0 {
				var placed []string
				for _, c := range cl {
					placed = append(placed, c.(map[string]any)["name"].(string))
				}
				got[name] = placed
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return got
}

func binding(t *testing.T, dc dynamic.Interface, name, scheduler string, clusters []any, placement ...map[string]any) {
	t.Helper()
	spec := map[string]any{
		"resource": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": name, "uid": "uid-" + name},
		"replicas": int64(1),
	}
	if scheduler != "" {
		spec["schedulerName"] = scheduler
	}
	if clusters != nil {
		spec["clusters"] = clusters
	}
	if len(placement) > 0 {
		spec["placement"] = placement[0]
	}
	create(t, dc, source.ResourceBindingGVR, ns, map[string]any{
		"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
		"metadata": map[string]any{"name": model.BindingName("Deployment", name), "namespace": ns,
			// karmada-webhook sets this; the scheduler skips bindings without it.
			"labels": map[string]any{"propagationpolicy.karmada.io/permanent-id": "pp-" + name}},
		"spec": spec,
	})
}

func freshness(validUntil time.Time) flowplacev1alpha1.Freshness {
	return flowplacev1alpha1.Freshness{ValidUntil: metav1.NewTime(validUntil), LastUpdateTime: metav1.Now(), WindowSeconds: 60, SampleCount: 5000}
}

func create(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, namespace string, obj map[string]any) *unstructured.Unstructured {
	t.Helper()
	u, err := dc.Resource(gvr).Namespace(namespace).Create(t.Context(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s: %v", gvr.Resource, err)
	}
	return u
}

func createWithStatus(t *testing.T, dc dynamic.Interface, gvr schema.GroupVersionResource, namespace string, obj runtime.Object) {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	status := m["status"]
	u := create(t, dc, gvr, namespace, m)
	u.Object["status"] = status
	if _, err := dc.Resource(gvr).Namespace(namespace).UpdateStatus(t.Context(), u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// schedulerIdentity applies the chart's RBAC for the scheduler and returns a
// kubeconfig of its user (system:flowplace:scheduler).
func schedulerIdentity(t *testing.T, cp *controlplane.ControlPlane) string {
	t.Helper()
	r, err := charts.Render(charts.RenderOptions{Mode: charts.ModeKarmada, Namespace: "karmada-system", Values: map[string]any{
		"estimator": map[string]any{"enabled": false}, "agent": map[string]any{"enabled": false},
	}})
	if err != nil {
		t.Fatal(err)
	}
	rbac := schema.GroupVersion{Group: "rbac.authorization.k8s.io", Version: "v1"}
	gvrs := map[string]schema.GroupVersionResource{
		"ClusterRole": rbac.WithResource("clusterroles"), "ClusterRoleBinding": rbac.WithResource("clusterrolebindings"),
		"Role": rbac.WithResource("roles"), "RoleBinding": rbac.WithResource("rolebindings"),
	}
	n := 0
	for _, o := range r.Objects {
		gvr, ok := gvrs[o.GetKind()]
		if !ok {
			continue
		}
		ri := dynamic.ResourceInterface(cp.Host.Dynamic.Resource(gvr))
		if o.GetNamespace() != "" {
			ri = cp.Host.Dynamic.Resource(gvr).Namespace(o.GetNamespace())
		}
		if _, err := ri.Apply(t.Context(), o.GetName(), o, metav1.ApplyOptions{FieldManager: "test", Force: true}); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 4 {
		t.Fatalf("the chart renders %d RBAC objects for the scheduler, want 4", n)
	}
	path := filepath.Join(t.TempDir(), "scheduler.kubeconfig")
	if err := cp.Host.WriteKubeconfig(path, "system:flowplace:scheduler"); err != nil {
		t.Fatal(err)
	}
	return path
}
