package lab

import (
	"cmp"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/internal/lab/labtest"
	"github.com/flowplace/flowplace/internal/lab/ui"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/world/wan"
)

// A short lab run: the measured RTT matrix matches the injected one, the
// re-placement cuts cross-cluster bytes and client latency, and nothing is
// left behind.
func TestRunImprovesPlacement(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	prof, err := DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), RunOptions{Profile: prof, Duration: 30 * time.Second, RoutingDuration: 10 * time.Second, Executable: labtest.BuildCLI(t), Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	t.Logf("report:\n%s", b)
	checkRTTMatrix(t, rep.RTT)
	if !(rep.CrossClusterBytesRatio < 1) {
		t.Errorf("cross-cluster bytes after/before = %v, want < 1", rep.CrossClusterBytesRatio)
	}
	if !(rep.MeanLatencyRatio < 1) {
		t.Errorf("mean client latency after/before = %v, want < 1", rep.MeanLatencyRatio)
	}
	// The plan and the optimum price the same measured problem, so the
	// gap carries no measurement noise: only the plan's quality.
	if rep.OptimalGap < 1-1e-9 || rep.OptimalGap > 1.10 {
		t.Errorf("optimal gap %v, want 1 to 1.10", rep.OptimalGap)
	}
	checkRouting(t, prof, rep)
	// Teardown: no namespace, cgroup or process of this run remains.
	if live, _ := filepath.Glob("/run/netns/" + labPrefix + "*"); len(live) > 0 {
		t.Errorf("namespaces left: %v", live)
	}
	root, _ := probe.FindCgroup2()
	if left, _ := filepath.Glob(filepath.Join(root, cgroupPrefix+"*")); len(left) > 0 {
		t.Errorf("cgroups left: %v", left)
	}
	if n := labServiceProcesses(); n > 0 {
		t.Errorf("%d demo service processes left", n)
	}
	if n := flowplacePrograms(t); n > 0 {
		t.Errorf("%d flowplace eBPF programs still loaded", n)
	}
}

// checkRouting checks the routing phase: with every service in every
// cluster, routing keeps every call local (so no byte crosses clusters, and
// clients wait less than with uniform balancing), orders the other
// clusters as the injected RTTs do (their gaps, 5 ms and more, are far
// above the measurement noise, wan.MeanTolerance), and a killed instance is
// ejected after the failure threshold, never readmitted while dead.
func checkRouting(t *testing.T, prof *Profile, rep *Report) {
	t.Helper()
	rr := rep.Routing
	if rr == nil || rep.RoutingLatencyRatio == nil || rep.FailoverMs == nil || rep.FailedConnectsAfterFailover == nil {
		t.Fatalf("no routing report: %+v", rep)
	}
	if rr.Flowplace.CrossClusterBytesPerSecond != 0 || !(rr.KubeProxy.CrossClusterBytesPerSecond > 0) {
		t.Errorf("cross-cluster bytes/s: kube-proxy-style %v, flowplace %v; want some, then none", rr.KubeProxy.CrossClusterBytesPerSecond, rr.Flowplace.CrossClusterBytesPerSecond)
	}
	if !(rr.LatencyRatio < 1) {
		t.Errorf("routing latency ratio %v, want < 1", rr.LatencyRatio)
	}
	for _, self := range rep.Clusters {
		var others []string
		for _, c := range rep.Clusters {
			if c != self {
				others = append(others, c)
			}
		}
		slices.SortFunc(others, func(a, b string) int { return cmp.Compare(prof.Injected(self, a), prof.Injected(self, b)) })
		if !slices.Equal(rr.Order[self], others) {
			t.Errorf("order from %s: %v, want %v (by injected RTT)", self, rr.Order[self], others)
		}
	}
	th := int(redirect.DefaultHealth.FailThreshold)
	if rr.FailedConnects < 1 || rr.FailedConnects > th || rr.FailedAfterFailover != 0 || !(rr.FailoverMs > 0) {
		t.Errorf("failover: %d failed before recovery (want 1..%d), %d after (want 0), %v ms", rr.FailedConnects, th, rr.FailedAfterFailover, rr.FailoverMs)
	}
	if ej := float64(redirect.DefaultHealth.BaseEjection / time.Millisecond); !(rr.WindowMs > ej) {
		t.Errorf("failover window %v ms does not outlast the first ejection (%v ms)", rr.WindowMs, ej)
	}
}

// checkRTTMatrix checks every measured pair against the instruments'
// bound (RTTBound), and that pairs were measured at all.
func checkRTTMatrix(t *testing.T, cells []ui.RTTCell) {
	t.Helper()
	for _, e := range RTTOutOfBounds(cells) {
		t.Error(e)
	}
}

func labServiceProcesses() int {
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		if b, err := os.ReadFile(d); err == nil && strings.Contains(string(b), "lab-service") {
			n++
		}
	}
	return n
}

// flowplacePrograms counts loaded eBPF programs of flowplace's (the kernel
// frees them a moment after their last link and fd close).
func flowplacePrograms(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := 0
		for id, err := ebpf.ProgramGetNextID(0); err == nil; id, err = ebpf.ProgramGetNextID(id) {
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				continue
			}
			if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "flowplace_") {
				n++
			}
			p.Close()
		}
		if n == 0 || time.Now().After(deadline) {
			return n
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// With the real estimator publishing into a real Karmada host API server:
// its objects exist there (the API server validated each on write), and the
// run still improves placement.
func TestRunWithAPIServer(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	prof, err := DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Run(context.Background(), RunOptions{Profile: prof, Duration: 20 * time.Second, Executable: labtest.BuildCLI(t), WithAPIServer: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Published == nil {
		t.Fatal("no count of published objects")
	}
	// One ClusterLatency per cluster that called another, one
	// WorkloadTraffic per demo workload.
	if rep.Published.ClusterLatencies != 3 || rep.Published.WorkloadTraffics != 7 {
		t.Errorf("published %+v, want 3 ClusterLatency and 7 WorkloadTraffic", *rep.Published)
	}
	checkRTTMatrix(t, rep.RTT)
	if !(rep.CrossClusterBytesRatio < 1) || !(rep.MeanLatencyRatio < 1) {
		t.Errorf("report: bytes ratio %v, latency ratio %v", rep.CrossClusterBytesRatio, rep.MeanLatencyRatio)
	}
	// The re-placement is the real advisor's, through WorkloadRebalancers.
	if ad := rep.Advisor; ad == nil || ad.WorkloadRebalancers == 0 || len(ad.Moves) == 0 {
		t.Fatalf("advisor report %+v: want WorkloadRebalancers and moves", ad)
	}
	for s, c := range rep.Advisor.Moves {
		if rep.After.Placement[s] != c {
			t.Errorf("advisor moved %s to %s, the lab measured it in %s", s, c, rep.After.Placement[s])
		}
	}
	t.Logf("advisor %+v; optimal gap %.3f", *rep.Advisor, rep.OptimalGap)
	if rep.OptimalGap < 1-1e-9 || rep.OptimalGap > 1.10 {
		t.Errorf("optimal gap %v, want 1 to 1.10", rep.OptimalGap)
	}
}
