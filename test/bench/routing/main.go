// Command routing benchmarks flowplace's connect-time routing on this
// machine (make bench-routing, as root):
//
//   - the datapath's cost: the kernel's own run-time statistics of every
//     program (measurement and routing) while connections cycle through a
//     routed service address, with 1,000 services x 64 endpoints
//     programmed, against the same run's connection cycle in a cgroup
//     without programs, in interleaved runs;
//   - failover by passive detection alone: a backend process dies while a
//     client connects every millisecond; the time until a new connect
//     succeeds on the next tier, over many deaths;
//   - failover after an EndpointSlice update: the same through routing's
//     controller against a real API server, with passive detection off.
//
// The last line is the summary: routing-bench: connect_added_ns=N
// failover_p50_ms=N failover_p99_ms=N failed_after_detection=N bpf_share=F
// endpointslice_p50_ms=N endpointslice_p99_ms=N.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/test/bench/benchenv"
)

func main() {
	opts := options{}
	flag.IntVar(&opts.services, "services", 1000, "routed services programmed")
	flag.IntVar(&opts.endpoints, "endpoints", 64, "endpoints per service (in 4 tiers)")
	flag.IntVar(&opts.pairs, "pairs", 5, "interleaved runs with and without the programs (at least 5)")
	flag.IntVar(&opts.conns, "conns", 4000, "connection cycles per run")
	flag.IntVar(&opts.kills, "kills", 24, "backend deaths per failover mode (at least 20)")
	flag.DurationVar(&opts.interval, "interval", time.Millisecond, "the failover client's connect interval")
	flag.BoolVar(&opts.skipAPI, "skip-apiserver", false, "leave out the EndpointSlice failover (needs the control plane binaries)")
	flag.Parse()
	if err := run(opts); err != nil {
		fmt.Fprintf(os.Stderr, "routing-bench: %v\n", err)
		os.Exit(1)
	}
}

type options struct {
	services, endpoints, pairs, conns, kills int
	interval                                 time.Duration
	skipAPI                                  bool
}

func (o options) validate() error {
	switch {
	case o.services < 1 || o.services > 4000:
		return fmt.Errorf("--services %d out of range [1, 4000]", o.services)
	case o.endpoints < 4 || o.endpoints > 256 || o.endpoints%4 != 0:
		return fmt.Errorf("--endpoints %d: want a multiple of 4 in [4, 256]", o.endpoints)
	case o.pairs < 5:
		return fmt.Errorf("--pairs %d: need at least 5", o.pairs)
	case o.conns < 1000:
		return fmt.Errorf("--conns %d: need at least 1000", o.conns)
	case o.kills < 20:
		return fmt.Errorf("--kills %d: need at least 20 for a p99", o.kills)
	case o.interval <= 0:
		return fmt.Errorf("--interval %s must be positive", o.interval)
	}
	return nil
}

func run(o options) error {
	if err := o.validate(); err != nil {
		return err
	}
	if err := probe.CheckKernel(); err != nil {
		return err
	}
	fmt.Println(benchenv.Machine())
	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		return err
	}
	bare, err := benchenv.NewCgroup(root, "flowplace-bench-bare")
	if err != nil {
		return err
	}
	defer bare.Remove()
	routed, err := benchenv.NewCgroup(root, "flowplace-bench-routed")
	if err != nil {
		return err
	}
	defer routed.Remove()
	// Run-time accounting is on for the whole run; it costs the bare
	// cgroup nothing (no programs) and is excluded from what it measures.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enable BPF run-time stats: %w", err)
	}
	defer stats.Close()

	cost, err := measureCost(o, bare, routed)
	if err != nil {
		return err
	}
	passive, err := measurePassiveFailover(o, routed)
	if err != nil {
		return err
	}
	var es *failover
	if !o.skipAPI {
		if es, err = measureEndpointSliceFailover(o, routed); err != nil {
			return err
		}
	}
	fmt.Printf("\nrouting-bench: connect_added_ns=%.0f failover_p50_ms=%.1f failover_p99_ms=%.1f failed_after_detection=%d bpf_share=%.4f",
		cost.routedConnect4, passive.quantile(0.5), passive.quantile(0.99), passive.failedAfter, cost.share)
	if es != nil {
		fmt.Printf(" endpointslice_p50_ms=%.1f endpointslice_p99_ms=%.1f", es.quantile(0.5), es.quantile(0.99))
	}
	fmt.Println()
	return nil
}

// vip is the i-th benchmark service address (198.18.0.0/15 is reserved
// for benchmarks, RFC 2544).
func vip(i int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), 80)
}

// bigTables are services x endpoints routed service addresses, each with
// four tiers (a local one and three clusters); the endpoints are distinct
// loopback addresses that one wildcard listener on port answers.
func bigTables(services, endpoints int, port uint16) []redirect.Service {
	out := make([]redirect.Service, 0, services)
	per := endpoints / 4
	for s := range services {
		svc := redirect.Service{Addr: vip(s)}
		for t := range 4 {
			tier := make([]redirect.Backend, 0, per)
			for e := range per {
				n := t*per + e
				a := netip.AddrFrom4([4]byte{127, byte(1 + s>>8), byte(s), byte(1 + n)})
				tier = append(tier, redirect.Backend{Addr: netip.AddrPortFrom(a, port), Cluster: uint16(t)})
			}
			svc.Tiers = append(svc.Tiers, tier)
		}
		out = append(out, svc)
	}
	return out
}

// server answers each connection with its one-byte identity and closes
// first, so TIME_WAIT sits on the server side and client ports last.
type server struct {
	ln   net.Listener
	addr netip.AddrPort
	wg   sync.WaitGroup
}

func listen(addr string, id byte) (*server, error) {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	s := &server{ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String())}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte{id})
			c.Close()
		}
	}()
	return s, nil
}

// kill closes the listener: new connects to it are refused, as when the
// process behind a backend dies on a live node.
func (s *server) kill() {
	s.ln.Close()
	s.wg.Wait()
}

// cycle is one connect, one byte back, close; it returns the identity read.
func cycle(addr string, timeout time.Duration) (byte, error) {
	c, err := net.DialTimeout("tcp4", addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	b := []byte{0}
	if _, err := io.ReadFull(c, b); err != nil {
		return 0, err
	}
	return b[0], nil
}

// cycles runs n sequential cycles to targets (round robin) and returns the
// wall and CPU time (this process's user + system: the client and the
// server are both here) per cycle.
func cycles(targets []string, n int) (wall, cpu time.Duration, err error) {
	var before, after unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &before)
	start := time.Now()
	for i := range n {
		if _, err := cycle(targets[i%len(targets)], 2*time.Second); err != nil {
			return 0, 0, fmt.Errorf("connection cycle to %s: %w", targets[i%len(targets)], err)
		}
	}
	wall = time.Since(start)
	unix.Getrusage(unix.RUSAGE_SELF, &after)
	cpu = time.Duration(unix.TimevalToNsec(after.Utime) - unix.TimevalToNsec(before.Utime) + unix.TimevalToNsec(after.Stime) - unix.TimevalToNsec(before.Stime))
	return wall / time.Duration(n), cpu / time.Duration(n), nil
}

type progStat struct {
	runtime time.Duration
	calls   uint64
}

func (p progStat) perCall() float64 {
	if p.calls == 0 {
		return 0
	}
	return float64(p.runtime.Nanoseconds()) / float64(p.calls)
}

func snapshot(progs map[string]*ebpf.Program) map[string]progStat {
	out := map[string]progStat{}
	for name, p := range progs {
		if s, err := p.Stats(); err == nil {
			out[name] = progStat{s.Runtime, s.RunCount}
		}
	}
	return out
}

func delta(after, before map[string]progStat) map[string]progStat {
	out := map[string]progStat{}
	for n, a := range after {
		out[n] = progStat{a.runtime - before[n].runtime, a.calls - before[n].calls}
	}
	return out
}

func accumulate(into, d map[string]progStat) {
	for n, s := range d {
		t := into[n]
		t.runtime += s.runtime
		t.calls += s.calls
		into[n] = t
	}
}

// datapath is what an agent with routing runs: routing's programs, then
// the measurement programs reading routing's map of routed sockets.
type datapath struct {
	route *redirect.Datapath
	probe *probe.Probe
}

func openDatapath(cgroup string, health redirect.Health) (*datapath, error) {
	r, err := redirect.Open(klog.Background(), redirect.Options{Cgroup: cgroup, Health: health})
	if err != nil {
		return nil, err
	}
	p, err := probe.Load(probe.Options{Cgroup: cgroup, RoutedSockets: r.RoutedSockets()})
	if err != nil {
		r.Close()
		return nil, err
	}
	return &datapath{route: r, probe: p}, nil
}

func (d *datapath) programs() map[string]*ebpf.Program {
	m := d.probe.Programs()
	for n, p := range d.route.Programs() {
		m[n] = p
	}
	return m
}

func (d *datapath) close() {
	d.probe.Close()
	d.route.Close()
}

type costResult struct {
	routedConnect4, unroutedConnect4, smallConnect4 float64
	perConn, bareWall, bareCPU, share               float64
}

func measureCost(o options, bare, routed *benchenv.Cgroup) (*costResult, error) {
	fmt.Printf("\n== datapath cost: %d services x %d endpoints programmed, %d pairs of %d connection cycles\n", o.services, o.endpoints, o.pairs, o.conns)
	if err := bare.Enter(); err != nil {
		return nil, err
	}
	bareSrv, err := listen("127.0.0.1:0", 'b')
	if err != nil {
		return nil, err
	}
	defer bareSrv.kill()
	if err := routed.Enter(); err != nil {
		return nil, err
	}
	// Both ends of every routed cycle are in the routed cgroup, as a
	// client and a server on one node are.
	routedSrv, err := listen("0.0.0.0:0", 'r')
	if err != nil {
		return nil, err
	}
	defer routedSrv.kill()
	d, err := openDatapath(routed.Dir, redirect.DefaultHealth)
	if err != nil {
		return nil, err
	}
	defer d.close()
	tables := bigTables(o.services, o.endpoints, routedSrv.addr.Port())
	start := time.Now()
	if _, err := d.route.Apply(tables); err != nil {
		return nil, err
	}
	fmt.Printf("programmed %d services (%d backends) in %s\n", len(tables), o.services*o.endpoints, time.Since(start).Round(time.Millisecond))

	var vips []string
	for i := 0; i < o.services; i += max(1, o.services/64) {
		vips = append(vips, vip(i).String())
	}
	direct := []string{routedSrv.addr.String()}
	bareTargets := []string{bareSrv.addr.String()}

	// Warm up both paths.
	if _, _, err := cycles(vips, o.conns/4); err != nil {
		return nil, err
	}
	if err := bare.Enter(); err != nil {
		return nil, err
	}
	if _, _, err := cycles(bareTargets, o.conns/4); err != nil {
		return nil, err
	}

	progs := d.programs()
	routedTotals, unroutedTotals := map[string]progStat{}, map[string]progStat{}
	var bareWall, bareCPU, routedWall []float64
	measureRouted := func() error {
		if err := routed.Enter(); err != nil {
			return err
		}
		before := snapshot(progs)
		w, _, err := cycles(vips, o.conns)
		if err != nil {
			return err
		}
		accumulate(routedTotals, delta(snapshot(progs), before))
		routedWall = append(routedWall, float64(w))
		before = snapshot(progs)
		if _, _, err := cycles(direct, o.conns/4); err != nil {
			return err
		}
		accumulate(unroutedTotals, delta(snapshot(progs), before))
		return nil
	}
	measureBare := func() error {
		if err := bare.Enter(); err != nil {
			return err
		}
		w, c, err := cycles(bareTargets, o.conns)
		bareWall, bareCPU = append(bareWall, float64(w)), append(bareCPU, float64(c))
		return err
	}
	for i := range o.pairs {
		first, second := measureRouted, measureBare
		if i%2 == 1 {
			first, second = measureBare, measureRouted
		}
		if err := first(); err != nil {
			return nil, err
		}
		if err := second(); err != nil {
			return nil, err
		}
		fmt.Printf("pair %d: cycle without programs %s (CPU %s), routed %s\n", i+1,
			time.Duration(bareWall[i]).Round(100*time.Nanosecond), time.Duration(bareCPU[i]).Round(100*time.Nanosecond), time.Duration(routedWall[i]).Round(100*time.Nanosecond))
	}
	routedConns := float64(o.pairs * o.conns)

	fmt.Printf("\nkernel BPF run time per routed connection cycle (client and server in the cgroup):\n")
	fmt.Printf("%-20s %10s %10s %12s\n", "program", "ns/call", "calls/conn", "ns/conn")
	var all time.Duration
	names := make([]string, 0, len(routedTotals))
	for n := range routedTotals {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t := routedTotals[n]
		if t.calls == 0 {
			continue
		}
		all += t.runtime
		fmt.Printf("%-20s %10.0f %10.2f %12.0f\n", n, t.perCall(), float64(t.calls)/routedConns, float64(t.runtime.Nanoseconds())/routedConns)
	}
	r := &costResult{
		routedConnect4:   routedTotals["route_connect4"].perCall(),
		unroutedConnect4: unroutedTotals["route_connect4"].perCall(),
		perConn:          float64(all.Nanoseconds()) / routedConns,
		bareWall:         benchenv.Median(bareWall),
		bareCPU:          benchenv.Median(bareCPU),
	}
	// The share of the cycle's latency and of its CPU; the larger counts.
	r.share = max(r.perConn/r.bareWall, r.perConn/r.bareCPU)

	// The same chooser with one service of one endpoint: its cost must
	// not grow with the tables.
	if err := routed.Enter(); err != nil {
		return nil, err
	}
	small := []redirect.Service{{Addr: vip(0), Tiers: [][]redirect.Backend{{{Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 1, 0, 1}), routedSrv.addr.Port())}}}}}
	if _, err := d.route.Apply(small); err != nil {
		return nil, err
	}
	before := snapshot(progs)
	if _, _, err := cycles([]string{vip(0).String()}, o.conns); err != nil {
		return nil, err
	}
	r.smallConnect4 = delta(snapshot(progs), before)["route_connect4"].perCall()

	fmt.Printf("\nrouting's connect4 per call: %.0f ns routed with %d x %d programmed, %.0f ns with 1 x 1 (x%.2f), %.0f ns for a connect to no service\n",
		r.routedConnect4, o.services, o.endpoints, r.smallConnect4, r.routedConnect4/r.smallConnect4, r.unroutedConnect4)
	fmt.Printf("unprobed loopback connection cycle: median %s wall, %s CPU; routed cycle median %s wall (x%.3f)\n",
		time.Duration(r.bareWall).Round(100*time.Nanosecond), time.Duration(r.bareCPU).Round(100*time.Nanosecond),
		time.Duration(benchenv.Median(routedWall)).Round(100*time.Nanosecond), benchenv.Median(routedWall)/r.bareWall)
	fmt.Printf("whole datapath: %.0f ns BPF per connection = %.4f of the cycle's wall time, %.4f of its CPU time\n",
		r.perConn, r.perConn/r.bareWall, r.perConn/r.bareCPU)
	return r, nil
}

// attempt is one connect of the failover client.
type attempt struct {
	start, end time.Time
	id         byte // who answered; 0 when the connect failed
}

// failover collects the deaths of one mode.
type failover struct {
	times       []float64 // ms from death to the first good connect's end
	failed      []int     // failed connects before it, per death
	failedAfter int       // failed connects begun after it, all deaths
}

func (f *failover) quantile(q float64) float64 { return benchenv.Quantile(f.times, q) }

func (f *failover) report(mode string) {
	fmt.Printf("%s: %d deaths, failover p50 %.1f ms, p99 %.1f ms, max %.1f ms; failed connects before it median %.0f, max %d; after it %d\n",
		mode, len(f.times), f.quantile(0.5), f.quantile(0.99), slices.Max(f.times), benchenv.Median(intsToFloats(f.failed)), slices.Max(f.failed), f.failedAfter)
}

func intsToFloats(v []int) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// client connects to target every interval, each connect on its own (a
// busy client does not wait for one connect to start the next), until
// stop is closed; it returns every attempt once all have ended.
func client(target string, interval time.Duration, stop <-chan struct{}, results chan<- attempt) []attempt {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var out []attempt
	t := time.NewTicker(interval)
	defer t.Stop()
loop:
	for {
		select {
		case <-stop:
			break loop
		case <-t.C:
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := attempt{start: time.Now()}
			id, err := cycle(target, 3*time.Second)
			a.end = time.Now()
			if err == nil {
				a.id = id
			}
			mu.Lock()
			out = append(out, a)
			mu.Unlock()
			if results != nil {
				select {
				case results <- a:
				default:
				}
			}
		}()
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b attempt) int { return a.start.Compare(b.start) })
	return out
}

// observe runs the client around one death: kill at 50 ms, then until the
// survivor has answered for window. It returns the time from death to the
// end of the first connect, begun after the death, that the survivor
// answered, and the failed connects begun after the death before and after
// that one began.
func observe(target string, interval, window time.Duration, survivor byte, kill func() time.Time) (ms float64, before, after int, err error) {
	stop := make(chan struct{})
	results := make(chan attempt, 1024)
	done := make(chan []attempt)
	go func() { done <- client(target, interval, stop, results) }()
	time.Sleep(50 * time.Millisecond)
	dead := kill()
	deadline := time.After(10 * time.Second)
wait:
	for {
		select {
		case a := <-results:
			if a.id == survivor && a.start.After(dead) {
				time.Sleep(window)
				break wait
			}
		case <-deadline:
			break wait
		}
	}
	close(stop)
	all := <-done
	var first *attempt
	for i, a := range all {
		if a.id == survivor && a.start.After(dead) && (first == nil || a.end.Before(first.end)) {
			first = &all[i]
		}
	}
	if first == nil {
		return 0, 0, 0, errors.New("no connect reached the next tier within 10s of the death")
	}
	for _, a := range all {
		switch {
		case a.id != 0 || a.start.Before(dead):
		case a.start.After(first.start):
			after++
		default:
			before++
		}
	}
	return float64(first.end.Sub(dead).Microseconds()) / 1e3, before, after, nil
}

// measurePassiveFailover kills the only backend of a service's first tier
// o.kills times, with the full tables programmed; only what sock_ops sees
// (refused connects) ejects it.
func measurePassiveFailover(o options, routed *benchenv.Cgroup) (*failover, error) {
	fmt.Printf("\n== failover by passive detection: %d backend deaths, a connect every %s, ejection after %d failures\n", o.kills, o.interval, redirect.DefaultHealth.FailThreshold)
	if err := routed.Enter(); err != nil {
		return nil, err
	}
	wild, err := listen("0.0.0.0:0", 'r')
	if err != nil {
		return nil, err
	}
	defer wild.kill()
	next, err := listen("127.0.0.1:0", 'B')
	if err != nil {
		return nil, err
	}
	defer next.kill()
	d, err := openDatapath(routed.Dir, redirect.DefaultHealth)
	if err != nil {
		return nil, err
	}
	defer d.close()
	tables := bigTables(o.services, o.endpoints, wild.addr.Port())
	svc := vip(o.services + 1)
	f := &failover{}
	for range o.kills {
		// A fresh backend each time: ejections do not carry over.
		first, err := listen("127.0.0.1:0", 'A')
		if err != nil {
			return nil, err
		}
		all := append(slices.Clone(tables), redirect.Service{Addr: svc, Tiers: [][]redirect.Backend{{{Addr: first.addr}}, {{Addr: next.addr, Cluster: 1}}}})
		if _, err := d.route.Apply(all); err != nil {
			first.kill()
			return nil, err
		}
		if id, err := cycle(svc.String(), time.Second); err != nil || id != 'A' {
			first.kill()
			return nil, fmt.Errorf("before the death: connect answered by %q (%v), want the first tier", id, err)
		}
		ms, before, after, err := observe(svc.String(), o.interval, 200*time.Millisecond, 'B', func() time.Time {
			first.kill()
			return time.Now()
		})
		if err != nil {
			return nil, err
		}
		f.times, f.failed = append(f.times, ms), append(f.failed, before)
		f.failedAfter += after
	}
	f.report("passive detection")
	return f, nil
}
