package images

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testCache is the FLOWPLACE_CACHE of every test that does not set its own:
// a fresh directory per run, so that the first Build below is a cold one.
var testCache string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flowplace-images-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testCache = dir
	os.Setenv("FLOWPLACE_CACHE", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var all struct {
	once sync.Once
	imgs []Image
	err  error
	cold time.Duration
	logs []string
}

// builtImages builds every image once per test binary, from this
// repository, into testCache.
func builtImages(t *testing.T) []Image {
	t.Helper()
	all.once.Do(func() {
		src, err := FindSourceDir(".")
		if err != nil {
			all.err = err
			return
		}
		var mu sync.Mutex
		start := time.Now()
		all.imgs, all.err = Build(context.Background(), Options{SourceDir: src, Logf: func(f string, a ...any) {
			mu.Lock()
			defer mu.Unlock()
			all.logs = append(all.logs, fmt.Sprintf(f, a...))
		}})
		all.cold = time.Since(start)
	})
	if all.err != nil {
		t.Fatalf("building the images: %v", all.err)
	}
	return all.imgs
}

// logRecorder is an Options.Logf that keeps the lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) logf(f string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, fmt.Sprintf(f, a...))
}

// built reports whether a build ran (a go build or a new cache entry).
func (r *logRecorder) built() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, "images: building") || strings.Contains(l, "->") {
			return true
		}
	}
	return false
}

// layerFile is one entry of an image's layer.
type layerFile struct {
	hdr  *tar.Header
	data []byte
}

// readImage reads a docker-archive back with go-containerregistry.
func readImage(t *testing.T, img Image) (v1.Image, *v1.ConfigFile, map[string]layerFile) {
	t.Helper()
	tag, err := name.NewTag(img.Ref, name.StrictValidation)
	if err != nil {
		t.Fatalf("%s: ref %q: %v", img.Name, img.Ref, err)
	}
	im, err := tarball.ImageFromPath(img.Tarball, &tag)
	if err != nil {
		t.Fatalf("%s: reading %s: %v", img.Name, img.Tarball, err)
	}
	cf, err := im.ConfigFile()
	if err != nil {
		t.Fatalf("%s: config: %v", img.Name, err)
	}
	layers, err := im.Layers()
	if err != nil {
		t.Fatalf("%s: layers: %v", img.Name, err)
	}
	if len(layers) != 1 {
		t.Fatalf("%s: %d layers, want 1", img.Name, len(layers))
	}
	if mt, err := layers[0].MediaType(); err != nil || mt != types.DockerLayer {
		t.Errorf("%s: layer media type %q (%v), want %q", img.Name, mt, err, types.DockerLayer)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatalf("%s: layer: %v", img.Name, err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: layer tar: %v", img.Name, err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: layer tar %s: %v", img.Name, h.Name, err)
		}
		p := "/" + strings.TrimSuffix(h.Name, "/")
		if _, dup := files[p]; dup {
			t.Errorf("%s: %s twice in the layer", img.Name, p)
		}
		files[p] = layerFile{hdr: h, data: data}
	}
	return im, cf, files
}

func byName(t *testing.T, imgs []Image, n string) Image {
	t.Helper()
	for _, img := range imgs {
		if img.Name == n {
			return img
		}
	}
	t.Fatalf("no image %q in %v", n, imgs)
	return Image{}
}

var tagRE = regexp.MustCompile(`^flowplace\.local/([a-z-]+):([0-9a-f]{16})$`)

func TestImagesReadBack(t *testing.T) {
	imgs := builtImages(t)
	t.Logf("cold build of %d images: %s", len(imgs), all.cold.Round(time.Millisecond))
	if got := slices.Collect(func(yield func(string) bool) {
		for _, img := range imgs {
			if !yield(img.Name) {
				return
			}
		}
	}); !slices.Equal(got, Names()) {
		t.Fatalf("Build() returned %v, want %v", got, Names())
	}
	src, _ := FindSourceDir(".")
	head, _ := exec.Command("git", "-C", src, "rev-parse", "HEAD").Output()

	type want struct {
		binary     string
		entrypoint []string
		cmd        []string
		goBinary   bool
	}
	wants := map[string]want{
		Pause:     {binary: "/pause", entrypoint: []string{"/pause"}, goBinary: true},
		Busybox:   {binary: "/bin/busybox", cmd: []string{"sh"}},
		Agent:     {binary: "/usr/local/bin/flowplace-agent", entrypoint: []string{"/usr/local/bin/flowplace-agent"}, goBinary: true},
		Estimator: {binary: "/usr/local/bin/flowplace-estimator", entrypoint: []string{"/usr/local/bin/flowplace-estimator"}, goBinary: true},
		CLI:       {binary: "/usr/local/bin/flowplace", entrypoint: []string{"/usr/local/bin/flowplace"}, goBinary: true},
	}
	tags := map[string]string{}
	for _, img := range imgs {
		t.Run(img.Name, func(t *testing.T) {
			w := wants[img.Name]
			m := tagRE.FindStringSubmatch(img.Ref)
			if m == nil || m[1] != img.Name {
				t.Fatalf("ref %q, want flowplace.local/%s:<16 hex>", img.Ref, img.Name)
			}
			if other, dup := tags[m[2]]; dup {
				t.Errorf("tag %s of %s is also %s's", m[2], img.Name, other)
			}
			tags[m[2]] = img.Name

			im, cf, files := readImage(t, img)
			if id, err := im.ConfigName(); err != nil || id.String() != img.Digest {
				t.Errorf("config digest %v (%v), Image.Digest %s", id, err, img.Digest)
			}
			mf, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(img.Tarball) })
			if err != nil || len(mf) != 1 || !slices.Equal(mf[0].RepoTags, []string{img.Ref}) {
				t.Errorf("manifest.json %+v (%v), want one image tagged %s", mf, err, img.Ref)
			}
			if cf.OS != "linux" || cf.Architecture != "amd64" {
				t.Errorf("platform %s/%s, want linux/amd64", cf.OS, cf.Architecture)
			}
			c := cf.Config
			if !slices.Equal(c.Entrypoint, w.entrypoint) || !slices.Equal(c.Cmd, w.cmd) {
				t.Errorf("entrypoint %q cmd %q, want %q %q", c.Entrypoint, c.Cmd, w.entrypoint, w.cmd)
			}
			if !slices.Equal(c.Env, []string{PathEnv}) || c.WorkingDir != "/" || c.User != "0" {
				t.Errorf("env %q workdir %q user %q", c.Env, c.WorkingDir, c.User)
			}
			if w.goBinary {
				if got := c.Labels["org.opencontainers.image.source"]; got != "https://github.com/flowplace/flowplace" {
					t.Errorf("source label %q", got)
				}
				if rev := strings.TrimSpace(string(head)); rev != "" && !strings.HasPrefix(c.Labels["org.opencontainers.image.revision"], rev) {
					t.Errorf("revision label %q, want HEAD %s (maybe -dirty)", c.Labels["org.opencontainers.image.revision"], rev)
				}
			} else if got := c.Labels["org.opencontainers.image.source"]; got != "" && got != "https://packages.debian.org/busybox-static" {
				t.Errorf("busybox source label %q", got)
			}

			for p, f := range files {
				if f.hdr.Uid != 0 || f.hdr.Gid != 0 || !f.hdr.ModTime.Equal(time.Unix(0, 0)) {
					t.Errorf("%s: uid %d gid %d mtime %s, want 0 0 epoch", p, f.hdr.Uid, f.hdr.Gid, f.hdr.ModTime)
				}
				if dir := filepath.Dir(p); dir != "/" {
					if d, ok := files[dir]; !ok || d.hdr.Typeflag != tar.TypeDir {
						t.Errorf("%s: parent %s not a directory in the layer", p, dir)
					}
				}
			}
			if f := files["/tmp"]; f.hdr == nil || f.hdr.Typeflag != tar.TypeDir || f.hdr.Mode != 0o1777 {
				t.Errorf("/tmp: %+v, want a 1777 directory", f.hdr)
			}
			if f := files["/etc/passwd"]; f.hdr == nil || !bytes.HasPrefix(f.data, []byte("root:x:0:0:")) {
				t.Errorf("/etc/passwd missing or without root")
			}
			bin := files[w.binary]
			if bin.hdr == nil || bin.hdr.Typeflag != tar.TypeReg || bin.hdr.Mode != 0o755 || len(bin.data) == 0 {
				t.Fatalf("%s: %+v, want a 0755 regular file", w.binary, bin.hdr)
			}
			// The binary as it is in the image must be a static amd64 ELF.
			exe := filepath.Join(t.TempDir(), "exe")
			if err := os.WriteFile(exe, bin.data, 0o755); err != nil {
				t.Fatal(err)
			}
			ef, err := elf.Open(exe)
			if err != nil {
				t.Fatalf("%s is not ELF: %v", w.binary, err)
			}
			defer ef.Close()
			if ef.Machine != elf.EM_X86_64 {
				t.Errorf("%s: machine %s", w.binary, ef.Machine)
			}
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s has PT_INTERP: dynamically linked", w.binary)
				}
			}
			if w.goBinary {
				bi, err := buildinfo.ReadFile(exe)
				if err != nil {
					t.Fatalf("%s: build info: %v", w.binary, err)
				}
				settings := map[string]string{}
				for _, s := range bi.Settings {
					settings[s.Key] = s.Value
				}
				if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" || settings["GOOS"] != "linux" || settings["GOARCH"] != "amd64" {
					t.Errorf("%s built with %v, want CGO_ENABLED=0 -trimpath linux/amd64", w.binary, settings)
				}
				if _, ok := settings["vcs.revision"]; ok {
					t.Errorf("%s stamps its VCS revision, so every commit would change its tag", w.binary)
				}
				if wantPath := ModulePath + "/" + strings.TrimPrefix(specOf(img.Name).pkg, "./"); bi.Path != wantPath {
					t.Errorf("%s: main package %s, want %s", w.binary, bi.Path, wantPath)
				}
			} else {
				host, err := os.ReadFile(DefaultBusybox)
				if err != nil || !bytes.Equal(host, bin.data) {
					t.Errorf("/bin/busybox differs from %s (%v)", DefaultBusybox, err)
				}
				// Each applet a test shell uses is on PATH as a link to busybox.
				for _, applet := range []string{"sh", "sleep", "cat", "wget", "nc", "echo", "ls", "ip", "nslookup", "timeout"} {
					var found []string
					for _, d := range strings.Split(strings.TrimPrefix(PathEnv, "PATH="), ":") {
						if f, ok := files[d+"/"+applet]; ok && f.hdr.Typeflag == tar.TypeSymlink && f.hdr.Linkname == "/bin/busybox" {
							found = append(found, d)
						}
					}
					if len(found) != 1 {
						t.Errorf("applet %s linked to /bin/busybox in %q, want one PATH directory", applet, found)
					}
				}
			}
		})
	}
}

func specOf(n string) spec {
	i := slices.IndexFunc(specs, func(s spec) bool { return s.name == n })
	return specs[i]
}

// A warm Build reads the cache: the same images, nothing rewritten, nothing
// built, in milliseconds. The tree is shared with other engineers' edits, so
// an image whose inputs changed during the test (a new key, hence a new
// cache directory) is rebuilt, rightly; every other one must be a hit.
func TestWarmBuildIsCacheHit(t *testing.T) {
	cold := builtImages(t)
	src, err := FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	mtimes := map[string]time.Time{}
	for _, img := range cold {
		for _, f := range []string{img.Tarball, filepath.Join(filepath.Dir(img.Tarball), metadataFile)} {
			mtimes[f] = mtime(t, f)
		}
	}
	var rec logRecorder
	start := time.Now()
	warm, err := Build(context.Background(), Options{SourceDir: src, Logf: rec.logf})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(warm) != len(cold) {
		t.Fatalf("warm Build returned %d images, cold %d", len(warm), len(cold))
	}
	var changed []string
	for i, w := range warm {
		c := cold[i]
		if w.Tarball != c.Tarball {
			if w.Name == Pause || w.Name == Busybox {
				t.Errorf("%s: new cache entry %s, but its inputs are not edited by anyone", w.Name, w.Tarball)
			}
			changed = append(changed, w.Name)
			continue
		}
		if w != c {
			t.Errorf("warm %+v, cold %+v", w, c)
		}
		for _, f := range []string{w.Tarball, filepath.Join(filepath.Dir(w.Tarball), metadataFile)} {
			if !mtime(t, f).Equal(mtimes[f]) {
				t.Errorf("%s rewritten by a warm Build", f)
			}
		}
	}
	if len(changed) > 0 {
		t.Logf("inputs of %v changed during the test (an edit in the shared tree); rebuilt in %s", changed, elapsed.Round(time.Millisecond))
		return
	}
	t.Logf("warm Build of %d images: %s (cold %s)", len(warm), elapsed.Round(time.Microsecond), all.cold.Round(time.Millisecond))
	if rec.built() {
		t.Errorf("warm Build built something: %q", rec.lines)
	}
	// Generous: a hit is a tree hash, go env and a few stats (~20 ms); a
	// rebuild of the Go images takes seconds to minutes.
	if elapsed > 2*time.Second {
		t.Errorf("warm Build took %s", elapsed)
	}
}

// The same without a shared tree: a copy of the pause program and busybox,
// built cold then warm.
func TestWarmBuildIsCacheHitHermetic(t *testing.T) {
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	dir, _ := pauseModule(t)
	o := Options{SourceDir: dir}
	cold, err := Build(context.Background(), o, Pause, Busybox)
	if err != nil {
		t.Fatal(err)
	}
	var rec logRecorder
	o.Logf = rec.logf
	start := time.Now()
	warm, err := Build(context.Background(), o, Pause, Busybox)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm Build of pause and busybox: %s", elapsed.Round(time.Microsecond))
	if !slices.Equal(warm, cold) || rec.built() {
		t.Errorf("warm Build: %+v (log %q), want the cold %+v untouched", warm, rec.lines, cold)
	}
	if elapsed > 2*time.Second {
		t.Errorf("warm Build took %s", elapsed)
	}
}

// pauseModule writes a minimal flowplace module holding only the pause
// program, so that a test can change its source.
func pauseModule(t *testing.T) (dir, mainGo string) {
	t.Helper()
	src, err := FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(filepath.Join(src, "internal/images/pause/main.go"))
	if err != nil {
		t.Fatal(err)
	}
	dir = t.TempDir()
	mainGo = filepath.Join(dir, "internal/images/pause/main.go")
	if err := os.MkdirAll(filepath.Dir(mainGo), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module "+ModulePath+"\n\ngo 1.26.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mainGo, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, mainGo
}

func buildOne(t *testing.T, o Options, n string) (Image, bool) {
	t.Helper()
	var rec logRecorder
	o.Logf = rec.logf
	imgs, err := Build(context.Background(), o, n)
	if err != nil {
		t.Fatalf("Build(%s): %v", n, err)
	}
	if len(imgs) != 1 || imgs[0].Name != n {
		t.Fatalf("Build(%s) = %v", n, imgs)
	}
	return imgs[0], rec.built()
}

func mtime(t *testing.T, p string) time.Time {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.ModTime()
}

// The tag follows the binary: an edit elsewhere in the module builds
// nothing, an edit of the program gives a new tag, reverting it the old one,
// and a rebuild from scratch elsewhere the same bytes.
func TestTagFollowsContent(t *testing.T) {
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	dir, mainGo := pauseModule(t)
	o := Options{SourceDir: dir}

	a, built := buildOne(t, o, Pause)
	if !built {
		t.Fatal("first Build in an empty cache did not build")
	}
	aTime := mtime(t, a.Tarball)

	// Not an input of the binary: the tree memo misses, go list finds the
	// same inputs, and the cached image is returned as it is.
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("not an input\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(mainGo), "main_test.go"), []byte("package main\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, built := buildOne(t, o, Pause)
	if built || b != a || !mtime(t, b.Tarball).Equal(aTime) {
		t.Errorf("after an unrelated edit: built=%v %+v, want the cached %+v", built, b, a)
	}

	orig, _ := os.ReadFile(mainGo)
	changed := append(slices.Clone(orig), []byte("\nfunc init() {\n\tif len(os.Args) > 99 {\n\t\tprintln(\"changed\")\n\t}\n}\n")...)
	if err := os.WriteFile(mainGo, changed, 0o644); err != nil {
		t.Fatal(err)
	}
	c, built := buildOne(t, o, Pause)
	if !built || c.Ref == a.Ref || c.Digest == a.Digest || c.Tarball == a.Tarball {
		t.Errorf("after changing the program: built=%v %+v, want a new tag (old %s)", built, c, a.Ref)
	}

	if err := os.WriteFile(mainGo, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	d, built := buildOne(t, o, Pause)
	if built || d != a {
		t.Errorf("after reverting: built=%v %+v, want the first image %+v", built, d, a)
	}

	// Reproducible: a cold build of the same source in another cache gives
	// the same ref and image ID (no git here, so no revision label either).
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	e, built := buildOne(t, o, Pause)
	if !built || e.Ref != a.Ref || e.Digest != a.Digest {
		t.Errorf("cold rebuild: built=%v %s %s, want %s %s", built, e.Ref, e.Digest, a.Ref, a.Digest)
	}
}

// busybox is keyed on the binary's content, not its path.
func TestBusyboxTagFollowsContent(t *testing.T) {
	if err := checkStatic(DefaultBusybox); err != nil {
		t.Skipf("no static busybox (apt-get install busybox-static): %v", err)
	}
	host, _ := buildOne(t, Options{}, Busybox) // SourceDir is not needed
	if !strings.HasPrefix(host.Ref, Registry+"/busybox:") {
		t.Fatalf("ref %s", host.Ref)
	}
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	data, err := os.ReadFile(DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(cp, data, 0o755); err != nil {
		t.Fatal(err)
	}
	same, built := buildOne(t, Options{Busybox: cp}, Busybox)
	// dpkg does not know the copy, so the labels (and the image ID) may
	// differ; the tag covers content only.
	if !built || same.Ref != host.Ref {
		t.Errorf("a copy of %s: built=%v %s, want %s", DefaultBusybox, built, same.Ref, host.Ref)
	}
	if again, built := buildOne(t, Options{Busybox: cp}, Busybox); built || again != same {
		t.Errorf("second Build of the copy: built=%v %+v, want cached %+v", built, again, same)
	}
	// Trailing bytes keep the ELF runnable but change the content.
	if err := os.WriteFile(cp, append(data, 0), 0o755); err != nil {
		t.Fatal(err)
	}
	changed, built := buildOne(t, Options{Busybox: cp}, Busybox)
	if !built || changed.Ref == same.Ref {
		t.Errorf("changed busybox: built=%v %s, want a tag other than %s", built, changed.Ref, same.Ref)
	}
}

// Bad input is refused with a clear error before anything is written.
func TestBadInput(t *testing.T) {
	cache := filepath.Join(t.TempDir(), "cache")
	t.Setenv("FLOWPLACE_CACHE", cache)
	src, err := FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	noMod := t.TempDir()
	otherMod := t.TempDir()
	if err := os.WriteFile(filepath.Join(otherMod, "go.mod"), []byte("module example.com/other\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hi\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dynamic, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		o     Options
		names []string
		want  string
	}{
		{"unknown image", Options{SourceDir: src}, []string{Pause, "nginx"}, `unknown image "nginx" (known: pause, busybox, flowplace-agent, flowplace-estimator, flowplace)`},
		{"empty name", Options{SourceDir: src}, []string{""}, `unknown image ""`},
		{"no source dir", Options{}, []string{Agent}, "Options.SourceDir is empty"},
		{"missing source dir", Options{SourceDir: filepath.Join(noMod, "nope")}, []string{Pause}, "no such file or directory"},
		{"source is a file", Options{SourceDir: filepath.Join(src, "go.mod")}, []string{Pause}, "is not a directory"},
		{"not a module root", Options{SourceDir: noMod}, []string{Pause}, "is not a module root (no go.mod)"},
		{"subdirectory of the module", Options{SourceDir: filepath.Join(src, "internal", "images")}, []string{CLI}, "is not a module root (no go.mod)"},
		{"another module", Options{SourceDir: otherMod}, nil, `is the root of module "example.com/other", not github.com/flowplace/flowplace`},
		{"dynamic busybox", Options{Busybox: dynamic}, []string{Busybox}, "is dynamically linked (interpreter /lib64/ld-linux-x86-64.so.2)"},
		{"script as busybox", Options{Busybox: script}, []string{Busybox}, "is not an ELF executable"},
		{"non-executable busybox", Options{Busybox: filepath.Join(src, "go.mod")}, []string{Busybox}, "is not an executable file"},
		{"missing busybox", Options{Busybox: filepath.Join(noMod, "busybox")}, []string{Busybox}, "no such file or directory"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			imgs, err := Build(context.Background(), tc.o, tc.names...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build = %v, %v; want an error containing %q", imgs, err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "images: ") {
				t.Errorf("error %q does not say where it comes from", err)
			}
			if _, err := os.Stat(cache); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cache directory %s created by a refused Build (%v)", cache, err)
			}
		})
	}
}

// A failed, interrupted or killed build leaves nothing that looks complete,
// and the next Build succeeds.
func TestFailedBuildLeavesNothing(t *testing.T) {
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	root, err := CacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir, mainGo := pauseModule(t)
	orig, _ := os.ReadFile(mainGo)
	entries := func() []string {
		m, _ := filepath.Glob(filepath.Join(root, Pause, "*"))
		g, _ := filepath.Glob(filepath.Join(root, ".gobuild*"))
		return append(m, g...)
	}

	if err := os.WriteFile(mainGo, append(slices.Clone(orig), []byte("\nvar broken = undefinedThing\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Build(context.Background(), Options{SourceDir: dir}, Pause)
	if err == nil || !strings.Contains(err.Error(), "undefined: undefinedThing") {
		t.Fatalf("Build of a broken program = %v, want the compiler's error", err)
	}
	if e := entries(); len(e) != 0 {
		t.Errorf("failed build left %v", e)
	}

	// Interrupted while go build runs: with an empty GOCACHE it compiles the
	// runtime for seconds, so the cancel lands mid-build and the process
	// group must be killed promptly.
	if err := os.WriteFile(mainGo, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Run("interrupted", func(t *testing.T) {
		t.Setenv("GOCACHE", t.TempDir())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var canceledAt time.Time
		_, err := Build(ctx, Options{SourceDir: dir, Logf: func(f string, a ...any) {
			if strings.HasPrefix(f, "images: building") {
				time.AfterFunc(time.Second, func() { canceledAt = time.Now(); cancel() })
			}
		}}, Pause)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("interrupted Build = %v, want context.Canceled", err)
		}
		if d := time.Since(canceledAt); d > 5*time.Second {
			t.Errorf("Build returned %s after the cancel", d)
		}
	})
	if e := entries(); len(e) != 0 {
		t.Errorf("interrupted build left %v", e)
	}

	img, built := buildOne(t, Options{SourceDir: dir}, Pause)
	if !built {
		t.Fatal("Build after the failures did not build")
	}
	// Killed between writing and publishing: only <key>.partial exists.
	final := filepath.Dir(img.Tarball)
	if err := os.Rename(final, final+".partial"); err != nil {
		t.Fatal(err)
	}
	again, built := buildOne(t, Options{SourceDir: dir}, Pause)
	if !built || again != img {
		t.Errorf("after a killed build: built=%v %+v, want a rebuild of %+v", built, again, img)
	}
	if _, err := os.Stat(final + ".partial"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale %s.partial not cleared: %v", final, err)
	}
	// Broken metadata in a published entry is a miss, rebuilt in place.
	if err := os.WriteFile(filepath.Join(final, metadataFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if third, built := buildOne(t, Options{SourceDir: dir}, Pause); !built || third != img {
		t.Errorf("after corrupt metadata: built=%v %+v, want a rebuild of %+v", built, third, img)
	}
}

func TestFindSourceDir(t *testing.T) {
	src, err := FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := FindSourceDir(filepath.Join(src, "internal", "images", "pause")); err != nil || got != src {
		t.Errorf("FindSourceDir(pause dir) = %q, %v; want %q", got, err, src)
	}
	if _, err := FindSourceDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no go.mod of "+ModulePath) {
		t.Errorf("FindSourceDir(temp) = %v", err)
	}
}

// A build prunes the image's old entries: the newest keepEntries stay, and
// so does anything built within pruneAge.
func TestPruneOldEntries(t *testing.T) {
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	root, _ := CacheDir()
	dir, mainGo := pauseModule(t)
	first, _ := buildOne(t, Options{SourceDir: dir}, Pause)
	fake := func(n string, age time.Duration) string {
		d := filepath.Join(root, Pause, n)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		m := filepath.Join(d, metadataFile)
		if err := os.WriteFile(m, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(m, old, old); err != nil {
			t.Fatal(err)
		}
		return d
	}
	recent := fake("recent", time.Hour)
	var old []string
	for i := range 4 {
		old = append(old, fake(fmt.Sprintf("old%d", i), 48*time.Hour+time.Duration(i)*time.Minute))
	}
	partial := fake("stale.partial", 72*time.Hour)

	orig, _ := os.ReadFile(mainGo)
	if err := os.WriteFile(mainGo, append(orig, []byte("\nfunc init() { _ = os.Getpid() }\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	second, built := buildOne(t, Options{SourceDir: dir}, Pause)
	if !built {
		t.Fatal("changed pause not rebuilt")
	}
	for _, d := range []string{filepath.Dir(first.Tarball), filepath.Dir(second.Tarball), recent, partial} {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("%s pruned: %v", d, err)
		}
	}
	for _, d := range old {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s (48 h old, beyond the newest %d) not pruned: %v", d, keepEntries, err)
		}
	}
}

// An edit while go build runs (the tree is shared) must not publish a binary
// under the key of the sources before the edit: Build starts over.
func TestEditDuringBuild(t *testing.T) {
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	dir, mainGo := pauseModule(t)
	orig, _ := os.ReadFile(mainGo)
	edited := append(slices.Clone(orig), []byte("\nfunc init() { _ = os.Getppid() }\n")...)
	var once sync.Once
	var rec logRecorder
	imgs, err := Build(context.Background(), Options{SourceDir: dir, Logf: func(f string, a ...any) {
		rec.logf(f, a...)
		if strings.HasPrefix(f, "images: building") {
			once.Do(func() {
				if err := os.WriteFile(mainGo, edited, 0o644); err != nil {
					t.Error(err)
				}
			})
		}
	}}, Pause)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(rec.lines, func(l string) bool {
		return strings.Contains(l, "the source changed during the build") && strings.HasSuffix(l, "; building again")
	}) {
		t.Errorf("no restart logged: %q", rec.lines)
	}
	// What a build of the edited source alone gives.
	t.Setenv("FLOWPLACE_CACHE", t.TempDir())
	want, _ := buildOne(t, Options{SourceDir: dir}, Pause)
	if imgs[0].Ref != want.Ref {
		t.Errorf("after an edit during the build: %s, want %s (the edited source)", imgs[0].Ref, want.Ref)
	}
}
