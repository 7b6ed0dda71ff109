package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/wan"
)

// A lab interrupted mid-run, by SIGINT to its process group (a terminal's
// Ctrl-C) or SIGTERM to its pid (kill, a supervisor), exits promptly and
// leaves nothing of its own: no network namespace, owner record, cgroup,
// process, eBPF program or mount. The first case also runs the built binary
// from / with --with-apiserver: outside the checkout it finds the cached
// control-plane binaries through the tools module embedded in it.
func TestLabInterruptTearsDown(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	for _, tc := range []struct {
		name      string
		sig       syscall.Signal
		group     bool // signal the process group, as a terminal does
		args      []string
		waitFor   string // the progress line after which to signal
		built     bool   // the world is complete when signalled
		apiServer bool
	}{
		{name: "SIGINT while measuring, with the API server, run from /", sig: syscall.SIGINT, group: true,
			args: []string{"--with-apiserver"}, waitFor: "eBPF agents attached", built: true, apiServer: true},
		{name: "SIGTERM while measuring", sig: syscall.SIGTERM, waitFor: "eBPF agents attached", built: true},
		{name: "SIGTERM while building the world", sig: syscall.SIGTERM, waitFor: "[1/6] creating"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.apiServer {
				r, err := controlplane.Resolve()
				if err != nil || !r.Cached {
					if os.Getenv(controlplane.RequireEnv) == "1" {
						t.Fatalf("control-plane binaries not cached (%v): run make controlplane-bin", err)
					}
					t.Skipf("control-plane binaries not cached in %s (make controlplane-bin): %v", r.Paths.Dir, err)
				}
			}
			before := snapshot(0)
			// 60 s: the first measured phase lasts 30 s, far longer than a
			// prompt exit may take.
			run := startLab(t, append([]string{"lab", "--duration", "60s"}, tc.args...)...)
			run.waitFor(t, tc.waitFor, 90*time.Second)
			during := snapshot(run.pid())
			if tc.built {
				if len(during.netns) != 3 || !during.cgroup || len(during.procs) < 8 || len(during.progs) == 0 || len(during.runMounts()) < 3 {
					t.Fatalf("the lab is not running as expected before the signal: %d namespaces, cgroup %v, %d processes, %d programs, %d mounts\n%s",
						len(during.netns), during.cgroup, len(during.procs), len(during.progs), len(during.runMounts()), run.output())
				}
			}
			if tc.apiServer {
				out := run.output()
				if !strings.Contains(out, "starting a Karmada API server") || strings.Contains(out, "cannot build") {
					t.Fatalf("the lab did not start its API server:\n%s", out)
				}
				if !during.hasProc("kube-apiserver") || !during.hasProc("etcd") {
					t.Errorf("no kube-apiserver and etcd among the lab's processes: %v", during.procs)
				}
			}

			target := run.pid()
			if tc.group {
				target = -target
			}
			sent := time.Now()
			if err := syscall.Kill(target, tc.sig); err != nil {
				t.Fatal(err)
			}
			code, err := run.wait(30 * time.Second)
			took := time.Since(sent)
			t.Logf("exited %d after %s", code, took.Round(time.Millisecond))
			if err != nil {
				t.Fatalf("%v\n%s", err, run.output())
			}
			if took > 15*time.Second {
				t.Errorf("exited %s after %v; want promptly", took.Round(time.Millisecond), tc.sig)
			}
			out := run.output()
			if code != 1 || !strings.Contains(out, "lab: interrupted; tearing down") || !strings.Contains(out, "interrupted; everything was torn down") {
				t.Errorf("exit %d; want 1 with the interruption reported:\n%s", code, out)
			}
			if strings.Contains(out, "lab: teardown:") {
				t.Errorf("teardown reported errors:\n%s", out)
			}
			assertNothingLeft(t, before, during)
		})
	}
}

// SIGTERM while the profile is still being read (here a FIFO nobody writes,
// so reading never ends) ends the lab at once, having changed nothing.
func TestLabSIGTERMWhileReadingProfile(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "profile.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() {
		// Unblock the reader of a lab that did not exit.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	before, _ := filepath.Glob("/run/netns/fplab*")
	run := startLab(t, "lab", "--profile", fifo)
	time.Sleep(500 * time.Millisecond) // blocked in open(2) by now
	sent := time.Now()
	if err := syscall.Kill(run.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := run.wait(5 * time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, run.output())
	}
	if d := time.Since(sent); d > 2*time.Second {
		t.Errorf("exited %s after SIGTERM; want at once", d)
	}
	if out := run.output(); code != 1 || !strings.Contains(out, "interrupted while reading the profile; nothing was changed") {
		t.Errorf("exit %d; want 1 saying it was interrupted while reading:\n%s", code, out)
	}
	if after, _ := filepath.Glob("/run/netns/fplab*"); len(after) != len(before) {
		t.Errorf("namespaces changed: %v -> %v", before, after)
	}
}

// labRun is a `flowplace lab` child process in its own process group.
type labRun struct {
	cmd    *exec.Cmd
	stderr *os.File
	mu     sync.Mutex
	out    strings.Builder
	exited chan struct{}
	err    error
}

func startLab(t *testing.T, args ...string) *labRun {
	t.Helper()
	cmd := exec.Command(binary, args...)
	// Outside the checkout, and without the override: the binary must find
	// everything by itself.
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "FLOWPLACE_CONTROLPLANE_TOOLS=")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// An *os.File, not a pipe that Wait copies: a child left behind holding
	// it must not keep Wait from returning.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	l := &labRun{cmd: cmd, stderr: r, exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			l.mu.Lock()
			l.out.WriteString(sc.Text() + "\n")
			l.mu.Unlock()
		}
	}()
	go func() {
		l.err = cmd.Wait()
		close(l.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-l.exited:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-l.exited
		}
		r.Close()
	})
	return l
}

func (l *labRun) pid() int { return l.cmd.Process.Pid }

func (l *labRun) output() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.String()
}

func (l *labRun) waitFor(t *testing.T, line string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(l.output(), line) {
		select {
		case <-l.exited:
			t.Fatalf("lab exited (%v) before %q:\n%s", l.err, line, l.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %s:\n%s", line, timeout, l.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wait returns the exit code, or an error if the lab is still running after
// timeout.
func (l *labRun) wait(timeout time.Duration) (int, error) {
	select {
	case <-l.exited:
	case <-time.After(timeout):
		return -1, fmt.Errorf("lab still running %s after the signal", timeout)
	}
	if ee, ok := l.err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	return 0, l.err
}

// machineState is what a lab run may own, as seen from outside.
type machineState struct {
	prefix string               // the run's namespace prefix, fplab<pid>
	netns  []string             // /run/netns entries of the run
	record bool                 // its owner record in world/wan's state dir
	cgroup bool                 // its cgroup directory
	procs  map[int]procIdentity // the run's descendants
	progs  map[ebpf.ProgramID]string
	mounts map[string]bool // mount points in this mount namespace
}

type procIdentity struct {
	start uint64
	comm  string
}

// runMounts are the mounts that can only be the run's: its namespaces'
// bind mounts and the cgroup2 mount flowplace makes on a v1 host. (Other
// tests on the machine add mounts of their own meanwhile.)
func (s machineState) runMounts() map[string]bool {
	out := map[string]bool{}
	for m := range s.mounts {
		if strings.Contains(m, "/"+s.prefix+"-") || m == probe.DefaultCgroup2Mount {
			out[m] = true
		}
	}
	return out
}

func (s machineState) hasProc(comm string) bool {
	for _, p := range s.procs {
		if p.comm == comm {
			return true
		}
	}
	return false
}

// snapshot records the machine; pid 0 records only what is not a run's.
func snapshot(pid int) machineState {
	s := machineState{prefix: fmt.Sprintf("fplab%d", pid), procs: map[int]procIdentity{}, progs: map[ebpf.ProgramID]string{}, mounts: mountPoints()}
	if pid == 0 {
		return s
	}
	// The run's programs are those its process holds a descriptor of; other
	// tests on the machine may load flowplace programs of their own.
	loaded := flowplaceProgramIDs()
	for _, id := range programsHeldBy(pid) {
		if name, ok := loaded[id]; ok {
			s.progs[id] = name
		}
	}
	s.netns, _ = filepath.Glob("/run/netns/" + s.prefix + "-*")
	_, err := os.Stat("/run/flowplace/topology/" + s.prefix + ".pid")
	s.record = err == nil
	if root, _ := probe.FindCgroup2(); root != "" {
		_, err := os.Stat(filepath.Join(root, "flowplace-lab-"+s.prefix))
		s.cgroup = err == nil
	}
	s.procs = descendants(pid)
	return s
}

// assertNothingLeft checks that what the run had (during) is gone and that
// it added no program or mount that is still there.
func assertNothingLeft(t *testing.T, before, during machineState) {
	t.Helper()
	after := snapshot(0)
	if live, _ := filepath.Glob("/run/netns/" + during.prefix + "-*"); len(live) > 0 {
		t.Errorf("network namespaces left: %v", live)
	}
	if _, err := os.Stat("/run/flowplace/topology/" + during.prefix + ".pid"); err == nil {
		t.Errorf("owner record of %s left", during.prefix)
	}
	if root, _ := probe.FindCgroup2(); root != "" {
		if left, _ := filepath.Glob(filepath.Join(root, "flowplace-lab-"+during.prefix+"*")); len(left) > 0 {
			t.Errorf("cgroups left: %v", left)
		}
	}
	// Processes are gone at once (teardown waits for them); a moment is
	// allowed for the kernel to reap the last ones.
	deadline := time.Now().Add(3 * time.Second)
	for {
		var alive []string
		for pid, id := range during.procs {
			if cur, ok := procIdentityOf(pid); ok && cur.start == id.start {
				alive = append(alive, fmt.Sprintf("%d %s", pid, id.comm))
			}
		}
		if len(alive) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes of the run still alive: %v", alive)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The kernel frees a program a moment after its last link and fd close.
	deadline = time.Now().Add(5 * time.Second)
	for {
		var left []string
		now := flowplaceProgramIDs()
		for id, name := range during.progs {
			if now[id] == name {
				left = append(left, fmt.Sprintf("%d %s", id, name))
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("eBPF programs the run loaded are still loaded: %v", left)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for m := range during.runMounts() {
		if !before.mounts[m] && after.mounts[m] {
			t.Errorf("mount %s the run added is still mounted", m)
		}
	}
}

// descendants returns pid's children, their children and so on.
func descendants(pid int) map[int]procIdentity {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		rest := string(b[strings.LastIndexByte(string(b), ')')+1:])
		fields := strings.Fields(rest)
		if len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		p, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		children[ppid] = append(children[ppid], p)
	}
	out := map[int]procIdentity{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if id, ok := procIdentityOf(c); ok {
				out[c] = id
				queue = append(queue, c)
			}
		}
	}
	return out
}

func procIdentityOf(pid int) (procIdentity, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procIdentity{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	fields := strings.Fields(s[closing+1:])
	// Field 22 of stat (starttime) is the 20th after the comm.
	if open < 0 || closing < open || len(fields) < 20 {
		return procIdentity{}, false
	}
	if fields[0] == "Z" {
		return procIdentity{}, false // exited, not yet reaped
	}
	start, _ := strconv.ParseUint(fields[19], 10, 64)
	return procIdentity{start: start, comm: s[open+1 : closing]}, true
}

// programsHeldBy lists the eBPF programs pid has a descriptor of.
func programsHeldBy(pid int) []ebpf.ProgramID {
	var out []ebpf.ProgramID
	infos, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	for _, f := range infos {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "prog_id:"); ok {
				if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
					out = append(out, ebpf.ProgramID(id))
				}
			}
		}
	}
	return out
}

// flowplaceProgramIDs lists the loaded eBPF programs named flowplace_*.
func flowplaceProgramIDs() map[ebpf.ProgramID]string {
	out := map[ebpf.ProgramID]string{}
	for id, err := ebpf.ProgramGetNextID(0); err == nil; id, err = ebpf.ProgramGetNextID(id) {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "flowplace_") {
			out[id] = info.Name
		}
		p.Close()
	}
	return out
}

// mountPoints are the mount points of this process's mount namespace, which
// the lab shares.
func mountPoints() map[string]bool {
	out := map[string]bool{}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return out
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			out[f[4]] = true
		}
	}
	return out
}
