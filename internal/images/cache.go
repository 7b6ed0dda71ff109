package images

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowplace/flowplace/internal/filelock"
)

// layoutVersion is hashed into every cache key. Bump it when a change here
// alters what goes into an image but not the inputs that are hashed (the
// busybox image's key does not cover this package's source).
const layoutVersion = "1"

// Cache layout, under CacheDir():
//
//	<name>/<key>/image.tar    docker-archive (tarball.Write), imported by ctr
//	<name>/<key>/image.json   Image without Tarball, plus the key's inputs
//	<name>/<key>.partial/     an unfinished build, renamed to <key>/ when done
//	.lock                     flock held while building
//
// <key>/ only ever appears by renaming a finished .partial, so its existence
// means complete.
const (
	tarballFile  = "image.tar"
	metadataFile = "image.json"
)

// CacheDir is ${FLOWPLACE_CACHE:-$HOME/.cache/flowplace}/images.
func CacheDir() (string, error) {
	base := os.Getenv("FLOWPLACE_CACHE")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("images: no FLOWPLACE_CACHE and no home directory: %w", err)
		}
		base = filepath.Join(home, ".cache", "flowplace")
	}
	abs, err := filepath.Abs(filepath.Join(base, "images"))
	if err != nil {
		return "", fmt.Errorf("images: cache directory: %w", err)
	}
	return abs, nil
}

func entryDir(root, name, key string) string { return filepath.Join(root, name, key) }

// metadata is image.json.
type metadata struct {
	Image
	Key    string    `json:"key"`
	Inputs string    `json:"inputs"` // what was hashed into Key, for a human
	Built  time.Time `json:"built"`
}

// lookup returns the cached image for key, if its entry is complete.
func lookup(root, name, key string) (Image, bool) {
	dir := entryDir(root, name, key)
	data, err := os.ReadFile(filepath.Join(dir, metadataFile))
	if err != nil {
		return Image{}, false
	}
	var m metadata
	if json.Unmarshal(data, &m) != nil || m.Name != name || m.Key != key || m.Ref == "" || m.Digest == "" {
		return Image{}, false
	}
	tb := filepath.Join(dir, tarballFile)
	if st, err := os.Stat(tb); err != nil || !st.Mode().IsRegular() {
		return Image{}, false
	}
	img := m.Image
	img.Tarball = tb
	return img, true
}

// Each edit of an agent dependency adds a ~20 MB entry, so after a build the
// entries of that image beyond the newest keepEntries, built more than
// pruneAge ago, are removed. Another process could still be importing one of
// them (if it got it from a warm Build on an old tree); pruning old ones only
// makes that rare, and a later Build of that key rebuilds it.
const (
	keepEntries = 3
	pruneAge    = 24 * time.Hour
)

// prune removes old entries of name, never keep; it runs under the lock and
// only logs failures (the build itself succeeded).
func prune(root, name, keep string, logf func(string, ...any)) {
	dirs, err := os.ReadDir(filepath.Join(root, name))
	if err != nil {
		return
	}
	type aged struct {
		dir   string
		built time.Time
	}
	var entries []aged
	for _, d := range dirs {
		if !d.IsDir() || d.Name() == keep || strings.Contains(d.Name(), ".") {
			continue
		}
		st, err := os.Stat(filepath.Join(root, name, d.Name(), metadataFile))
		if err != nil {
			continue
		}
		entries = append(entries, aged{filepath.Join(root, name, d.Name()), st.ModTime()})
	}
	slices.SortFunc(entries, func(a, b aged) int { return b.built.Compare(a.built) })
	for i, e := range entries {
		if i+1 < keepEntries || time.Since(e.built) < pruneAge {
			continue
		}
		if err := os.RemoveAll(e.dir); err != nil {
			logf("images: pruning %s: %v", e.dir, err)
		}
	}
	// Memos of tree states are a few KB each; drop those not written lately.
	memos, _ := filepath.Glob(filepath.Join(root, ".keys", "*.json"))
	for _, m := range memos {
		if st, err := os.Stat(m); err == nil && time.Since(st.ModTime()) > 7*pruneAge {
			os.Remove(m)
		}
	}
}

// FindSourceDir walks up from dir to the root of the flowplace module, for
// callers (tests, `make images`) that run somewhere inside it.
func FindSourceDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	for d := abs; ; d = filepath.Dir(d) {
		if mod, err := modulePath(filepath.Join(d, "go.mod")); err == nil && mod == ModulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("images: no go.mod of %s in %s or above", ModulePath, abs)
		}
	}
}

// checkSource refuses a SourceDir that is not the flowplace module's root and
// returns it absolute.
func checkSource(dir string) (string, error) {
	if dir == "" {
		return "", errors.New("images: Options.SourceDir is empty; the Go images are built from the flowplace module's root")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("images: source dir %q: %w", dir, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("images: source dir: %w", err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("images: source dir %s is not a directory", abs)
	}
	mod, err := modulePath(filepath.Join(abs, "go.mod"))
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("images: source dir %s is not a module root (no go.mod); want the root of %s", abs, ModulePath)
	}
	if err != nil {
		return "", fmt.Errorf("images: source dir %s: %w", abs, err)
	}
	if mod != ModulePath {
		return "", fmt.Errorf("images: source dir %s is the root of module %q, not %s", abs, mod, ModulePath)
	}
	return abs, nil
}

// modulePath reads the module directive of a go.mod.
func modulePath(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "//"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		rest, ok := strings.CutPrefix(line, "module")
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '\t') {
			continue
		}
		rest = strings.TrimSpace(rest)
		if unq, err := strconv.Unquote(rest); err == nil {
			rest = unq
		}
		if rest != "" {
			return rest, nil
		}
	}
	return "", fmt.Errorf("%s has no module directive", gomod)
}

// inputs is everything resolved and checked before the cache is touched.
type inputs struct {
	src     string            // module root, when a Go image is wanted
	goVer   string            // `go env` of the go command that builds
	busybox string            // absolute path of the busybox executable
	keys    map[string]string // name -> cache key
	desc    map[string]string // name -> what the key covers
}

// goBuildEnv is added to every `go build`: a static linux/amd64 binary
// whatever the caller's environment (a from-scratch image has no loader);
// GOFLAGS and GOWORK cleared so that e.g. -race from a test run or a
// workspace cannot change the bytes under a key that does not say so.
var goBuildEnv = []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOWORK=off", "GOFLAGS=", "GOEXPERIMENT="}

// goBuildFlags: -trimpath and no VCS stamp make the binary a function of the
// source alone, so an unchanged tree rebuilds to the same tag.
var goBuildFlags = []string{"-trimpath", "-buildvcs=false", "-ldflags=-s -w"}

// resolveInputs checks the inputs of want and computes their cache keys.
// Nothing is written but the memo of Go keys (keys.go).
func resolveInputs(ctx context.Context, o Options, root string, want []spec) (*inputs, error) {
	in := &inputs{keys: map[string]string{}, desc: map[string]string{}}
	var goSpecs []spec
	for _, s := range want {
		if s.pkg != "" {
			goSpecs = append(goSpecs, s)
			continue
		}
		bb := o.Busybox
		if bb == "" {
			bb = DefaultBusybox
		}
		abs, err := filepath.Abs(bb)
		if err != nil {
			return nil, fmt.Errorf("images: busybox %q: %w", bb, err)
		}
		if err := checkStatic(abs); err != nil {
			return nil, fmt.Errorf("images: busybox: %w (on Debian: apt-get install busybox-static)", err)
		}
		sum, err := fileHash(abs)
		if err != nil {
			return nil, fmt.Errorf("images: busybox: %w", err)
		}
		in.busybox = abs
		desc := fmt.Sprintf("layout=%s\nname=%s\nbinary=%s\nsha256=%s\n", layoutVersion, s.name, s.binary, sum)
		in.keys[s.name], in.desc[s.name] = hashString(desc), desc
	}
	if len(goSpecs) == 0 {
		return in, nil
	}
	src, err := checkSource(o.SourceDir)
	if err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("go"); err != nil {
		return nil, fmt.Errorf("images: building %s needs the go command: %w", goSpecs[0].name, err)
	}
	ver, err := goEnv(ctx, src)
	if err != nil {
		return nil, err
	}
	in.src, in.goVer = src, ver
	if err := goKeys(ctx, root, in, goSpecs); err != nil {
		return nil, err
	}
	return in, nil
}

func hashString(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// goEnv identifies the toolchain that will build, as run in the module (a
// toolchain line in go.mod can switch it).
func goEnv(ctx context.Context, src string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "env", "GOVERSION", "GOROOT")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), goBuildEnv...)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", fmt.Errorf("images: go env in %s: %w", src, err)
	}
	return strings.Join(strings.Fields(string(out)), " "), nil
}

func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// lockCache creates the cache directory and takes an exclusive flock on its
// .lock, polling so that ctx can cancel the wait. The kernel drops the lock
// when the process dies, so a killed build never blocks the next one. (The
// same scheme as world/controlplane's binaries.)
func lockCache(ctx context.Context, root string, logf func(string, ...any)) (func(), error) {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("images: creating the cache directory: %w", err)
	}
	path := filepath.Join(root, ".lock")
	unlock, err := filelock.Lock(ctx, path, func() { logf("images: another process is building images; waiting for %s", path) })
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	return unlock, nil
}
