// Command probe benchmarks flowplace's eBPF programs on this machine: the
// kernel's own run-time statistics per program call while connections are
// made through them, and the connect rate with vs without the programs,
// measured in interleaved runs. Run as root: make bench-probe.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/test/bench/benchenv"
)

func main() {
	pairs := flag.Int("pairs", 7, "interleaved with/without runs (at least 5)")
	conns := flag.Int("conns", 4000, "connections per run")
	workers := flag.Int("workers", 2, "concurrent clients")
	flag.Parse()
	if err := run(*pairs, *conns, *workers); err != nil {
		fmt.Fprintf(os.Stderr, "probe-bench: %v\n", err)
		os.Exit(1)
	}
}

type progStat struct {
	runtime time.Duration
	calls   uint64
}

func run(pairs, conns, workers int) error {
	if pairs < 5 {
		return fmt.Errorf("--pairs %d: need at least 5", pairs)
	}
	if pairs*conns < 20000 {
		return fmt.Errorf("--pairs x --conns = %d: need at least 20000 connections through the probes", pairs*conns)
	}
	if err := probe.CheckKernel(); err != nil {
		return err
	}
	fmt.Println(benchenv.Machine())

	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		return err
	}
	bench, err := benchenv.NewCgroup(root, "flowplace-bench")
	if err != nil {
		return err
	}
	defer bench.Remove()
	if err := bench.Enter(); err != nil {
		return err
	}
	cg := bench.Dir

	// Kernel run-time accounting costs a little per call; it is on for both
	// sides of the comparison.
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enable BPF run-time stats: %w", err)
	}
	defer stats.Close()

	srv, err := newServer()
	if err != nil {
		return err
	}
	defer srv.close()

	// Warm up the path (ARP-free loopback, allocator, scheduler).
	if _, err := connectLoop(srv.addrs, conns/4, workers); err != nil {
		return err
	}

	totals := map[string]*progStat{}
	var ratios, withRates, withoutRates []float64
	var probed uint64
	for i := range pairs {
		var with, without float64
		measureWith := func() error {
			p, err := probe.Load(probe.Options{Cgroup: cg})
			if err != nil {
				return err
			}
			defer p.Close()
			before := progStats(p)
			r, err := connectLoop(srv.addrs, conns, workers)
			if err != nil {
				return err
			}
			for name, s := range progStats(p) {
				t := totals[name]
				if t == nil {
					t = &progStat{}
					totals[name] = t
				}
				t.runtime += s.runtime - before[name].runtime
				t.calls += s.calls - before[name].calls
			}
			probed += uint64(conns)
			with = r
			return nil
		}
		measureWithout := func() error {
			r, err := connectLoop(srv.addrs, conns, workers)
			without = r
			return err
		}
		// Alternate the order so that drift favours neither side.
		first, second := measureWith, measureWithout
		if i%2 == 1 {
			first, second = measureWithout, measureWith
		}
		if err := first(); err != nil {
			return err
		}
		if err := second(); err != nil {
			return err
		}
		withRates = append(withRates, with)
		withoutRates = append(withoutRates, without)
		ratios = append(ratios, with/without)
		fmt.Printf("pair %d: with %.0f conn/s, without %.0f conn/s, ratio %.3f\n", i+1, with, without, with/without)
	}

	fmt.Printf("\nkernel BPF run-time statistics over %d connections (client and server socket both in the cgroup):\n", probed)
	fmt.Printf("%-14s %12s %14s %10s %12s\n", "program", "calls", "run time", "ns/call", "calls/conn")
	var all time.Duration
	names := make([]string, 0, len(totals))
	for n := range totals {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		t := totals[n]
		all += t.runtime
		fmt.Printf("%-14s %12d %14s %10.0f %12.2f\n", n, t.calls, t.runtime.Round(time.Microsecond), perCall(t), float64(t.calls)/float64(probed))
	}
	perConn := float64(all.Nanoseconds()) / float64(probed)
	fmt.Printf("\nconnect rate: with median %.0f/s, without median %.0f/s\n", benchenv.Median(withRates), benchenv.Median(withoutRates))
	fmt.Printf("probe-bench: per_conn_ns=%.0f sockops_ns=%.0f connect4_ns=%.0f conn_rate_ratio=%.3f\n",
		perConn, perCall(totals["sock_ops"]), perCall(totals["connect4"]), benchenv.Median(ratios))
	return nil
}

func perCall(t *progStat) float64 {
	if t == nil || t.calls == 0 {
		return 0
	}
	return float64(t.runtime.Nanoseconds()) / float64(t.calls)
}

func progStats(p *probe.Probe) map[string]progStat {
	out := map[string]progStat{}
	for name, prog := range p.Programs() {
		s, err := prog.Stats()
		if err != nil {
			continue
		}
		out[name] = progStat{s.Runtime, s.RunCount}
	}
	return out
}

// server answers each connection with one byte and closes first, so TIME_WAIT
// sits on the server side and client ports are never exhausted.
type server struct {
	lns   []net.Listener
	addrs []string
	wg    sync.WaitGroup
}

func newServer() (*server, error) {
	s := &server{}
	for i := 1; i <= 4; i++ {
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.%d:0", i))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listen: %w", err)
		}
		s.lns = append(s.lns, ln)
		s.addrs = append(s.addrs, ln.Addr().String())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					b := make([]byte, 1)
					if _, err := io.ReadFull(c, b); err == nil {
						c.Write(b)
					}
					c.Close()
				}()
			}
		}()
	}
	return s, nil
}

func (s *server) close() {
	for _, ln := range s.lns {
		ln.Close()
	}
	s.wg.Wait()
}

// connectLoop makes n connect/request/response/close cycles and returns the
// rate in connections per second.
func connectLoop(addrs []string, n, workers int) (float64, error) {
	var next atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := []byte{1}
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				c, err := net.Dial("tcp4", addrs[int(i)%len(addrs)])
				if err == nil {
					if _, err = c.Write(b); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.Close()
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, fmt.Errorf("connection cycle: %w", err)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
