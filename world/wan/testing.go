package wan

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NewForTest builds a topology with a fresh generated prefix for one test
// and closes it when the test ends. It skips the test, naming what is
// missing, when the machine cannot host a topology (see Require).
// Leftovers of earlier, killed test runs are swept first.
func NewForTest(t testing.TB, clusters []string, rtt map[Pair]time.Duration) *Topology {
	t.Helper()
	return NewForTestConfig(t, Config{Clusters: clusters, ExtraRTT: rtt})
}

// NewForTestConfig is NewForTest with a full Config. An empty Prefix gets a
// fresh generated one.
func NewForTestConfig(t testing.TB, cfg Config) *Topology {
	t.Helper()
	Require(t)
	if err := Sweep(defaultPrefixStem); err != nil {
		t.Logf("topology: sweeping leftovers: %v", err)
	}
	var topo *Topology
	// Registered before New can fail so that whatever a failed setup left
	// behind is torn down too.
	t.Cleanup(func() {
		if topo == nil {
			return
		}
		if err := topo.Close(); err != nil {
			t.Errorf("topology: close: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	topo, err = build(ctx, cfg)
	if err != nil {
		t.Fatalf("topology: %v", err)
	}
	return topo
}

// Require skips t, naming what is missing, unless this process can build a
// topology (Linux, CAP_NET_ADMIN and CAP_SYS_ADMIN, /dev/net/tun). With
// FLOWPLACE_REQUIRE_KERNEL=1 (set by CI) it fails t instead.
func Require(t testing.TB) {
	t.Helper()
	if reason := Unsupported(); reason != "" {
		if os.Getenv("FLOWPLACE_REQUIRE_KERNEL") == "1" {
			t.Fatalf("topology: prerequisites missing in CI: %s", reason)
		}
		t.Skipf("topology: skipping: %s", reason)
	}
}

// Unsupported returns why this process cannot build a topology, or "" if it
// can.
func Unsupported() string {
	if runtime.GOOS != "linux" {
		return "needs Linux network namespaces, running on " + runtime.GOOS
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Sprintf("cannot read capabilities: %v", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	var missing []string
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(unix.CAP_SYS_ADMIN) {
		missing = append(missing, "CAP_SYS_ADMIN (namespaces, bind mounts in /run/netns)")
	}
	if len(missing) > 0 {
		return fmt.Sprintf("needs %s (run as root; euid is %d)", strings.Join(missing, " and "), os.Geteuid())
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("no usable /dev/net/tun (TUN driver): %v", err)
	}
	f.Close()
	return ""
}
