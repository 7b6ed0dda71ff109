package e2e

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flowplace/flowplace/internal/addon"
)

// KarmadactlEnv names a karmadactl built from scheduler-plugin/karmada
// against Karmada's source (see its README); CI has no such source.
const KarmadactlEnv = "FLOWPLACE_KARMADACTL"

// TestKarmadactlAddonFlowplace runs karmadactl's own `addons list|enable|
// disable` with flowplace registered in its addon map.
func TestKarmadactlAddonFlowplace(t *testing.T) {
	bin := os.Getenv(KarmadactlEnv)
	if bin == "" {
		t.Skipf("%s is not set: build karmadactl from scheduler-plugin/karmada against Karmada's source to run this test", KarmadactlEnv)
	}
	w := startAddonWorld(t, 86)
	ctx := context.Background()
	global := []string{"--kubeconfig", w.hostCluster.Kubeconfig, "--karmada-kubeconfig", w.karmada.Kubeconfig, "-n", addon.DefaultNamespace}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, append(args, global...)...).CombinedOutput()
		return string(out), err
	}
	listed := func() string {
		out, err := run("addons", "list")
		if err != nil {
			t.Fatalf("karmadactl addons list: %v\n%s", err, out)
		}
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(strings.ReplaceAll(l, "|", " ")); len(f) >= 2 && f[0] == addon.Name {
				return f[1]
			}
		}
		t.Fatalf("karmadactl addons list has no flowplace:\n%s", out)
		return ""
	}
	if s := listed(); s != addon.StatusDisabled {
		t.Errorf("before enable: flowplace %s, want %s", s, addon.StatusDisabled)
	}

	// karmadactl requires <addon>-config before it enables any addon but
	// the estimator; the first install is flowplace's own.
	out, err := run("addons", "enable", addon.Name)
	if err == nil || !strings.Contains(out, addon.EstimatorConfigSecret) {
		t.Errorf("karmadactl enable before the first install: %v\n%s\nwant its refusal naming %s", err, out, addon.EstimatorConfigSecret)
	}
	if n := flowplaceObjects(t, w.hostCluster.Dynamic, w.karmada.Dynamic); n != "" {
		t.Fatalf("the refused enable created %s", n)
	}
	if err := addon.Enable(ctx, w.opts); err != nil {
		t.Fatal(err)
	}
	if s := listed(); s != addon.StatusEnabled && s != addon.StatusUnhealthy {
		t.Errorf("after enable: flowplace %s, want enabled or unhealthy (no data yet)", s)
	}

	// karmadactl's enable (no values flags) upgrades with the recorded ones:
	// nothing changes.
	before := resourceVersions(t, w.hostCluster.Dynamic, w.karmada.Dynamic)
	if out, err := run("addons", "enable", addon.Name, "--pod-timeout", "180"); err != nil {
		t.Fatalf("karmadactl addons enable flowplace: %v\n%s", err, out)
	}
	after := resourceVersions(t, w.hostCluster.Dynamic, w.karmada.Dynamic)
	for id, rv := range before {
		if after[id] != rv {
			t.Errorf("karmadactl enable changed %s (%s -> %s)", id, rv, after[id])
		}
	}

	if out, err := run("addons", "disable", addon.Name, "--force"); err != nil {
		t.Fatalf("karmadactl addons disable flowplace: %v\n%s", err, out)
	}
	if left := flowplaceObjects(t, w.hostCluster.Dynamic, w.karmada.Dynamic); left != "CustomResourceDefinition clusterlatencies.flowplace.io, CustomResourceDefinition workloadtraffics.flowplace.io" {
		t.Errorf("after karmadactl disable: %q, want only the CRDs", left)
	}
	if s := listed(); s != addon.StatusDisabled {
		t.Errorf("after disable: flowplace %s, want %s", s, addon.StatusDisabled)
	}
}
