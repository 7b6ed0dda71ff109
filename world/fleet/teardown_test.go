package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowplace/flowplace/world/nodes"
	"github.com/flowplace/flowplace/world/wan"
)

// Teardown leaves nothing (issue 11): a fleet with pods running, stopped, or
// killed and then swept, leaves no process, cgroup, network namespace, host
// device or route, changed kernel setting, mount, record or directory of its
// run. The killed case re-runs this test binary as a child that starts a
// fleet and waits to be SIGKILLed; the parent checks from outside.

const (
	teardownChildEnv = "FLOWPLACE_FLEET_TEARDOWN_CHILD" // the report file; the child acts only when set
	teardownBaseEnv  = "FLOWPLACE_FLEET_TEARDOWN_BASE"  // the child's AddrBase
	// podsPerNode busybox pods per node run when the fleet is stopped or
	// killed.
	podsPerNode = 2
)

// runFacts identify one fleet run from outside its process.
type runFacts struct {
	PID         int      // the process that started the fleet
	Prefix      string   // the WAN's namespace prefix
	LinkStem    string   // the stem of its devices in the host namespace
	Network     string   // its 10.<base>.0.0/16
	Marker      string   // the control plane's marker, in every run directory
	Dirs        []string // the control plane's and the nodes' directories
	CgroupRoots []string // one per node
	// NodeProcs are the holder, containerd, kubelet and kube-proxy of
	// every node: pid and start time.
	NodeProcs map[int]uint64
}

func factsOf(f *Fleet) runFacts {
	r := runFacts{
		PID:       os.Getpid(),
		Prefix:    f.WAN.Prefix(),
		LinkStem:  f.WAN.HostLinkStem(),
		Network:   f.WAN.Network().String(),
		Marker:    f.ControlPlane.Marker,
		Dirs:      []string{f.ControlPlane.Dir, f.Dir},
		NodeProcs: map[int]uint64{},
	}
	for _, ns := range f.Nodes {
		for _, n := range ns {
			r.CgroupRoots = append(r.CgroupRoots, n.CgroupRoot)
			for _, pid := range n.PIDs() {
				if start, _, ok := readProc(pid); ok {
					r.NodeProcs[pid] = start
				}
			}
		}
	}
	return r
}

// deployBusybox runs podsPerNode sleeping busybox pods on every node of the
// fleet's only cluster and waits until they are Ready.
func deployBusybox(t *testing.T, f *Fleet, cluster string) {
	t.Helper()
	c := f.Member(cluster).Client
	ref := busyboxRef(t)
	labels := map[string]string{"app": "sleepers"}
	replicas := int32(podsPerNode * len(f.Nodes[cluster]))
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "sleepers"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
					Containers: []corev1.Container{container(ref, "sleep", "sleep", "3600")},
				},
			},
		},
	}
	if _, err := c.AppsV1().Deployments("default").Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for _, p := range waitPods(t, c, "default", "app=sleepers", int(replicas)) {
		perNode[p.Spec.NodeName]++
	}
	for _, n := range f.Nodes[cluster] {
		if perNode[n.Name] != podsPerNode {
			t.Fatalf("pods per node %v, want %d on each", perNode, podsPerNode)
		}
	}
}

// procInfo identifies a process across pid reuse.
type procInfo struct {
	Start uint64
	Comm  string
	Why   string // how it was found to be the run's
}

func (p procInfo) String() string { return p.Comm + " (" + p.Why + ")" }

// readProc returns pid's start time, command name and state; ok is false
// for a process that is gone or a zombie (dead, not yet reaped).
func readProc(pid int) (start uint64, comm string, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, "", false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return 0, "", false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
		return 0, "", false
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return start, s[open+1 : closing], err == nil
}

func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// cgroupMounts are the mount points of every cgroup hierarchy.
func cgroupMounts(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, m := range readMountinfo(t, "/proc/self/mountinfo") {
		if m.fstype == "cgroup" || m.fstype == "cgroup2" {
			out = append(out, m.point)
		}
	}
	return out
}

type mountEntry struct{ root, point, fstype, source string }

func readMountinfo(t *testing.T, path string) []mountEntry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 5 || sep+2 >= len(fields) {
			continue
		}
		out = append(out, mountEntry{root: fields[3], point: fields[4], fstype: fields[sep+1], source: fields[sep+2]})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// machine is what a run may have left on the machine, as seen from outside.
type machine struct {
	procs   map[int]procInfo
	cgroups []string
	netns   []string
	links   []string
	routes  []string
	mounts  []string
	records []string
	dirs    []string
	sysctls map[string]string
}

// inCgroups reports whether pid is in one of roots' subtrees in any
// hierarchy.
func inCgroups(pid int, roots []string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	// "<id>:<controllers>:<path>" per hierarchy
	for _, l := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 {
			continue
		}
		path := parts[2]
		for _, root := range roots {
			if path == root || strings.HasPrefix(path, root+"/") {
				return true
			}
		}
	}
	return false
}

// observe finds what of run r is on the machine: processes that carry its
// marker on their command line, are in its nodes' cgroups, are its nodes'
// daemons or among known (same pid and start time), or, with descendants,
// descend from its owner.
func observe(t *testing.T, r runFacts, known map[int]procInfo, descendants bool) machine {
	t.Helper()
	return observeIgnoring(t, r, known, descendants, "")
}

// observeIgnoring is observe, but routes through devices named
// ignoreStem* (another run's on the same addresses) are not the run's.
func observeIgnoring(t *testing.T, r runFacts, known map[int]procInfo, descendants bool, ignoreStem string) machine {
	t.Helper()
	m := machine{procs: map[int]procInfo{}}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		start, comm, ok := readProc(pid)
		if !ok {
			continue
		}
		children[parentOf(pid)] = append(children[parentOf(pid)], pid)
		add := func(why string) { m.procs[pid] = procInfo{Start: start, Comm: comm, Why: why} }
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		switch k, isKnown := known[pid]; {
		case strings.Contains(string(cmdline), r.Marker):
			add("marker in command line")
		case inCgroups(pid, r.CgroupRoots):
			add("in a node's cgroup")
		case isKnown && k.Start == start:
			add("seen during the run: " + k.Why)
		case r.NodeProcs[pid] == start:
			add("a node's daemon")
		}
	}
	// The owner's descendants (the WAN's hub, the control plane, the node
	// daemons and the commands between).
	if descendants {
		if _, _, ok := readProc(r.PID); ok || r.PID == os.Getpid() {
			queue := []int{r.PID}
			for len(queue) > 0 {
				p := queue[0]
				queue = queue[1:]
				for _, c := range children[p] {
					if _, seen := m.procs[c]; !seen {
						if st, comm, ok := readProc(c); ok {
							m.procs[c] = procInfo{Start: st, Comm: comm, Why: "descendant of the owner"}
						}
					}
					queue = append(queue, c)
				}
			}
		}
	}

	for _, mnt := range cgroupMounts(t) {
		left, _ := filepath.Glob(filepath.Join(mnt, "flowplace", r.Prefix+"-*"))
		for _, root := range r.CgroupRoots {
			if _, err := os.Stat(filepath.Join(mnt, root)); err == nil && !slices.Contains(left, filepath.Join(mnt, root)) {
				left = append(left, filepath.Join(mnt, root))
			}
		}
		m.cgroups = append(m.cgroups, left...)
	}
	m.netns, _ = filepath.Glob("/run/netns/" + r.Prefix + "-*")

	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, r.LinkStem) {
			m.links = append(m.links, l.Attrs().Name)
		}
	}
	network := netip.MustParsePrefix(r.Network)
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range routes {
		if rt.Dst == nil {
			continue // a default route is the host's, not into the topology
		}
		dst, ok := netip.AddrFromSlice(rt.Dst.IP.To4())
		ones, _ := rt.Dst.Mask.Size()
		if ok && ones > 0 && network.Overlaps(netip.PrefixFrom(dst, ones)) {
			dev := strconv.Itoa(rt.LinkIndex)
			if l, err := netlink.LinkByIndex(rt.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			if ignoreStem != "" && strings.HasPrefix(dev, ignoreStem) {
				continue
			}
			m.routes = append(m.routes, fmt.Sprintf("%s table %d dev %s", rt.Dst, rt.Table, dev))
		}
	}
	for _, file := range []string{"/proc/self/mountinfo", "/proc/1/mountinfo"} {
		for _, e := range readMountinfo(t, file) {
			for _, s := range []string{e.root, e.point, e.source} {
				if strings.Contains(s, r.Marker) || strings.Contains(s, "/"+r.Prefix+"-") {
					m.mounts = append(m.mounts, fmt.Sprintf("%s: %s on %s (%s)", file, e.source, e.point, e.fstype))
					break
				}
			}
		}
	}
	recs, _ := filepath.Glob("/run/flowplace/nodes/*" + r.Prefix + "-*")
	m.records = append(m.records, recs...)
	if _, err := os.Stat("/run/flowplace/topology/" + r.Prefix + ".pid"); err == nil {
		m.records = append(m.records, "/run/flowplace/topology/"+r.Prefix+".pid")
	}
	for _, d := range r.Dirs {
		if _, err := os.Stat(d); err == nil {
			m.dirs = append(m.dirs, d)
		}
	}
	if m.sysctls, err = nodes.ReadSysctls(); err != nil {
		t.Fatal(err)
	}
	return m
}

// foreignNodes lists the live nodes of runs other than the one with
// prefix ("": of every run), e.g. another test package's fleet: while they
// run, the kubelet's settings stay theirs.
func foreignNodes(t *testing.T, prefix string) []string {
	t.Helper()
	files, _ := filepath.Glob("/run/flowplace/nodes/*.json")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var rec struct {
			PID   int    `json:"pid"`
			Start uint64 `json:"start"`
			Name  string `json:"name"`
		}
		if json.Unmarshal(b, &rec) != nil || rec.PID == 0 || (prefix != "" && strings.Contains(f, prefix+"-")) {
			continue
		}
		if st, _, ok := readProc(rec.PID); ok && st == rec.Start {
			out = append(out, fmt.Sprintf("%s of pid %d", rec.Name, rec.PID))
		}
	}
	return out
}

// checks says what assertNothingLeft judges besides the run's own things.
type checks struct {
	sysctls map[string]string // the values before any node (sysctlBaseline); nil skips
	tmpDir  string            // must be empty; "" skips
	// otherStem: routes into the run's network through devices named so
	// are another run's (a new fleet on the same addresses).
	otherStem string
}

// sysctlBaseline returns the kubelet's kernel settings as they were before
// any node ran: the current ones, or while nodes of other processes run,
// those their first node saved.
func sysctlBaseline(t *testing.T) map[string]string {
	t.Helper()
	if len(foreignNodes(t, "")) > 0 {
		b, err := os.ReadFile("/run/flowplace/nodes/sysctls.json")
		if err != nil {
			t.Fatalf("nodes of other processes run but their kernel settings were not saved: %v", err)
		}
		var vals map[string]string
		if err := json.Unmarshal(b, &vals); err != nil {
			t.Fatal(err)
		}
		return vals
	}
	vals, err := nodes.ReadSysctls()
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// assertNothingLeft fails t for every kind of thing of run r still on the
// machine. known are the run's processes seen while it ran.
func assertNothingLeft(t *testing.T, r runFacts, known map[int]procInfo, c checks) {
	t.Helper()
	// Teardown waits for the processes it kills; a moment is allowed for
	// the kernel to reap those reparented to init.
	deadline := time.Now().Add(5 * time.Second)
	m := observeIgnoring(t, r, known, false, c.otherStem)
	for len(m.procs) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		m = observeIgnoring(t, r, known, false, c.otherStem)
	}
	if len(m.procs) > 0 {
		t.Errorf("processes of the run still running: %v", m.procs)
		for pid := range m.procs {
			_ = syscall.Kill(pid, syscall.SIGKILL) // not into the next tests
		}
	}
	for _, kind := range []struct {
		what string
		left []string
	}{
		{"cgroups", m.cgroups}, {"network namespaces", m.netns}, {"host links", m.links},
		{"host routes into " + r.Network, m.routes}, {"mounts", m.mounts}, {"records", m.records},
		{"run directories", m.dirs},
	} {
		if len(kind.left) > 0 {
			t.Errorf("%s of the run left: %v", kind.what, kind.left)
		}
	}
	if c.sysctls != nil {
		if other := foreignNodes(t, r.Prefix); len(other) > 0 {
			t.Logf("the kubelet's kernel settings not compared: nodes of other processes run now (%v)", other)
		} else if !maps.Equal(m.sysctls, c.sysctls) {
			t.Errorf("kernel settings %v, want %v as before the run", m.sysctls, c.sysctls)
		}
		if _, err := os.Stat("/run/flowplace/nodes/sysctls.json"); err == nil && len(foreignNodes(t, r.Prefix)) == 0 {
			t.Errorf("saved kernel settings /run/flowplace/nodes/sysctls.json left with no node running")
		}
	}
	if c.tmpDir != "" {
		entries, err := os.ReadDir(c.tmpDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("left behind in TMPDIR: %s", filepath.Join(c.tmpDir, e.Name()))
		}
	}
}

// assertRunning checks that m shows a running fleet with pods: the node
// daemons, the shims and containers of the pods, and everything else a run
// has on the machine. It keeps the teardown checks honest: each kind of
// thing they look for is seen while it exists.
func assertRunning(t *testing.T, m machine, r runFacts) {
	t.Helper()
	comms := map[string]int{}
	for _, p := range m.procs {
		comms[p.Comm]++
	}
	nodeCount := len(r.CgroupRoots)
	for comm, want := range map[string]int{
		"kubelet": nodeCount, "containerd": nodeCount, "kube-proxy": nodeCount, "sleep": nodeCount, // the holders
		"containerd-shim": nodeCount * podsPerNode, "pause": nodeCount * podsPerNode, "busybox": nodeCount * podsPerNode,
		"kube-apiserver": 2, "etcd": 1, "kube-controller": 1, "kube-scheduler": 1,
	} {
		if comms[comm] < want {
			t.Errorf("%d %s processes of the run found, want at least %d: the run's processes are not found (%v)", comms[comm], comm, want, comms)
		}
	}
	assertHas(t, m, r)
}

// assertHas checks that every kind of thing of the run but processes is
// on the machine.
func assertHas(t *testing.T, m machine, r runFacts) {
	t.Helper()
	for _, kind := range []struct {
		what string
		has  []string
	}{
		{"cgroups", m.cgroups}, {"network namespaces", m.netns}, {"host links", m.links},
		{"host routes into " + r.Network, m.routes}, {"mounts", m.mounts}, {"records", m.records},
		{"run directories", m.dirs},
	} {
		if len(kind.has) == 0 {
			t.Errorf("no %s of the run found while it exists", kind.what)
		}
	}
}

// shortTempDir is a TMPDIR for a run: t.TempDir's long names would push
// the nodes' sockets past the 108 bytes of a unix socket address.
func shortTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fptd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// running returns the processes of m as known ones for the checks after
// the run.
func running(m machine) map[int]procInfo { return maps.Clone(m.procs) }

func startFleet(t *testing.T, base uint8) *Fleet {
	t.Helper()
	return StartForTest(t, Config{Clusters: []string{"member1"}, NodesPerCluster: 2, AddrBase: base})
}

// TestStopLeavesNothing stops a fleet whose pods run and checks that
// nothing of it is left.
func TestStopLeavesNothing(t *testing.T) {
	Require(t)
	tmp := shortTempDir(t)
	t.Setenv("TMPDIR", tmp)
	before := sysctlBaseline(t)
	f := startFleet(t, 86)
	deployBusybox(t, f, "member1")
	r := factsOf(f)
	during := observe(t, r, nil, true)
	assertRunning(t, during, r)
	if maps.Equal(during.sysctls, before) {
		t.Logf("the kubelet's kernel settings equal this machine's (%v): their restore cannot be seen", before)
	}
	start := time.Now()
	if err := f.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	assertNothingLeft(t, r, running(during), checks{sysctls: before, tmpDir: tmp})
}

// TestTeardownChild is the child of TestKilledRunIsSwept: it starts a
// fleet with pods, reports it and waits to be killed.
func TestTeardownChild(t *testing.T) {
	report := os.Getenv(teardownChildEnv)
	if report == "" {
		t.Skip("helper for TestKilledRunIsSwept")
	}
	base, err := strconv.Atoi(os.Getenv(teardownBaseEnv))
	if err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, uint8(base))
	deployBusybox(t, f, "member1")
	data, err := json.Marshal(factsOf(f))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(report+".tmp", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(report+".tmp", report); err != nil {
		t.Fatal(err)
	}
	<-t.Context().Done() // until the parent kills this process
}

// startKilledRun runs TestTeardownChild with TMPDIR tmp until its fleet
// runs pods, and returns its facts and the run as seen from outside, with
// a function that SIGKILLs it.
func startKilledRun(t *testing.T, tmp string, base uint8) (runFacts, machine, func()) {
	t.Helper()
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(os.Args[0], "-test.run=^TestTeardownChild$", "-test.v", "-test.count=1", "-test.timeout=20m")
	cmd.Env = append(os.Environ(), teardownChildEnv+"="+report, teardownBaseEnv+"="+strconv.Itoa(int(base)), "TMPDIR="+tmp)
	// Not into a test after this one, whatever happens here.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := os.Create(filepath.Join(t.TempDir(), "child.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	kill := func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	t.Cleanup(kill)
	childLog := func() string { b, _ := os.ReadFile(out.Name()); return string(b) }
	deadline := time.Now().Add(childStartTimeout)
	for {
		if _, err := os.Stat(report); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("child exited before reporting its fleet:\n%s", childLog())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("child did not report its fleet in %s:\n%s", childStartTimeout, childLog())
		}
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var r runFacts
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if r.PID != cmd.Process.Pid || len(r.CgroupRoots) != 2 {
		t.Fatalf("child report %+v: want pid %d and two nodes", r, cmd.Process.Pid)
	}
	during := observe(t, r, nil, true)
	assertRunning(t, during, r)
	return r, during, kill
}

// childStartTimeout bounds a child's fleet start with its pods.
const childStartTimeout = 5 * time.Minute

// assertLeftovers checks what a SIGKILLed run leaves: its pods' shims and
// containers keep running in the nodes' cgroups, and everything else stays
// on the machine; the processes tied to the dead one by their parent-death
// signal are gone.
func assertLeftovers(t *testing.T, r runFacts, known map[int]procInfo, before map[string]string) machine {
	t.Helper()
	var m machine
	deadline := time.Now().Add(5 * time.Second)
	for {
		m = observe(t, r, known, false)
		var tied []string
		for _, p := range m.procs {
			switch p.Comm {
			case "kubelet", "kube-proxy", "containerd", "kube-apiserver", "etcd", "kube-controller", "kube-scheduler":
				tied = append(tied, p.String())
			}
		}
		if len(tied) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("processes tied to the killed run by their parent-death signal still run: %v", tied)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	comms := map[string]int{}
	for _, p := range m.procs {
		comms[p.Comm]++
	}
	if comms["containerd-shim"] == 0 || comms["pause"] == 0 || comms["busybox"] == 0 {
		t.Errorf("no shims and containers of the killed run found (%v): the run's processes are not found", m.procs)
	}
	assertHas(t, m, r)
	if maps.Equal(m.sysctls, before) {
		t.Logf("the kubelet's kernel settings equal this machine's (%v): their restore cannot be seen", before)
	}
	t.Logf("a killed run leaves %d processes (%v), %d cgroups, %d namespaces, %d host links, %d host routes, %d mounts, %d records, %d directories",
		len(m.procs), comms, len(m.cgroups), len(m.netns), len(m.links), len(m.routes), len(m.mounts), len(m.records), len(m.dirs))
	return m
}

// TestKilledRunIsSwept SIGKILLs a process whose fleet runs pods and checks
// that what it leaves is removed by an explicit Sweep while no fleet runs,
// and by the next fleet's start; and that a Sweep while the owner lives
// touches none of its nodes.
func TestKilledRunIsSwept(t *testing.T) {
	Require(t)
	t.Run("explicit Sweep with no fleet running", func(t *testing.T) {
		tmp := shortTempDir(t)
		before := sysctlBaseline(t)
		r, during, kill := startKilledRun(t, tmp, 87)

		// The owner lives: Sweep from another process leaves its run whole.
		if err := nodes.Sweep(); err != nil {
			t.Errorf("nodes.Sweep with the owner alive: %v", err)
		}
		if err := wan.Sweep(wan.GeneratedPrefixStem); err != nil {
			t.Errorf("wan.Sweep with the owner alive: %v", err)
		}
		after := observe(t, r, running(during), true)
		for pid, p := range during.procs {
			if q, ok := after.procs[pid]; !ok || q.Start != p.Start {
				t.Errorf("Sweep with the owner alive ended its process %d %s", pid, p)
			}
		}
		for _, kind := range []struct {
			what          string
			during, after []string
		}{
			{"cgroups", during.cgroups, after.cgroups}, {"network namespaces", during.netns, after.netns},
			{"host links", during.links, after.links}, {"host routes", during.routes, after.routes},
			{"mounts", during.mounts, after.mounts}, {"records", during.records, after.records},
			{"run directories", during.dirs, after.dirs},
		} {
			if !slices.Equal(slices.Sorted(slices.Values(kind.during)), slices.Sorted(slices.Values(kind.after))) {
				t.Errorf("Sweep with the owner alive changed its %s: %v -> %v", kind.what, kind.during, kind.after)
			}
		}
		if !maps.Equal(during.sysctls, after.sysctls) {
			t.Errorf("Sweep with the owner alive changed the kernel settings its kubelets set: %v -> %v", during.sysctls, after.sysctls)
		}

		kill()
		left := assertLeftovers(t, r, running(during), before)
		start := time.Now()
		if err := nodes.Sweep(); err != nil {
			t.Errorf("nodes.Sweep: %v", err)
		}
		if err := wan.Sweep(wan.GeneratedPrefixStem); err != nil {
			t.Errorf("wan.Sweep: %v", err)
		}
		t.Logf("swept in %s", time.Since(start).Round(time.Millisecond))
		known := running(during)
		maps.Copy(known, left.procs)
		assertNothingLeft(t, r, known, checks{sysctls: before, tmpDir: tmp})
	})

	t.Run("next fleet start", func(t *testing.T) {
		tmp := shortTempDir(t)
		before := sysctlBaseline(t)
		const base = 88
		r, during, kill := startKilledRun(t, tmp, base)
		kill()
		left := assertLeftovers(t, r, running(during), before)
		known := running(during)
		maps.Copy(known, left.procs)

		// The same address base: the killed run's management network
		// must be gone for the new one to be routed.
		t.Setenv("TMPDIR", tmp)
		f := startFleet(t, base)
		assertNothingLeft(t, r, known, checks{otherStem: f.WAN.HostLinkStem()})
		r2 := factsOf(f)
		during2 := observe(t, r2, nil, true)
		if err := f.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		assertNothingLeft(t, r2, running(during2), checks{sysctls: before, tmpDir: tmp})
	})
}
