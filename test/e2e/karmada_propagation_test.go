package e2e

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
)

// CI runs no Karmada controllers, so these helpers do what Karmada would do
// with the chart's policies: for each member, the objects that a
// PropagationPolicy or ClusterPropagationPolicy of the karmada-apiserver
// selects for it, with that member's OverridePolicy plaintext overriders
// applied, created in the member (namespaces first, as Karmada's namespace
// sync does). Only the selector forms the chart uses are supported, and any
// other form fails the test rather than being ignored.

var (
	ppGVR  = schema.GroupVersionResource{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "propagationpolicies"}
	cppGVR = schema.GroupVersionResource{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "clusterpropagationpolicies"}
	opGVR  = schema.GroupVersionResource{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "overridepolicies"}
)

type propagated struct {
	obj *unstructured.Unstructured
	gvr schema.GroupVersionResource
}

// propagateAsKarmada applies to member what Karmada would propagate there
// and returns what it applied, and what the policies select that does not
// exist yet ("Kind namespace/name"): Karmada propagates those once they
// appear.
func propagateAsKarmada(t *testing.T, karmada dynamic.Interface, karmadaKube kubernetes.Interface, member string, memberLabels map[string]string, memberDyn dynamic.Interface, memberKube kubernetes.Interface) (out []propagated, missing []string) {
	t.Helper()
	ctx := context.Background()
	gr, err := restmapper.GetAPIGroupResources(karmadaKube.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(gr)

	var policies []unstructured.Unstructured
	for _, gvr := range []schema.GroupVersionResource{ppGVR, cppGVR} {
		l, err := karmada.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		policies = append(policies, l.Items...)
	}
	overrides, err := karmada.Resource(opGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}

	for _, p := range policies {
		if !placementSelects(t, &p, member, memberLabels) {
			continue
		}
		sels, _, _ := unstructured.NestedSlice(p.Object, "spec", "resourceSelectors")
		for _, s := range sels {
			sel := s.(map[string]any)
			for k := range sel {
				if !slices.Contains([]string{"apiVersion", "kind", "name", "namespace"}, k) {
					t.Fatalf("policy %s: resource selector field %q is not modelled by this test", p.GetName(), k)
				}
			}
			gv, err := schema.ParseGroupVersion(sel["apiVersion"].(string))
			if err != nil {
				t.Fatal(err)
			}
			m, err := mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: sel["kind"].(string)}, gv.Version)
			if err != nil {
				t.Fatal(err)
			}
			ns, _ := sel["namespace"].(string)
			if ns == "" {
				ns = p.GetNamespace() // a PropagationPolicy selects in its own namespace
			}
			name, _ := sel["name"].(string)
			if name == "" {
				t.Fatalf("policy %s: selector without a name is not modelled by this test", p.GetName())
			}
			ri := dynamic.ResourceInterface(karmada.Resource(m.Resource))
			if m.Scope.Name() == "namespace" {
				ri = karmada.Resource(m.Resource).Namespace(ns)
			}
			o, err := ri.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				missing = append(missing, fmt.Sprintf("%s %s/%s", sel["kind"], ns, name))
				continue
			}
			if err != nil {
				t.Fatalf("policy %s selects %s %s/%s, which the karmada-apiserver does not have: %v", p.GetName(), sel["kind"], ns, name, err)
			}
			for _, op := range overrides.Items {
				applyOverrides(t, &op, o, member)
			}
			out = append(out, propagated{obj: stripForMember(o), gvr: m.Resource})
		}
	}
	for _, p := range out {
		if ns := p.obj.GetNamespace(); ns != "" {
			_, err := memberKube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
			if err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
	}
	for _, p := range out {
		ri := dynamic.ResourceInterface(memberDyn.Resource(p.gvr))
		if p.obj.GetNamespace() != "" {
			ri = memberDyn.Resource(p.gvr).Namespace(p.obj.GetNamespace())
		}
		if _, err := ri.Apply(ctx, p.obj.GetName(), p.obj, metav1.ApplyOptions{FieldManager: "karmada-execution-controller", Force: true}); err != nil {
			t.Fatalf("propagating %s %s to %s: %v", p.obj.GetKind(), p.obj.GetName(), member, err)
		}
	}
	return out, missing
}

// placementSelects evaluates spec.placement.clusterAffinity: clusterNames
// and labelSelector must both match when both are given (Karmada's
// ClusterMatches).
func placementSelects(t *testing.T, p *unstructured.Unstructured, member string, memberLabels map[string]string) bool {
	t.Helper()
	aff, ok, _ := unstructured.NestedMap(p.Object, "spec", "placement", "clusterAffinity")
	if !ok {
		return true // no affinity: every cluster
	}
	for k := range aff {
		if k != "clusterNames" && k != "labelSelector" {
			t.Fatalf("policy %s: clusterAffinity.%s is not modelled by this test", p.GetName(), k)
		}
	}
	if names, ok, _ := unstructured.NestedStringSlice(aff, "clusterNames"); ok && !slices.Contains(names, member) {
		return false
	}
	if sel, ok, _ := unstructured.NestedMap(aff, "labelSelector"); ok {
		var ls metav1.LabelSelector
		if err := runtimeConverter.FromUnstructured(sel, &ls); err != nil {
			t.Fatal(err)
		}
		s, err := metav1.LabelSelectorAsSelector(&ls)
		if err != nil {
			t.Fatal(err)
		}
		if !s.Matches(labels.Set(memberLabels)) {
			return false
		}
	}
	return true
}

// applyOverrides applies op's plaintext replace overriders for member to o
// when op selects o.
func applyOverrides(t *testing.T, op, o *unstructured.Unstructured, member string) {
	t.Helper()
	if op.GetNamespace() != o.GetNamespace() {
		return
	}
	sels, _, _ := unstructured.NestedSlice(op.Object, "spec", "resourceSelectors")
	selected := false
	for _, s := range sels {
		sel := s.(map[string]any)
		if sel["apiVersion"] == o.GetAPIVersion() && sel["kind"] == o.GetKind() && sel["name"] == o.GetName() {
			selected = true
		}
	}
	if !selected {
		return
	}
	rules, _, _ := unstructured.NestedSlice(op.Object, "spec", "overrideRules")
	for _, r := range rules {
		rule := r.(map[string]any)
		names, _, _ := unstructured.NestedStringSlice(rule, "targetCluster", "clusterNames")
		if !slices.Contains(names, member) {
			continue
		}
		ovs, _, _ := unstructured.NestedSlice(rule, "overriders", "plaintext")
		for _, ov := range ovs {
			m := ov.(map[string]any)
			operator, _ := m["operator"].(string)
			if operator != "replace" && operator != "add" {
				t.Fatalf("override %s: operator %v is not modelled by this test", op.GetName(), m["operator"])
			}
			if err := jsonPointerSet(o.Object, operator, m["path"].(string), m["value"]); err != nil {
				t.Fatalf("override %s on %s: %v", op.GetName(), o.GetName(), err)
			}
		}
	}
}

// jsonPointerSet is RFC 6902's replace (the target must exist) or add
// onto an object member (the parent must exist; the member may not), as
// Karmada's plaintext overrider applies them.
func jsonPointerSet(doc map[string]any, operator, path string, v any) error {
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	var cur any = doc
	for i, p := range parts {
		last := i == len(parts)-1
		switch c := cur.(type) {
		case map[string]any:
			if _, ok := c[p]; !ok && !(last && operator == "add") {
				return fmt.Errorf("path %s: no %q", path, p)
			}
			if last {
				c[p] = v
				return nil
			}
			cur = c[p]
		case []any:
			n, err := strconv.Atoi(p)
			if err != nil || n < 0 || n >= len(c) {
				return fmt.Errorf("path %s: index %q out of range", path, p)
			}
			if last {
				c[n] = v
				return nil
			}
			cur = c[n]
		default:
			return fmt.Errorf("path %s: %q is not a container", path, p)
		}
	}
	return nil
}

// stripForMember drops what the karmada-apiserver set, as Karmada's Work
// does before it creates the object in a member.
func stripForMember(o *unstructured.Unstructured) *unstructured.Unstructured {
	c := o.DeepCopy()
	for _, f := range []string{"uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "ownerReferences", "selfLink"} {
		unstructured.RemoveNestedField(c.Object, "metadata", f)
	}
	unstructured.RemoveNestedField(c.Object, "status")
	return c
}
