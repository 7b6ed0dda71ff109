// Package images builds the lab's container images on this machine, from
// scratch: there is no container daemon and nothing can be pulled. Each image
// is one layer on go-containerregistry's empty.Image, written as a
// docker-archive tarball (what `ctr -n k8s.io images import` reads), and
// cached under ${FLOWPLACE_CACHE:-$HOME/.cache/flowplace}/images keyed on its
// inputs, so a warm Build is a hash of the source tree and a few stats.
//
// Refs are flowplace.local/<name>:<tag>, the tag derived from the image's
// runtime content (layer and config, without labels), so a changed binary
// gets a new tag and an unchanged one keeps it across rebuilds.
package images

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// ModulePath is the module the Go images are built from; Options.SourceDir
// must be its root.
const ModulePath = "github.com/flowplace/flowplace"

// Registry is the registry part of every ref. It is never contacted: images
// are imported into containerd, so pods must use imagePullPolicy Never or
// IfNotPresent.
const Registry = "flowplace.local"

// The images Build knows.
const (
	Pause     = "pause"               // sandbox image: blocks until SIGTERM
	Busybox   = "busybox"             // Debian's busybox-static with applet links, for shells in tests
	Agent     = "flowplace-agent"     // ./cmd/flowplace-agent
	Estimator = "flowplace-estimator" // ./cmd/flowplace-estimator
	CLI       = "flowplace"           // ./cmd/flowplace (the demo shop's `flowplace lab-service`)
)

// DefaultBusybox is where Debian's busybox-static installs its binary.
const DefaultBusybox = "/bin/busybox"

// PathEnv is the PATH of every image.
const PathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// spec is what goes into one image.
type spec struct {
	name       string
	pkg        string // Go main package relative to the module root; "" for busybox
	binary     string // absolute path of the executable inside the image
	entrypoint []string
	cmd        []string
}

var specs = []spec{
	{name: Pause, pkg: "./internal/images/pause", binary: "/pause", entrypoint: []string{"/pause"}},
	// Entrypoint left empty like Docker's busybox, so that a pod's command
	// (or ctr's args) names the applet.
	{name: Busybox, binary: "/bin/busybox", cmd: []string{"sh"}},
	{name: Agent, pkg: "./cmd/flowplace-agent", binary: "/usr/local/bin/flowplace-agent", entrypoint: []string{"/usr/local/bin/flowplace-agent"}},
	{name: Estimator, pkg: "./cmd/flowplace-estimator", binary: "/usr/local/bin/flowplace-estimator", entrypoint: []string{"/usr/local/bin/flowplace-estimator"}},
	{name: CLI, pkg: "./cmd/flowplace", binary: "/usr/local/bin/flowplace", entrypoint: []string{"/usr/local/bin/flowplace"}},
}

// Names returns the name of every image Build knows, in build order.
func Names() []string {
	out := make([]string, len(specs))
	for i, s := range specs {
		out[i] = s.name
	}
	return out
}

// Options says where the inputs are.
type Options struct {
	// SourceDir is the root of the flowplace module; needed for every image
	// but busybox.
	SourceDir string
	// Busybox is a static busybox executable; DefaultBusybox when empty.
	Busybox string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Image is one built image.
type Image struct {
	Name string `json:"name"`
	Ref  string `json:"ref"` // flowplace.local/<name>:<tag>
	// Digest is the image ID, sha256:<hex> of the config: import keeps it
	// (kubelet's imageID and `crictl images` show it), whereas the manifest
	// that `ctr images ls` lists is one containerd writes at import.
	Digest  string `json:"digest"`
	Tarball string `json:"-"` // docker-archive to import; do not modify
}

// Build returns the named images (all of Names() when none are named),
// building those whose inputs are not cached yet. Unknown names, a missing
// or wrong SourceDir, no go command, or a busybox that is not a static ELF
// are refused before anything is written. Concurrent callers (several test
// packages) serialize on a lock file; a build that fails or is killed leaves
// no entry that looks complete.
func Build(ctx context.Context, o Options, names ...string) ([]Image, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	want, err := selectSpecs(names)
	if err != nil {
		return nil, err
	}
	root, err := CacheDir()
	if err != nil {
		return nil, err
	}
	in, err := resolveInputs(ctx, o, root, want)
	if err != nil {
		return nil, err
	}

	if out, missing := lookupAll(root, want, in.keys); len(missing) == 0 {
		return out, nil
	}

	unlock, err := lockCache(ctx, root, logf)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have built some of them while we waited.
	out, missing := lookupAll(root, want, in.keys)
	if len(missing) == 0 {
		return out, nil
	}
	start := time.Now()
	b := &builder{root: root, in: in, logf: logf}
	for attempt := 1; ; attempt++ {
		err := b.build(ctx, missing)
		if err == nil {
			break
		}
		if !errors.Is(err, errSourceChanged) || attempt == 3 {
			return nil, err
		}
		// Edited during the build (a shared working tree): the binaries may
		// not be what the keys say, so start over from the new sources.
		logf("%v; building again", err)
		if b.in, err = resolveInputs(ctx, o, root, want); err != nil {
			return nil, err
		}
		if out, missing = lookupAll(root, want, b.in.keys); len(missing) == 0 {
			return out, nil
		}
	}
	in = b.in
	if out, missing = lookupAll(root, want, in.keys); len(missing) > 0 {
		return nil, fmt.Errorf("images: %s not in the cache right after building it (%s)",
			missing[0].name, entryDir(root, missing[0].name, in.keys[missing[0].name]))
	}
	logf("images: built %s in %s", strings.Join(specNames(b.built), ", "), time.Since(start).Round(10*time.Millisecond))
	return out, nil
}

// selectSpecs maps names to specs, in the order given, without duplicates.
func selectSpecs(names []string) ([]spec, error) {
	if len(names) == 0 {
		return slices.Clone(specs), nil
	}
	var out []spec
	for _, n := range names {
		i := slices.IndexFunc(specs, func(s spec) bool { return s.name == n })
		if i < 0 {
			return nil, fmt.Errorf("images: unknown image %q (known: %s)", n, strings.Join(Names(), ", "))
		}
		if !slices.ContainsFunc(out, func(s spec) bool { return s.name == n }) {
			out = append(out, specs[i])
		}
	}
	return out, nil
}

func specNames(ss []spec) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.name
	}
	return out
}

// lookupAll returns the cached images of want, in order, and the specs of
// those that are not cached.
func lookupAll(root string, want []spec, keys map[string]string) ([]Image, []spec) {
	var found []Image
	var missing []spec
	for _, s := range want {
		if img, ok := lookup(root, s.name, keys[s.name]); ok {
			found = append(found, img)
		} else {
			missing = append(missing, s)
		}
	}
	return found, missing
}

// gitRevision is HEAD of dir with "-dirty" when tracked or untracked files
// differ from it, for the revision label; "" when dir is not a git checkout.
// Only asked on a build, so a warm Build never runs git.
func gitRevision(ctx context.Context, dir string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	head, err := exec.CommandContext(ctx, "git", "-C", dir, "rev-parse", "--verify", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(head))
	status, err := exec.CommandContext(ctx, "git", "-C", dir, "status", "--porcelain").Output()
	if err != nil || len(strings.TrimSpace(string(status))) > 0 {
		rev += "-dirty"
	}
	return rev
}
