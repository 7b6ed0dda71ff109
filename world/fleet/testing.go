package fleet

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/nodes"
	"github.com/flowplace/flowplace/world/wan"
)

// RequireEnv set to "1" (CI does) turns "this machine cannot run nodes"
// into a test failure instead of a skip.
const RequireEnv = "FLOWPLACE_REQUIRE_NODES"

// Require skips t, naming what is missing, when this machine cannot run
// nodes (not root, no containerd, runc or CNI plugins), unless RequireEnv is
// 1; then it fails t.
func Require(t testing.TB) {
	t.Helper()
	wan.Require(t)
	if err := nodes.Check(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%v (%s=1)", err, RequireEnv)
		}
		t.Skipf("%v (set %s=1 to fail instead)", err, RequireEnv)
	}
}

// ImagesForTest builds (or finds cached) the named images from this
// repository's source.
func ImagesForTest(t testing.TB, names ...string) []images.Image {
	t.Helper()
	src, err := images.FindSourceDir(".")
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	imgs, err := images.Build(context.Background(), images.Options{SourceDir: src, Logf: stderrLogf}, names...)
	if err != nil {
		t.Fatalf("images: %v", err)
	}
	return imgs
}

// StartForTest starts a fleet for t and stops it in t.Cleanup. The images
// default to pause and busybox.
func StartForTest(t testing.TB, cfg Config) *Fleet {
	t.Helper()
	Require(t)
	if _, err := controlplane.Binaries(context.Background(), stderrLogf); err != nil {
		t.Fatalf("control plane binaries: %v", err)
	}
	if cfg.Images == nil {
		cfg.Images = ImagesForTest(t, images.Pause, images.Busybox)
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	start := time.Now()
	f, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting fleet: %v", err)
	}
	t.Logf("fleet: started in %s", time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		start := time.Now()
		if err := f.Stop(); err != nil {
			t.Errorf("stopping fleet: %v", err)
		}
		t.Logf("fleet: stopped in %s", time.Since(start).Round(time.Millisecond))
	})
	return f
}

func stderrLogf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
