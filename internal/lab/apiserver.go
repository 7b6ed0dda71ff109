package lab

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flowplace/flowplace/api/crds"
	"github.com/flowplace/flowplace/estimator"
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
	cancel context.CancelFunc
	done   chan error
}

func startAPIServerEstimator(ctx context.Context, app *demo.App, clusters []string, placement map[string]string) (_ *apiServerEstimator, err error) {
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
	a := &apiServerEstimator{cp: cp}
	defer func() {
		if err != nil {
			a.stop()
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
		if _, err := host.Dynamic.Resource(controlplane.ClusterGVR).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: Cluster %s: %w", c, err)
		}
	}
	for _, s := range app.Services {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "work.karmada.io/v1alpha2", "kind": "ResourceBinding",
			"metadata": map[string]any{"name": s.Name + "-deployment", "namespace": app.Namespace},
			"spec": map[string]any{
				"resource": map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "name": s.Name, "namespace": app.Namespace},
				"clusters": []any{map[string]any{"name": placement[s.Name], "replicas": int64(1)}},
			},
		}}
		if _, err := host.Dynamic.Resource(controlplane.ResourceBindingGVR).Namespace(app.Namespace).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: ResourceBinding of %s: %w", s.Name, err)
		}
	}
	a.est, err = estimator.New(estimator.Config{REST: host.RESTConfig, OTLPAddress: "127.0.0.1:0", PublishInterval: 2 * time.Second})
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
