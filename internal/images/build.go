package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// epoch is the time of every file and of the config, so that the same
// inputs give the same bytes.
var epoch = time.Unix(0, 0).UTC()

// errSourceChanged: the inputs of a Go image changed while it was built.
var errSourceChanged = errors.New("images: the source changed during the build")

// builder builds cache entries; it runs with the cache lock held.
type builder struct {
	root  string
	in    *inputs
	logf  func(string, ...any)
	built []spec
}

func (b *builder) build(ctx context.Context, missing []spec) error {
	var goSpecs []spec
	for _, s := range missing {
		if s.pkg != "" {
			goSpecs = append(goSpecs, s)
		}
	}
	var binDir, revision string
	if len(goSpecs) > 0 {
		// One `go build` for all of them: the go command shares the work.
		binDir = filepath.Join(b.root, ".gobuild.partial")
		if err := os.RemoveAll(binDir); err != nil {
			return fmt.Errorf("images: clearing stale build directory: %w", err)
		}
		if err := os.MkdirAll(binDir, 0o755); err != nil {
			return fmt.Errorf("images: creating build directory: %w", err)
		}
		defer os.RemoveAll(binDir)
		if err := goBuild(ctx, b.in.src, binDir, goSpecs, b.logf); err != nil {
			return err
		}
		again, err := listKeys(ctx, b.in, goSpecs)
		if err != nil {
			return err
		}
		for _, s := range goSpecs {
			if again[s.name].Key != b.in.keys[s.name] {
				return fmt.Errorf("%w (inputs of %s)", errSourceChanged, s.name)
			}
		}
		revision = gitRevision(ctx, b.in.src)
	}
	for _, s := range missing {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("images: building %s: %w", s.name, err)
		}
		var files []entry
		labels := map[string]string{}
		if s.pkg != "" {
			bin := filepath.Join(binDir, path.Base(s.pkg))
			if err := checkStatic(bin); err != nil {
				return fmt.Errorf("images: %s: %w", s.name, err)
			}
			files = append(files, entry{name: s.binary, mode: 0o755, src: bin})
			labels["org.opencontainers.image.source"] = "https://" + ModulePath
			if revision != "" {
				labels["org.opencontainers.image.revision"] = revision
			}
		} else {
			bb, err := busyboxEntries(ctx, b.in.busybox, s.binary)
			if err != nil {
				return err
			}
			files = append(files, bb...)
			maps.Copy(labels, debianLabels(ctx, b.in.busybox))
		}
		if err := b.assemble(s, files, labels); err != nil {
			return err
		}
		b.built = append(b.built, s)
		prune(b.root, s.name, b.in.keys[s.name], b.logf)
	}
	return nil
}

// goBuild builds the main packages of specs into outDir, in its own process
// group killed as a whole on cancellation (`go build` leaves compile and
// link children otherwise), with a progress line every 30 s.
func goBuild(ctx context.Context, src, outDir string, specs []spec, logf func(string, ...any)) error {
	var pkgs []string
	for _, s := range specs {
		pkgs = append(pkgs, s.pkg)
	}
	return goBuildIn(ctx, src, goBuildEnv, outDir, pkgs, specs, logf)
}

// goBuildIn runs `go build` of pkgs in dir with env added to the caller's.
func goBuildIn(ctx context.Context, src string, env []string, outDir string, pkgs []string, specs []spec, logf func(string, ...any)) error {
	args := append([]string{"build"}, goBuildFlags...)
	args = append(args, "-o", outDir+string(filepath.Separator))
	args = append(args, pkgs...)
	logf("images: building %s from %s (%s go %s)", strings.Join(specNames(specs), ", "), src, strings.Join(env, " "), strings.Join(args, " "))
	start := time.Now()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = src
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("images: starting go build: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			if ctx.Err() != nil {
				return fmt.Errorf("images: go build %s: %w", strings.Join(specNames(specs), " "), ctx.Err())
			}
			if err != nil {
				return fmt.Errorf("images: go build in %s (go %s): %w\n%s", src, strings.Join(args, " "), err, tail(out.String(), 40))
			}
			logf("images: go build done in %s", time.Since(start).Round(10*time.Millisecond))
			return nil
		case <-tick.C:
			logf("images: still building %s (%s elapsed)…", strings.Join(specNames(specs), ", "), time.Since(start).Round(time.Second))
		}
	}
}

// assemble writes the image of s into <name>/<key>.partial and renames it
// to <name>/<key>.
func (b *builder) assemble(s spec, files []entry, labels map[string]string) (err error) {
	key := b.in.keys[s.name]
	final := entryDir(b.root, s.name, key)
	partial := final + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return fmt.Errorf("images: clearing stale partial build of %s: %w", s.name, err)
	}
	// A final directory that lookup refused (unreadable metadata) is replaced.
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("images: removing broken cache entry of %s: %w", s.name, err)
	}
	if err := os.MkdirAll(partial, 0o755); err != nil {
		return fmt.Errorf("images: creating build directory for %s: %w", s.name, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(partial)
		}
	}()

	layerPath := filepath.Join(partial, "layer.tar.gz")
	if err := writeLayer(layerPath, withSkeleton(files), epoch); err != nil {
		return fmt.Errorf("images: writing the layer of %s: %w", s.name, err)
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return fmt.Errorf("images: reading back the layer of %s: %w", s.name, err)
	}
	cf := &v1.ConfigFile{
		Architecture: "amd64",
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config: v1.Config{
			Entrypoint: s.entrypoint,
			Cmd:        s.cmd,
			Env:        []string{PathEnv},
			WorkingDir: "/",
			User:       "0",
		},
	}
	img, err := mutate.ConfigFile(empty.Image, cf)
	if err != nil {
		return fmt.Errorf("images: config of %s: %w", s.name, err)
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "flowplace internal/images: " + s.name},
	})
	if err != nil {
		return fmt.Errorf("images: adding the layer of %s: %w", s.name, err)
	}
	// The tag is the config digest before labels: layer diffID, entrypoint,
	// env, ... but not the revision, which changes with every commit.
	content, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("images: digest of %s: %w", s.name, err)
	}
	if len(labels) > 0 {
		c := cf.Config.DeepCopy()
		c.Labels = labels
		if img, err = mutate.Config(img, *c); err != nil {
			return fmt.Errorf("images: labels of %s: %w", s.name, err)
		}
	}
	tag, err := name.NewTag(Registry+"/"+s.name+":"+content.Hex[:16], name.StrictValidation)
	if err != nil {
		return fmt.Errorf("images: ref of %s: %w", s.name, err)
	}
	digest, err := img.ConfigName()
	if err != nil {
		return fmt.Errorf("images: config digest of %s: %w", s.name, err)
	}
	if err := writeTarball(filepath.Join(partial, tarballFile), tag, img); err != nil {
		return fmt.Errorf("images: writing %s: %w", s.name, err)
	}
	if err := os.Remove(layerPath); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	m := metadata{
		Image:  Image{Name: s.name, Ref: tag.String(), Digest: digest.String()},
		Key:    key,
		Inputs: b.in.desc[s.name],
		Built:  time.Now().UTC(),
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if err := os.WriteFile(filepath.Join(partial, metadataFile), append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("images: writing metadata of %s: %w", s.name, err)
	}
	if err := os.Rename(partial, final); err != nil {
		return fmt.Errorf("images: publishing %s: %w", s.name, err)
	}
	b.logf("images: %s -> %s", m.Ref, filepath.Join(final, tarballFile))
	return nil
}

// writeTarball writes the docker-archive and syncs it, so that a crash after
// the rename cannot leave a complete-looking entry with a truncated tarball.
func writeTarball(p string, tag name.Tag, img v1.Image) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	if err := tarball.Write(tag, img, w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// entry is one file of a layer: a directory, a regular file copied from src
// or holding data, or a symlink to link.
type entry struct {
	name string // absolute path in the image
	mode int64
	dir  bool
	src  string
	data []byte
	link string
	uid  int // owner; 0 unless set
	gid  int
}

// withSkeleton adds what every image has besides its executables: /tmp for
// os.TempDir, /etc/passwd and /etc/group naming uid 0, and every parent
// directory. Sorted by path, parents first.
func withSkeleton(files []entry) []entry {
	return withParents(append(slices.Clone(files),
		entry{name: "/tmp", dir: true, mode: 0o1777},
		entry{name: "/etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		entry{name: "/etc/group", mode: 0o644, data: []byte("root:x:0:\nnogroup:x:65534:\n")},
	))
}

// withParents adds every missing parent directory of files (root-owned,
// 0755) and sorts them by path, parents first.
func withParents(all []entry) []entry {
	seen := map[string]bool{}
	for _, e := range all {
		seen[e.name] = true
	}
	for _, e := range all {
		for d := path.Dir(e.name); d != "/" && !seen[d]; d = path.Dir(d) {
			seen[d] = true
			all = append(all, entry{name: d, dir: true, mode: 0o755})
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.name, b.name) })
	return all
}

// writeLayer writes the gzipped tar of files. Compressing here once, rather
// than letting go-containerregistry gzip an uncompressed tar, halves the
// work: it would compress once for the digest and again for the tarball.
func writeLayer(p string, files []entry, mtime time.Time) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.BestSpeed)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	for _, e := range files {
		if err := writeEntry(tw, e, mtime); err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

func writeEntry(tw *tar.Writer, e entry, mtime time.Time) error {
	h := &tar.Header{
		Name:    strings.TrimPrefix(e.name, "/"),
		Mode:    e.mode,
		Uid:     e.uid,
		Gid:     e.gid,
		ModTime: mtime,
		Format:  tar.FormatPAX,
	}
	switch {
	case e.dir:
		h.Typeflag = tar.TypeDir
		h.Name += "/"
		return tw.WriteHeader(h)
	case e.link != "":
		h.Typeflag = tar.TypeSymlink
		h.Linkname = e.link
		h.Mode = 0o777
		return tw.WriteHeader(h)
	case e.src == "":
		h.Typeflag = tar.TypeReg
		h.Size = int64(len(e.data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	h.Typeflag = tar.TypeReg
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("copying %s (changed while building?): %w", e.src, err)
	}
	return nil
}

// checkStatic refuses anything a from-scratch linux/amd64 image cannot run:
// not an ELF executable, another architecture, or dynamically linked (a
// PT_INTERP program header names a loader such an image does not have).
func checkStatic(p string) error { return checkStaticFor(p, "amd64") }

// elfMachines maps the GOARCHes images are built for to their ELF machine.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkStaticFor is checkStatic for linux/arch.
func checkStaticFor(p, arch string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s is not an ELF executable: %w", p, err)
	}
	defer f.Close()
	if m, ok := elfMachines[arch]; !ok || f.Machine != m || f.Class != elf.ELFCLASS64 {
		return fmt.Errorf("%s is for %s, not linux/%s", p, f.Machine, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s is an ELF %s, not an executable", p, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		interp, _ := io.ReadAll(io.LimitReader(prog.Open(), 4096))
		return fmt.Errorf("%s is dynamically linked (interpreter %s), which a from-scratch image cannot run; use a static build (CGO_ENABLED=0)",
			p, strings.TrimRight(string(interp), "\x00"))
	}
	return nil
}

// busyboxEntries is the busybox binary at binary and a symlink to it for
// every applet it lists (sh, sleep, cat, wget, nc, ...), where busybox
// itself would install them.
func busyboxEntries(ctx context.Context, bb, binary string) ([]entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bb, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("images: listing the applets of %s: %w", bb, err)
	}
	files := []entry{{name: binary, mode: 0o755, src: bb}}
	seen := map[string]bool{binary: true}
	for _, line := range strings.Fields(string(out)) {
		p := path.Clean("/" + line)
		if p == "/" || seen[p] || strings.Contains(line, "..") {
			continue
		}
		seen[p] = true
		files = append(files, entry{name: p, link: binary})
	}
	if len(files) < 10 {
		return nil, fmt.Errorf("images: %s --list-full listed %d applets; is it busybox?", bb, len(files)-1)
	}
	return files, nil
}

// debianLabels names the Debian package that installed p, when dpkg knows.
func debianLabels(ctx context.Context, p string) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "dpkg-query", "-S", p).Output()
	if err != nil {
		return nil
	}
	pkg, _, ok := strings.Cut(strings.TrimSpace(string(out)), ":")
	if !ok || strings.ContainsAny(pkg, " ,") {
		return nil
	}
	ver, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		return nil
	}
	return map[string]string{
		"org.opencontainers.image.source":  "https://packages.debian.org/" + pkg,
		"org.opencontainers.image.version": strings.TrimSpace(string(ver)),
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
