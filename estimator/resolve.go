package estimator

import (
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	flowplacev1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/estimator/aggregate"
)

// Karmada's resources, read through the dynamic client: the root module
// never imports Karmada's Go API (see karmada-facts.md). JSON names are
// those of Karmada's CRDs.
var (
	ClusterGVR         = schema.GroupVersionResource{Group: "cluster.karmada.io", Version: "v1alpha1", Resource: "clusters"}
	ResourceBindingGVR = schema.GroupVersionResource{Group: "work.karmada.io", Version: "v1alpha2", Resource: "resourcebindings"}
)

// indexClusterID indexes Cluster objects by spec.id.
const indexClusterID = "clusterID"

// resolver answers "which Karmada cluster is this UID" and "which
// ResourceBinding is this workload's" from informer caches, and holds the
// caches of the published objects.
type resolver struct {
	factory   dynamicinformer.DynamicSharedInformerFactory
	clusters  cache.SharedIndexInformer
	bindings  cache.SharedIndexInformer
	latencies cache.SharedIndexInformer
	traffics  cache.SharedIndexInformer
}

func newResolver(dc dynamic.Interface, resync time.Duration) (*resolver, error) {
	f := dynamicinformer.NewDynamicSharedInformerFactory(dc, resync)
	r := &resolver{
		factory:   f,
		clusters:  f.ForResource(ClusterGVR).Informer(),
		bindings:  f.ForResource(ResourceBindingGVR).Informer(),
		latencies: f.ForResource(flowplacev1.ClusterLatencyResource).Informer(),
		traffics:  f.ForResource(flowplacev1.WorkloadTrafficResource).Informer(),
	}
	if err := r.clusters.AddIndexers(cache.Indexers{indexClusterID: func(obj any) ([]string, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return nil, nil
		}
		id, _, _ := unstructured.NestedString(u.Object, "spec", "id")
		if id == "" {
			return nil, nil
		}
		return []string{id}, nil
	}}); err != nil {
		return nil, fmt.Errorf("cluster informer index: %w", err)
	}
	// Bindings are large (placement, status per cluster); only the identity
	// and spec.resource are kept, so a fleet's worth fits in little memory.
	if err := r.bindings.SetTransform(func(obj any) (any, error) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return obj, nil
		}
		res, _, _ := unstructured.NestedMap(u.Object, "spec", "resource")
		slim := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(),
			"metadata": map[string]any{
				"name": u.GetName(), "namespace": u.GetNamespace(),
				"uid": string(u.GetUID()), "resourceVersion": u.GetResourceVersion(),
			},
			"spec": map[string]any{"resource": res},
		}}
		return slim, nil
	}); err != nil {
		return nil, fmt.Errorf("binding informer transform: %w", err)
	}
	return r, nil
}

func (r *resolver) start(stop <-chan struct{}) { r.factory.Start(stop) }

func (r *resolver) synced() []cache.InformerSynced {
	return []cache.InformerSynced{r.clusters.HasSynced, r.bindings.HasSynced, r.latencies.HasSynced, r.traffics.HasSynced}
}

// clusterRef is what the publisher needs of a Karmada Cluster.
type clusterRef struct {
	Name, ID string
	UID      string // the Cluster object's metadata.uid, for owner references
}

// clusterByID returns the Karmada cluster whose spec.id is id.
func (r *resolver) clusterByID(id string) (clusterRef, bool) {
	objs, err := r.clusters.GetIndexer().ByIndex(indexClusterID, id)
	if err != nil || len(objs) != 1 {
		// Zero, or an ambiguous id that two Cluster objects claim: either
		// way the UID names no cluster we can publish for.
		return clusterRef{}, false
	}
	u := objs[0].(*unstructured.Unstructured)
	return clusterRef{Name: u.GetName(), ID: id, UID: string(u.GetUID())}, true
}

// clusterByName returns the Karmada cluster called name.
func (r *resolver) clusterByName(name string) (clusterRef, bool) {
	obj, ok, err := r.clusters.GetIndexer().GetByKey(name)
	if err != nil || !ok {
		return clusterRef{}, false
	}
	u := obj.(*unstructured.Unstructured)
	id, _, _ := unstructured.NestedString(u.Object, "spec", "id")
	if id == "" {
		return clusterRef{}, false
	}
	return clusterRef{Name: name, ID: id, UID: string(u.GetUID())}, true
}

// bindingRef is what the publisher needs of a ResourceBinding.
type bindingRef struct {
	Name, UID  string
	APIVersion string // of the resource template
}

// BindingName is Karmada's ResourceBinding name for a workload:
// "<name>-<kind>" in lower case (names.GenerateBindingName, which also
// replaces ':' by '.' in names).
func BindingName(kind, name string) string {
	return strings.ToLower(strings.ReplaceAll(name, ":", ".") + "-" + kind)
}

// binding returns the ResourceBinding of a workload, checking that it is
// really that workload's (spec.resource kind and name).
func (r *resolver) binding(w aggregate.WorkloadKey) (bindingRef, bool) {
	name := BindingName(w.Kind, w.Name)
	obj, ok, err := r.bindings.GetIndexer().GetByKey(w.Namespace + "/" + name)
	if err != nil || !ok {
		return bindingRef{}, false
	}
	u := obj.(*unstructured.Unstructured)
	res, _, _ := unstructured.NestedStringMap(u.Object, "spec", "resource")
	if res["kind"] != w.Kind || res["name"] != w.Name || res["apiVersion"] == "" {
		return bindingRef{}, false
	}
	return bindingRef{Name: name, UID: string(u.GetUID()), APIVersion: res["apiVersion"]}, true
}

func ownerRef(apiVersion, kind, name, uid string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: typesUID(uid)}
}

// clusterUIDByName is the spec.id of the Karmada Cluster called name.
func (r *resolver) clusterUIDByName(name string) (string, bool) {
	obj, ok, err := r.clusters.GetStore().GetByKey(name)
	if err != nil || !ok {
		return "", false
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return "", false
	}
	id, _, _ := unstructured.NestedString(u.Object, "spec", "id")
	return id, id != ""
}
