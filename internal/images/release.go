package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Release builds the images that are shipped, with the same layers and
// binaries as Build's but for every platform of Platforms, with a CA bundle,
// a non-root user where the component can run as one, and OCI labels. Per
// component it writes, under ReleaseOptions.OutDir:
//
//	<component>.tar   docker-archive of the host platform's image (`docker load`;
//	                  a docker archive holds one platform)
//	<component>/      OCI image layout whose index.json names one image index
//	                  of every platform (`crane push`, `skopeo copy oci:...`)
//
// The bytes are a function of the source tree, the toolchain, the version,
// revision and timestamp alone: files and config carry one fixed time, tar
// entries are sorted, binaries are -trimpath -buildvcs=false.

// KarmadaScheduler is flowplace's karmada-scheduler (Karmada's scheduler
// with the flowplace plugins), built from the nested module
// scheduler-plugin/karmada against a Karmada checkout.
const KarmadaScheduler = "flowplace-karmada-scheduler"

// KarmadaModule is the module a ReleaseOptions.KarmadaSource must hold.
const KarmadaModule = "github.com/karmada-io/karmada"

// CABundle is Debian's ca-certificates bundle, copied into every released
// image at the same path (where Go's crypto/x509 looks first on Linux).
const CABundle = "/etc/ssl/certs/ca-certificates.crt"

// NonRootUID is the uid (and gid) of the non-root user, distroless' nonroot.
const NonRootUID = 65532

// Platforms are the platforms of every released image index.
var Platforms = []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}}

// SourceURL is the org.opencontainers.image.source label.
const SourceURL = "https://" + ModulePath

type releaseSpec struct {
	spec
	// nested is the module directory relative to the root module, or "" for
	// the root module.
	nested string
	uid    int
}

var releaseSpecs = []releaseSpec{
	// The agent stays uid 0: it loads eBPF programs, attaches them to the
	// root cgroup and pins maps under /sys/fs/bpf. Kubernetes adds a
	// container's capabilities (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) to the
	// bounding and permitted sets only when the process is root; a non-root
	// uid gets no ambient capabilities, so it could do none of that. It also
	// writes root-owned host paths (bpffs pins).
	{spec: mustSpec(Agent), uid: 0},
	{spec: mustSpec(Estimator), uid: NonRootUID},
	{spec: spec{name: KarmadaScheduler, pkg: "./cmd/karmada-scheduler", binary: "/usr/local/bin/karmada-scheduler",
		entrypoint: []string{"/usr/local/bin/karmada-scheduler"}}, nested: "scheduler-plugin/karmada", uid: NonRootUID},
}

func mustSpec(n string) spec {
	for _, s := range specs {
		if s.name == n {
			return s
		}
	}
	panic("images: no spec " + n)
}

// ReleaseComponents names every component Release knows.
func ReleaseComponents() []string {
	out := make([]string, len(releaseSpecs))
	for i, s := range releaseSpecs {
		out[i] = s.name
	}
	return out
}

// ReleaseOptions says what to build and where.
type ReleaseOptions struct {
	SourceDir string // root of the flowplace module
	OutDir    string // e.g. bin/images; created when missing
	// Components to build; when empty, Agent and Estimator, plus
	// KarmadaScheduler when KarmadaSource is set.
	Components []string
	// KarmadaSource is a Karmada checkout (module github.com/karmada-io/karmada);
	// needed for KarmadaScheduler only.
	KarmadaSource string
	// Version is the org.opencontainers.image.version label and the tag in
	// the docker archive; "" means `git describe --tags --always --dirty`.
	Version string
	// Created is the time of every file and of the configs; zero means
	// $SOURCE_DATE_EPOCH, else the commit time of HEAD.
	Created time.Time
	Logf    func(format string, args ...any)
}

// Released is one released component.
type Released struct {
	Name string `json:"name"`
	// Digest is the digest of the image index (sha256 of its JSON), the one
	// a registry shows after a push of the layout and the one to pin in
	// manifests (<repo>@<digest>); the platform manifests' digests are in
	// Manifests.
	Digest    string            `json:"digest"`
	Manifests map[string]string `json:"manifests"` // GOARCH -> manifest digest
	// ImageID is the config digest of the host image in Tarball, what
	// `docker load` and `docker images --no-trunc` show.
	ImageID  string `json:"imageID"`
	Ref      string `json:"ref"` // tag in Tarball: flowplace/<name>:<version>
	Tarball  string `json:"tarball"`
	Layout   string `json:"layout"`
	Version  string `json:"version"`
	Revision string `json:"revision"`
}

// Release builds opts.Components. Every input (component names, source
// dirs, the CA bundle, the timestamp, the go command) is checked before
// anything is written; the images are assembled in a staging directory
// under OutDir and moved into place only when all of them are built, so a
// failure leaves OutDir as it was.
func Release(ctx context.Context, o ReleaseOptions) ([]Released, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	want, err := selectRelease(o)
	if err != nil {
		return nil, err
	}
	src, err := checkSource(o.SourceDir)
	if err != nil {
		return nil, err
	}
	if o.OutDir == "" {
		return nil, errors.New("images: ReleaseOptions.OutDir is empty")
	}
	out, err := filepath.Abs(o.OutDir)
	if err != nil {
		return nil, fmt.Errorf("images: output dir: %w", err)
	}
	if st, err := os.Stat(out); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("images: output dir %s is not a directory", out)
	}
	var karmada, workTmpl string
	if slices.ContainsFunc(want, func(s releaseSpec) bool { return s.nested != "" }) {
		if karmada, workTmpl, err = checkKarmada(src, o.KarmadaSource); err != nil {
			return nil, err
		}
	}
	if err := checkCABundle(); err != nil {
		return nil, err
	}
	if _, err := exec.LookPath("go"); err != nil {
		return nil, fmt.Errorf("images: building %s needs the go command: %w", want[0].name, err)
	}
	created, err := releaseTime(ctx, src, o.Created)
	if err != nil {
		return nil, err
	}
	version := o.Version
	if version == "" {
		version = gitDescribe(ctx, src)
	}
	tag, err := tagFor(version)
	if err != nil {
		return nil, err
	}
	for _, s := range want {
		if _, err := releaseRef(s.name, tag); err != nil {
			return nil, err
		}
	}
	revision := gitRevision(ctx, src)
	host := runtime.GOARCH
	if !slices.ContainsFunc(Platforms, func(p v1.Platform) bool { return p.Architecture == host }) {
		host = Platforms[0].Architecture
	}

	// Inputs are good: from here on, write only in the staging directory.
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("images: creating %s: %w", out, err)
	}
	stage, err := os.MkdirTemp(out, ".partial-")
	if err != nil {
		return nil, fmt.Errorf("images: staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	start := time.Now()
	bins := map[string]string{} // "<name>/<arch>" -> binary
	for _, p := range Platforms {
		arch := p.Architecture
		env := releaseEnv(arch)
		var root []releaseSpec
		for _, s := range want {
			if s.nested == "" {
				root = append(root, s)
			}
		}
		if len(root) > 0 {
			dir := filepath.Join(stage, "bin", arch)
			if err := buildRelease(ctx, src, env, dir, root, logf); err != nil {
				return nil, err
			}
			for _, s := range root {
				bins[s.name+"/"+arch] = filepath.Join(dir, filepath.Base(s.pkg))
			}
		}
		for _, s := range want {
			if s.nested == "" {
				continue
			}
			// An uncommitted workspace outside the tree: the nested module
			// plus Karmada's source for its missing module.
			wdir := filepath.Join(stage, "work-"+s.name)
			if err := os.MkdirAll(wdir, 0o755); err != nil {
				return nil, fmt.Errorf("images: %w", err)
			}
			work := filepath.Join(wdir, "go.work")
			if err := os.WriteFile(work, []byte(workTmpl), 0o644); err != nil {
				return nil, fmt.Errorf("images: writing %s: %w", work, err)
			}
			senv := append(slices.DeleteFunc(slices.Clone(env), func(e string) bool { return strings.HasPrefix(e, "GOWORK=") }), "GOWORK="+work)
			dir := filepath.Join(stage, "bin", arch, s.name)
			if err := buildRelease(ctx, filepath.Join(src, s.nested), senv, dir, []releaseSpec{s}, logf); err != nil {
				return nil, fmt.Errorf("%w (Karmada source %s)", err, karmada)
			}
			bins[s.name+"/"+arch] = filepath.Join(dir, filepath.Base(s.pkg))
		}
	}

	var res []Released
	for _, s := range want {
		r, err := assembleRelease(stage, s, bins, created, version, tag, revision, host)
		if err != nil {
			return nil, err
		}
		res = append(res, r)
	}
	// Publish: replace each component's previous output.
	for i, r := range res {
		finalLayout := filepath.Join(out, r.Name)
		finalTar := filepath.Join(out, r.Name+".tar")
		if err := os.RemoveAll(finalLayout); err != nil {
			return nil, fmt.Errorf("images: removing the previous %s: %w", finalLayout, err)
		}
		if err := os.Rename(r.Layout, finalLayout); err != nil {
			return nil, fmt.Errorf("images: publishing %s: %w", finalLayout, err)
		}
		if err := os.Rename(r.Tarball, finalTar); err != nil {
			return nil, fmt.Errorf("images: publishing %s: %w", finalTar, err)
		}
		res[i].Layout, res[i].Tarball = finalLayout, finalTar
		logf("images: %s %s -> %s, %s", r.Name, r.Digest, finalTar, finalLayout)
	}
	logf("images: released %d image(s) in %s", len(res), time.Since(start).Round(10*time.Millisecond))
	return res, nil
}

// selectRelease maps o.Components to specs, in the order of releaseSpecs.
func selectRelease(o ReleaseOptions) ([]releaseSpec, error) {
	names := o.Components
	if len(names) == 0 {
		names = []string{Agent, Estimator}
		if o.KarmadaSource != "" {
			names = append(names, KarmadaScheduler)
		}
	}
	for _, n := range names {
		if !slices.ContainsFunc(releaseSpecs, func(s releaseSpec) bool { return s.name == n }) {
			return nil, fmt.Errorf("images: unknown component %q (known: %s)", n, strings.Join(ReleaseComponents(), ", "))
		}
	}
	var out []releaseSpec
	for _, s := range releaseSpecs {
		if slices.Contains(names, s.name) {
			out = append(out, s)
		}
	}
	if slices.ContainsFunc(out, func(s releaseSpec) bool { return s.nested != "" }) && o.KarmadaSource == "" {
		return nil, fmt.Errorf("images: %s needs a Karmada checkout (KARMADA_SOURCE=/path/to/karmada)", KarmadaScheduler)
	}
	return out, nil
}

// checkKarmada checks the Karmada checkout and the nested module and returns
// the checkout's absolute path and the go.work to build with.
func checkKarmada(src, dir string) (string, string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", "", fmt.Errorf("images: KARMADA_SOURCE %q: %w", dir, err)
	}
	mod, err := modulePath(filepath.Join(abs, "go.mod"))
	if err != nil {
		return "", "", fmt.Errorf("images: KARMADA_SOURCE %s is not a Karmada checkout: %w", abs, err)
	}
	if mod != KarmadaModule {
		return "", "", fmt.Errorf("images: KARMADA_SOURCE %s holds module %q, not %s", abs, mod, KarmadaModule)
	}
	nested := filepath.Join(src, "scheduler-plugin", "karmada")
	if mod, err := modulePath(filepath.Join(nested, "go.mod")); err != nil || mod != ModulePath+"/scheduler-plugin/karmada" {
		return "", "", fmt.Errorf("images: %s is not the nested module %s/scheduler-plugin/karmada (%v)", nested, ModulePath, err)
	}
	goLine, err := goDirective(filepath.Join(nested, "go.mod"))
	if err != nil {
		return "", "", err
	}
	return abs, fmt.Sprintf("go %s\n\nuse %s\n\nreplace %s => %s\n", goLine, nested, KarmadaModule, abs), nil
}

// goDirective reads the go line of a go.mod.
func goDirective(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("images: %w", err)
	}
	m := regexp.MustCompile(`(?m)^go\s+(\S+)`).FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("images: %s has no go directive", gomod)
	}
	return string(m[1]), nil
}

func checkCABundle() error {
	data, err := os.ReadFile(CABundle)
	if err != nil || !strings.Contains(string(data), "-----BEGIN CERTIFICATE-----") {
		return fmt.Errorf("images: no CA bundle at %s (%v); on Debian: apt-get install ca-certificates", CABundle, err)
	}
	return nil
}

// releaseTime is t, else $SOURCE_DATE_EPOCH, else HEAD's commit time.
func releaseTime(ctx context.Context, src string, t time.Time) (time.Time, error) {
	if !t.IsZero() {
		return t.UTC(), nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return time.Time{}, fmt.Errorf("images: SOURCE_DATE_EPOCH %q is not a Unix time in seconds", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	out, err := exec.CommandContext(ctx, "git", "-C", src, "log", "-1", "--format=%ct").Output()
	if err != nil {
		return time.Time{}, fmt.Errorf("images: no SOURCE_DATE_EPOCH and no commit time of %s: %w", src, err)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("images: commit time %q: %w", out, err)
	}
	return time.Unix(n, 0).UTC(), nil
}

func gitDescribe(ctx context.Context, src string) string {
	out, err := exec.CommandContext(ctx, "git", "-C", src, "describe", "--tags", "--always", "--dirty").Output()
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// tagFor is version as a docker tag: characters a tag cannot hold become '-'.
func tagFor(version string) (string, error) {
	t := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(version, "-")
	if t == "" || len(t) > 128 || t[0] == '.' || t[0] == '-' {
		return "", fmt.Errorf("images: version %q cannot be an image tag", version)
	}
	return t, nil
}

// releaseRef is the tag in the docker archive, flowplace/<name>:<tag>
// (docker.io's namespace when loaded; retag it to push elsewhere).
func releaseRef(n, tag string) (name.Tag, error) {
	ref, err := name.NewTag("flowplace/" + n + ":" + tag)
	if err != nil {
		return name.Tag{}, fmt.Errorf("images: ref of %s: %w", n, err)
	}
	return ref, nil
}

// releaseEnv is goBuildEnv for linux/arch.
func releaseEnv(arch string) []string {
	env := slices.DeleteFunc(slices.Clone(goBuildEnv), func(e string) bool {
		return strings.HasPrefix(e, "GOARCH=") || strings.HasPrefix(e, "GOAMD64=")
	})
	env = append(env, "GOARCH="+arch)
	switch arch {
	case "amd64":
		env = append(env, "GOAMD64=v1")
	case "arm64":
		env = append(env, "GOARM64=v8.0")
	}
	return env
}

func buildRelease(ctx context.Context, dir string, env []string, out string, ss []releaseSpec, logf func(string, ...any)) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return fmt.Errorf("images: %w", err)
	}
	var pkgs []string
	var plain []spec
	for _, s := range ss {
		pkgs = append(pkgs, s.pkg)
		plain = append(plain, s.spec)
	}
	return goBuildIn(ctx, dir, env, out, pkgs, plain, logf)
}

// releaseFiles is the file tree of a released image: the binary, the CA
// bundle, /etc/passwd and /etc/group naming root and nonroot, nonroot's
// home, /tmp.
func releaseFiles(s releaseSpec, bin string) []entry {
	return withParents([]entry{
		{name: s.binary, mode: 0o755, src: bin},
		{name: CABundle, mode: 0o644, src: CABundle},
		{name: "/tmp", dir: true, mode: 0o1777},
		{name: "/home/nonroot", dir: true, mode: 0o755, uid: NonRootUID, gid: NonRootUID},
		{name: "/etc/passwd", mode: 0o644, data: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
			NonRootUID, NonRootUID))},
		{name: "/etc/group", mode: 0o644, data: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\nnogroup:x:65534:\n", NonRootUID))},
	})
}

// assembleRelease builds the per-platform images and the index of s in
// stage, and writes its layout and host tarball there.
func assembleRelease(stage string, s releaseSpec, bins map[string]string, created time.Time, version, tag, revision, host string) (Released, error) {
	r := Released{Name: s.name, Version: version, Revision: revision, Manifests: map[string]string{}}
	labels := map[string]string{
		"org.opencontainers.image.title":   s.name,
		"org.opencontainers.image.source":  SourceURL,
		"org.opencontainers.image.version": version,
		"org.opencontainers.image.created": created.Format(time.RFC3339),
	}
	if revision != "" {
		labels["org.opencontainers.image.revision"] = revision
	}
	user := strconv.Itoa(s.uid)
	if s.uid != 0 {
		user += ":" + user
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var hostImg v1.Image
	for _, p := range Platforms {
		arch := p.Architecture
		bin := bins[s.name+"/"+arch]
		if err := checkStaticFor(bin, arch); err != nil {
			return r, fmt.Errorf("images: %s: %w", s.name, err)
		}
		layerPath := filepath.Join(stage, s.name+"-"+arch+".tar.gz")
		if err := writeLayer(layerPath, releaseFiles(s, bin), created); err != nil {
			return r, fmt.Errorf("images: writing the layer of %s/%s: %w", s.name, arch, err)
		}
		layer, err := tarball.LayerFromFile(layerPath, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return r, fmt.Errorf("images: reading back the layer of %s/%s: %w", s.name, arch, err)
		}
		cf := &v1.ConfigFile{
			Architecture: arch,
			OS:           p.OS,
			Created:      v1.Time{Time: created},
			Config: v1.Config{
				Entrypoint: s.entrypoint,
				Env:        []string{PathEnv, "SSL_CERT_FILE=" + CABundle},
				WorkingDir: "/",
				User:       user,
				Labels:     labels,
			},
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return r, fmt.Errorf("images: config of %s/%s: %w", s.name, arch, err)
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "flowplace internal/images: " + s.name},
		})
		if err != nil {
			return r, fmt.Errorf("images: adding the layer of %s/%s: %w", s.name, arch, err)
		}
		d, err := img.Digest()
		if err != nil {
			return r, fmt.Errorf("images: digest of %s/%s: %w", s.name, arch, err)
		}
		r.Manifests[arch] = d.String()
		plat := p
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
		if arch == host {
			hostImg = img
		}
	}
	d, err := idx.Digest()
	if err != nil {
		return r, fmt.Errorf("images: index digest of %s: %w", s.name, err)
	}
	r.Digest = d.String()
	id, err := hostImg.ConfigName()
	if err != nil {
		return r, fmt.Errorf("images: config digest of %s: %w", s.name, err)
	}
	r.ImageID = id.String()

	r.Layout = filepath.Join(stage, s.name)
	lp, err := layout.Write(r.Layout, empty.Index)
	if err != nil {
		return r, fmt.Errorf("images: OCI layout of %s: %w", s.name, err)
	}
	if err := lp.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
	})); err != nil {
		return r, fmt.Errorf("images: OCI layout of %s: %w", s.name, err)
	}
	ref, err := releaseRef(s.name, tag)
	if err != nil {
		return r, err
	}
	r.Ref = ref.String()
	r.Tarball = filepath.Join(stage, s.name+".tar")
	if err := writeTarball(r.Tarball, ref, hostImg); err != nil {
		return r, fmt.Errorf("images: writing %s: %w", r.Tarball, err)
	}
	return r, nil
}
