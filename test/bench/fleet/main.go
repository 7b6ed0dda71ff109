// Command fleet measures what a fleet of member clusters with real nodes
// (world/fleet) costs on this machine: the time until the control-plane
// binaries and the images are ready and until one cluster with two nodes is
// Ready (fleet.Start, split as the fleet logs it), and the resident memory
// (VmRSS) of every node daemon and control-plane process, with no pods and
// with N busybox pods per node, with each pod's shim and containers.
// Numbers only, no thresholds. Run as root: make bench-fleet.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/fleet"
	"github.com/flowplace/flowplace/world/nodes"
)

const (
	cluster  = "member1"
	nodesPer = 2
	// addrBase keeps the bench's WAN apart from the tests' (81..88).
	addrBase = 89
)

func main() {
	pods := flag.Int("pods", 10, "busybox pods per node for the loaded measurement")
	starts := flag.Int("starts", 3, "fleet starts timed (the last one is measured for memory)")
	settle := flag.Duration("settle", 10*time.Second, "wait after Ready before memory is sampled")
	samples := flag.Int("samples", 5, "memory samples, 1 s apart (the median is reported)")
	flag.Parse()
	if *pods < 1 || *pods > 100 || *starts < 1 || *samples < 1 {
		fmt.Fprintln(os.Stderr, "fleet-bench: want -pods 1..100, -starts >= 1, -samples >= 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, *pods, *starts, *settle, *samples)
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fleet-bench: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(ctx context.Context, pods, starts int, settle time.Duration, samples int) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, cgroups, kubelets)")
	}
	if err := nodes.Check(); err != nil {
		return err
	}
	printMachine()

	// Binaries: the kubelet, kube-proxy and control plane from the tools
	// module's cache.
	res, _ := controlplane.Resolve()
	t0 := time.Now()
	if _, err := controlplane.Binaries(ctx, logf); err != nil {
		return err
	}
	fmt.Printf("binaries ready (controlplane.Binaries, %s): %s\n", warmth(res.Cached), fmtDur(time.Since(t0)))

	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	src, err := images.FindSourceDir(wd)
	if err != nil {
		return err
	}
	t0 = time.Now()
	imgs, err := images.Build(ctx, images.Options{SourceDir: src, Logf: logf}, images.Pause, images.Busybox)
	if err != nil {
		return err
	}
	fmt.Printf("images ready (internal/images Build of %s and %s): %s\n", images.Pause, images.Busybox, fmtDur(time.Since(t0)))
	busybox := ""
	for _, img := range imgs {
		if img.Name == images.Busybox {
			busybox = img.Ref
		}
	}

	fmt.Printf("\nfleet.Start, 1 cluster x %d nodes until every node is Ready (%d starts):\n", nodesPer, starts)
	var totals []time.Duration
	for i := range starts {
		last := i == starts-1
		f, split, err := startFleet(ctx, imgs)
		if err != nil {
			return err
		}
		totals = append(totals, split.wall)
		split.print(i + 1)
		if !last {
			t0 := time.Now()
			err := f.Stop()
			fmt.Printf("  fleet.Stop: %s\n", fmtDur(time.Since(t0)))
			if err != nil {
				return err
			}
			continue
		}
		sorted := slices.Sorted(slices.Values(totals))
		fmt.Printf("fleet.Start median of %d: %s (min %s, max %s)\n", len(sorted), fmtDur(sorted[len(sorted)/2]), fmtDur(sorted[0]), fmtDur(sorted[len(sorted)-1]))
		err = measure(ctx, f, busybox, pods, settle, samples)
		t0 := time.Now()
		stopErr := f.Stop()
		fmt.Printf("\nfleet.Stop with %d pods: %s\n", pods*nodesPer, fmtDur(time.Since(t0)))
		if err := errors.Join(err, stopErr); err != nil {
			return err
		}
	}
	return nil
}

func warmth(cached bool) string {
	if cached {
		return "warm: cached"
	}
	return "cold: built now"
}

// startSplit is fleet.Start's wall time and what the fleet logged of it.
type startSplit struct {
	wall         time.Duration
	controlPlane string // fleet: "control planes" (binaries, sweeps, WAN, API servers, controllers)
	cpDetail     string // controlplane: etcd, host API server, CRDs
	nodes        []string
	fleetLine    string
}

var (
	cpLineRE    = regexp.MustCompile(`controlplane: (.* ready in [^;]*)`)
	nodeLineRE  = regexp.MustCompile(`nodes: (\S+ Ready in \S+ \([^)]*\))`)
	fleetLineRE = regexp.MustCompile(`fleet: .* Ready in (\S+) \(control planes (\S+)\)`)
)

func (s startSplit) print(i int) {
	fmt.Printf("  start %d: %s wall\n", i, fmtDur(s.wall))
	if s.fleetLine == "" {
		fmt.Printf("    (the fleet logged no summary line)\n")
		return
	}
	fmt.Printf("    control planes (binaries, sweeps, WAN, etcd, API servers, controller manager, scheduler): %s\n", s.controlPlane)
	fmt.Printf("      %s\n", s.cpDetail)
	if m := fleetLineRE.FindStringSubmatch(s.fleetLine); m != nil {
		total, err1 := time.ParseDuration(m[1])
		cp, err2 := time.ParseDuration(m[2])
		if err1 == nil && err2 == nil {
			fmt.Printf("    nodes, in parallel (containerd, image import, kubelet and kube-proxy until Ready): %s\n", fmtDur(total-cp))
		}
	}
	for _, n := range s.nodes {
		fmt.Printf("      %s\n", n)
	}
}

func startFleet(ctx context.Context, imgs []images.Image) (*fleet.Fleet, startSplit, error) {
	var mu sync.Mutex
	var s startSplit
	capture := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		mu.Lock()
		defer mu.Unlock()
		if m := cpLineRE.FindStringSubmatch(line); m != nil {
			s.cpDetail = m[1]
		}
		if m := nodeLineRE.FindStringSubmatch(line); m != nil {
			s.nodes = append(s.nodes, m[1])
		}
		if m := fleetLineRE.FindStringSubmatch(line); m != nil {
			s.fleetLine, s.controlPlane = line, m[2]
		}
	}
	t0 := time.Now()
	f, err := fleet.Start(ctx, fleet.Config{
		Clusters:        []string{cluster},
		NodesPerCluster: nodesPer,
		AddrBase:        addrBase,
		Images:          imgs,
		Logf:            capture,
	})
	s.wall = time.Since(t0)
	sort.Strings(s.nodes)
	return f, s, err
}

// proc is one measured process.
type proc struct {
	role string // kubelet, containerd, ...
	pid  int
}

func rssKB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("pid %d: no VmRSS", pid)
}

func comm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// sampleRSS returns each process's median VmRSS over samples, 1 s apart.
func sampleRSS(ctx context.Context, pids []int, samples int) (map[int]int, error) {
	got := map[int][]int{}
	for i := range samples {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		for _, pid := range pids {
			kb, err := rssKB(pid)
			if err != nil {
				return nil, fmt.Errorf("%s (pid %d): %w", comm(pid), pid, err)
			}
			got[pid] = append(got[pid], kb)
		}
	}
	out := map[int]int{}
	for pid, v := range got {
		slices.Sort(v)
		out[pid] = v[len(v)/2]
	}
	return out, nil
}

// nodeDaemons are a node's holder, containerd, kubelet and kube-proxy,
// named by what they exec'd into.
func nodeDaemons(n *nodes.Node) []proc {
	var out []proc
	for _, pid := range n.PIDs() {
		role := comm(pid)
		if role == "sleep" {
			role = "holder (sleep)"
		}
		out = append(out, proc{role, pid})
	}
	return out
}

// podProcs lists the processes in a node's cgroup subtree by kind: the
// shims (one per pod), the pause containers and the others.
func podProcs(n *nodes.Node) (shims, pause, others []int) {
	seen := map[int]bool{}
	filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", n.CgroupRoot), func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil || seen[pid] {
				continue
			}
			seen[pid] = true
			switch c := comm(pid); {
			case c == "containerd":
				// a daemon, measured as such
			case strings.HasPrefix(c, "containerd-shim"):
				shims = append(shims, pid)
			case c == "pause":
				pause = append(pause, pid)
			default:
				others = append(others, pid)
			}
		}
		return nil
	})
	return shims, pause, others
}

func mb(kb int) string { return fmt.Sprintf("%.1f MB", float64(kb)/1024) }

// measure reports memory with no pods, then starts pods busybox pods per
// node and reports it again.
func measure(ctx context.Context, f *fleet.Fleet, busybox string, pods int, settle time.Duration, samples int) error {
	cp := f.ControlPlane
	member := f.Member(cluster)
	pids := cp.PIDs()
	ctrl := member.ControllerPIDs()
	if len(ctrl) != 2 {
		return fmt.Errorf("%s: %d controller processes, want the controller manager and the scheduler", cluster, len(ctrl))
	}
	cpProcs := []proc{{"kube-apiserver", pids[cluster]}, {"kube-controller-manager", ctrl[0]}, {"kube-scheduler", ctrl[1]}}
	shared := []proc{{"etcd (all clusters)", pids["etcd"]}, {"kube-apiserver " + controlplane.HostName, pids[controlplane.HostName]}}

	report := func(title string, podsPerNode int) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(settle):
		}
		all := slices.Concat(cpProcs, shared)
		var podPIDs []int
		type nodePods struct{ shims, pause, others []int }
		perNode := map[string]nodePods{}
		for _, n := range f.Nodes[cluster] {
			all = append(all, nodeDaemons(n)...)
			s, p, o := podProcs(n)
			perNode[n.Name] = nodePods{s, p, o}
			podPIDs = slices.Concat(podPIDs, s, p, o)
		}
		var list []int
		for _, p := range all {
			list = append(list, p.pid)
		}
		rss, err := sampleRSS(ctx, append(list, podPIDs...), samples)
		if err != nil {
			return err
		}
		fmt.Printf("\n%s (VmRSS, median of %d samples 1 s apart, %s after Ready):\n", title, samples, settle)
		for _, n := range f.Nodes[cluster] {
			sum := 0
			var parts []string
			for _, p := range nodeDaemons(n) {
				sum += rss[p.pid]
				parts = append(parts, fmt.Sprintf("%s %s", p.role, mb(rss[p.pid])))
			}
			np := perNode[n.Name]
			line := fmt.Sprintf("  node %s: daemons %s (%s)", n.Name, mb(sum), strings.Join(parts, ", "))
			if podsPerNode > 0 {
				total := func(ps []int) int {
					s := 0
					for _, p := range ps {
						s += rss[p]
					}
					return s
				}
				shims, pause, others := total(np.shims), total(np.pause), total(np.others)
				k := len(np.shims)
				if k == 0 {
					k = 1
				}
				line += fmt.Sprintf("\n    %d pods (%d shims, %d pause, %d busybox processes): %s; per pod: shim %s + pause %s + busybox %s = %s; node total %s",
					len(np.shims), len(np.shims), len(np.pause), len(np.others), mb(shims+pause+others),
					mb(shims/k), mb(pause/k), mb(others/k), mb((shims+pause+others)/k), mb(sum+shims+pause+others))
			}
			fmt.Println(line)
		}
		sum := 0
		var parts []string
		for _, p := range cpProcs {
			sum += rss[p.pid]
			parts = append(parts, fmt.Sprintf("%s %s", p.role, mb(rss[p.pid])))
		}
		fmt.Printf("  cluster %s control plane: %s (%s)\n", cluster, mb(sum), strings.Join(parts, ", "))
		parts = parts[:0]
		for _, p := range shared {
			parts = append(parts, fmt.Sprintf("%s %s", p.role, mb(rss[p.pid])))
		}
		fmt.Printf("  shared: %s\n", strings.Join(parts, ", "))
		return nil
	}

	if err := report("memory with no pods", 0); err != nil {
		return err
	}
	t0 := time.Now()
	if err := deploy(ctx, f, busybox, pods); err != nil {
		return err
	}
	fmt.Printf("\n%d busybox pods per node (%d) Ready %s after the Deployment's create\n", pods, pods*nodesPer, fmtDur(time.Since(t0)))
	return report(fmt.Sprintf("memory with %d busybox pods per node", pods), pods)
}

// deploy runs pods sleeping busybox pods on each node (spread evenly) and
// waits until all are Ready.
func deploy(ctx context.Context, f *fleet.Fleet, ref string, pods int) error {
	c := f.Member(cluster).Client
	labels := map[string]string{"app": "bench"}
	replicas := int32(pods * nodesPer)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
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
					Containers: []corev1.Container{{
						Name: "sleep", Image: ref, ImagePullPolicy: corev1.PullNever,
						Command: []string{"/bin/busybox"}, Args: []string{"sleep", "3600"},
					}},
				},
			},
		},
	}
	if _, err := c.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		return err
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
		if err != nil {
			return false, err
		}
		ready := 0
		perNode := map[string]int{}
		for _, p := range l.Items {
			if p.Status.Phase != corev1.PodRunning {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready++
					perNode[p.Spec.NodeName]++
				}
			}
		}
		last = fmt.Sprintf("%d of %d Ready %v", ready, replicas, perNode)
		return ready == int(replicas), nil
	})
	if err != nil {
		return fmt.Errorf("busybox pods: %w (%s)", err, last)
	}
	return nil
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

func printMachine() {
	var uts unix.Utsname
	unix.Uname(&uts)
	model, cores := "unknown", 0
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			switch strings.TrimSpace(k) {
			case "model name":
				model = strings.TrimSpace(v)
			case "processor":
				cores++
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	var si unix.Sysinfo_t
	unix.Sysinfo(&si)
	fmt.Printf("machine: %s, %d CPUs (Go sees %d), %.1f GB RAM, kernel %s, %s\n", model, cores, runtime.NumCPU(),
		float64(si.Totalram)*float64(si.Unit)/(1<<30), unix.ByteSliceToString(uts.Release[:]), runtime.Version())
	fmt.Printf("load average at start: %s\n", strings.Join(strings.Fields(string(load))[:3], " "))
	if others := otherNodes(); others > 0 {
		fmt.Printf("note: %d node(s) of other processes run on this machine meanwhile; times include their load\n", others)
	}
}

// otherNodes counts the nodes of other live processes (world/nodes
// records).
func otherNodes() int {
	files, _ := filepath.Glob("/run/flowplace/nodes/*.json")
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || filepath.Base(f) == "sysctls.json" {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(string(b), `{"pid":%d`, &pid); err == nil && unix.Kill(pid, 0) == nil {
			n++
		}
	}
	return n
}
