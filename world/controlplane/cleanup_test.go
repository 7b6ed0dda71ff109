package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The cleanup tests re-run this test binary as a child process that starts a
// control plane and then fails (or is killed), and check from the parent
// that nothing of that run survives. The child only acts when childModeEnv is
// set; run directly, TestCleanupChild skips.
const (
	childModeEnv   = "FLOWPLACE_CP_CHILD_MODE"   // "fail" or "hang"
	childReportEnv = "FLOWPLACE_CP_CHILD_REPORT" // file the child writes its childReport to
)

// childReport is what the child tells the parent about its run.
type childReport struct {
	Marker string
	Dir    string
	PIDs   map[string]int
}

func TestCleanupChild(t *testing.T) {
	mode := os.Getenv(childModeEnv)
	if mode == "" {
		t.Skip("helper for TestCleanupAfterFailedTest and TestChildrenDieWithTestProcess")
	}
	cp := StartForTest(t, Config{Members: []string{"member1"}})
	data, err := json.Marshal(childReport{Marker: cp.Marker, Dir: cp.Dir, PIDs: cp.PIDs()})
	if err != nil {
		t.Fatal(err)
	}
	// Write then rename, so the parent never reads a partial report.
	report := os.Getenv(childReportEnv)
	if err := os.WriteFile(report+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(report+".tmp", report); err != nil {
		t.Fatal(err)
	}
	switch mode {
	case "fail":
		t.Fatal("failing on purpose: the parent checks that cleanup still ran")
	case "hang":
		<-t.Context().Done() // until the parent kills this process
	}
}

// childCmd prepares a child run of TestCleanupChild with its own TMPDIR, so
// the parent can also check that no temporary directory is left at all.
func childCmd(t *testing.T, ctx context.Context, mode string) (cmd *exec.Cmd, report, tmp string) {
	t.Helper()
	tmp = t.TempDir()
	report = filepath.Join(t.TempDir(), "report.json")
	cmd = exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCleanupChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), childModeEnv+"="+mode, childReportEnv+"="+report, "TMPDIR="+tmp)
	// A "hang" child must not outlive this test process either.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd, report, tmp
}

func readReport(t *testing.T, path string) childReport {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("child report: %v", err)
	}
	var r childReport
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatalf("child report: %v", err)
	}
	if r.Marker == "" || len(r.PIDs) != 3 {
		t.Fatalf("child report incomplete: %+v (want etcd and 2 API servers)", r)
	}
	return r
}

func TestCleanupAfterFailedTest(t *testing.T) {
	cmd, report, tmp := childCmd(t, t.Context(), "fail")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("child test: want exit status 1 (a failed test), got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "failing on purpose") || !strings.Contains(string(out), "--- FAIL: TestCleanupChild") {
		t.Fatalf("child did not fail where expected:\n%s", out)
	}
	r := readReport(t, report)
	// Stop ran in t.Cleanup before the child exited: nothing may remain,
	// without any waiting.
	if procs := processesWith(r.Marker); len(procs) > 0 {
		t.Errorf("processes of run %s still running after the failed test: %v", r.Marker, procs)
		killAll(procs)
	}
	for name, pid := range r.PIDs {
		if alive(pid, r.Marker) {
			t.Errorf("%s (pid %d) still running", name, pid)
		}
	}
	if _, err := os.Stat(r.Dir); !os.IsNotExist(err) {
		t.Errorf("run directory %s: want removed, got %v", r.Dir, err)
	}
	assertEmptyDir(t, tmp)
}

// TestChildrenDieWithTestProcess kills the test process outright, as a test
// timeout or a CI cancel would, so no cleanup runs: Pdeathsig must take the
// API servers and etcd down with it.
func TestChildrenDieWithTestProcess(t *testing.T) {
	cmd, report, tmp := childCmd(t, t.Context(), "hang")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	// Wait for the report: the child is then fully started.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(DefaultReadyTimeout + time.Minute)
wait:
	for {
		select {
		case err := <-exited:
			t.Fatalf("child exited before reporting: %v\n%s", err, out.String())
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("child did not report\n%s", out.String())
		case <-tick.C:
			if _, err := os.Stat(report); err == nil {
				break wait
			}
		}
	}
	r := readReport(t, report)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-exited

	// The kernel delivers the death signal when the parent exits; give the
	// children a moment to be killed and reaped.
	if !waitGone(r.Marker, 5*time.Second) {
		procs := processesWith(r.Marker)
		killAll(procs)
		t.Errorf("processes of run %s survived their test process: %v", r.Marker, procs)
	}
	// No cleanup could run, so the directory stays; that is expected, and it
	// is inside our TMPDIR, which t.TempDir removes.
	if _, err := os.Stat(r.Dir); err != nil {
		t.Errorf("run directory %s: %v (expected it to remain after SIGKILL)", r.Dir, err)
	}
	if !strings.HasPrefix(r.Dir, tmp) {
		t.Errorf("run directory %s not under TMPDIR %s", r.Dir, tmp)
	}
}

// TestStartFailureCleansUp makes Start fail after etcd and the API server are
// running (an invalid CRD directory) and checks that it stopped them itself.
func TestStartFailureCleansUp(t *testing.T) {
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "not-a-crd.yaml"), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// StartForTest would fail the test; call Start directly.
	if _, err := Binaries(t.Context(), stderrLogf); err != nil {
		if errors.Is(err, ErrNoToolchain) && os.Getenv(RequireEnv) != "1" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	cp, err := Start(t.Context(), Config{CRDDirs: []string{bad}, Logf: t.Logf})
	if err == nil {
		cp.Stop()
		t.Fatal("Start succeeded with a ConfigMap in a CRD directory")
	}
	if !strings.Contains(err.Error(), "not an apiextensions.k8s.io/v1 CustomResourceDefinition") {
		t.Errorf("unexpected error: %v", err)
	}
	if cp == nil {
		t.Fatal("Start returned no ControlPlane after starting processes; cannot check its marker")
	}
	if procs := processesWith(cp.Marker); len(procs) > 0 {
		t.Errorf("processes of the failed start still running: %v", procs)
	}
	if _, err := os.Stat(cp.Dir); !os.IsNotExist(err) {
		t.Errorf("run directory %s: want removed, got %v", cp.Dir, err)
	}
	// Stop after a failed Start (StartForTest's cleanup does this) is a no-op.
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// waitGone polls until no process carries marker, or timeout.
func waitGone(marker string, timeout time.Duration) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		if len(processesWith(marker)) == 0 {
			return true
		}
		select {
		case <-deadline:
			return false
		case <-tick.C:
		}
	}
}

// killAll kills leaked processes so that a failing cleanup test does not
// leave them running into the tests after it.
func killAll(pids []int) {
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// processesWith lists the live processes whose command line contains marker.
// Zombies have an empty cmdline and are not listed.
func processesWith(marker string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if alive(pid, marker) {
			out = append(out, pid)
		}
	}
	return out
}

// alive reports whether pid runs a command whose arguments contain marker
// (checking the marker guards against pid reuse).
func alive(pid int, marker string) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(string(cmdline), marker)
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("left behind in TMPDIR: %s", filepath.Join(dir, e.Name()))
	}
}
