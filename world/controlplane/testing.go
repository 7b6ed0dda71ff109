package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
)

// RequireEnv set to "1" (CI does) turns "binaries cannot be built" into a
// test failure instead of a skip.
const RequireEnv = "FLOWPLACE_REQUIRE_CONTROLPLANE"

// StartForTest starts a control plane for t and stops it in t.Cleanup, even
// if the test fails or Start fails halfway. It skips t, naming what is
// missing, only when the binaries cannot be built here (no go command or no
// tools module) and FLOWPLACE_REQUIRE_CONTROLPLANE is not 1; every other
// error fails t.
func StartForTest(t testing.TB, cfg Config) *ControlPlane {
	t.Helper()
	// Build (or find) the binaries first, reporting progress on stderr rather
	// than t.Logf: a cold build takes minutes and t.Logf output is hidden
	// without -v, which would make a CI log look hung.
	start := time.Now()
	if _, err := Binaries(context.Background(), stderrLogf); err != nil {
		if errors.Is(err, ErrNoToolchain) && os.Getenv(RequireEnv) != "1" {
			t.Skipf("control plane binaries unavailable (set %s=1 to fail instead): %v", RequireEnv, err)
		}
		t.Fatalf("control plane binaries: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("controlplane: binaries ready after %s", d.Round(time.Second))
	}

	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	cp, err := Start(context.Background(), cfg)
	// Registered before the error check: Start cleans up after itself, but a
	// non-nil cp must be stopped whatever happens next.
	t.Cleanup(func() {
		if cp == nil {
			return
		}
		start := time.Now()
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
		t.Logf("controlplane: stopped in %s", time.Since(start).Round(time.Millisecond))
	})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	return cp
}

// stderrLogf prints progress straight to stderr, where `go test` shows it even
// for passing tests without -v.
func stderrLogf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
