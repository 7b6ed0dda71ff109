package controlplane

import (
	"bytes"
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

// canonicalTools is the tools module of this checkout (tests run in the
// package directory).
const canonicalTools = "tools"

func TestCacheKey(t *testing.T) {
	tools := canonicalTools
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

// The embedded copy is what binaries build from: it must be the tools
// module byte for byte.
func TestEmbeddedToolsModuleInSync(t *testing.T) {
	emb := embeddedTools()
	for _, f := range toolsFiles {
		disk, err := os.ReadFile(filepath.Join(canonicalTools, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(disk, emb.files[f]) {
			t.Errorf("toolsmod/%s.txt differs from tools/%s (%d vs %d bytes): run `go generate ./world/controlplane`", f, f, len(emb.files[f]), len(disk))
		}
	}
	want, err := CacheKey(canonicalTools)
	if err != nil {
		t.Fatal(err)
	}
	if got := EmbeddedCacheKey(); got != want {
		t.Errorf("embedded cache key %s, checkout's %s: a binary would miss the cache `make controlplane-bin` fills", got, want)
	}
}

// Outside any checkout (cwd /, no FLOWPLACE_CONTROLPLANE_TOOLS) the binaries
// resolve from the embedded module to the same cache directory as in the
// checkout.
func TestResolveOutsideCheckout(t *testing.T) {
	want, err := CacheKey(canonicalTools)
	if err != nil {
		t.Fatal(err)
	}
	root, err := CacheRoot()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FLOWPLACE_CONTROLPLANE_TOOLS", "")
	t.Chdir("/")
	r, err := Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != want || r.Paths.Dir != filepath.Join(root, want) {
		t.Errorf("resolved key %s dir %s, want key %s dir %s", r.Key, r.Paths.Dir, want, filepath.Join(root, want))
	}
	if !strings.Contains(r.Source, "embedded") {
		t.Errorf("source %q, want the embedded module", r.Source)
	}
	if r.Cached != pathsIn(r.Paths.Dir).complete() {
		t.Errorf("Cached = %v, but the directory says %v", r.Cached, !r.Cached)
	}
	if !r.Cached {
		t.Skipf("binaries not cached in %s (make controlplane-bin)", r.Paths.Dir)
	}
	p, err := Binaries(t.Context(), func(format string, args ...any) {
		t.Errorf("Binaries logged (built?) although cached: "+format, args...)
	})
	if err != nil || p != r.Paths {
		t.Errorf("Binaries from / = %+v, %v; want %+v", p, err, r.Paths)
	}
}

// Neither cached nor buildable (no go in PATH): refused, naming why, and
// nothing is written (no cache directory, no lock file).
func TestResolveRefusesWithoutGoOrCache(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("FLOWPLACE_CACHE", cache)
	t.Setenv("FLOWPLACE_CONTROLPLANE_TOOLS", "")
	t.Setenv("PATH", t.TempDir())
	_, err := Resolve()
	if !errors.Is(err, ErrNoToolchain) || !strings.Contains(err.Error(), "no go command in PATH") {
		t.Fatalf("Resolve: %v, want ErrNoToolchain naming the missing go command", err)
	}
	if _, err := Binaries(t.Context(), nil); !errors.Is(err, ErrNoToolchain) {
		t.Fatalf("Binaries: %v, want ErrNoToolchain", err)
	}
	if left, _ := os.ReadDir(cache); len(left) > 0 {
		t.Errorf("a refused call wrote into the cache: %v", left)
	}
}

// What a binary outside the checkout builds in: the embedded module written
// out is a module Go accepts, with the tools module's path.
func TestEmbeddedToolsMaterialize(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip(err)
	}
	dir, err := embeddedTools().materialize(filepath.Join(t.TempDir(), "src"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range toolsFiles {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	cmd := exec.CommandContext(t.Context(), "go", "list", "-m")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), buildEnv...)
	out, err := cmd.CombinedOutput()
	if got := strings.TrimSpace(string(out)); err != nil || got != "github.com/flowplace/flowplace/world/controlplane/tools" {
		t.Errorf("go list -m in the written module: %q, %v", got, err)
	}
}
