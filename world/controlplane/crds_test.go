package controlplane

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// karmadaReference is the lab's reference copy of Karmada's CRDs
// (../shared/karmada/crds from the repository root).
const karmadaReference = "../../../shared/karmada/crds"

// TestKarmadaCRDsUnmodified checks that crds/karmada holds exactly the
// reference files, byte for byte, when the reference is on this machine.
func TestKarmadaCRDsUnmodified(t *testing.T) {
	if _, err := os.Stat(karmadaReference); err != nil {
		t.Skipf("reference copy not on this machine: %v", err)
	}
	ref, _ := filepath.Glob(filepath.Join(karmadaReference, "*.yaml"))
	ours, _ := filepath.Glob("crds/karmada/*.yaml")
	base := func(paths []string) []string {
		var out []string
		for _, p := range paths {
			out = append(out, filepath.Base(p))
		}
		slices.Sort(out)
		return out
	}
	if !slices.Equal(base(ref), base(ours)) {
		t.Fatalf("file sets differ:\nreference %v\nours      %v", base(ref), base(ours))
	}
	for _, p := range ref {
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("crds/karmada", filepath.Base(p)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("crds/karmada/%s differs from %s", filepath.Base(p), p)
		}
	}
}

// TestEmbeddedCRDs checks that every embedded file decodes to CRDs and that
// the test Cluster CRD is among them (no API server needed).
func TestEmbeddedCRDs(t *testing.T) {
	files, err := crdFiles(nil)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range files {
		objs, err := decodeManifests(f.data)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if len(objs) == 0 {
			t.Errorf("%s: no objects", f.name)
		}
		for _, o := range objs {
			if o.GetKind() != "CustomResourceDefinition" {
				t.Errorf("%s: kind %s", f.name, o.GetKind())
			}
			names[o.GetName()] = true
		}
	}
	for _, want := range []string{"clusters.cluster.karmada.io", "resourcebindings.work.karmada.io", "propagationpolicies.policy.karmada.io"} {
		if !names[want] {
			t.Errorf("CRD %s not embedded", want)
		}
	}
	for n := range names {
		if !strings.Contains(n, ".") {
			t.Errorf("odd CRD name %q", n)
		}
	}
}
