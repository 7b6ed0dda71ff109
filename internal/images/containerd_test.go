package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const (
	containerdBin = "/usr/bin/containerd"
	ctrBin        = "/usr/bin/ctr"
)

// containerd is a throwaway containerd with its own socket, root and state.
type containerd struct {
	t    *testing.T
	dir  string
	sock string
	fifo string
	log  string
	cmd  *exec.Cmd
}

// The images run in a real containerd: Debian's 1.6 (what the lab's nodes
// use), with runc, imported with `ctr images import` exactly as the nodes
// will import them.
func TestContainerdRunsImages(t *testing.T) {
	need := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv("FLOWPLACE_REQUIRE_KERNEL") == "1" {
			t.Fatal(msg + " (FLOWPLACE_REQUIRE_KERNEL=1)")
		}
		t.Skip(msg)
	}
	if os.Geteuid() != 0 {
		need("needs root to run containers")
	}
	for _, p := range []string{containerdBin, ctrBin} {
		if _, err := os.Stat(p); err != nil {
			need("%s missing (apt-get install -y --no-install-recommends containerd runc): %v", p, err)
		}
	}
	for _, b := range []string{"runc", "containerd-shim-runc-v2", "mount"} {
		if _, err := exec.LookPath(b); err != nil {
			need("%s not in PATH (apt-get install -y --no-install-recommends containerd runc): %v", b, err)
		}
	}
	imgs := builtImages(t)
	c := startContainerd(t)

	for _, img := range imgs {
		out, code := c.ctr("images", "import", img.Tarball)
		if code != 0 || !strings.Contains(out, "unpacking "+img.Ref) {
			t.Fatalf("import %s: exit %d\n%s", img.Tarball, code, out)
		}
	}
	out, code := c.ctr("images", "ls", "-q")
	if code != 0 {
		t.Fatalf("images ls: exit %d\n%s", code, out)
	}
	listed := strings.Fields(out)
	for _, img := range imgs {
		if !slices.Contains(listed, img.Ref) {
			t.Errorf("%s not listed after import: %q", img.Ref, listed)
		}
		// The image ID survives the import byte for byte.
		cfg, code := c.ctrStdout("content", "get", img.Digest)
		if code != 0 {
			t.Errorf("content get %s (%s): exit %d", img.Digest, img.Name, code)
			continue
		}
		tag, _ := name.NewTag(img.Ref)
		im, err := tarball.ImageFromPath(img.Tarball, &tag)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := im.RawConfigFile()
		if !bytes.Equal(cfg, raw) {
			t.Errorf("%s: containerd's config blob %s differs from the tarball's", img.Name, img.Digest)
		}
		var cf v1.ConfigFile
		if err := json.Unmarshal(cfg, &cf); err != nil || cf.OS != "linux" {
			t.Errorf("%s: config blob %v: %s", img.Name, err, cfg)
		}
	}

	busybox := byName(t, imgs, Busybox).Ref
	if out, code := c.run(busybox, "echo", "echo", "hello from busybox"); code != 0 || out != "hello from busybox\n" {
		t.Errorf("busybox echo: exit %d, output %q", code, out)
	}
	if out, code := c.run(busybox, "exit", "sh", "-c", "exit 3"); code != 3 {
		t.Errorf("busybox sh -c 'exit 3': exit %d, want 3; output %q", code, out)
	}
	if out, code := c.run(busybox, "shell", "sh", "-c", "id -u; pwd; echo $PATH; sleep 0.1 && cat /etc/passwd | wc -l"); code != 0 ||
		out != "0\n/\n"+strings.TrimPrefix(PathEnv, "PATH=")+"\n2\n" {
		t.Errorf("busybox shell: exit %d, output %q", code, out)
	}
	// In this test's cgroup parent, so that cleanup can remove all of it.
	if out, code := c.run(busybox, "cgroup", "cat", "/proc/self/cgroup"); code != 0 || !strings.Contains(out, c.cgroupParent()+"/"+c.id("cgroup")) {
		t.Errorf("busybox cgroups (exit %d): %q, want under %s", code, out, c.cgroupParent())
	}
	for _, n := range []string{Agent, Estimator, CLI} {
		img := byName(t, imgs, n)
		bin := specOf(n).binary
		if out, code := c.run(img.Ref, "help", bin, "--help"); code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help in %s: exit %d, output %q", bin, img.Ref, code, out)
		}
	}

	// pause runs until SIGTERM, then exits 0.
	pause := byName(t, imgs, Pause).Ref
	id := c.id("pause")
	run := exec.Command(ctrBin, c.args(c.runArgs(pause, id)...)...)
	var runOut bytes.Buffer
	run.Stdout, run.Stderr = &runOut, &runOut
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		if run.ProcessState == nil {
			_ = run.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for c.taskStatus(id) != "RUNNING" {
		if time.Now().After(deadline) {
			t.Fatalf("pause task not RUNNING after 20 s: %q\n%s", c.taskStatus(id), runOut.String())
		}
		select {
		case err := <-exited:
			t.Fatalf("pause exited before SIGTERM: %v\n%s", err, runOut.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	// Still running a moment later: it blocks rather than exiting at once.
	time.Sleep(500 * time.Millisecond)
	if s := c.taskStatus(id); s != "RUNNING" {
		t.Fatalf("pause task %s after 0.5 s, want RUNNING", s)
	}
	if out, code := c.ctr("task", "kill", "--signal", "SIGTERM", id); code != 0 {
		t.Fatalf("task kill: exit %d\n%s", code, out)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("pause after SIGTERM: %v (want exit 0)\n%s", err, runOut.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("pause still running 20 s after SIGTERM\n%s", runOut.String())
	}
}

// startContainerd starts containerd in a private mount namespace with a
// tmpfs on /run: 1.6 puts shim sockets and runc state under /run/containerd,
// and rootfs mounts made there never reach the host's mount table, so
// nothing leaks into the host even if the test dies. The CRI plugin is
// disabled (ctr does not need it; with it this host also needs
// restrict_oom_score_adj).
func startContainerd(t *testing.T) *containerd {
	t.Helper()
	dir, err := os.MkdirTemp("", "fp-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &containerd{t: t, dir: dir, sock: filepath.Join(dir, "c.sock"), fifo: filepath.Join(dir, "fifo"), log: filepath.Join(dir, "containerd.log")}
	// Registered first so that it runs last, after containerd is gone.
	t.Cleanup(func() { c.removeDir() })
	for _, d := range []string{"root", "state", "fifo"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, c.sock+".ttrpc")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(c.log)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.cmd = exec.Command("/bin/sh", "-c", `mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0" "$@"`, containerdBin, "--config", cfgPath)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Go makes / recursively private after unsharing the mount namespace.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting containerd: %v", err)
	}
	t.Cleanup(c.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, code := c.ctr("version"); code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd not serving on %s after 30 s:\n%s", c.sock, tailOf(c.log))
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

func (c *containerd) args(args ...string) []string {
	return append([]string{"--address", c.sock, "--namespace", "k8s.io"}, args...)
}

// ctr runs ctr and returns its combined output and exit code (-1 when it
// could not run).
func (c *containerd) ctr(args ...string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ctrBin, c.args(args...)...).CombinedOutput()
	return string(out), exitCode(err)
}

func (c *containerd) ctrStdout(args ...string) ([]byte, int) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, ctrBin, c.args(args...)...).Output()
	return out, exitCode(err)
}

func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	default:
		return -1
	}
}

func (c *containerd) id(what string) string {
	return fmt.Sprintf("fp-images-%d-%s", os.Getpid(), what)
}

// run runs a container to completion with `ctr run --rm` and returns its
// output and exit code (ctr exits with the container's).
func (c *containerd) run(ref, what string, args ...string) (string, int) {
	return c.ctr(append(c.runArgs(ref, c.id(what)), args...)...)
}

// runArgs starts a `ctr run` command line. Each container's cgroup is under
// a parent of this test's own (ctr's default, /k8s.io, would outlive it),
// removed at the end.
func (c *containerd) runArgs(ref, id string) []string {
	return []string{"run", "--rm", "--fifo-dir", c.fifo, "--cgroup", c.cgroupParent() + "/" + id, ref, id}
}

func (c *containerd) cgroupParent() string { return fmt.Sprintf("/fp-images-test-%d", os.Getpid()) }

// removeCgroups removes the (by now empty) parent cgroup in every hierarchy.
func (c *containerd) removeCgroups() {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", c.cgroupParent()))
	if d := filepath.Join("/sys/fs/cgroup", c.cgroupParent()); isDir(d) {
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			c.t.Errorf("removing cgroup %s: %v", d, err)
		}
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func (c *containerd) taskStatus(id string) string {
	out, _ := c.ctr("task", "ls")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == id {
			return f[2]
		}
	}
	return ""
}

// stop deletes every task and container, stops containerd, and kills any
// shim it left (found by the socket address on their command line, which
// is unique to this test).
func (c *containerd) stop() {
	if c.t.Failed() {
		c.t.Logf("containerd log:\n%s", tailOf(c.log))
	}
	if out, code := c.ctr("task", "ls", "-q"); code == 0 {
		for _, id := range strings.Fields(out) {
			c.ctr("task", "kill", "--signal", "SIGKILL", id)
			c.ctr("task", "delete", "--force", id)
		}
	}
	if out, code := c.ctr("containers", "ls", "-q"); code == 0 {
		for _, id := range strings.Fields(out) {
			c.ctr("containers", "delete", id)
		}
	}
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
	}
	for _, pid := range c.shims() {
		c.t.Logf("killing leftover shim %d", pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	c.removeCgroups()
}

// shims lists the containerd-shim processes of this containerd.
func (c *containerd) shims() []int {
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.HasSuffix(args[0], "containerd-shim-runc-v2") && slices.Contains(args, c.sock) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// removeDir unmounts whatever is still mounted under the directory in this
// mount namespace (nothing, normally: containerd mounted in its own), deepest
// first, and removes it.
func (c *containerd) removeDir() {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var mounts []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 && (f[4] == c.dir || strings.HasPrefix(f[4], c.dir+"/")) {
			mounts = append(mounts, f[4])
		}
	}
	slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
	for _, m := range mounts {
		if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil {
			c.t.Errorf("unmounting %s: %v", m, err)
		}
	}
	if err := os.RemoveAll(c.dir); err != nil {
		c.t.Errorf("removing %s: %v", c.dir, err)
	}
}

func tailOf(p string) string {
	data, err := os.ReadFile(p)
	if err != nil {
		return err.Error()
	}
	return tail(string(data), 40)
}
