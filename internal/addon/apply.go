package addon

import (
	"context"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
)

// InstanceLabel marks every object of a release (the chart's labels), so
// that upgrades prune and disable deletes exactly what enable created.
const InstanceLabel = "app.kubernetes.io/instance"

// partOfLabel is on every chart object, CRDs included.
const partOfLabel = "app.kubernetes.io/part-of"

// ModeLabel says which rendering an object is from: the host cluster may
// also be a member, holding the host release's objects and the agent's that
// Karmada propagated there; prune and disable touch only their own.
const ModeLabel = "flowplace.io/install-mode"

// crdGVR is apiextensions' CRD resource.
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// prunable are the resources the chart renders, per install mode; CRDs are
// never pruned (they carry no instance label).
var prunable = map[string][]schema.GroupVersionResource{
	"host": {
		{Version: "v1", Resource: "secrets"},
		{Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "serviceaccounts"},
		{Version: "v1", Resource: "services"},
		{Group: "apps", Version: "v1", Resource: "deployments"},
	},
	"karmada": {
		{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "overridepolicies"},
		{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "propagationpolicies"},
		{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "clusterpropagationpolicies"},
		{Group: "apps", Version: "v1", Resource: "daemonsets"},
		{Version: "v1", Resource: "secrets"},
		{Version: "v1", Resource: "configmaps"},
		{Version: "v1", Resource: "serviceaccounts"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "rolebindings"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "roles"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterrolebindings"},
		{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles"},
		{Version: "v1", Resource: "namespaces"},
	},
}

// applyResult counts what an apply did.
type applyResult struct {
	Applied, Changed, Pruned int
}

func (s *apiServer) resourceFor(obj *unstructured.Unstructured) (dynamic.ResourceInterface, *meta.RESTMapping, error) {
	gvk := obj.GroupVersionKind()
	m, err := s.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, nil, fmt.Errorf("%s does not serve %s: %w", s.name, gvk, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return s.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), m, nil
	}
	return s.dyn.Resource(m.Resource), m, nil
}

// applyAll server-side applies objs in order under FieldManager and reports
// how many changed (a changed resourceVersion). CRDs are waited for until
// established, so the objects after them can use them.
func (s *apiServer) applyAll(ctx context.Context, objs []*unstructured.Unstructured) (applyResult, error) {
	var r applyResult
	for _, obj := range objs {
		ri, _, err := s.resourceFor(obj)
		if err != nil {
			return r, err
		}
		before := ""
		if cur, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{}); err == nil {
			before = cur.GetResourceVersion()
		} else if !apierrors.IsNotFound(err) {
			return r, fmt.Errorf("%s: reading %s %s: %w", s.name, obj.GetKind(), key(obj), err)
		}
		got, err := ri.Apply(ctx, obj.GetName(), obj, metav1.ApplyOptions{FieldManager: FieldManager, Force: true})
		if err != nil {
			return r, fmt.Errorf("%s: applying %s %s: %w", s.name, obj.GetKind(), key(obj), err)
		}
		r.Applied++
		if got.GetResourceVersion() != before {
			r.Changed++
		}
		if obj.GetKind() == "CustomResourceDefinition" {
			if err := s.waitEstablished(ctx, obj.GetName()); err != nil {
				return r, err
			}
			s.mapper.Reset()
		}
	}
	return r, nil
}

func (s *apiServer) waitEstablished(ctx context.Context, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd, err := s.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "Established" && m["status"] == "True" {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%s: CRD %s not established: %w", s.name, name, err)
	}
	return nil
}

// listOwned lists the release's objects of the prunable resources of mode
// (resources this server does not serve are skipped).
func (s *apiServer) listOwned(ctx context.Context, mode, release string) ([]*unstructured.Unstructured, []schema.GroupVersionResource, error) {
	sel := metav1.ListOptions{LabelSelector: partOfLabel + "=flowplace," + InstanceLabel + "=" + release + "," + ModeLabel + "=" + mode}
	var out []*unstructured.Unstructured
	var gvrs []schema.GroupVersionResource
	for _, gvr := range prunable[mode] {
		l, err := s.dyn.Resource(gvr).List(ctx, sel)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: listing %s: %w", s.name, gvr.Resource, err)
		}
		for i := range l.Items {
			out = append(out, &l.Items[i])
			gvrs = append(gvrs, gvr)
		}
	}
	return out, gvrs, nil
}

// prune deletes the release's objects that the rendering no longer has.
func (s *apiServer) prune(ctx context.Context, mode, release string, keep []*unstructured.Unstructured) (int, error) {
	owned, gvrs, err := s.listOwned(ctx, mode, release)
	if err != nil {
		return 0, err
	}
	want := map[string]bool{}
	for _, o := range keep {
		want[identity(o)] = true
	}
	n := 0
	for i, o := range owned {
		if want[identity(o)] {
			continue
		}
		if err := s.delete(ctx, gvrs[i], o); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *apiServer) delete(ctx context.Context, gvr schema.GroupVersionResource, o *unstructured.Unstructured) error {
	ri := dynamic.ResourceInterface(s.dyn.Resource(gvr))
	if o.GetNamespace() != "" {
		ri = s.dyn.Resource(gvr).Namespace(o.GetNamespace())
	}
	// Background: the object goes now, the garbage collector takes its
	// dependents (a DaemonSet's pods) after.
	bg := metav1.DeletePropagationBackground
	if err := ri.Delete(ctx, o.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: deleting %s %s: %w", s.name, o.GetKind(), key(o), err)
	}
	return nil
}

// identity names an object across API versions of one kind.
func identity(o *unstructured.Unstructured) string {
	return o.GroupVersionKind().GroupKind().String() + "/" + o.GetNamespace() + "/" + o.GetName()
}

func key(o *unstructured.Unstructured) string {
	if o.GetNamespace() == "" {
		return o.GetName()
	}
	return o.GetNamespace() + "/" + o.GetName()
}

// crdsFirst orders CRDs before everything else (Helm's install order puts
// them after namespaces already; this keeps it whatever the sort).
func crdsFirst(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := slices.Clone(objs)
	slices.SortStableFunc(out, func(a, b *unstructured.Unstructured) int {
		ac, bc := a.GetKind() == "CustomResourceDefinition", b.GetKind() == "CustomResourceDefinition"
		switch {
		case ac && !bc:
			return -1
		case bc && !ac:
			return 1
		}
		return 0
	})
	return out
}
