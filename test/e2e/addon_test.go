package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/charts"
	"github.com/flowplace/flowplace/internal/addon"
	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/internal/latencymatrix"
	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/source"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/fleet"
	"github.com/flowplace/flowplace/world/wan"
)

var runtimeConverter = runtime.DefaultUnstructuredConverter

// addonWorld is a fleet ready for `addons enable`: member1 doubles as the
// Karmada host cluster with karmada-system and karmada-cert as karmadactl
// init leaves them, members registered as Karmada Clusters.
type addonWorld struct {
	f                *fleet.Fleet
	imgs             []images.Image
	karmada          *controlplane.Cluster
	hostCluster      *controlplane.Cluster
	opts             addon.EnableOptions
	progress         *bytes.Buffer
	memberKubeconfig string
	dir              string
	scheduler        bool // the karmada-scheduler's image is at hand and runs
}

const addonInjectedRTT = 20 * time.Millisecond

func startAddonWorld(t *testing.T, addrBase uint8) *addonWorld {
	t.Helper()
	injected := addonInjectedRTT
	imgs := fleet.ImagesForTest(t, images.Pause, images.Busybox, images.Agent, images.Estimator)
	scheduler := schedulerImage(t)
	if scheduler != nil {
		imgs = append(imgs, *scheduler)
	}
	f := fleet.StartForTest(t, fleet.Config{
		Clusters: []string{"member1", "member2"},
		ExtraRTT: map[wan.Pair]time.Duration{{A: "member1", B: "member2"}: injected},
		QuickACK: true,
		AddrBase: addrBase,
		Images:   imgs,
	})
	ctx := context.Background()
	cp := f.ControlPlane
	karmada := cp.Host
	hostCluster := f.Member("member1") // the Karmada host cluster
	if err := cp.RegisterMembers(ctx, nil); err != nil {
		t.Fatal(err)
	}
	// What karmadactl init leaves in the host cluster: its namespace and
	// karmada-cert with the CA the karmada-apiserver trusts for clients.
	if _, err := hostCluster.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: addon.DefaultNamespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	caCrt, caKey, err := cp.ClientCA()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hostCluster.Client.CoreV1().Secrets(addon.DefaultNamespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: addon.KarmadaCertSecret},
		Data:       map[string][]byte{"ca.crt": caCrt, "ca.key": caKey},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	memberKubeconfig := mergedKubeconfig(t, dir, map[string]string{"member1": f.Member("member1").Kubeconfig, "member2": f.Member("member2").Kubeconfig})

	image := func(name string) map[string]any {
		ref := imageRef(t, imgs, name) // flowplace.local/<name>:<tag>
		repoTag := strings.TrimPrefix(ref, images.Registry+"/")
		repo, tag, _ := strings.Cut(repoTag, ":")
		return map[string]any{"registry": images.Registry, "repository": repo, "tag": tag, "pullPolicy": "Never"}
	}
	values := map[string]any{
		"estimator": map[string]any{
			"image":           image(images.Estimator),
			"publishInterval": "2s",
			"otlp":            map[string]any{"service": map[string]any{"type": "NodePort"}},
			// The nodes are small: requests the two replicas fit in.
			"resources": map[string]any{"requests": map[string]any{"cpu": "10m", "memory": "32Mi"}},
		},
		// Its image needs Karmada's source (make images KARMADA_SOURCE=...):
		// without it the Deployment is validated, and its RBAC and config
		// are checked by running the root module's model source with them.
		"scheduler": map[string]any{"replicas": 0},
		"agent": map[string]any{
			"image":        image(images.Agent),
			"pollInterval": "200ms",
			"otlp":         map[string]any{"exportInterval": "1s"},
			"resources":    map[string]any{"requests": map[string]any{"cpu": "10m", "memory": "32Mi"}},
		},
	}
	if scheduler != nil {
		repo, tag, _ := strings.Cut(strings.TrimPrefix(scheduler.Ref, "docker.io/"), ":")
		values["scheduler"] = map[string]any{
			"replicas":  1,
			"image":     map[string]any{"registry": "docker.io", "repository": repo, "tag": tag, "pullPolicy": "Never"},
			"resources": map[string]any{"requests": map[string]any{"cpu": "10m", "memory": "32Mi"}},
		}
	}
	valuesFile := filepath.Join(dir, "values.yaml")
	writeYAML(t, valuesFile, values)
	var progress bytes.Buffer
	opts := addon.EnableOptions{
		GlobalOptions: addon.GlobalOptions{
			Namespace: addon.DefaultNamespace, KubeConfig: hostCluster.Kubeconfig, KarmadaConfig: karmada.Kubeconfig,
			Out: io.MultiWriter(&progress, testWriter{t}),
		},
		PodTimeout: 3 * time.Minute,
		ValueFiles: []string{valuesFile},
	}
	return &addonWorld{f: f, imgs: imgs, karmada: karmada, hostCluster: hostCluster, opts: opts, progress: &progress,
		memberKubeconfig: memberKubeconfig, dir: dir, scheduler: scheduler != nil}
}

// TestAddonInstallsFlowplace installs flowplace with `flowplace addons
// enable` on two member clusters with kubelet nodes, member1 doubling as the
// Karmada host cluster, plus a karmada-apiserver with Karmada's CRDs. What
// Karmada would propagate to the members, the test propagates itself,
// exactly as the chart's policies select it. The estimator pods run from the
// built image with the chart's Secrets; the agents export over the chart's
// mTLS; status turns healthy; a second enable changes nothing; one member's
// identity cannot speak for the other; disable leaves only the CRDs, and
// --purge removes them.
func TestAddonInstallsFlowplace(t *testing.T) {
	const injected = addonInjectedRTT
	w := startAddonWorld(t, 85)
	f, imgs, karmada, hostCluster, opts, dir := w.f, w.imgs, w.karmada, w.hostCluster, w.opts, w.dir
	progress, memberKubeconfig := w.progress, w.memberKubeconfig
	ctx := context.Background()
	m1, m2 := f.Member("member1").Client, f.Member("member2").Client
	hostDyn, karmadaDyn := hostCluster.Dynamic, karmada.Dynamic

	t.Run("bad input changes nothing", func(t *testing.T) {
		unreachable := filepath.Join(dir, "unreachable.config")
		writeKubeconfig(t, unreachable, "https://127.0.0.1:1")
		cases := []struct {
			name string
			edit func(o *addon.EnableOptions)
			want string
		}{
			{"unreachable karmada-apiserver", func(o *addon.EnableOptions) { o.KarmadaConfig = unreachable }, "karmada-apiserver at https://127.0.0.1:1 is not reachable"},
			{"missing karmada-cert", func(o *addon.EnableOptions) { o.Namespace = "kube-public" }, "secret kube-public/karmada-cert not found"},
			{"unknown member", func(o *addon.EnableOptions) { o.Cluster = "member1,member9" }, "-C member9: no such member cluster"},
			{"invalid values", func(o *addon.EnableOptions) { o.SetValues = []string{"estimator.replicas=two"} }, "/estimator/replicas"},
			{"unknown value", func(o *addon.EnableOptions) { o.SetValues = []string{"estimator.replica=2"} }, "additional properties 'replica' not allowed"},
			{"ClusterIP without an endpoint", func(o *addon.EnableOptions) {
				o.SetValues = []string{"estimator.otlp.service.type=ClusterIP"}
			}, "agent.otlp.endpoint is required"},
		}
		for _, c := range cases {
			o := opts
			o.Out = nil
			c.edit(&o)
			err := addon.Enable(ctx, o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: enable said %v; want an error containing %q", c.name, err, c.want)
			}
			if n := flowplaceObjects(t, hostDyn, karmadaDyn); n != "" {
				t.Fatalf("%s: enable failed but created %s", c.name, n)
			}
		}
	})

	start := time.Now()
	if err := addon.Enable(ctx, opts); err != nil {
		t.Fatalf("enable: %v", err)
	}
	enableTime := time.Since(start)
	if !strings.Contains(progress.String(), "waiting: flowplace-estimator") {
		t.Errorf("enable showed no progress while waiting:\n%s", progress.String())
	}

	hostR, karmadaR, err := addon.Render(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("enable creates exactly what the chart renders", func(t *testing.T) {
		for _, c := range []struct {
			dyn  dynamic.Interface
			kube kubernetes.Interface
			mode string
			r    *charts.Rendered
		}{{hostDyn, hostCluster.Client, charts.ModeHost, hostR}, {karmadaDyn, karmada.Client, charts.ModeKarmada, karmadaR}} {
			want := map[string]bool{}
			for _, o := range c.r.Objects {
				want[objectID(o)] = true
				if _, err := getLike(c.dyn, c.kube, o); err != nil {
					t.Errorf("%s: rendered %s %s/%s is not there: %v", c.mode, o.GetKind(), o.GetNamespace(), o.GetName(), err)
				}
			}
			for _, o := range ownedObjects(t, c.dyn, c.mode) {
				if !want[objectID(o)] {
					t.Errorf("%s: %s was created but the chart does not render it", c.mode, objectID(o))
				}
			}
		}
		// Estimator, scheduler (0 replicas), and the agent's objects.
		if hostR.Find("Deployment", "flowplace-estimator") == nil || hostR.Find("Deployment", "flowplace-scheduler") == nil || karmadaR.Find("DaemonSet", "flowplace-agent") == nil {
			t.Fatalf("rendering lacks a component: host %v, karmada %v", hostR.Kinds(), karmadaR.Kinds())
		}
	})

	// The estimator: two pods from the built image, one leader.
	err = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := hostCluster.Client.CoreV1().Pods(addon.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=flowplace-estimator"})
		if err != nil {
			return false, nil
		}
		running, ready := 0, 0
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return running == 2 && ready == 1, nil
	})
	if err != nil {
		t.Fatalf("estimator: want 2 running pods, 1 ready (the leader): %v\n%s", err, podsReport(hostCluster.Client, addon.DefaultNamespace, "app.kubernetes.io/name=flowplace-estimator"))
	}

	// Karmada's propagation, done here.
	// The latency matrix ConfigMap is the estimator's to write once it
	// leads: it may or may not exist yet.
	matrixCM := "ConfigMap flowplace-system/flowplace-cluster-latency"
	for _, m := range []string{"member1", "member2"} {
		got, missing := propagateAsKarmada(t, karmadaDyn, karmada.Client, m, nil, f.Member(m).Dynamic, f.Member(m).Client)
		if len(missing) > 0 && !slices.Equal(missing, []string{matrixCM}) {
			t.Fatalf("%s: the policies select %v, which do not exist; only the %s may be missing", m, missing, matrixCM)
		}
		var secrets []string
		for _, p := range got {
			if p.obj.GetKind() == "Secret" {
				secrets = append(secrets, p.obj.GetName())
			}
		}
		if want := "flowplace-agent-otlp-" + m; len(secrets) != 1 || secrets[0] != want {
			t.Fatalf("%s receives Secrets %v; want only its own identity %s", m, secrets, want)
		}
	}
	waitAgents(t, m1, 1)
	waitAgents(t, m2, 1)

	// Traffic across the WAN: frontend in member1 calls cart in member2,
	// new connections all along so the data stays fresh.
	ns := "shop"
	bb := imageRef(t, imgs, images.Busybox)
	svc := echoCartAcross(t, m1, m2, ns, bb)
	script := fmt.Sprintf(`while true; do (echo hello; sleep 0.2) | nc %s 80 > /dev/null; sleep 0.3; done`, svc.Spec.ClusterIP)
	if _, err := m1.AppsV1().Deployments(ns).Create(ctx, deployment("frontend", ns, "", bb, "sh", "-c", script), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	registerWorkloads(t, karmada, ns, map[string]string{"frontend": "member1", "cart": "member2"})

	t.Run("the estimator publishes from the agents over mTLS", func(t *testing.T) {
		var cl flowplacev1alpha1.ClusterLatency
		err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			u, err := karmadaDyn.Resource(flowplacev1alpha1.ClusterLatencyResource).Get(ctx, "member1", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			if err := runtimeConverter.FromUnstructured(u.Object, &cl); err != nil {
				return false, err
			}
			p := peer(&cl, "member2")
			return p != nil && p.SampleCount >= 10, nil
		})
		if err != nil {
			t.Fatalf("no ClusterLatency member1 -> member2 with 10 samples: %v (%+v)\n%s", err, cl.Status, podsReport(hostCluster.Client, addon.DefaultNamespace, "app.kubernetes.io/name=flowplace-estimator"))
		}
		p := peer(&cl, "member2")
		// The quantile is a histogram bucket's bound: within one bucket
		// plus the hub's bound above the injected RTT.
		p50 := time.Duration(p.P50Microseconds) * time.Microsecond
		bucket := time.Duration(loghist.Resolution(float64(injected.Microseconds()))) * time.Microsecond
		lo, hi := injected-bucket, injected+bucket+wan.MedianBias
		if p.Cluster != "member2" || p50 < lo || p50 > hi {
			t.Errorf("member1 -> %s p50 %s, want member2 within [%s, %s]", p.Cluster, p50, lo, hi)
		}
		err = wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := karmadaDyn.Resource(flowplacev1alpha1.WorkloadTrafficResource).Namespace(ns).Get(ctx, "frontend-deployment", metav1.GetOptions{})
			return err == nil, nil
		})
		if err != nil {
			l, _ := karmadaDyn.Resource(flowplacev1alpha1.WorkloadTrafficResource).Namespace(ns).List(ctx, metav1.ListOptions{})
			t.Fatalf("no WorkloadTraffic for frontend: %v (have %d)", err, len(l.Items))
		}
	})

	t.Run("the latency matrix reaches the members", func(t *testing.T) {
		// measured reads member1 -> member2 from a matrix ConfigMap.
		measured := func(cm *corev1.ConfigMap) (*flowplacev1alpha1.PeerLatency, error) {
			rows, err := latencymatrix.Decode([]byte(cm.Data[latencymatrix.DataKey]))
			if err != nil {
				return nil, err
			}
			if row, ok := rows["member1"]; ok {
				if p := peer(row, "member2"); p != nil && !p.Estimated && p.SampleCount > 0 {
					return p, nil
				}
			}
			return nil, nil
		}
		// The estimator rewrites the matrix each publication: wait for one
		// that carries the measured pair.
		var last string
		err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
			cm, err := karmada.Client.CoreV1().ConfigMaps("flowplace-system").Get(ctx, "flowplace-cluster-latency", metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			p, err := measured(cm)
			if err != nil {
				return false, fmt.Errorf("the estimator's matrix: %w", err)
			}
			last = "no measured member1 -> member2 entry yet"
			return p != nil, nil
		})
		if err != nil {
			t.Fatalf("the estimator's %s: %v (%s)", matrixCM, err, last)
		}
		got, missing := propagateAsKarmada(t, karmadaDyn, karmada.Client, "member1", nil, f.Member("member1").Dynamic, f.Member("member1").Client)
		if len(missing) != 0 || !slices.ContainsFunc(got, func(p propagated) bool {
			return p.obj.GetKind() == "ConfigMap" && p.obj.GetName() == "flowplace-cluster-latency"
		}) {
			t.Fatalf("member1 receives %d objects without the matrix; missing %v", len(got), missing)
		}
		in1, err := m1.CoreV1().ConfigMaps("flowplace-system").Get(ctx, "flowplace-cluster-latency", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if p, err := measured(in1); err != nil || p == nil {
			t.Errorf("member1's matrix has no measured member1 -> member2 entry (%v)", err)
		}
	})

	statusOpts := opts.GlobalOptions
	statusOpts.MemberKubeConfig = memberKubeconfig
	t.Run("status turns healthy", func(t *testing.T) {
		var r *addon.Report
		err := wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			var err error
			r, err = addon.Status(ctx, statusOpts)
			return err == nil && r.Status() == addon.StatusEnabled, nil
		})
		var b bytes.Buffer
		if r != nil {
			r.Print(&b)
		}
		if err != nil {
			t.Fatalf("status not healthy: %v\n%s", err, b.String())
		}
		t.Logf("status (enable took %s until ready, healthy after %s):\n%s", enableTime.Round(time.Millisecond), time.Since(start).Round(time.Millisecond), b.String())
		if members := countChecks(r, "agent"); members != 2 {
			t.Errorf("status checked %d members, want 2", members)
		}
	})

	t.Run("a second enable changes nothing", func(t *testing.T) {
		before := resourceVersions(t, hostDyn, karmadaDyn)
		o := opts
		o.Out = nil
		if err := addon.Enable(ctx, o); err != nil {
			t.Fatal(err)
		}
		after := resourceVersions(t, hostDyn, karmadaDyn)
		if len(before) == 0 {
			t.Fatal("no objects")
		}
		for id, rv := range before {
			if after[id] != rv {
				t.Errorf("%s: resourceVersion %q -> %q", id, rv, after[id])
			}
		}
		for id := range after {
			if _, ok := before[id]; !ok {
				t.Errorf("%s: created by the second enable", id)
			}
		}
	})

	t.Run("one member cannot speak for another", func(t *testing.T) {
		forgedAbout := clusterID(t, karmadaDyn, "member1")
		ep := daemonSetArg(t, karmadaDyn, "--otlp-endpoint=")
		id := secretData(t, karmada.Client, "flowplace-system", "flowplace-agent-otlp-member2")
		ca := configMapData(t, karmada.Client, "flowplace-system", "flowplace-otlp-ca", "ca.crt")
		files := map[string][]byte{"ca.crt": []byte(ca), "tls.crt": id["tls.crt"], "tls.key": id["tls.key"]}
		for n, b := range files {
			if err := os.WriteFile(filepath.Join(dir, "forged-"+n), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		rejectedBefore := estimatorCounter(t, hostCluster.Client, "flowplace_estimator_points_rejected_total", `reason="foreign_cluster"`)
		beforeP50 := peerP50(t, karmadaDyn, "member1", "member2")
		p, err := telemetry.NewProvider(ctx, telemetry.Config{
			Resource: []attribute.KeyValue{telemetry.AttrClusterUID.String(forgedAbout), telemetry.AttrNodeName.String("forged")},
			OTLP: telemetry.OTLPConfig{Endpoint: ep, CAFile: filepath.Join(dir, "forged-ca.crt"), CertFile: filepath.Join(dir, "forged-tls.crt"),
				KeyFile: filepath.Join(dir, "forged-tls.key"), ServerName: "flowplace-estimator.karmada-system.svc", Interval: time.Hour, Timeout: 5 * time.Second},
		})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := telemetry.NewRecorder(p.Meter(), 0)
		if err != nil {
			t.Fatal(err)
		}
		// member1 -> member2 at 900 ms: would move member1's p50 if taken.
		h := &loghist.Histogram{}
		for range 1000 {
			h.Add(900_000)
		}
		member2ID := clusterID(t, karmadaDyn, "member2")
		rec.Record(ctx, telemetry.SeriesKey{Role: telemetry.RoleClient, Namespace: ns, WorkloadKind: "Deployment", WorkloadName: "frontend",
			ServiceNamespace: ns, ServiceName: "cart", ServerPort: 80,
			Peer: telemetry.Peer{ClusterUID: member2ID, ClusterName: "member2", Namespace: ns, WorkloadKind: "Deployment", WorkloadName: "cart"}},
			telemetry.Delta{Opened: 1000, RTT: h})
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = p.ForceFlush(fctx) // refused points may or may not fail the export
		_ = p.Shutdown(fctx)
		cancel()
		var rejected float64
		err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			rejected = estimatorCounter(t, hostCluster.Client, "flowplace_estimator_points_rejected_total", `reason="foreign_cluster"`)
			return rejected > rejectedBefore, nil
		})
		if err != nil {
			t.Fatalf("foreign_cluster rejections stayed at %.0f after member2's identity reported as member1", rejected)
		}
		// Two publish intervals: what is published about member1 is still
		// the measured RTT, nowhere near the forged 900 ms.
		time.Sleep(5 * time.Second)
		if after := peerP50(t, karmadaDyn, "member1", "member2"); after > 10*beforeP50 || after > 200*time.Millisecond {
			t.Errorf("member1's published p50 moved from %s to %s after a forged report", beforeP50, after)
		}
	})

	t.Run("the scheduler's RBAC and config work, and miss nothing", func(t *testing.T) {
		cfgMap := hostR.Find("ConfigMap", "flowplace-scheduler-config")
		cfgText, _, _ := unstructured.NestedString(cfgMap.Object, "data", "scheduler-config.yaml")
		cfgFile := filepath.Join(dir, "scheduler-config.yaml")
		if err := os.WriteFile(cfgFile, []byte(cfgText), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(cfgFile, "flowplace-scheduler")
		if err != nil {
			t.Fatalf("rendered scheduler config: %v", err)
		}
		kc := componentKubeconfig(t, hostCluster.Client, "flowplace-scheduler-karmada-config", karmada.URL, dir)
		rc, err := clientcmd.BuildConfigFromFlags("", kc)
		if err != nil {
			t.Fatal(err)
		}
		src, err := source.New(rc, cfg.Model)
		if err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		defer cancel()
		src.Start(sctx)
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		defer wcancel()
		if err := src.WaitForSync(wctx); err != nil {
			t.Fatalf("model source with the scheduler's identity: %v", err)
		}
		if err := waitFor(30*time.Second, func() bool { s := src.Snapshot(); return s != nil && s.NumClusters() == 2 }); err != nil {
			t.Errorf("model source sees %v clusters, want 2", src.Snapshot())
		}
	})

	if w.scheduler {
		t.Run("the scheduler's pod runs with the chart's RBAC", func(t *testing.T) {
			var logs string
			err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
				l, err := hostCluster.Client.CoreV1().Pods(addon.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=flowplace-scheduler"})
				if err != nil || len(l.Items) != 1 {
					return false, nil
				}
				b, err := hostCluster.Client.CoreV1().Pods(addon.DefaultNamespace).GetLogs(l.Items[0].Name, &corev1.PodLogOptions{}).DoRaw(ctx)
				logs = string(b)
				return err == nil && strings.Contains(logs, "flowplace plugins ready"), nil
			})
			if err != nil {
				t.Fatalf("scheduler pod did not say its plugins are ready: %v\n%s", err, tailString(logs, 4000))
			}
			for _, l := range strings.Split(logs, "\n") {
				if strings.Contains(l, "forbidden") {
					t.Errorf("scheduler refused: %s", l)
				}
			}
		})
	}

	t.Run("without one rule the estimator says what it may not do", func(t *testing.T) {
		// Stop the installed replicas, remove the rule that lets the
		// estimator list ResourceBindings, and run the estimator binary
		// with its identity and Lease: it must name what it may not do.
		scaleDeployment(t, hostCluster.Client, "flowplace-estimator", 0)
		role, err := karmada.Client.RbacV1().ClusterRoles().Get(ctx, "flowplace:estimator", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		orig := role.DeepCopy()
		var without []rbacv1.PolicyRule
		for _, r := range role.Rules {
			if !slices.Contains(r.Resources, "resourcebindings") {
				without = append(without, r)
			}
		}
		if len(without) != len(role.Rules)-1 {
			t.Fatalf("the rendered flowplace:estimator has no single resourcebindings rule: %+v", role.Rules)
		}
		role.Rules = without
		if _, err := karmada.Client.RbacV1().ClusterRoles().Update(ctx, role, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cur, err := karmada.Client.RbacV1().ClusterRoles().Get(ctx, "flowplace:estimator", metav1.GetOptions{})
			if err == nil {
				cur.Rules = orig.Rules
				_, err = karmada.Client.RbacV1().ClusterRoles().Update(ctx, cur, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Errorf("restoring the role: %v", err)
			}
		}()
		kc := componentKubeconfig(t, hostCluster.Client, addon.EstimatorConfigSecret, karmada.URL, dir)
		forbidden := regexp.MustCompile(`resourcebindings.* is forbidden: User \\?"system:flowplace:estimator\\?" cannot (list|watch)`)
		out := runEstimatorUntil(t, kc, time.Minute, forbidden)
		if !forbidden.MatchString(out) {
			t.Errorf("estimator without the resourcebindings rule did not say it is forbidden to list them; its log:\n%s", tailString(out, 4000))
		}
	})

	t.Run("disable leaves only the CRDs; purge removes them", func(t *testing.T) {
		d := addon.DisableOptions{GlobalOptions: opts.GlobalOptions, PodTimeout: 2 * time.Minute}
		d.Out = nil
		if err := addon.Disable(ctx, d); err != nil {
			t.Fatal(err)
		}
		left := flowplaceObjects(t, hostDyn, karmadaDyn)
		if left != "CustomResourceDefinition clusterlatencies.flowplace.io, CustomResourceDefinition workloadtraffics.flowplace.io" {
			t.Errorf("after disable: %q, want only flowplace's two CRDs", left)
		}
		if l, err := karmadaDyn.Resource(flowplacev1alpha1.ClusterLatencyResource).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) == 0 {
			t.Errorf("disable without --purge removed the published ClusterLatencies (%v)", err)
		}
		r, err := addon.Status(ctx, statusOpts)
		if err != nil || r.Status() != addon.StatusDisabled {
			t.Errorf("status after disable: %v %v, want disabled", r, err)
		}
		d.Purge = true
		if err := addon.Disable(ctx, d); err != nil {
			t.Fatal(err)
		}
		if left := flowplaceObjects(t, hostDyn, karmadaDyn); left != "" {
			t.Errorf("after --purge: %s", left)
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeKubeconfig(t *testing.T, path, server string) {
	t.Helper()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["x"] = &clientcmdapi.Cluster{Server: server, InsecureSkipTLSVerify: true}
	kc.AuthInfos["x"] = &clientcmdapi.AuthInfo{Token: "x"}
	kc.Contexts["x"] = &clientcmdapi.Context{Cluster: "x", AuthInfo: "x"}
	kc.CurrentContext = "x"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
}

// mergedKubeconfig writes one kubeconfig with a context per member, named
// after it, as --member-kubeconfig takes it.
func mergedKubeconfig(t *testing.T, dir string, files map[string]string) string {
	t.Helper()
	out := clientcmdapi.NewConfig()
	for name, path := range files {
		c, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		ctx := c.Contexts[c.CurrentContext]
		out.Clusters[name] = c.Clusters[ctx.Cluster]
		out.AuthInfos[name] = c.AuthInfos[ctx.AuthInfo]
		out.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	}
	path := filepath.Join(dir, "members.config")
	if err := clientcmd.WriteToFile(*out, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// componentKubeconfig rebuilds a component's kubeconfig from its Secret in
// the host cluster, with the files beside it and the server as this test
// reaches it.
func componentKubeconfig(t *testing.T, host kubernetes.Interface, secret, server, dir string) string {
	t.Helper()
	d := secretData(t, host, addon.DefaultNamespace, secret)
	sub := filepath.Join(dir, secret)
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(sub, k), d[k], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kc, err := clientcmd.Load(d["karmada.config"])
	if err != nil {
		t.Fatalf("%s: karmada.config: %v", secret, err)
	}
	for _, c := range kc.Clusters {
		c.Server = server
		c.CertificateAuthority = filepath.Join(sub, "ca.crt")
	}
	for _, a := range kc.AuthInfos {
		a.ClientCertificate, a.ClientKey = filepath.Join(sub, "tls.crt"), filepath.Join(sub, "tls.key")
	}
	path := filepath.Join(sub, "karmada.config")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// flowplaceObjects names every object labelled part-of=flowplace in the
// host cluster and the karmada-apiserver, sorted, or "".
func flowplaceObjects(t *testing.T, host, karmada dynamic.Interface) string {
	t.Helper()
	var names []string
	for _, o := range append(ownedObjects(t, host, charts.ModeHost), ownedObjects(t, karmada, charts.ModeKarmada)...) {
		names = append(names, o.GetKind()+" "+key(o))
	}
	l, err := karmada.Resource(controlplane.CRDGVR).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=flowplace"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range l.Items {
		names = append(names, "CustomResourceDefinition "+o.GetName())
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

var ownedResources = map[string][]schema.GroupVersionResource{
	charts.ModeHost: {
		{Version: "v1", Resource: "secrets"}, {Version: "v1", Resource: "configmaps"}, {Version: "v1", Resource: "serviceaccounts"},
		{Version: "v1", Resource: "services"}, {Group: "apps", Version: "v1", Resource: "deployments"},
	},
	charts.ModeKarmada: {
		{Version: "v1", Resource: "namespaces"}, {Version: "v1", Resource: "secrets"}, {Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "serviceaccounts"}, {Group: "apps", Version: "v1", Resource: "daemonsets"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"}, {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"}, {Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
		ppGVR, cppGVR, opGVR,
	},
}

// ownedObjects lists, independently of the addon's own code, the objects
// with the chart's labels.
func ownedObjects(t *testing.T, dc dynamic.Interface, mode string) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	for _, gvr := range ownedResources[mode] {
		l, err := dc.Resource(gvr).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=flowplace,app.kubernetes.io/instance=flowplace,flowplace.io/install-mode=" + mode})
		if err != nil {
			t.Fatalf("listing %s: %v", gvr.Resource, err)
		}
		for i := range l.Items {
			out = append(out, &l.Items[i])
		}
	}
	return out
}

func resourceVersions(t *testing.T, host, karmada dynamic.Interface) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, c := range []struct {
		dc   dynamic.Interface
		mode string
	}{{host, charts.ModeHost}, {karmada, charts.ModeKarmada}} {
		for _, o := range ownedObjects(t, c.dc, c.mode) {
			out[c.mode+" "+objectID(o)] = o.GetResourceVersion()
		}
	}
	l, err := karmada.Resource(controlplane.CRDGVR).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/part-of=flowplace"})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range l.Items {
		out["crd "+o.GetName()] = o.GetResourceVersion()
	}
	return out
}

func objectID(o *unstructured.Unstructured) string {
	return o.GroupVersionKind().GroupKind().String() + " " + key(o)
}

func key(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

// getLike reads the object named like o from the API server of kube.
func getLike(dc dynamic.Interface, kube kubernetes.Interface, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	gr, err := restmapper.GetAPIGroupResources(kube.Discovery())
	if err != nil {
		return nil, err
	}
	gvk := o.GroupVersionKind()
	m, err := restmapper.NewDiscoveryRESTMapper(gr).RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if o.GetNamespace() != "" {
		return dc.Resource(m.Resource).Namespace(o.GetNamespace()).Get(context.Background(), o.GetName(), metav1.GetOptions{})
	}
	return dc.Resource(m.Resource).Get(context.Background(), o.GetName(), metav1.GetOptions{})
}

// registerWorkloads creates the ResourceBindings Karmada would have for the
// workloads, in the karmada-apiserver.
func registerWorkloads(t *testing.T, karmada *controlplane.Cluster, ns string, placement map[string]string) {
	t.Helper()
	ctx := context.Background()
	if _, err := karmada.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for name, cluster := range placement {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
			"metadata": map[string]any{"name": name + "-deployment", "namespace": ns},
			"spec": map[string]any{
				"resource": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "namespace": ns},
				"clusters": []any{map[string]any{"name": cluster, "replicas": int64(1)}},
			},
		}}
		if _, err := karmada.Dynamic.Resource(controlplane.ResourceBindingGVR).Namespace(ns).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

func clusterID(t *testing.T, karmada dynamic.Interface, name string) string {
	t.Helper()
	u, err := karmada.Resource(controlplane.ClusterGVR).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := unstructured.NestedString(u.Object, "spec", "id")
	return id
}

// peer is cl's row for the peer cluster, or nil.
func peer(cl *flowplacev1alpha1.ClusterLatency, name string) *flowplacev1alpha1.PeerLatency {
	for i := range cl.Status.Peers {
		if cl.Status.Peers[i].Cluster == name {
			return &cl.Status.Peers[i]
		}
	}
	return nil
}

func peerP50(t *testing.T, karmada dynamic.Interface, cluster, to string) time.Duration {
	t.Helper()
	u, err := karmada.Resource(flowplacev1alpha1.ClusterLatencyResource).Get(context.Background(), cluster, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var cl flowplacev1alpha1.ClusterLatency
	if err := runtimeConverter.FromUnstructured(u.Object, &cl); err != nil || peer(&cl, to) == nil {
		t.Fatalf("ClusterLatency %s -> %s: %v %+v", cluster, to, err, cl.Status)
	}
	return time.Duration(peer(&cl, to).P50Microseconds) * time.Microsecond
}

func daemonSetArg(t *testing.T, karmada dynamic.Interface, prefix string) string {
	t.Helper()
	u, err := karmada.Resource(schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "daemonsets"}).Namespace("flowplace-system").Get(context.Background(), "flowplace-agent", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, prefix); ok {
			return v
		}
	}
	t.Fatalf("the agent DaemonSet has no %s argument: %v", prefix, args)
	return ""
}

// estimatorCounter reads a counter from the leading estimator's /metrics.
func estimatorCounter(t *testing.T, host kubernetes.Interface, name, labelPart string) float64 {
	t.Helper()
	l, err := host.CoreV1().Pods(addon.DefaultNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=flowplace-estimator"})
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, p := range l.Items {
		if p.Status.PodIP == "" {
			continue
		}
		resp, err := http.Get("http://" + p.Status.PodIP + ":8080/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, name) && strings.Contains(line, labelPart) {
				f := strings.Fields(line)
				v, err := strconv.ParseFloat(f[len(f)-1], 64)
				if err == nil {
					total += v
				}
			}
		}
	}
	return total
}

func countChecks(r *addon.Report, component string) int {
	n := 0
	for _, c := range r.Checks {
		if c.Component == component {
			n++
		}
	}
	return n
}

func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func podsReport(c kubernetes.Interface, ns, selector string) string {
	ctx := context.Background()
	l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	tail := int64(30)
	for _, p := range l.Items {
		fmt.Fprintf(&b, "pod %s on %s: %s %+v\n", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses)
		logs, err := c.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		fmt.Fprintf(&b, "--- logs (%v) ---\n%s\n", err, logs)
	}
	return b.String()
}

func secretData(t *testing.T, c kubernetes.Interface, ns, name string) map[string][]byte {
	t.Helper()
	s, err := c.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Data
}

func configMapData(t *testing.T, c kubernetes.Interface, ns, name, k string) string {
	t.Helper()
	cm, err := c.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return cm.Data[k]
}

func scaleDeployment(t *testing.T, c kubernetes.Interface, name string, n int32) {
	t.Helper()
	ctx := context.Background()
	sc, err := c.AppsV1().Deployments(addon.DefaultNamespace).GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sc.Spec.Replicas = n
	if _, err := c.AppsV1().Deployments(addon.DefaultNamespace).UpdateScale(ctx, name, sc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(addon.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
		return err == nil && len(l.Items) == int(n), nil
	})
	if err != nil {
		t.Fatalf("%s: pods not scaled to %d: %v", name, n, err)
	}
}

// runEstimatorUntil builds and runs the estimator with kubeconfig (the
// installed Lease, which nobody holds now) until its log matches want or
// timeout passes, and returns the log.
func runEstimatorUntil(t *testing.T, kubeconfig string, timeout time.Duration, want *regexp.Regexp) string {
	t.Helper()
	src, err := images.FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "flowplace-estimator")
	build := exec.Command("go", "build", "-o", bin, "./cmd/flowplace-estimator")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the estimator: %v\n%s", err, out)
	}
	var log bytes.Buffer
	cmd := exec.Command(bin, "--kubeconfig="+kubeconfig, "--otlp-address=127.0.0.1:0", "--health-address=127.0.0.1:0",
		"--lease-namespace="+addon.DefaultNamespace, "--lease-name=flowplace-estimator", "--identity=rbac-check", "--retry-period=500ms")
	cmd.Stdout, cmd.Stderr = &syncWriter{b: &log}, &syncWriter{b: &log}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	_ = waitFor(timeout, func() bool { return want.Match(syncRead(&log)) })
	return string(syncRead(&log))
}

var logMu sync.Mutex

// syncWriter lets a process's stdout and stderr share one buffer that the
// test reads meanwhile.
type syncWriter struct{ b *bytes.Buffer }

func (w *syncWriter) Write(p []byte) (int, error) {
	logMu.Lock()
	defer logMu.Unlock()
	return w.b.Write(p)
}

func syncRead(b *bytes.Buffer) []byte {
	logMu.Lock()
	defer logMu.Unlock()
	return bytes.Clone(b.Bytes())
}

// SchedulerImageEnv names the flowplace-karmada-scheduler image tarball of
// `make images KARMADA_SOURCE=...`; with it the install test runs the
// scheduler's Deployment too (CI cannot build it: no Karmada source).
const SchedulerImageEnv = "FLOWPLACE_KARMADA_SCHEDULER_IMAGE"

func schedulerImage(t *testing.T) *images.Image {
	t.Helper()
	path := os.Getenv(SchedulerImageEnv)
	if path == "" {
		return nil
	}
	// A docker archive names its tag in manifest.json.
	out, err := exec.Command("tar", "-xOf", path, "manifest.json").Output()
	if err != nil {
		t.Fatalf("%s=%s: %v", SchedulerImageEnv, path, err)
	}
	var m []struct{ RepoTags []string }
	if err := json.Unmarshal(out, &m); err != nil || len(m) != 1 || len(m[0].RepoTags) != 1 {
		t.Fatalf("%s: manifest.json %s: %v", path, out, err)
	}
	ref := m[0].RepoTags[0]
	if !strings.HasPrefix(ref, "docker.io/") {
		ref = "docker.io/" + ref
	}
	return &images.Image{Name: "flowplace-karmada-scheduler", Ref: ref, Tarball: path}
}
