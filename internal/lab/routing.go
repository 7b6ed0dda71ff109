package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"syscall"
	"time"

	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/internal/routing"
)

// vipFor is service i's address in the routing phase, from the benchmarking
// range (RFC 2544): routed connects never put it on the wire, and one that
// is not routed fails at once.
func vipFor(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}), ServicePort)
}

// Replicate runs every service in every cluster, each calling its peers at
// their service addresses, with a routing datapath on every cluster's
// cgroup (the agents started next share it). Until Route programs tables,
// calls to service addresses fail.
func (w *World) Replicate(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopLocked()
	for _, c := range w.topo.Clusters() {
		if w.routers[c.Name] != nil {
			continue
		}
		// Quiet: the lab reports its own progress.
		d, err := redirect.Open(klog.Background().V(4), redirect.Options{Cgroup: w.cgroups[c.Name]})
		if err != nil {
			return fmt.Errorf("lab: routing in %s: %w", c.Name, err)
		}
		w.routers[c.Name] = d
	}
	for i, s := range w.opts.App.Services {
		w.vips[s.Name] = vipFor(i)
		if w.replicas[s.Name] == nil {
			w.replicas[s.Name] = map[string]netip.AddrPort{}
		}
		for _, c := range w.topo.Clusters() {
			if _, ok := w.replicas[s.Name][c.Name]; ok {
				continue
			}
			ip, err := c.AllocAddr()
			if err != nil {
				return fmt.Errorf("lab: address for %s in %s: %w", s.Name, c.Name, err)
			}
			w.replicas[s.Name][c.Name] = netip.AddrPortFrom(ip, ServicePort)
		}
	}
	if err := w.refreshAttributionLocked(); err != nil {
		return err
	}
	for _, s := range w.opts.App.Services {
		for _, c := range w.topo.Clusters() {
			if err := w.startInstanceLocked(ctx, s.Name, c.Name, w.replicas[s.Name][c.Name], w.vips, instanceKey(s.Name, c.Name)); err != nil {
				return err
			}
		}
	}
	for _, s := range w.opts.App.Services {
		for _, c := range w.topo.Clusters() {
			if err := w.waitInstance(ctx, s.Name, c.Name, w.replicas[s.Name][c.Name]); err != nil {
				return err
			}
		}
	}
	return nil
}

func instanceKey(service, cluster string) string { return service + "@" + cluster }

// entryFor is where cluster's clients send their requests: the entry
// service's instance in their own cluster in the routing phase (a regional
// ingress), else wherever it runs.
func (w *World) entryFor(cluster string) netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	if a, ok := w.replicas[w.opts.App.Entry][cluster]; ok && len(w.vips) > 0 {
		return a
	}
	return w.addrs[w.opts.App.Entry]
}

// Route programs each cluster's routing tables.
func (w *World) Route(tables map[string][]redirect.Service) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c, t := range tables {
		d := w.routers[c]
		if d == nil {
			return fmt.Errorf("lab: no routing in cluster %s", c)
		}
		if _, err := d.Apply(t); err != nil {
			return fmt.Errorf("lab: routing in %s: %w", c, err)
		}
	}
	return nil
}

// Kill ends service's instance in cluster at once (SIGKILL), as a crashed
// pod or a lost node would: its listener goes, connects to it are reset.
func (w *World) Kill(service, cluster string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	cmd, ok := w.procs[instanceKey(service, cluster)]
	if !ok {
		return fmt.Errorf("lab: no instance of %s in %s", service, cluster)
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("lab: kill %s in %s: %w", service, cluster, err)
	}
	_ = cmd.Wait()
	delete(w.procs, instanceKey(service, cluster))
	return nil
}

// ProbeResult is one connect of the prober.
type ProbeResult struct {
	At time.Time `json:"at"`
	OK bool      `json:"ok"`
}

// RunProber connects to target every interval for d and writes one JSON
// ProbeResult per connect to out: what the "lab-prober" command does inside
// a cluster (its sockets must be born in the cluster's cgroup to be
// routed).
func RunProber(ctx context.Context, target string, interval, d time.Duration, out io.Writer) error {
	enc := json.NewEncoder(out)
	t := time.NewTicker(interval)
	defer t.Stop()
	stop := time.After(d)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case <-t.C:
		}
		start := time.Now()
		c, err := net.DialTimeout("tcp4", target, time.Second)
		if err == nil {
			c.Close()
		}
		if err := enc.Encode(ProbeResult{At: start, OK: err == nil}); err != nil {
			return err
		}
	}
}

// Probe runs the prober in cluster against target and returns its results
// once it ends.
func (w *World) Probe(ctx context.Context, cluster string, target netip.AddrPort, interval, d time.Duration, started chan<- struct{}) ([]ProbeResult, error) {
	cl, ok := w.topo.Cluster(cluster)
	if !ok {
		return nil, fmt.Errorf("lab: no cluster %s", cluster)
	}
	cg, err := os.Open(w.cgroups[cluster])
	if err != nil {
		return nil, err
	}
	defer cg.Close()
	cmd := cl.Command(ctx, w.opts.Executable, "lab-prober", "--target", target.String(), "--interval", interval.String(), "--duration", d.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start prober in %s: %w", cluster, err)
	}
	var res []ProbeResult
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var r ProbeResult
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, fmt.Errorf("lab: prober output %q: %w", sc.Text(), err)
		}
		if len(res) == 0 && started != nil {
			close(started)
		}
		res = append(res, r)
	}
	if err := cmd.Wait(); err != nil {
		return res, fmt.Errorf("lab: prober in %s: %w", cluster, err)
	}
	if len(res) == 0 {
		return nil, errors.New("lab: the prober made no connect")
	}
	return res, nil
}

// RoutingReport is what the routing phase found: the shop in every
// cluster, balanced first the way kube-proxy balances a multi-cluster
// service (every connect to any endpoint of any cluster, uniformly), then by
// flowplace's routing (local cluster first, then by measured RTT); then
// one cluster's instance of a service killed.
type RoutingReport struct {
	KubeProxy Phase `json:"kube_proxy"`
	Flowplace Phase `json:"flowplace"`
	// LatencyRatio and CrossClusterBytesRatio are flowplace/kube-proxy.
	LatencyRatio           float64 `json:"latency_ratio"`
	CrossClusterBytesRatio float64 `json:"cross_cluster_bytes_ratio"`
	// Order is each cluster's order of the other clusters, as routing
	// computed it from the RTTs measured in the first sub-phase.
	Order map[string][]string `json:"order"`
	// Failover: Killed in KilledIn, seen from a prober in KilledIn that
	// connects to the service address every ProbeIntervalMs.
	Killed, KilledIn string
	ProbeIntervalMs  float64 `json:"probe_interval_ms"`
	// FailoverMs is from the kill to the first connect that succeeded
	// among those begun once the instance was dead (reaped); FailedConnects
	// counts the connects that failed before
	// that, FailedAfterFailover those that failed after it (in the rest of
	// the probe window, WindowMs, longer than the first ejection).
	FailoverMs          float64 `json:"failover_ms"`
	FailedConnects      int     `json:"failed_connects"`
	FailedAfterFailover int     `json:"failed_connects_after_failover"`
	WindowMs            float64 `json:"window_ms"`
	// EndpointsUpdatedAfterMs is when the killed instance left the tables,
	// as its EndpointSlice would once its readiness probe failed.
	EndpointsUpdatedAfterMs float64 `json:"endpoints_updated_after_ms"`
}

// uniformTables spreads every service's connects over all its instances,
// as kube-proxy does with a multi-cluster service's endpoints.
func (w *World) uniformTables() map[string][]redirect.Service {
	out := map[string][]redirect.Service{}
	clusters := w.ClusterNames()
	for _, c := range clusters {
		for _, s := range w.opts.App.Services {
			var tier []redirect.Backend
			for i, d := range clusters {
				tier = append(tier, redirect.Backend{Addr: w.replicas[s.Name][d], Cluster: uint16(i)})
			}
			out[c] = append(out[c], redirect.Service{Addr: w.vips[s.Name], Tiers: [][]redirect.Backend{tier}})
		}
	}
	return out
}

// measuredRTT is the mean RTT snap holds from one cluster to another.
func measuredRTT(snap *aggregate.Snapshot, from, to string) (time.Duration, bool) {
	if snap == nil {
		return 0, false
	}
	st, ok := snap.Latency[ClusterUID(from)][ClusterUID(to)]
	if !ok || st.Samples == 0 {
		return 0, false
	}
	return time.Duration(st.Mean * float64(time.Second)), true
}

// routedTables are what flowplace's routing programs in each cluster: the
// tiers routing.Build makes from each service's endpoints, leaving out dead
// instances, in the order of the RTTs as an agent there sees them: its own
// measurements (own, the routing phase's), else the fleet's matrix (fleet,
// the first phase's, and own's other direction) measured in either
// direction, as routing.Controller takes them. Pooled connections leave
// some directions unmeasured in a short phase.
func (w *World) routedTables(own, fleet *aggregate.Snapshot, dead map[string]map[string]bool) (map[string][]redirect.Service, map[string][]string) {
	clusters := w.ClusterNames()
	out := map[string][]redirect.Service{}
	orders := map[string][]string{}
	for _, self := range clusters {
		rtt := map[string]routing.RTT{}
		var others []string
		for _, c := range clusters {
			if c == self {
				continue
			}
			others = append(others, c)
			for _, m := range []struct {
				snap     *aggregate.Snapshot
				from, to string
			}{{own, self, c}, {own, c, self}, {fleet, self, c}, {fleet, c, self}} {
				if d, ok := measuredRTT(m.snap, m.from, m.to); ok {
					rtt[c] = routing.RTT{Value: d, Source: routing.Measured}
					break
				}
			}
		}
		order := routing.Nearest(others, rtt)
		orders[self] = order
		for _, s := range w.opts.App.Services {
			v := routing.ServiceView{Namespace: w.opts.App.Namespace, Name: s.Name, Policy: routing.DefaultPolicy,
				IPs: []netip.Addr{w.vips[s.Name].Addr()}, Ports: []routing.Port{{Name: "http", Port: ServicePort}}}
			for _, c := range clusters {
				if dead[s.Name][c] {
					continue
				}
				a := w.replicas[s.Name][c]
				v.Slices = append(v.Slices, routing.Slice{Name: s.Name + "-" + c, Cluster: c, Ports: []routing.Port{{Name: "http", Port: a.Port()}},
					Endpoints: []routing.Endpoint{{Addr: a.Addr(), Ready: true, Serving: true}}})
			}
			for _, t := range routing.Build(&v, self, order, nil) {
				rs := redirect.Service{Addr: t.VIP}
				for _, tier := range t.Tiers {
					var bs []redirect.Backend
					for _, b := range tier {
						bs = append(bs, redirect.Backend{Addr: b.Addr, Cluster: uint16(slices.Index(clusters, b.Cluster))})
					}
					rs.Tiers = append(rs.Tiers, bs)
				}
				out[self] = append(out[self], rs)
			}
		}
	}
	return out, orders
}

// Failover measurement: a prober connect every probeInterval; the killed
// instance leaves the tables endpointsDelay after the kill (a readiness
// probe of period 1 s failing twice); the window outlasts the first
// ejection (redirect.DefaultHealth.BaseEjection), so a backend readmitted
// too early would show as failures after failover.
const (
	probeInterval  = 5 * time.Millisecond
	probeBaseline  = 500 * time.Millisecond
	endpointsDelay = 2 * time.Second
)

func failoverWindow() time.Duration { return redirect.DefaultHealth.BaseEjection + 3*time.Second }

// runRouting is the lab's routing phase; d is split between its two
// measured sub-phases; fleet is what the lab measured before (the fleet
// matrix's source).
func runRouting(ctx context.Context, w *World, fleet *aggregate.Snapshot, d time.Duration, rate float64, publish func(string)) (*RoutingReport, error) {
	rr := &RoutingReport{ProbeIntervalMs: ms(probeInterval)}
	publish(fmt.Sprintf("[5/6] routing: the shop in every cluster, balanced over all clusters' endpoints as kube-proxy does, for %s", d/2))
	if err := w.Replicate(ctx); err != nil {
		return nil, err
	}
	if err := w.exportRouting(ctx); err != nil {
		return nil, err
	}
	if err := w.Route(w.uniformTables()); err != nil {
		return nil, err
	}
	snap, kp, err := measureRunning(ctx, w, d/2, rate, sink{})
	if err != nil {
		return nil, err
	}
	rr.KubeProxy = kp
	tables, orders := w.routedTables(snap, fleet, nil)
	rr.Order = orders
	if err := w.Route(tables); err != nil {
		return nil, err
	}
	// Fresh processes, as in the first sub-phase: connect-time routing
	// reaches new connections, and the services' pooled ones would stay
	// on the backends the uniform balancing chose (and, opened before the
	// new agents attached, unmeasured).
	if err := w.Replicate(ctx); err != nil {
		return nil, err
	}
	publish(fmt.Sprintf("[5/6] routing: flowplace's tiers (local cluster first, then by measured RTT) for %s", d/2))
	_, fp, err := measureRunning(ctx, w, d/2, rate, sink{})
	if err != nil {
		return nil, err
	}
	rr.Flowplace = fp
	rr.LatencyRatio = ratio(fp.MeanMs, kp.MeanMs)
	rr.CrossClusterBytesRatio = ratio(fp.CrossClusterBytesPerSecond, kp.CrossClusterBytesPerSecond)

	// Failover: the first cluster's instance of the entry's busiest callee.
	rr.KilledIn = w.ClusterNames()[0]
	rr.Killed = busiestCallee(w)
	publish(fmt.Sprintf("[6/6] failover: killing %s in %s while a prober there connects every %s", rr.Killed, rr.KilledIn, probeInterval))
	var (
		res     []ProbeResult
		perr    error
		started = make(chan struct{})
		done    = make(chan struct{})
	)
	window := failoverWindow()
	go func() {
		defer close(done)
		res, perr = w.Probe(ctx, rr.KilledIn, w.vips[rr.Killed], probeInterval, window, started)
	}()
	select {
	case <-started:
	case <-done:
		return nil, fmt.Errorf("lab: failover prober: %w", perr)
	}
	time.Sleep(probeBaseline)
	// A connect begun between the signal and the reaped exit may still
	// reach the dying instance; only one begun after it (its sockets are
	// closed before its parent can reap it) shows that another serves.
	killedAt := time.Now()
	if err := w.Kill(rr.Killed, rr.KilledIn); err != nil {
		<-done
		return nil, err
	}
	deadAt := time.Now()
	time.Sleep(endpointsDelay)
	tables, _ = w.routedTables(snap, fleet, map[string]map[string]bool{rr.Killed: {rr.KilledIn: true}})
	updated := time.Now()
	if err := w.Route(tables); err != nil {
		<-done
		return nil, err
	}
	rr.EndpointsUpdatedAfterMs = ms(updated.Sub(killedAt))
	<-done
	if perr != nil {
		return nil, perr
	}
	var recovered time.Time
	for _, r := range res {
		switch {
		case r.At.Before(deadAt):
			if !r.OK {
				rr.FailedConnects++ // raced the kill
			}
		case recovered.IsZero() && r.OK:
			recovered = r.At
		case recovered.IsZero():
			rr.FailedConnects++
		case !r.OK:
			rr.FailedAfterFailover++
		}
	}
	if recovered.IsZero() {
		return nil, fmt.Errorf("lab: no connect to %s succeeded in the %s after the kill", rr.Killed, window)
	}
	rr.FailoverMs = ms(recovered.Sub(killedAt))
	rr.WindowMs = ms(res[len(res)-1].At.Sub(killedAt))
	return rr, nil
}

// busiestCallee is the service the entry calls most often per request.
func busiestCallee(w *World) string {
	entry, _ := w.opts.App.Service(w.opts.App.Entry)
	best, n := "", 0
	for _, c := range entry.Calls {
		if c.Count > n {
			best, n = c.To, c.Count
		}
	}
	return best
}

// exportRouting exports each cluster's routing counters to the lab's
// Telemetry (none without one), as the agents' routing controller does.
func (w *World) exportRouting(ctx context.Context) error {
	tel := w.opts.Telemetry
	if tel == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	services := map[netip.AddrPort]routing.ServiceRef{}
	for name, vip := range w.vips {
		services[vip] = routing.ServiceRef{Namespace: w.opts.App.Namespace, Name: name}
	}
	clusters := w.ClusterNames()
	for _, c := range clusters {
		if err := tel.addRouting(ctx, c, &routing.DatapathSource{Datapath: w.routers[c], Services: services, Clusters: clusters}); err != nil {
			return err
		}
	}
	return nil
}
