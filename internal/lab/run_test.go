package lab

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/test/topology"
)

// A short lab run: the measured RTT matrix matches the injected one, the
// re-placement cuts cross-cluster bytes and client latency, and nothing is
// left behind.
func TestRunImprovesPlacement(t *testing.T) {
	probetest.RequireKernel(t)
	topology.Require(t)
	prof, err := DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), RunOptions{Profile: prof, Duration: 30 * time.Second, Executable: buildCLI(t), Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report:\n%s", b)
	if rep.MeasuredRTTMaxErrorMs > 2 || rep.MeasuredRTTMaxErrorMs == 0 {
		t.Errorf("measured RTT off by up to %.2f ms, want within 2 ms (and measured)", rep.MeasuredRTTMaxErrorMs)
	}
	if !(rep.CrossClusterBytesRatio < 1) {
		t.Errorf("cross-cluster bytes after/before = %v, want < 1", rep.CrossClusterBytesRatio)
	}
	if !(rep.MeanLatencyRatio < 1) {
		t.Errorf("mean client latency after/before = %v, want < 1", rep.MeanLatencyRatio)
	}
	// Teardown: no namespace, cgroup or process of this run remains.
	if live, _ := filepath.Glob("/run/netns/" + labPrefix + "*"); len(live) > 0 {
		t.Errorf("namespaces left: %v", live)
	}
	root, _ := probe.FindCgroup2()
	if left, _ := filepath.Glob(filepath.Join(root, cgroupPrefix+"*")); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if out, _ := os.ReadFile("/proc/self/status"); strings.Contains(string(out), "zombie") {
		t.Error("zombie")
	}
}
