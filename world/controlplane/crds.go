package controlplane

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
)

// builtinCRDs are installed into every host: Karmada's CRDs, unmodified
// (crds/karmada, see its README), and the test-only Cluster CRD (crds/test).
// Embedded so that Start works from any package's working directory.
//
//go:embed crds/karmada/*.yaml crds/test/*.yaml
var builtinCRDs embed.FS

var (
	// CRDGVR is apiextensions.k8s.io/v1 CustomResourceDefinitions.
	CRDGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	// ClusterGVR is Karmada's Cluster (test-only CRD in the host).
	ClusterGVR = schema.GroupVersionResource{Group: "cluster.karmada.io", Version: "v1alpha1", Resource: "clusters"}
	// ResourceBindingGVR is the version Karmada stores; v1alpha1 would need
	// Karmada's conversion webhook, which is not running here.
	ResourceBindingGVR = schema.GroupVersionResource{Group: "work.karmada.io", Version: "v1alpha2", Resource: "resourcebindings"}
)

// crdFile is one file of CRD manifests.
type crdFile struct {
	name string // for error messages
	data []byte
}

// crdFiles returns the built-in CRD files followed by the *.yaml, *.yml and
// *.json files of each extra directory, each group in name order.
func crdFiles(extraDirs []string) ([]crdFile, error) {
	var out []crdFile
	err := fs.WalkDir(builtinCRDs, "crds", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := builtinCRDs.ReadFile(p)
		if err != nil {
			return err
		}
		out = append(out, crdFile{name: "embedded " + p, data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("controlplane: reading embedded CRDs: %w", err)
	}
	for _, dir := range extraDirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("controlplane: CRD directory: %w", err)
		}
		for _, e := range entries {
			ext := strings.ToLower(path.Ext(e.Name()))
			if e.IsDir() || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
				continue
			}
			p := filepath.Join(dir, e.Name())
			data, err := os.ReadFile(p)
			if err != nil {
				return nil, fmt.Errorf("controlplane: CRD file: %w", err)
			}
			out = append(out, crdFile{name: p, data: data})
		}
	}
	return out, nil
}

// decodeManifests splits a multi-document YAML (or JSON) file into objects,
// skipping empty documents (files that start with "---").
func decodeManifests(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(obj) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: obj})
	}
}

// installCRDs creates every CRD in files and waits until all are Established,
// i.e. their resources are served.
func installCRDs(ctx context.Context, dc dynamic.Interface, files []crdFile) error {
	var names []string
	for _, f := range files {
		objs, err := decodeManifests(f.data)
		if err != nil {
			return fmt.Errorf("decoding %s: %w", f.name, err)
		}
		for _, obj := range objs {
			if obj.GetAPIVersion() != "apiextensions.k8s.io/v1" || obj.GetKind() != "CustomResourceDefinition" {
				return fmt.Errorf("%s: %s %s %q is not an apiextensions.k8s.io/v1 CustomResourceDefinition",
					f.name, obj.GetAPIVersion(), obj.GetKind(), obj.GetName())
			}
			if _, err := dc.Resource(CRDGVR).Create(ctx, obj, metav1.CreateOptions{FieldManager: fieldManager}); err != nil {
				return fmt.Errorf("creating CRD %s from %s: %w", obj.GetName(), f.name, err)
			}
			names = append(names, obj.GetName())
		}
	}
	var latest time.Time
	for _, name := range names {
		at, err := waitEstablished(ctx, dc, name)
		if err != nil {
			return err
		}
		if at.After(latest) {
			latest = at
		}
	}
	// The API server delays every create of a custom resource by 2 s while
	// its CRD was Established less than 2 s ago (apiextensions-apiserver
	// customresource_handler.go, "justCreated"). Waiting that window out once
	// here is cheaper than each test's first create of each kind paying it.
	// The server compares against the same second-truncated timestamp we read.
	if wait := time.Until(latest.Add(justCreatedWindow)); wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	return nil
}

// justCreatedWindow is the API server's 2 s plus a margin for rounding.
const justCreatedWindow = 2*time.Second + 50*time.Millisecond

// waitEstablished waits until the CRD is Established and returns when it
// became so.
func waitEstablished(ctx context.Context, dc dynamic.Interface, name string) (time.Time, error) {
	var last string
	var at time.Time
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		crd, err := dc.Resource(CRDGVR).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
		for _, c := range conds {
			m, _ := c.(map[string]any)
			if m["type"] == "NamesAccepted" && m["status"] == "False" {
				return false, fmt.Errorf("names not accepted: %v", m["message"])
			}
			if m["type"] == "Established" {
				last = fmt.Sprintf("%v: %v", m["status"], m["message"])
				if m["status"] == "True" {
					ts, _ := m["lastTransitionTime"].(string)
					if at, err = time.Parse(time.RFC3339, ts); err != nil {
						return false, fmt.Errorf("Established lastTransitionTime %q: %w", ts, err)
					}
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("CRD %s not Established (last condition %q): %w", name, last, err)
	}
	return at, nil
}

// fieldManager names this package in managedFields.
const fieldManager = "flowplace-test-controlplane"

// ClusterLocation is the optional topology of a member's Cluster object.
type ClusterLocation struct {
	Provider string
	Region   string
	Zones    []string
}

// RegisterMembers creates or updates, in the host, one Cluster object
// (cluster.karmada.io/v1alpha1) per member, named after it, with spec.id the
// member's kube-system UID as Karmada sets it, spec.apiEndpoint its URL and
// spec.syncMode Push, plus the location given for it (if any). It uses
// server-side apply, so calling it again is harmless.
func (cp *ControlPlane) RegisterMembers(ctx context.Context, locations map[string]ClusterLocation) error {
	for name := range locations {
		if !slices.Contains(cp.memberOrder, name) {
			return fmt.Errorf("controlplane: location given for %q, which is not a member", name)
		}
	}
	for _, m := range cp.members() {
		id, err := m.KubeSystemUID(ctx)
		if err != nil {
			return err
		}
		spec := map[string]any{"id": id, "syncMode": "Push", "apiEndpoint": m.URL}
		if loc, ok := locations[m.Name]; ok {
			if loc.Provider != "" {
				spec["provider"] = loc.Provider
			}
			if loc.Region != "" {
				spec["region"] = loc.Region
			}
			if len(loc.Zones) > 0 {
				zones := make([]any, len(loc.Zones))
				for i, z := range loc.Zones {
					zones[i] = z
				}
				spec["zones"] = zones
			}
		}
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": ClusterGVR.GroupVersion().String(),
			"kind":       "Cluster",
			"metadata":   map[string]any{"name": m.Name},
			"spec":       spec,
		}}
		_, err = cp.Host.Dynamic.Resource(ClusterGVR).Apply(ctx, m.Name, obj,
			metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
		if err != nil {
			return fmt.Errorf("controlplane: registering member %s in %s: %w", m.Name, HostName, err)
		}
	}
	return nil
}
