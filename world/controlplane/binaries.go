package controlplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/flowplace/flowplace/internal/filelock"
)

// KubernetesVersion is the Kubernetes release the tools module pins; the
// binaries report it on /version through the -X flags below.
const KubernetesVersion = "v1.36.2"

// ldflagsK8s are the linker flags for the Kubernetes binaries. Without the -X
// flags /version reports a placeholder instead of KubernetesVersion.
const ldflagsK8s = "-s -w" +
	" -X k8s.io/component-base/version.gitVersion=" + KubernetesVersion +
	" -X k8s.io/component-base/version.gitMajor=1" +
	" -X k8s.io/component-base/version.gitMinor=36"

// ldflagsEtcd: etcd has no component-base version to stamp.
const ldflagsEtcd = "-s -w"

// binarySpec is one binary built from the tools module.
type binarySpec struct {
	name    string // file name in the cache directory
	pkg     string // main package in the tools module
	ldflags string
	hint    string // expected cold build time, for the progress line
}

// binarySpecs is built in this order: the quick ones first so that a broken
// tools module fails fast, before the long kube-apiserver build.
var binarySpecs = []binarySpec{
	{name: "etcd", pkg: "go.etcd.io/etcd/server/v3", ldflags: ldflagsEtcd, hint: "~1.5 min"},
	{name: "kube-proxy", pkg: "k8s.io/kubernetes/cmd/kube-proxy", ldflags: ldflagsK8s, hint: "~3.5 min"},
	{name: "kube-apiserver", pkg: "k8s.io/kubernetes/cmd/kube-apiserver", ldflags: ldflagsK8s, hint: "~4 min after kube-proxy"},
	// What a cluster with nodes adds (world/nodes).
	{name: "kube-scheduler", pkg: "k8s.io/kubernetes/cmd/kube-scheduler", ldflags: ldflagsK8s, hint: "~1 min after kube-apiserver"},
	{name: "kube-controller-manager", pkg: "k8s.io/kubernetes/cmd/kube-controller-manager", ldflags: ldflagsK8s, hint: "~1.5 min"},
	{name: "kubelet", pkg: "k8s.io/kubernetes/cmd/kubelet", ldflags: ldflagsK8s, hint: "~2.5 min"},
	{name: "kubectl", pkg: "k8s.io/kubernetes/cmd/kubectl", ldflags: ldflagsK8s, hint: "~1.5 min"},
}

// buildEnv is added to the environment of every `go build`. CGO_ENABLED is
// part of Go's own cache key, so it must be the same everywhere; GOWORK and
// GOFLAGS are cleared so that a caller's workspace or flags (e.g. -race from a
// test run) cannot change what gets built under a key that does not reflect them.
var buildEnv = []string{"CGO_ENABLED=0", "GOWORK=off", "GOFLAGS="}

// buildSpecString describes everything besides go.mod/go.sum that decides the
// bytes of the binaries. It is hashed into the cache key, so changing a flag
// here rebuilds everywhere.
func buildSpecString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "version=%s\ngo=%s\nos=%s\narch=%s\nenv=%s\nflags=-trimpath\n",
		KubernetesVersion, runtime.Version(), runtime.GOOS, runtime.GOARCH, strings.Join(buildEnv, " "))
	for _, s := range binarySpecs {
		fmt.Fprintf(&b, "bin=%s pkg=%s ldflags=%q\n", s.name, s.pkg, s.ldflags)
	}
	return b.String()
}

// Paths are the absolute paths of the built binaries.
type Paths struct {
	Dir                   string // cache directory holding all of them
	KubeAPIServer         string
	KubeProxy             string
	Etcd                  string
	KubeScheduler         string
	KubeControllerManager string
	Kubelet               string
	Kubectl               string
}

func pathsIn(dir string) Paths {
	return Paths{
		Dir:                   dir,
		KubeAPIServer:         filepath.Join(dir, "kube-apiserver"),
		KubeProxy:             filepath.Join(dir, "kube-proxy"),
		Etcd:                  filepath.Join(dir, "etcd"),
		KubeScheduler:         filepath.Join(dir, "kube-scheduler"),
		KubeControllerManager: filepath.Join(dir, "kube-controller-manager"),
		Kubelet:               filepath.Join(dir, "kubelet"),
		Kubectl:               filepath.Join(dir, "kubectl"),
	}
}

// complete reports whether every binary exists in dir. The directory is only
// ever created by an atomic rename of a finished build, so existence suffices.
func (p Paths) complete() bool {
	for _, f := range []string{p.KubeAPIServer, p.KubeProxy, p.Etcd, p.KubeScheduler, p.KubeControllerManager, p.Kubelet, p.Kubectl} {
		if st, err := os.Stat(f); err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// ErrNoToolchain means the binaries are not cached and cannot be built here
// (no `go` command, or an unreadable FLOWPLACE_CONTROLPLANE_TOOLS). StartForTest
// skips on it.
var ErrNoToolchain = errors.New("controlplane: cannot build binaries")

// Logf receives progress lines; nil discards them.
type Logf func(format string, args ...any)

// CacheRoot is ${FLOWPLACE_CACHE:-$HOME/.cache/flowplace}/controlplane.
func CacheRoot() (string, error) {
	base := os.Getenv("FLOWPLACE_CACHE")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("controlplane: no FLOWPLACE_CACHE and no home directory: %w", err)
		}
		base = filepath.Join(home, ".cache", "flowplace")
	}
	return filepath.Join(base, "controlplane"), nil
}

// CacheKey is the hex sha256 of the go.mod and go.sum of the tools module in
// toolsDir and of the build flags: the binaries are a pure function of these.
func CacheKey(toolsDir string) (string, error) {
	s, err := dirTools(toolsDir)
	if err != nil {
		return "", err
	}
	return s.cacheKey(), nil
}

// EmbeddedCacheKey is CacheKey of the tools module embedded in this binary.
func EmbeddedCacheKey() string { return embeddedTools().cacheKey() }

func (s toolsSource) cacheKey() string {
	h := sha256.New()
	for _, f := range toolsFiles[:2] {
		data := s.files[f]
		// Length-prefix each part so that moving bytes between them changes the key.
		fmt.Fprintf(h, "%s %d\n", f, len(data))
		h.Write(data)
	}
	spec := buildSpecString()
	fmt.Fprintf(h, "spec %d\n%s", len(spec), spec)
	return hex.EncodeToString(h.Sum(nil))
}

// Resolution says where this binary's control-plane binaries are, found
// without building or writing anything.
type Resolution struct {
	Paths  Paths
	Key    string
	Source string // the tools module they are built from
	// Cached: all three exist, so Binaries returns them at once.
	Cached bool
}

// Resolve finds the binaries in the cache without building or writing
// anything. When they are not cached and cannot be built here (no go command
// in PATH) it fails with ErrNoToolchain, so that a caller can refuse before
// it changes the machine rather than after.
func Resolve() (Resolution, error) {
	src, err := currentTools()
	if err != nil {
		return Resolution{}, err
	}
	return resolve(src)
}

func resolve(src toolsSource) (Resolution, error) {
	root, err := CacheRoot()
	if err != nil {
		return Resolution{}, err
	}
	key := src.cacheKey()
	r := Resolution{Paths: pathsIn(filepath.Join(root, key)), Key: key, Source: src.String()}
	r.Cached = r.Paths.complete()
	if !r.Cached {
		if _, err := exec.LookPath("go"); err != nil {
			return r, fmt.Errorf("%w: the Kubernetes and etcd binaries are not in %s and there is no go command in PATH to build them (%v); run `make controlplane-bin` where Go is installed, or install Go 1.26",
				ErrNoToolchain, r.Paths.Dir, err)
		}
	}
	return r, nil
}

// Binaries returns kube-apiserver, kube-proxy and etcd built from the tools
// module, building them only if the cache directory for the current key does
// not exist yet. A warm call costs a hash of two embedded files and three
// stats. Concurrent callers (several test packages) serialize on a lock file
// and the later ones reuse the first one's build.
func Binaries(ctx context.Context, logf Logf) (Paths, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	src, err := currentTools()
	if err != nil {
		return Paths{}, err
	}
	r, err := resolve(src)
	if err != nil {
		return Paths{}, err
	}
	if r.Cached {
		return r.Paths, nil
	}
	root, key, final := filepath.Dir(r.Paths.Dir), r.Key, r.Paths.Dir

	if err := os.MkdirAll(root, 0o755); err != nil {
		return Paths{}, fmt.Errorf("controlplane: creating cache root: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(root, key+".lock"), logf)
	if err != nil {
		return Paths{}, err
	}
	defer unlock()
	// Another process may have finished the build while we waited.
	if p := pathsIn(final); p.complete() {
		return p, nil
	}

	// The embedded module is written out next to the build; -trimpath keeps
	// its location out of the binaries.
	scratch := filepath.Join(root, key+".src")
	tools, err := src.materialize(scratch)
	if err != nil {
		return Paths{}, err
	}
	if tools == scratch {
		defer os.RemoveAll(scratch)
	}
	// Build into a scratch directory and rename it into place, so that a
	// killed build never leaves a directory that looks complete.
	partial := filepath.Join(root, key+".partial")
	if err := os.RemoveAll(partial); err != nil {
		return Paths{}, fmt.Errorf("controlplane: clearing stale partial build: %w", err)
	}
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return Paths{}, fmt.Errorf("controlplane: creating build directory: %w", err)
	}
	start := time.Now()
	logf("controlplane: building the Kubernetes and etcd binaries from %s (first run only, ~15 min on 2 cores) into %s", src, final)
	for _, s := range binarySpecs {
		if err := goBuild(ctx, tools, partial, s, logf); err != nil {
			return Paths{}, err
		}
	}
	if err := os.WriteFile(filepath.Join(partial, "BUILD-SPEC"), []byte(buildSpecString()), 0o644); err != nil {
		return Paths{}, fmt.Errorf("controlplane: writing build spec: %w", err)
	}
	if err := os.Rename(partial, final); err != nil {
		return Paths{}, fmt.Errorf("controlplane: publishing build: %w", err)
	}
	logf("controlplane: binaries built in %s", time.Since(start).Round(time.Second))
	return pathsIn(final), nil
}

// goBuild runs one `go build` and reports progress once a minute, so that a
// CI log does not look hung during the long kube-apiserver build.
func goBuild(ctx context.Context, tools, outDir string, s binarySpec, logf Logf) error {
	logf("controlplane: building %s (first run only, %s on 2 cores)…", s.name, s.hint)
	start := time.Now()
	args := []string{"build", "-trimpath", "-ldflags", s.ldflags, "-o", filepath.Join(outDir, s.name), s.pkg}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = tools
	cmd.Env = append(os.Environ(), buildEnv...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// Own process group, killed as a whole on cancellation: `go build`
	// leaves compile/link children otherwise.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("controlplane: starting go build for %s: %w", s.name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("controlplane: go build %s (in %s, CGO_ENABLED=0 go %s): %w\n%s",
					s.name, tools, strings.Join(args, " "), err, tail(out.String(), 40))
			}
			logf("controlplane: built %s in %s", s.name, time.Since(start).Round(time.Second))
			return nil
		case <-tick.C:
			logf("controlplane: still building %s (%s elapsed)…", s.name, time.Since(start).Round(time.Second))
		}
	}
}

// lockFile takes an exclusive flock on path, polling so that ctx can cancel
// the wait. The lock is released when the returned function runs or when the
// process dies, so a crashed build never blocks the next one.
func lockFile(ctx context.Context, path string, logf Logf) (func(), error) {
	unlock, err := filelock.Lock(ctx, path, func() { logf("controlplane: another process is building the binaries; waiting for %s", path) })
	if err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	return unlock, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailFile returns the last n lines of a file, reading at most its last 64 KiB.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const max = 64 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		if _, err := f.Seek(st.Size()-max, io.SeekStart); err != nil {
			return fmt.Sprintf("(cannot seek %s: %v)", path, err)
		}
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	return tail(string(data), n)
}
