// Package source keeps the plugins' model up to date from the Karmada API
// server: informers on flowplace's ClusterLatency and WorkloadTraffic
// objects, Karmada's ResourceBindings (work.karmada.io/v1alpha2) and
// Clusters (cluster.karmada.io/v1alpha1), and metadata-only informers on
// workload templates for the latency-budget annotation.
//
// Karmada objects are read through the dynamic client into small mirrors of
// the fields used here: the root module never imports Karmada.
//
// Informer events only mark the model dirty; one goroutine rebuilds the
// snapshot from the informer caches at most once per RebuildInterval, so a
// burst of estimator updates costs one rebuild and Filter/Score never wait.
package source

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
)

// Karmada resources read here.
var (
	ResourceBindingGVR = schema.GroupVersionResource{Group: "work.karmada.io", Version: "v1alpha2", Resource: "resourcebindings"}
	ClusterGVR         = schema.GroupVersionResource{Group: "cluster.karmada.io", Version: "v1alpha1", Resource: "clusters"}
)

// Source maintains a model.Snapshot. Its zero value is not usable; use New.
type Source struct {
	holder model.Holder
	opts   config.Model

	dyn      dynamicinformer.DynamicSharedInformerFactory
	meta     metadatainformer.SharedInformerFactory
	latency  cache.SharedIndexInformer
	traffic  cache.SharedIndexInformer
	bindings cache.SharedIndexInformer
	clusters cache.SharedIndexInformer
	// templates are metadata informers per workload resource, with the kind
	// to build binding names from.
	templates []templateInformer

	dirty    chan struct{}
	rebuilds atomic.Int64
}

type templateInformer struct {
	kind     string
	informer cache.SharedIndexInformer
}

// New creates the informers (not yet started) on the API server at cfg.
func New(cfg *rest.Config, opts config.Model) (*Source, error) {
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("dynamic client for the Karmada API server: %w", err)
	}
	mc, err := metadata.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("metadata client for the Karmada API server: %w", err)
	}
	return NewForClients(dc, mc, opts), nil
}

// NewForClients is New with existing clients.
func NewForClients(dc dynamic.Interface, mc metadata.Interface, opts config.Model) *Source {
	s := &Source{opts: opts, dirty: make(chan struct{}, 1)}
	// No periodic resync: freshness is checked against validUntil on every
	// call, and every object change arrives as an event.
	s.dyn = dynamicinformer.NewDynamicSharedInformerFactory(dc, 0)
	s.meta = metadatainformer.NewSharedInformerFactory(mc, 0)
	s.latency = s.dyn.ForResource(flowplacev1alpha1.ClusterLatencyResource).Informer()
	s.traffic = s.dyn.ForResource(flowplacev1alpha1.WorkloadTrafficResource).Informer()
	s.bindings = s.dyn.ForResource(ResourceBindingGVR).Informer()
	s.clusters = s.dyn.ForResource(ClusterGVR).Informer()
	all := []cache.SharedIndexInformer{s.latency, s.traffic, s.bindings, s.clusters}
	for _, r := range opts.WorkloadResources {
		gvr := schema.GroupVersionResource{Group: r.Group, Version: r.Version, Resource: r.Resource}
		inf := s.meta.ForResource(gvr).Informer()
		s.templates = append(s.templates, templateInformer{kind: r.Kind, informer: inf})
		all = append(all, inf)
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.markDirty() },
		UpdateFunc: func(any, any) { s.markDirty() },
		DeleteFunc: func(any) { s.markDirty() },
	}
	for _, inf := range all {
		// AddEventHandler only fails on a stopped informer; these are new.
		_, _ = inf.AddEventHandler(h)
	}
	return s
}

// Snapshot returns the current model (nil before the first build).
func (s *Source) Snapshot() *model.Snapshot { return s.holder.Snapshot() }

// BindingUID is the UID of the ResourceBinding (ClusterResourceBinding
// bindings are not watched: false) named by k, from the informer cache.
func (s *Source) BindingUID(k model.Key) (types.UID, bool) {
	if k.Namespace == "" {
		return "", false
	}
	o, ok, err := s.bindings.GetStore().GetByKey(k.Namespace + "/" + k.Name)
	if err != nil || !ok {
		return "", false
	}
	u, isU := o.(*unstructured.Unstructured)
	if !isU {
		return "", false
	}
	return u.GetUID(), true
}

// Rebuilds counts snapshot builds (for tests and metrics).
func (s *Source) Rebuilds() int64 { return s.rebuilds.Load() }

func (s *Source) markDirty() {
	select {
	case s.dirty <- struct{}{}:
	default:
	}
}

// Start starts the informers and the rebuild loop; both stop with ctx.
// It does not wait for the caches: until they sync the plugins see an
// empty or partial model, which they treat as missing data (neutral score,
// fail-open filter).
func (s *Source) Start(ctx context.Context) {
	s.dyn.Start(ctx.Done())
	s.meta.Start(ctx.Done())
	go s.loop(ctx)
}

// WaitForSync waits until every informer has listed once, then builds a
// snapshot. A resource that is not served (e.g. flowplace's CRDs not yet
// installed) never syncs: callers should bound ctx and carry on.
func (s *Source) WaitForSync(ctx context.Context) error {
	syncs := []cache.InformerSynced{s.latency.HasSynced, s.traffic.HasSynced, s.bindings.HasSynced, s.clusters.HasSynced}
	for _, t := range s.templates {
		syncs = append(syncs, t.informer.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return fmt.Errorf("waiting for informer caches: %w", context.Cause(ctx))
	}
	s.Rebuild()
	return nil
}

func (s *Source) loop(ctx context.Context) {
	interval := s.opts.RebuildInterval
	if interval <= 0 {
		interval = config.DefaultRebuildInterval
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.dirty:
		}
		s.Rebuild()
		// Coalesce: events in the next interval cause one more rebuild.
		t.Reset(interval)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Rebuild builds a snapshot from the informer caches now.
func (s *Source) Rebuild() {
	start := time.Now()
	in := s.inputs()
	snap := model.Build(in, model.BuildOptions{MinSamples: s.opts.MinSamples, Plan: s.opts.CapacityPlan,
		PlanQuantile: s.opts.PlanQuantile, PlanEgressMs: s.opts.PlanEgress.Milliseconds(), Previous: s.holder.Snapshot()})
	s.holder.Store(snap)
	s.rebuilds.Add(1)
	klog.V(4).InfoS("flowplace model rebuilt", "clusters", snap.NumClusters(), "workloads", snap.NumWorkloads(), "planCost", snap.PlanCost(),
		"latencyRows", len(in.Latency), "traffic", len(in.Traffic), "bindings", len(in.Bindings), "took", time.Since(start))
}

func (s *Source) inputs() model.Inputs {
	var in model.Inputs
	for _, o := range s.clusters.GetStore().List() {
		var c clusterMirror
		if !decode(o, &c) {
			continue
		}
		in.Clusters = append(in.Clusters, model.ClusterInfo{Name: c.Name, Provider: c.Spec.Provider, Region: c.Spec.Region})
		if free, ok := c.available(corev1.ResourceCPU); ok {
			if in.AvailableMilliCPU == nil {
				in.AvailableMilliCPU = map[string]float64{}
			}
			in.AvailableMilliCPU[c.Name] = free
		}
		if free, ok := c.available(corev1.ResourceMemory); ok {
			if in.AvailableMemoryBytes == nil {
				in.AvailableMemoryBytes = map[string]float64{}
			}
			in.AvailableMemoryBytes[c.Name] = free
		}
	}
	for _, o := range s.latency.GetStore().List() {
		var cl flowplacev1alpha1.ClusterLatency
		if !decode(o, &cl) {
			continue
		}
		row := model.LatencyRow{Source: cl.Name, ValidUntil: cl.Status.ValidUntil.Time}
		for _, p := range cl.Status.Peers {
			row.Peers = append(row.Peers, model.PairLatency{Cluster: p.Cluster, MinUs: p.MinMicroseconds,
				P50Us: p.P50Microseconds, P90Us: p.P90Microseconds, P99Us: p.P99Microseconds, Samples: p.SampleCount,
				Estimated: p.Estimated, ErrorUs: p.ExpectedErrorMicroseconds})
		}
		in.Latency = append(in.Latency, row)
	}
	for _, o := range s.traffic.GetStore().List() {
		var wt flowplacev1alpha1.WorkloadTraffic
		if !decode(o, &wt) {
			continue
		}
		in.Traffic = append(in.Traffic, trafficInput(&wt))
	}
	for _, o := range s.bindings.GetStore().List() {
		var rb bindingMirror
		if !decode(o, &rb) {
			continue
		}
		b := model.BindingInput{Workload: model.Key{Namespace: rb.Namespace, Name: rb.Name}, Annotations: rb.Annotations,
			DemandMilliCPU: rb.demand(corev1.ResourceCPU), DemandMemoryBytes: rb.demand(corev1.ResourceMemory)}
		for _, c := range rb.Spec.Clusters {
			b.Clusters = append(b.Clusters, model.ClusterReplicas{Name: c.Name, Replicas: c.Replicas})
		}
		in.Bindings = append(in.Bindings, b)
	}
	for _, t := range s.templates {
		for _, o := range t.informer.GetStore().List() {
			m, ok := o.(*metav1.PartialObjectMetadata)
			if !ok {
				continue
			}
			if _, has := m.Annotations[model.BudgetAnnotation]; !has {
				continue
			}
			if in.TemplateAnnotations == nil {
				in.TemplateAnnotations = map[model.Key]map[string]string{}
			}
			in.TemplateAnnotations[model.KeyFor(m.Namespace, t.kind, m.Name)] = m.Annotations
		}
	}
	return in
}

func trafficInput(wt *flowplacev1alpha1.WorkloadTraffic) model.TrafficInput {
	// The object is named like the binding; use its name rather than
	// recomputing it from spec.workload, so that the two always agree.
	t := model.TrafficInput{
		Workload:   model.Key{Namespace: wt.Namespace, Name: wt.Name},
		ValidUntil: wt.Status.ValidUntil.Time,
		Samples:    wt.Status.SampleCount,
	}
	for _, p := range wt.Status.Peers {
		pi := model.PeerInput{BytesPerSecond: float64(p.BytesPerSecond)}
		if p.Workload != nil {
			k := model.KeyFor(p.Workload.Namespace, p.Workload.Kind, p.Workload.Name)
			pi.Workload = &k
		}
		if p.Service != nil {
			pi.Service = p.Service.Namespace + "/" + p.Service.Name
		}
		for _, c := range p.Clusters {
			pi.Pairs = append(pi.Pairs, model.PairRate{From: c.SourceCluster, To: c.DestinationCluster, BytesPerSecond: float64(c.BytesPerSecond)})
		}
		t.Peers = append(t.Peers, pi)
	}
	for _, c := range wt.Status.Clients {
		t.Clients = append(t.Clients, model.ClientInput{Cluster: c.ClientCluster, BytesPerSecond: float64(c.BytesPerSecond)})
	}
	return t
}

// bindingMirror is the part of work.karmada.io/v1alpha2 ResourceBinding
// read here (JSON names from Karmada's CRD).
type bindingMirror struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Replicas            int32 `json:"replicas,omitempty"`
		ReplicaRequirements *struct {
			ResourceRequest corev1.ResourceList `json:"resourceRequest,omitempty"`
		} `json:"replicaRequirements,omitempty"`
		Clusters []struct {
			Name     string `json:"name"`
			Replicas int32  `json:"replicas,omitempty"`
		} `json:"clusters,omitempty"`
	} `json:"spec"`
}

// demand is what the whole workload requests of r, in milli-cores for CPU
// and bytes for memory (0: unknown).
func (b *bindingMirror) demand(r corev1.ResourceName) float64 {
	if b.Spec.ReplicaRequirements == nil || b.Spec.Replicas <= 0 {
		return 0
	}
	q, ok := b.Spec.ReplicaRequirements.ResourceRequest[r]
	if !ok {
		return 0
	}
	return float64(b.Spec.Replicas) * amount(r, q)
}

// amount is q in the plan's unit for r: milli-cores for CPU, the value
// (bytes) otherwise.
func amount(r corev1.ResourceName, q resource.Quantity) float64 {
	if r == corev1.ResourceCPU {
		return float64(q.MilliValue())
	}
	return q.AsApproximateFloat64()
}

// clusterMirror is the part of cluster.karmada.io/v1alpha1 Cluster read here.
type clusterMirror struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Provider string `json:"provider,omitempty"`
		Region   string `json:"region,omitempty"`
	} `json:"spec"`
	Status struct {
		ResourceSummary *struct {
			Allocatable corev1.ResourceList `json:"allocatable,omitempty"`
			Allocating  corev1.ResourceList `json:"allocating,omitempty"`
			Allocated   corev1.ResourceList `json:"allocated,omitempty"`
		} `json:"resourceSummary,omitempty"`
	} `json:"status,omitempty"`
}

// available is allocatable - allocated - allocating of r, as Karmada's
// general estimator computes it, in the plan's unit (see amount); false
// when the cluster does not report r as allocatable.
func (c *clusterMirror) available(r corev1.ResourceName) (float64, bool) {
	rs := c.Status.ResourceSummary
	if rs == nil {
		return 0, false
	}
	alloc, ok := rs.Allocatable[r]
	if !ok {
		return 0, false
	}
	free := amount(r, alloc)
	if q, ok := rs.Allocated[r]; ok {
		free -= amount(r, q)
	}
	if q, ok := rs.Allocating[r]; ok {
		free -= amount(r, q)
	}
	return max(free, 0), true
}

// decode converts an informer object into out. A malformed object is
// logged and skipped: one bad object must not blank the whole model.
func decode(o any, out any) bool {
	u, ok := o.(*unstructured.Unstructured)
	if !ok {
		return false
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		klog.V(2).InfoS("flowplace: skipping malformed object", "kind", u.GetKind(), "namespace", u.GetNamespace(), "name", u.GetName(), "err", err)
		return false
	}
	return true
}
