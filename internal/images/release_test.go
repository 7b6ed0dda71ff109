package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// KarmadaSourceEnv names a Karmada checkout for the opt-in test of the
// flowplace karmada-scheduler image (CI has none).
const KarmadaSourceEnv = "FLOWPLACE_KARMADA_SOURCE"

func release(t *testing.T, o ReleaseOptions) ([]Released, time.Duration) {
	t.Helper()
	src, err := FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	o.SourceDir = src
	o.Logf = t.Logf
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	rel, err := Release(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	return rel, time.Since(start)
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	s, err := fileHash(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReleaseReproducible builds the released images twice, into two fresh
// output (and cache) directories, and checks that digests and bytes are
// equal, then what each image holds, and that each entrypoint runs.
func TestReleaseReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent and estimator for two platforms twice")
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var runs [2][]Released
	for i := range runs {
		t.Setenv("FLOWPLACE_CACHE", t.TempDir())
		var took time.Duration
		runs[i], took = release(t, ReleaseOptions{OutDir: filepath.Join(t.TempDir(), "bin", "images"), Version: "v0.0.0-test", Created: created})
		t.Logf("build %d: %s", i+1, took.Round(time.Millisecond))
	}
	a, b := runs[0], runs[1]
	if len(a) != 2 || a[0].Name != Agent || a[1].Name != Estimator {
		t.Fatalf("released %+v, want %s and %s", a, Agent, Estimator)
	}
	for i := range a {
		t.Logf("image %s %s (tar %s)", a[i].Name, a[i].Digest, a[i].ImageID)
		if a[i].Digest != b[i].Digest || a[i].ImageID != b[i].ImageID || !maps.Equal(a[i].Manifests, b[i].Manifests) {
			t.Errorf("%s: digests differ between two builds: %+v vs %+v", a[i].Name, a[i], b[i])
		}
		if x, y := fileSum(t, a[i].Tarball), fileSum(t, b[i].Tarball); x != y {
			t.Errorf("%s: docker archives differ: %s vs %s", a[i].Name, x, y)
		}
		if x, y := fileSum(t, filepath.Join(a[i].Layout, "index.json")), fileSum(t, filepath.Join(b[i].Layout, "index.json")); x != y {
			t.Errorf("%s: index.json differs", a[i].Name)
		}
	}
	for _, r := range a {
		t.Run(r.Name, func(t *testing.T) { checkReleased(t, r, created) })
	}
}

// checkReleased reads r's layout and tarball back and runs the amd64
// entrypoint with --help.
func checkReleased(t *testing.T, r Released, created time.Time) {
	if filepath.Base(r.Tarball) != r.Name+".tar" || filepath.Base(r.Layout) != r.Name {
		t.Errorf("outputs %s, %s; want <out>/%s.tar and <out>/%s/", r.Tarball, r.Layout, r.Name, r.Name)
	}
	p, err := layout.FromPath(r.Layout)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != r.Digest || im.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("index.json lists %+v, want one image index %s", im.Manifests, r.Digest)
	}
	if ref := im.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; ref != "v0.0.0-test" {
		t.Errorf("ref.name annotation %q", ref)
	}
	idx, err := top.ImageIndex(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var archs []string
	configs := map[string]string{}
	for _, d := range m.Manifests {
		if d.Platform == nil || d.Platform.OS != "linux" {
			t.Fatalf("manifest %s has platform %+v", d.Digest, d.Platform)
		}
		archs = append(archs, d.Platform.Architecture)
		if r.Manifests[d.Platform.Architecture] != d.Digest.String() {
			t.Errorf("%s manifest %s, Released says %s", d.Platform.Architecture, d.Digest, r.Manifests[d.Platform.Architecture])
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, files := readReleased(t, img)
		arch := d.Platform.Architecture
		if c, err := img.ConfigName(); err == nil {
			configs[arch] = c.String()
		}
		if cf.Architecture != arch || cf.OS != "linux" || !cf.Created.Time.Equal(created) {
			t.Errorf("%s: config arch %s os %s created %s", arch, cf.Architecture, cf.OS, cf.Created)
		}
		wantUser := "65532:65532"
		if r.Name == Agent {
			wantUser = "0"
		}
		if cf.Config.User != wantUser {
			t.Errorf("%s: user %q, want %q", arch, cf.Config.User, wantUser)
		}
		l := cf.Config.Labels
		if l["org.opencontainers.image.source"] != SourceURL || l["org.opencontainers.image.version"] != "v0.0.0-test" ||
			l["org.opencontainers.image.revision"] == "" || l["org.opencontainers.image.revision"] != r.Revision {
			t.Errorf("%s: labels %v", arch, l)
		}
		bin := "/usr/local/bin/" + r.Name
		if !slices.Equal(cf.Config.Entrypoint, []string{bin}) {
			t.Errorf("%s: entrypoint %v", arch, cf.Config.Entrypoint)
		}
		ca, _ := os.ReadFile(CABundle)
		if f, ok := files[CABundle]; !ok || !bytes.Equal(f.data, ca) {
			t.Errorf("%s: no CA bundle at %s", arch, CABundle)
		}
		if !strings.Contains(string(files["/etc/passwd"].data), "nonroot:x:65532:65532:") {
			t.Errorf("%s: /etc/passwd %q", arch, files["/etc/passwd"].data)
		}
		if h := files["/home/nonroot"].hdr; h == nil || h.Uid != NonRootUID {
			t.Errorf("%s: /home/nonroot %+v", arch, h)
		}
		f, ok := files[bin]
		if !ok {
			t.Fatalf("%s: no %s", arch, bin)
		}
		exe := filepath.Join(t.TempDir(), r.Name)
		if err := os.WriteFile(exe, f.data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := checkStaticFor(exe, arch); err != nil {
			t.Errorf("%s: %v", arch, err)
		}
		if arch == "amd64" {
			out, err := exec.Command(exe, "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(out), r.Name) {
				t.Errorf("%s --help: %v\n%s", r.Name, err, out)
			}
		}
	}
	if !slices.Equal(archs, []string{"amd64", "arm64"}) {
		t.Errorf("index platforms %v", archs)
	}

	// The docker archive is the host image of the index: same config.
	tb, err := tarball.ImageFromPath(r.Tarball, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := tb.ConfigName()
	if err != nil || id.String() != r.ImageID {
		t.Errorf("tarball config %s (%v), want %s", id, err, r.ImageID)
	}
	cf, err := tb.ConfigFile()
	if err != nil || cf.Architecture != "amd64" && cf.Architecture != "arm64" {
		t.Errorf("tarball config %+v (%v)", cf, err)
	}
	if configs[cf.Architecture] != r.ImageID {
		t.Errorf("tarball config %s is not the index's %s config %s", r.ImageID, cf.Architecture, configs[cf.Architecture])
	}
	// (The config names the layer's diffID; the archive has no manifest of
	// its own, so the config digest is the image's identity there.)
}

// readReleased returns the config and the files of img's one layer, and
// checks entry order and times.
func readReleased(t *testing.T, img v1.Image) (*v1.ConfigFile, map[string]layerFile) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers (%v), want 1", len(layers), err)
	}
	if mt, _ := layers[0].MediaType(); mt != types.OCILayer {
		t.Errorf("layer media type %s", mt)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(cf.Created.Time) {
			t.Errorf("%s: mtime %s, want %s", h.Name, h.ModTime, cf.Created.Time)
		}
		p := "/" + strings.TrimSuffix(h.Name, "/")
		names = append(names, p)
		files[p] = layerFile{hdr: h, data: data}
	}
	if !slices.IsSorted(names) {
		t.Errorf("layer entries not sorted: %v", names)
	}
	return cf, files
}

// TestReleaseBadInput: each bad input is refused with a clear error before
// anything is written.
func TestReleaseBadInput(t *testing.T) {
	src, err := FindSourceDir(".")
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "go.mod"), []byte("module example.com/notkarmada\n"), 0o644)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, []byte("x"), 0o644)
	for _, tc := range []struct {
		name, want string
		o          ReleaseOptions
		env        string
	}{
		{"unknown component", `unknown component "flowplace-nope"`, ReleaseOptions{Components: []string{Agent, "flowplace-nope"}}, ""},
		{"lab-only image", `unknown component "pause"`, ReleaseOptions{Components: []string{Pause}}, ""},
		{"scheduler without Karmada", "needs a Karmada checkout", ReleaseOptions{Components: []string{KarmadaScheduler}}, ""},
		{"KARMADA_SOURCE without go.mod", "is not a Karmada checkout", ReleaseOptions{KarmadaSource: t.TempDir()}, ""},
		{"KARMADA_SOURCE missing", "is not a Karmada checkout", ReleaseOptions{KarmadaSource: "/nonexistent/karmada"}, ""},
		{"KARMADA_SOURCE another module", `holds module "example.com/notkarmada"`, ReleaseOptions{KarmadaSource: other}, ""},
		{"bad SOURCE_DATE_EPOCH", "SOURCE_DATE_EPOCH", ReleaseOptions{}, "yesterday"},
		{"bad version", "cannot be an image tag", ReleaseOptions{Version: "-x"}, ""},
		{"wrong source dir", "not a module root", ReleaseOptions{SourceDir: t.TempDir()}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("SOURCE_DATE_EPOCH", tc.env)
			}
			out := filepath.Join(t.TempDir(), "bin", "images")
			tc.o.OutDir = out
			if tc.o.SourceDir == "" {
				tc.o.SourceDir = src
			}
			_, err := Release(context.Background(), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if _, err := os.Stat(filepath.Dir(out)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s was created", filepath.Dir(out))
			}
		})
	}
	t.Run("output is a file", func(t *testing.T) {
		_, err := Release(context.Background(), ReleaseOptions{SourceDir: src, OutDir: file})
		if err == nil || !strings.Contains(err.Error(), "is not a directory") {
			t.Fatalf("error %v", err)
		}
		if data, _ := os.ReadFile(file); string(data) != "x" {
			t.Errorf("file changed")
		}
	})
}

// TestReleaseKarmadaScheduler builds the flowplace karmada-scheduler image
// against the Karmada checkout named by $FLOWPLACE_KARMADA_SOURCE (opt-in,
// like the scheduler e2e; minutes cold) and runs its amd64 entrypoint.
func TestReleaseKarmadaScheduler(t *testing.T) {
	dir := os.Getenv(KarmadaSourceEnv)
	if dir == "" {
		t.Skipf("set %s to a Karmada checkout", KarmadaSourceEnv)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var digests []string
	for i := range 2 {
		rel, took := release(t, ReleaseOptions{OutDir: t.TempDir(), Components: []string{KarmadaScheduler}, KarmadaSource: dir, Version: "v0.0.0-test", Created: created})
		if len(rel) != 1 || rel[0].Name != KarmadaScheduler {
			t.Fatalf("released %+v", rel)
		}
		t.Logf("build %d: image %s %s in %s", i+1, rel[0].Name, rel[0].Digest, took.Round(time.Millisecond))
		digests = append(digests, rel[0].Digest+" tar "+fileSum(t, rel[0].Tarball))
		if i == 0 {
			p, err := layout.FromPath(rel[0].Layout)
			if err != nil {
				t.Fatal(err)
			}
			top, _ := p.ImageIndex()
			im, _ := top.IndexManifest()
			idx, err := top.ImageIndex(im.Manifests[0].Digest)
			if err != nil {
				t.Fatal(err)
			}
			img, err := idx.Image(v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(rel[0].Manifests["amd64"], "sha256:")})
			if err != nil {
				t.Fatal(err)
			}
			cf, files := readReleased(t, img)
			if cf.Config.User != "65532:65532" {
				t.Errorf("user %q", cf.Config.User)
			}
			f := files["/usr/local/bin/karmada-scheduler"]
			exe := filepath.Join(t.TempDir(), "karmada-scheduler")
			if err := os.WriteFile(exe, f.data, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(exe, "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "karmada-scheduler") {
				t.Errorf("karmada-scheduler --help: %v\n%s", err, out)
			}
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds differ: %v", digests)
	}
}
