// Command agent benchmarks flowplace-agent under a steady connection load:
// new connections at a fixed rate to many destinations, both exporters on
// (OTLP to a real receiver, /metrics scraped), and the agent process measured
// from /proc. Run as root: make bench-agent.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/flowplace/flowplace/internal/probe"
)

func main() {
	rate := flag.Int("rate", 2000, "new connections per second")
	dests := flag.Int("destinations", 50, "distinct destinations (services)")
	duration := flag.Duration("duration", 60*time.Second, "measured load duration")
	agentBin := flag.String("agent", "", "flowplace-agent binary (default: build it)")
	flag.Parse()
	if err := run(*rate, *dests, *duration, *agentBin); err != nil {
		fmt.Fprintf(os.Stderr, "agent-bench: %v\n", err)
		os.Exit(1)
	}
}

type sink struct {
	colmetricpb.UnimplementedMetricsServiceServer
	exports atomic.Int64
}

func (s *sink) Export(context.Context, *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	s.exports.Add(1)
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

func run(rate, dests int, duration time.Duration, agentBin string) error {
	if rate < 1 || dests < 1 || dests > 250 || duration < time.Second {
		return fmt.Errorf("bad flags: rate %d, destinations %d (1..250), duration %s", rate, dests, duration)
	}
	if err := probe.CheckKernel(); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "flowplace-agent-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if agentBin == "" {
		agentBin = filepath.Join(work, "flowplace-agent")
		build := exec.Command("go", "build", "-o", agentBin, "./cmd/flowplace-agent")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build agent: %w", err)
		}
	}
	printMachine()

	// Destinations: one service per loopback address, spread over four
	// "clusters". Listeners open after the bench joins the probed cgroup,
	// so both ends of every connection are observed.
	var addrs []string
	var topo strings.Builder
	topo.WriteString("apiVersion: flowplace.io/v1alpha1\nkind: AgentTopology\ncluster: c0\nclusters:\n")
	for c := range 4 {
		fmt.Fprintf(&topo, "- {name: c%d, uid: uid-c%d, cidrs: [127.1.%d.0/24]}\n", c, c, c)
	}
	topo.WriteString("- {name: local, cidrs: [127.0.0.0/24]}\nservices:\n")
	var wl strings.Builder
	for i := range dests {
		ip := fmt.Sprintf("127.1.%d.%d", i%4, 10+i/4)
		addrs = append(addrs, ip+":8080")
		fmt.Fprintf(&topo, "- {namespace: bench, name: svc%d, addresses: [\"%s:8080\"]}\n", i, ip)
		fmt.Fprintf(&wl, "- {namespace: bench, name: svc%d, kind: Deployment, service: svc%d, addresses: [%s]}\n", i, i, ip)
	}
	fmt.Fprintf(&wl, "- {namespace: bench, name: loadgen, kind: Deployment, addresses: [127.0.0.1]}\n")
	topo.WriteString("workloads:\n" + wl.String())
	topoFile := filepath.Join(work, "topology.yaml")
	if err := os.WriteFile(topoFile, []byte(topo.String()), 0o644); err != nil {
		return err
	}

	// A real OTLP gRPC receiver that discards.
	otlpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	snk := &sink{}
	gs := grpc.NewServer()
	colmetricpb.RegisterMetricsServiceServer(gs, snk)
	go gs.Serve(otlpLn)
	defer gs.Stop()

	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		return err
	}
	cg := filepath.Join(root, fmt.Sprintf("flowplace-agent-bench-%d", os.Getpid()))
	if err := os.Mkdir(cg, 0o755); err != nil {
		return fmt.Errorf("bench cgroup: %w", err)
	}
	defer os.Remove(cg)

	metricsAddr := freeAddr()
	// The agent starts before the load generator joins the cgroup, so its
	// own exports are not measured as load.
	agent := exec.Command(agentBin, "--topology-file", topoFile, "--cgroup", cg, "--node-name", "bench",
		"--otlp-endpoint", otlpLn.Addr().String(), "--otlp-insecure", "--export-interval", "10s",
		"--listen-address", metricsAddr, "--no-conntrack")
	agent.Stderr = os.Stderr
	if err := agent.Start(); err != nil {
		return fmt.Errorf("start agent: %w", err)
	}
	defer func() {
		agent.Process.Signal(unix.SIGTERM)
		agent.Wait()
	}()
	if err := waitReady("http://" + metricsAddr + "/readyz"); err != nil {
		return err
	}
	orig, err := probe.ProcessCgroup(root, 0)
	if err != nil {
		return err
	}
	if err := probe.JoinCgroup(cg, 0); err != nil {
		return err
	}
	defer probe.JoinCgroup(orig, 0)
	for _, a := range addrs {
		ln, err := net.Listen("tcp4", a)
		if err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		defer ln.Close()
		go serve(ln)
	}

	// Warm up, then measure.
	if _, err := load(addrs, rate, 5*time.Second); err != nil {
		return err
	}
	scrapeStop := make(chan struct{})
	var scrapes atomic.Int64
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-scrapeStop:
				return
			case <-t.C:
				if resp, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					scrapes.Add(1)
				}
			}
		}
	}()
	cpu0, err := cpuTime(agent.Process.Pid)
	if err != nil {
		return err
	}
	self0 := selfCPU()
	start := time.Now()
	made, err := load(addrs, rate, duration)
	if err != nil {
		return err
	}
	wall := time.Since(start)
	cpu1, err := cpuTime(agent.Process.Pid)
	if err != nil {
		return err
	}
	loadCPU := selfCPU() - self0
	close(scrapeStop)
	rss, err := rssMiB(agent.Process.Pid)
	if err != nil {
		return err
	}
	series, err := countSeries("http://" + metricsAddr + "/metrics")
	if err != nil {
		return err
	}
	cpuPct := 100 * (cpu1 - cpu0).Seconds() / wall.Seconds()
	rateGot := float64(made) / wall.Seconds()
	fmt.Printf("load: %d connections in %s to %d destinations; load generator used %.1f%% of a core (incl. its BPF time)\n",
		made, wall.Round(time.Millisecond), dests, 100*loadCPU.Seconds()/wall.Seconds())
	fmt.Printf("exporters: %d OTLP exports received, %d Prometheus scrapes\n", snk.exports.Load(), scrapes.Load())
	fmt.Printf("agent CPU relative to the load generator: %.4f\n", (cpu1-cpu0).Seconds()/loadCPU.Seconds())
	fmt.Printf("agent-bench: cpu_pct=%.2f rss_mib=%.1f conns_per_s=%.0f series=%d\n", cpuPct, rss, rateGot, series)
	return nil
}

func serve(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			b := make([]byte, 64)
			if _, err := io.ReadFull(c, b); err == nil {
				c.Write(b)
			}
			c.Close() // server closes first: TIME_WAIT stays on this side
		}()
	}
}

// load opens connections at a steady rate, round-robin over addrs.
func load(addrs []string, rate int, d time.Duration) (int64, error) {
	const workers = 64
	tokens := make(chan int, workers)
	var made atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := make([]byte, 64)
			for i := range tokens {
				c, err := net.DialTimeout("tcp4", addrs[i%len(addrs)], 5*time.Second)
				if err == nil {
					if _, err = c.Write(b); err == nil {
						_, err = io.ReadFull(c, b)
					}
					c.Close()
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				made.Add(1)
			}
		}()
	}
	// Pace in 10 ms ticks.
	tick := time.NewTicker(10 * time.Millisecond)
	start := time.Now()
	sent := 0
	for now := range tick.C {
		if now.Sub(start) >= d {
			break
		}
		due := int(float64(rate) * now.Sub(start).Seconds())
		for ; sent < due; sent++ {
			tokens <- sent
		}
	}
	tick.Stop()
	close(tokens)
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return made.Load(), fmt.Errorf("connection failed under load: %w", err)
	}
	return made.Load(), nil
}

func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command; utime and stime are 14 and 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ
	return time.Duration(ut+st) * time.Second / hz, nil
}

func selfCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rssMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// countSeries counts the distinct connection-counter series on /metrics:
// one per attributed flow series the agent exports.
func countSeries(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "flowplace_tcp_connections_total{") {
			n++
		}
	}
	return n, nil
}

func waitReady(url string) error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("agent not ready at %s", url)
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:19464"
	}
	defer ln.Close()
	return ln.Addr().String()
}

func printMachine() {
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Printf("machine: %d CPUs, kernel %s, %s\n", runtime.NumCPU(), unix.ByteSliceToString(uts.Release[:]), runtime.Version())
}
