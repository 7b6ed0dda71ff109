package lab

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flowplace/flowplace/api/crds"
	"github.com/flowplace/flowplace/estimator"
	"github.com/flowplace/flowplace/estimator/rebalance"
	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/world/controlplane"
)

// Published counts the estimator's objects in the API server.
type Published struct {
	ClusterLatencies int `json:"cluster_latencies"`
	WorkloadTraffics int `json:"workload_traffics"`
}

var (
	clusterLatencyGVR  = schema.GroupVersionResource{Group: "flowplace.io", Version: "v1alpha1", Resource: "clusterlatencies"}
	workloadTrafficGVR = schema.GroupVersionResource{Group: "flowplace.io", Version: "v1alpha1", Resource: "workloadtraffics"}
)

// apiServerEstimator is the real estimator publishing into a real Karmada
// host API server (the test harness's binaries), with the lab's clusters
// registered as Karmada Clusters and each demo workload's ResourceBinding.
type apiServerEstimator struct {
	cp     *controlplane.ControlPlane
	est    *estimator.Estimator
	meter  metric.Meter // nil without Telemetry
	cancel context.CancelFunc
	done   chan error
}

// StartKarmadaHost starts a Karmada host API server (kube-apiserver and
// etcd from the test harness's binaries) with Karmada's and flowplace's
// CRDs, the clusters registered as Karmada Clusters (capacity in CPU, the
// running services allocated) and a ResourceBinding per service of app
// where placement runs it: what the estimator needs to publish for them.
func StartKarmadaHost(ctx context.Context, app *demo.App, clusters []string, capacity Capacity, placement map[string]string) (_ *controlplane.ControlPlane, err error) {
	dir, err := os.MkdirTemp("", "flowplace-lab-crds")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := fs.WalkDir(crds.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := crds.FS.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, p), b, 0o644)
	}); err != nil {
		return nil, fmt.Errorf("lab: flowplace CRDs: %w", err)
	}
	cp, err := controlplane.Start(ctx, controlplane.Config{CRDDirs: []string{dir}})
	if err != nil {
		return nil, fmt.Errorf("lab: API server: %w", err)
	}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	host := cp.Host
	for _, ns := range []string{"karmada-system", app.Namespace} {
		if _, err := host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: namespace %s: %w", ns, err)
		}
	}
	for _, c := range clusters {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": c},
			"spec":     map[string]any{"id": ClusterUID(c), "provider": "aws", "region": c},
		}}
		created, err := host.Dynamic.Resource(controlplane.ClusterGVR).Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("lab: Cluster %s: %w", c, err)
		}
		// The lab's capacity in the form Karmada's cluster status
		// controller reports it: one core per service replica, the
		// running ones allocated.
		running := 0
		for _, at := range placement {
			if at == c {
				running++
			}
		}
		created.Object["status"] = map[string]any{"resourceSummary": map[string]any{
			"allocatable": map[string]any{"cpu": fmt.Sprint(capacity[c])}, "allocated": map[string]any{"cpu": fmt.Sprint(running)}}}
		if _, err := host.Dynamic.Resource(controlplane.ClusterGVR).UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: status of Cluster %s: %w", c, err)
		}
	}
	for _, s := range app.Services {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
			"metadata": map[string]any{"name": s.Name + "-deployment", "namespace": app.Namespace},
			"spec": map[string]any{
				"resource":            map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": s.Name, "namespace": app.Namespace},
				"replicas":            int64(1),
				"replicaRequirements": map[string]any{"resourceRequest": map[string]any{"cpu": "1"}},
				"clusters":            []any{map[string]any{"name": placement[s.Name], "replicas": int64(1)}},
				"schedulerName":       labSchedulerName,
			},
		}}
		if _, err := host.Dynamic.Resource(controlplane.ResourceBindingGVR).Namespace(app.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: ResourceBinding of %s: %w", s.Name, err)
		}
	}
	return cp, nil
}

func startAPIServerEstimator(ctx context.Context, app *demo.App, clusters []string, capacity Capacity, placement map[string]string, tel *Telemetry) (_ *apiServerEstimator, err error) {
	cp, err := StartKarmadaHost(ctx, app, clusters, capacity, placement)
	if err != nil {
		return nil, err
	}
	a := &apiServerEstimator{cp: cp}
	defer func() {
		if err != nil {
			a.stop()
		}
	}()
	host := cp.Host
	ecfg := estimator.Config{REST: host.RESTConfig, OTLPAddress: "127.0.0.1:0", PublishInterval: 2 * time.Second}
	if tel != nil {
		p, err := tel.provider(ctx, "estimator")
		if err != nil {
			return nil, err
		}
		ecfg.Meter = p.MeterProvider.Meter(estimator.ScopeName)
		a.meter = ecfg.Meter
	}
	a.est, err = estimator.New(ecfg)
	if err != nil {
		return nil, err
	}
	ectx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.cancel, a.done = cancel, make(chan error, 1)
	go func() { a.done <- a.est.Run(ectx) }()
	deadline := time.Now().Add(30 * time.Second)
	for a.est.OTLPAddr() == nil {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("lab: estimator did not start serving OTLP")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return a, nil
}

// labSchedulerName is the scheduler the lab's bindings name: flowplace's
// (the advisor moves only what flowplace's scheduler placed).
const labSchedulerName = "flowplace-scheduler"

// AdvisorReport is what the rebalance advisor did on the lab's API server.
type AdvisorReport struct {
	// Rounds run, one simulated minute apart.
	Rounds int `json:"rounds"`
	// WorkloadRebalancers the advisor created.
	WorkloadRebalancers int `json:"workload_rebalancers"`
	// Moves are the requested moves, workload -> cluster.
	Moves map[string]string `json:"moves"`
	// CostNow and CostPlanned are the advisor's own plan costs over the
	// published objects, bytes/s x ms.
	CostNow     float64 `json:"cost_now"`
	CostPlanned float64 `json:"cost_planned"`
}

// advise runs the real rebalance advisor against the objects in the API
// server: the estimator's ClusterLatency and WorkloadTraffic, the
// ResourceBindings and Clusters. The ski-rental rule needs the advice to
// hold over time; the lab's clock advances a minute between rounds (the
// published objects stay valid for five), the move cost is a second of a
// workload's own network cost, so that the advice of a short run pays off
// within two rounds. It returns the placement with the moves the advisor
// requested applied: the lab stands in for Karmada's re-scheduling of the
// WorkloadRebalancers' workloads.
func (a *apiServerEstimator) advise(ctx context.Context, app *demo.App, placement map[string]string) (AdvisorReport, map[string]string, error) {
	now := time.Now()
	adv, err := rebalance.New(a.cp.Host.Dynamic, a.cp.Host.Client, rebalance.Config{
		Interval: time.Minute, MoveCost: time.Second, MinRounds: 2, MaxMoves: len(app.Services),
		SchedulerName: labSchedulerName, Component: "flowplace-lab", Now: func() time.Time { return now }, Meter: a.meter})
	if err != nil {
		return AdvisorReport{}, nil, err
	}
	rep := AdvisorReport{Moves: map[string]string{}}
	after := map[string]string{}
	for k, v := range placement {
		after[k] = v
	}
	for round := 0; round < 2; round++ {
		r, err := adv.Round(ctx)
		if err != nil {
			return rep, nil, fmt.Errorf("lab: rebalance advisor: %w", err)
		}
		rep.Rounds++
		rep.CostNow, rep.CostPlanned = r.CostNow, r.CostPlanned
		for _, m := range r.Planned {
			if m.Outcome != rebalance.OutcomeRequested {
				continue
			}
			// Workload is the binding, namespace/<name>-deployment.
			name := strings.TrimSuffix(m.Workload[strings.IndexByte(m.Workload, '/')+1:], "-deployment")
			if _, ok := app.Service(name); !ok {
				return rep, nil, fmt.Errorf("lab: rebalance advisor moved %s, which is no service of the shop", m.Workload)
			}
			after[name], rep.Moves[name] = m.To, m.To
		}
		now = now.Add(time.Minute)
	}
	l, err := a.cp.Host.Dynamic.Resource(rebalance.WorkloadRebalancerGVR).List(ctx, metav1.ListOptions{LabelSelector: rebalance.ManagedByLabel + "=" + rebalance.ManagedBy})
	if err != nil {
		return rep, nil, fmt.Errorf("lab: list WorkloadRebalancers: %w", err)
	}
	rep.WorkloadRebalancers = len(l.Items)
	return rep, after, nil
}

// published counts the objects the estimator wrote; the API server
// validated each against its schema on write.
func (a *apiServerEstimator) published(ctx context.Context) (Published, error) {
	var p Published
	cl, err := a.cp.Host.Dynamic.Resource(clusterLatencyGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return p, fmt.Errorf("lab: list ClusterLatency: %w", err)
	}
	wt, err := a.cp.Host.Dynamic.Resource(workloadTrafficGVR).Namespace("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return p, fmt.Errorf("lab: list WorkloadTraffic: %w", err)
	}
	p.ClusterLatencies, p.WorkloadTraffics = len(cl.Items), len(wt.Items)
	return p, nil
}

func (a *apiServerEstimator) stop() {
	if a.cancel != nil {
		a.cancel()
		<-a.done
	}
	a.cp.Stop()
}
