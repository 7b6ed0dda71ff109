// Package probetest gives kernel tests a private cgroup v2 and the probes
// attached to it, and skips them, naming what is missing, where they cannot
// run. With FLOWPLACE_REQUIRE_KERNEL=1 (set by CI) a missing prerequisite
// fails the test instead of skipping it.
package probetest

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowplace/flowplace/internal/probe"
)

var seq atomic.Int64

// RequireKernel skips (or, in CI, fails) t unless the probes can load here.
func RequireKernel(t testing.TB) {
	t.Helper()
	if err := probe.CheckKernel(); err != nil {
		if os.Getenv("FLOWPLACE_REQUIRE_KERNEL") == "1" {
			t.Fatalf("kernel prerequisites missing in CI: %v", err)
		}
		t.Skipf("skipping eBPF test: %v", err)
	}
}

// Cgroup creates a fresh child cgroup v2 and moves the whole test process
// into it, so that sockets the test opens from now on belong to it. Cleanup
// moves the process back and removes the cgroup.
func Cgroup(t testing.TB) string {
	t.Helper()
	RequireKernel(t)
	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		t.Fatalf("cgroup v2: %v", err)
	}
	orig, err := probe.ProcessCgroup(root, 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, fmt.Sprintf("flowplace-test-%d-%d", os.Getpid(), seq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create test cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := probe.JoinCgroup(orig, 0); err != nil {
			t.Errorf("move test process back to %s: %v", orig, err)
		}
		// rmdir fails while the kernel still releases the cgroup's sockets.
		var err error
		for range 50 {
			if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove test cgroup %s: %v", dir, err)
	})
	if err := probe.JoinCgroup(dir, 0); err != nil {
		t.Fatalf("enter test cgroup: %v", err)
	}
	return dir
}

// Attach loads the probes on a fresh test cgroup (see Cgroup) and closes
// them at cleanup.
func Attach(t testing.TB, opts probe.Options) *probe.Probe {
	t.Helper()
	if opts.Cgroup == "" {
		opts.Cgroup = Cgroup(t)
	}
	p, err := probe.Load(opts)
	if err != nil {
		t.Fatalf("load probes: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close probes: %v", err)
		}
	})
	return p
}
