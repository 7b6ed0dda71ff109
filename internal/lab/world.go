package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/world/wan"
)

// ServicePort is the port every demo service listens on.
const ServicePort = 8080

// Options configure a World.
type Options struct {
	Profile *Profile
	App     *demo.App
	// Executable runs "lab-service" for each demo service (default: this
	// binary).
	Executable string
	// Progress receives one line per step; nil discards.
	Progress io.Writer
	// Telemetry, when set, serves the agents' Prometheus metrics too.
	Telemetry *Telemetry
}

// World is the running lab: clusters as network namespaces behind the WAN
// hub, each with its own cgroup (what a node's agent observes), and the demo
// services as real processes placed in them.
type World struct {
	opts    Options
	topo    *wan.Topology
	cgRoot  string
	cgroups map[string]string // cluster -> cgroup v2 dir

	mu        sync.Mutex
	placement map[string]string         // service -> cluster
	addrs     map[string]netip.AddrPort // service -> where it listens
	procs     map[string]*exec.Cmd
	// The routing phase (routing.go): every service in every cluster,
	// called at its service address, which each cluster's routing
	// datapath rewrites.
	replicas  map[string]map[string]netip.AddrPort // service -> cluster -> where it listens
	vips      map[string]netip.AddrPort            // service -> service address
	routers   map[string]*redirect.Datapath        // cluster -> routing datapath
	agents    map[string]*clusterAgent
	resolvers map[string]*labResolver
	unmount   string // cgroup v2 mount the lab made, if any
}

// NewWorld builds the clusters. On error it leaves nothing behind.
func NewWorld(ctx context.Context, opts Options) (_ *World, err error) {
	if opts.Profile == nil || opts.App == nil {
		return nil, errors.New("lab: profile and app are required")
	}
	if err := opts.Profile.Validate(); err != nil {
		return nil, err
	}
	if err := opts.App.Validate(); err != nil {
		return nil, fmt.Errorf("demo app: %w", err)
	}
	if opts.Executable == "" {
		if opts.Executable, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("lab: own executable: %w", err)
		}
	}
	w := &World{opts: opts, cgroups: map[string]string{}, placement: map[string]string{},
		addrs: map[string]netip.AddrPort{}, procs: map[string]*exec.Cmd{},
		replicas: map[string]map[string]netip.AddrPort{}, vips: map[string]netip.AddrPort{}, routers: map[string]*redirect.Datapath{},
		agents: map[string]*clusterAgent{}, resolvers: map[string]*labResolver{}}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	rtt := map[wan.Pair]time.Duration{}
	names := opts.Profile.ClusterNames()
	for i, a := range names {
		for _, b := range names[i+1:] {
			rtt[wan.Pair{A: a, B: b}] = opts.Profile.Injected(a, b)
		}
	}
	w.progress("[1/6] creating %d clusters behind the WAN hub", len(names))
	// Immediate ACKs: with delayed ACKs a request/response RTT sample also
	// holds how long the peer took to answer, which here includes its own
	// downstream calls.
	if err := SweepLeftovers(); err != nil {
		w.progress("cleaning up after an earlier run: %v", err)
	}
	prefix := fmt.Sprintf("%s%d", labPrefix, os.Getpid())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if w.topo, err = wan.New(ctx, wan.Config{Prefix: prefix, Clusters: names, ExtraRTT: rtt, QuickACK: true}); err != nil {
		return nil, fmt.Errorf("lab: clusters: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mounted, _ := probe.FindCgroup2()
	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		return nil, err
	}
	if mounted == "" {
		w.unmount = root // ours: Close removes it
	}
	w.cgRoot = filepath.Join(root, cgroupPrefix+w.topo.Prefix())
	if err := os.MkdirAll(w.cgRoot, 0o755); err != nil {
		return nil, fmt.Errorf("lab: cgroup: %w", err)
	}
	for _, n := range names {
		dir := filepath.Join(w.cgRoot, n)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("lab: cgroup for %s: %w", n, err)
		}
		w.cgroups[n] = dir
	}
	return w, nil
}

func (w *World) progress(format string, args ...any) {
	if w.opts.Progress != nil {
		fmt.Fprintf(w.opts.Progress, "lab: "+format+"\n", args...)
	}
}

// ClusterNames are the clusters, in profile order.
func (w *World) ClusterNames() []string {
	var out []string
	for _, c := range w.topo.Clusters() {
		out = append(out, c.Name)
	}
	return out
}

// ClusterUID is the stand-in UID the lab's agents report for a cluster.
func (w *World) ClusterUID(name string) string { return ClusterUID(name) }

// ClusterOf inverts ClusterUID.
func (w *World) ClusterOf(uid string) string { return ClusterOfUID(uid) }

// PeerClusterUID: the in-process agents always know their peers' UIDs.
func (w *World) PeerClusterUID(string) (string, bool) { return "", false }

// CollectorHost: the in-process agents export on loopback.
func (w *World) CollectorHost() string { return "127.0.0.1" }

// Topology is the clusters' network.
func (w *World) Topology() *wan.Topology { return w.topo }

// Cgroup returns the cgroup a cluster's processes run in.
func (w *World) Cgroup(cluster string) string { return w.cgroups[cluster] }

// Placement returns where each service runs now.
func (w *World) Placement() map[string]string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]string, len(w.placement))
	for k, v := range w.placement {
		out[k] = v
	}
	return out
}

// Addrs returns where each service listens now.
func (w *World) Addrs() map[string]netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]netip.AddrPort, len(w.addrs))
	for k, v := range w.addrs {
		out[k] = v
	}
	return out
}

// Place (re)starts every demo service in the cluster placement names, like
// a rollout after rescheduling: services that move get an address in their
// new cluster, and callers are restarted with their callees' addresses.
func (w *World) Place(ctx context.Context, placement map[string]string) error {
	for _, s := range w.opts.App.Services {
		c, ok := placement[s.Name]
		if !ok {
			return fmt.Errorf("lab: no cluster for service %s", s.Name)
		}
		if _, ok := w.topo.Cluster(c); !ok {
			return fmt.Errorf("lab: service %s placed in unknown cluster %s", s.Name, c)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopLocked()
	for _, s := range w.opts.App.Services {
		c := placement[s.Name]
		if _, ok := w.addrs[s.Name]; !ok || w.placement[s.Name] != c {
			cl, _ := w.topo.Cluster(c)
			ip, err := cl.AllocAddr()
			if err != nil {
				return fmt.Errorf("lab: address for %s in %s: %w", s.Name, c, err)
			}
			w.addrs[s.Name] = netip.AddrPortFrom(ip, ServicePort)
		}
		w.placement[s.Name] = c
	}
	if err := w.refreshAttributionLocked(); err != nil {
		return err
	}
	for _, s := range w.opts.App.Services {
		if err := w.startLocked(ctx, s.Name); err != nil {
			return err
		}
	}
	for _, s := range w.opts.App.Services {
		if err := w.waitListening(ctx, s.Name); err != nil {
			return err
		}
	}
	return nil
}

func (w *World) startLocked(ctx context.Context, name string) error {
	return w.startInstanceLocked(ctx, name, w.placement[name], w.addrs[name], w.addrs, name)
}

// startInstanceLocked starts service name in cluster, listening on listen
// and calling its peers at peers; procKey names the process.
func (w *World) startInstanceLocked(ctx context.Context, name, cluster string, listen netip.AddrPort, peerAddrs map[string]netip.AddrPort, procKey string) error {
	cl, _ := w.topo.Cluster(cluster)
	args := []string{"lab-service", "--name", name, "--listen", listen.String()}
	peers := []string{}
	for svc, a := range peerAddrs {
		peers = append(peers, svc+"="+a.String())
	}
	sort.Strings(peers)
	for _, p := range peers {
		args = append(args, "--peer", p)
	}
	cg, err := os.Open(w.cgroups[cl.Name])
	if err != nil {
		return fmt.Errorf("lab: open cgroup of %s: %w", cl.Name, err)
	}
	defer cg.Close()
	// Not tied to ctx: services live until Place or Close stops them.
	cmd := cl.Command(context.WithoutCancel(ctx), w.opts.Executable, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Born in the cluster's cgroup, so that its sockets are the
		// cluster's from the first one.
		UseCgroupFD: true, CgroupFD: int(cg.Fd()),
		Setpgid: true, Pdeathsig: syscall.SIGKILL,
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start %s in %s: %w", name, cl.Name, err)
	}
	w.procs[procKey] = cmd
	return nil
}

func (w *World) waitListening(ctx context.Context, name string) error {
	return w.waitInstance(ctx, name, w.placement[name], w.addrs[name])
}

func (w *World) waitInstance(ctx context.Context, name, cluster string, addr netip.AddrPort) error {
	cl, _ := w.topo.Cluster(cluster)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := cl.Dial(ctx, "tcp4", addr.String())
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lab: service %s did not start listening on %s in %s: %w", name, addr, cl.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *World) stopLocked() {
	for name, cmd := range w.procs {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		delete(w.procs, name)
	}
}

// Close stops every process and removes the clusters and cgroups.
func (w *World) Close() error {
	var errs []error
	w.mu.Lock()
	w.stopLocked()
	if err := w.stopAgentsLocked(); err != nil {
		errs = append(errs, err)
	}
	for name, d := range w.routers {
		if err := d.Close(); err != nil {
			errs = append(errs, fmt.Errorf("lab: routing of %s: %w", name, err))
		}
	}
	clear(w.routers)
	w.mu.Unlock()
	if w.topo != nil {
		if err := w.topo.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if w.cgRoot != "" {
		for _, dir := range w.cgroups {
			removeCgroup(dir, &errs)
		}
		removeCgroup(w.cgRoot, &errs)
	}
	if w.unmount != "" {
		if err := syscall.Unmount(w.unmount, 0); err != nil {
			errs = append(errs, fmt.Errorf("unmount %s: %w", w.unmount, err))
		}
	}
	return errors.Join(errs...)
}

func removeCgroup(dir string, errs *[]error) {
	// The kernel releases a cgroup once its last socket is gone.
	var err error
	for range 100 {
		if err = os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	*errs = append(*errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
}

// LoadResult is what clients measured: request latency per client cluster.
type LoadResult struct {
	Requests  map[string]int             // per client cluster
	Errors    map[string]int             // per client cluster
	Latencies map[string][]time.Duration // per client cluster, sorted
}

// Mean returns the mean latency over all clusters' requests.
func (r *LoadResult) Mean() time.Duration {
	var sum time.Duration
	n := 0
	for _, l := range r.Latencies {
		for _, d := range l {
			sum += d
		}
		n += len(l)
	}
	if n == 0 {
		return 0
	}
	return sum / time.Duration(n)
}

// Quantile returns the q-quantile over all clusters' requests.
func (r *LoadResult) Quantile(q float64) time.Duration {
	var all []time.Duration
	for _, l := range r.Latencies {
		all = append(all, l...)
	}
	if len(all) == 0 {
		return 0
	}
	slices.Sort(all)
	return all[min(len(all)-1, int(q*float64(len(all))))]
}

// Load sends requests to the entry service from clients in every cluster,
// weights[cluster] requests per second each, for d.
func (w *World) Load(ctx context.Context, d time.Duration, weights map[string]float64) (*LoadResult, error) {
	res := &LoadResult{Requests: map[string]int{}, Errors: map[string]int{}, Latencies: map[string][]time.Duration{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, cl := range w.topo.Clusters() {
		rate := weights[cl.Name]
		if rate <= 0 {
			continue
		}
		cl := cl
		client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 16,
			// Client sockets open inside the client's cluster.
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) { return cl.Dial(ctx, network, addr) },
		}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer client.CloseIdleConnections()
			runLoad(ctx, client, w.entryFor(cl.Name).String(), d, rate, func(lat time.Duration, err error) {
				mu.Lock()
				defer mu.Unlock()
				res.Requests[cl.Name]++
				if err != nil {
					res.Errors[cl.Name]++
					return
				}
				res.Latencies[cl.Name] = append(res.Latencies[cl.Name], lat)
			})
		}()
	}
	wg.Wait()
	return res, res.check()
}

// check sorts the latencies and fails if any request did.
func (r *LoadResult) check() error {
	for _, l := range r.Latencies {
		slices.Sort(l)
	}
	var failed []string
	for c, n := range r.Errors {
		if n > 0 {
			failed = append(failed, fmt.Sprintf("%s: %d of %d", c, n, r.Requests[c]))
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		return fmt.Errorf("lab: requests failed (%s)", strings.Join(failed, ", "))
	}
	return nil
}

// runLoad sends rate entry requests per second to entry for d (or until
// ctx ends) and reports each one's latency or error to record.
func runLoad(ctx context.Context, client *http.Client, entry string, d time.Duration, rate float64, record func(time.Duration, error)) {
	var inflight sync.WaitGroup
	defer inflight.Wait()
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	stop := time.After(d)
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			return
		case <-t.C:
		}
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			start := time.Now()
			err := demo.Request(ctx, client, entry, 100, 0)
			record(time.Since(start), err)
		}()
	}
}

const (
	// labPrefix starts the network-namespace prefix of every lab run.
	labPrefix = "fplab"
	// cgroupPrefix names a run's cgroup directory under the cgroup v2 root.
	cgroupPrefix = "flowplace-lab-"
)

// SweepLeftovers removes what a killed lab run left behind: its network
// namespaces (the topology sweeper knows their owners) and the cgroups of
// runs whose namespaces are gone. Processes of a killed run die with it
// (they are started with a parent-death signal) and its eBPF programs are
// detached when its file descriptors close.
func SweepLeftovers() error {
	var errs []error
	if err := wan.Sweep(labPrefix); err != nil {
		errs = append(errs, err)
	}
	root, err := probe.FindCgroup2()
	if err != nil || root == "" {
		return errors.Join(append(errs, err)...)
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		prefix, ok := strings.CutPrefix(e.Name(), cgroupPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		if live, _ := filepath.Glob(filepath.Join("/run/netns", prefix+"-*")); len(live) > 0 {
			continue // a run that is still going
		}
		dir := filepath.Join(root, e.Name())
		subs, _ := os.ReadDir(dir)
		for _, s := range subs {
			if s.IsDir() {
				removeCgroup(filepath.Join(dir, s.Name()), &errs)
			}
		}
		removeCgroup(dir, &errs)
	}
	return errors.Join(errs...)
}
