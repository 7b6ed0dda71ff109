package controlplane

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBinariesWarm(t *testing.T) {
	// The first call may build (cold); the second must not.
	if _, err := Binaries(t.Context(), stderrLogf); err != nil {
		if errors.Is(err, ErrNoToolchain) && os.Getenv(RequireEnv) != "1" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	start := time.Now()
	p, err := Binaries(t.Context(), func(format string, args ...any) {
		t.Errorf("warm Binaries logged (built?): "+format, args...)
	})
	d := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm Binaries: %s", d)
	if d > time.Second {
		t.Errorf("warm Binaries took %s; it should only hash two files and stat three", d)
	}
	for _, tc := range []struct{ bin, arg, want string }{
		{p.KubeAPIServer, "--version", "Kubernetes " + KubernetesVersion},
		{p.KubeProxy, "--version", "Kubernetes " + KubernetesVersion},
		{p.Etcd, "--version", "etcd Version: 3.6.8"},
	} {
		out, err := exec.CommandContext(t.Context(), tc.bin, tc.arg).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s %s: want %q, got %v: %s", tc.bin, tc.arg, tc.want, err, out)
		}
	}
	if filepath.Base(p.Dir) == "" || !strings.HasSuffix(filepath.Dir(p.Dir), "controlplane") {
		t.Errorf("cache dir %s not under .../controlplane/<key>", p.Dir)
	}
}

func TestCacheKey(t *testing.T) {
	tools, err := ToolsDir()
	if err != nil {
		t.Fatal(err)
	}
	k1, err := CacheKey(tools)
	if err != nil {
		t.Fatal(err)
	}
	if k2, _ := CacheKey(tools); k2 != k1 {
		t.Fatalf("key not stable: %s vs %s", k1, k2)
	}
	// A copy with one changed go.sum byte must get another key.
	cp := t.TempDir()
	for _, f := range []string{"go.mod", "go.sum"} {
		data, err := os.ReadFile(filepath.Join(tools, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "go.sum" {
			data = append(data, '\n')
		}
		if err := os.WriteFile(filepath.Join(cp, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	k3, err := CacheKey(cp)
	if err != nil {
		t.Fatal(err)
	}
	if k3 == k1 {
		t.Error("changing go.sum did not change the cache key")
	}
	if !strings.Contains(buildSpecString(), ldflagsK8s) {
		t.Error("build flags are not part of the key")
	}
}
