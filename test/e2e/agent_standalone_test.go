package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/test/otlptest"
	"github.com/flowplace/flowplace/world/wan"
)

// buildBinary builds a command of this module into the test's temp dir.
func buildBinary(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, _ := os.Getwd()
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("module root not found")
		}
		dir = parent
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// moved is what the test's own client put on and took off the wire towards
// one backend.
type moved struct{ sent, received int }

// agentLab is a frontend in cluster a, "cart" backends in b and c, a real
// OTLP receiver, and the real agent binary in standalone mode.
type agentLab struct {
	topo       *wan.Topology
	a          *wan.Cluster
	frontendIP netip.Addr
	backends   map[string]netip.AddrPort
	served     map[string]chan [2]int // per backend: bytes in/out of each finished connection
	recv       *otlptest.Receiver
	listen     string
	agent      *exec.Cmd
	log        *bytes.Buffer
}

var injectedRTT = map[string]time.Duration{"b": 20 * time.Millisecond, "c": 10 * time.Millisecond}

// newAgentLab builds the lab; services is the services: section of the
// topology file, given the backends' addresses.
func newAgentLab(t *testing.T, services func(backends map[string]netip.AddrPort) string, extraArgs func(*agentLab) []string) *agentLab {
	t.Helper()
	probetest.RequireKernel(t)
	l := &agentLab{backends: map[string]netip.AddrPort{}, served: map[string]chan [2]int{}, log: &bytes.Buffer{}}
	// QuickACK: kernel RTT samples are the path's RTT, so the measured
	// RTT has the hub's bounds (world/wan/precision.go).
	l.topo = wan.NewForTestConfig(t, wan.Config{Clusters: []string{"a", "b", "c"}, ExtraRTT: map[wan.Pair]time.Duration{
		{A: "a", B: "b"}: injectedRTT["b"], {A: "a", B: "c"}: injectedRTT["c"],
	}, QuickACK: true})
	l.a, _ = l.topo.Cluster("a")
	var err error
	if l.frontendIP, err = l.a.AllocAddr(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"b", "c"} {
		c, _ := l.topo.Cluster(name)
		ip, err := c.AllocAddr()
		if err != nil {
			t.Fatal(err)
		}
		ln, err := c.Listen("tcp4", netip.AddrPortFrom(ip, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		l.served[name] = make(chan [2]int, 64)
		serve(t, ln, 100, 4000, l.served[name])
		l.backends[name] = netip.AddrPortFrom(ip, 8080)
	}

	var clusters, wl strings.Builder
	for _, c := range l.topo.Clusters() {
		fmt.Fprintf(&clusters, "- {name: %s, uid: uid-%s, cidrs: [%s]}\n", c.Name, c.Name, c.Subnet)
	}
	fmt.Fprintf(&wl, "- {namespace: shop, name: frontend, kind: Deployment, addresses: [%s]}\n", l.frontendIP)
	for _, name := range []string{"b", "c"} {
		fmt.Fprintf(&wl, "- {namespace: shop, name: cart, kind: Deployment, service: cart, addresses: [%s]}\n", l.backends[name].Addr())
	}
	topoFile := filepath.Join(t.TempDir(), "topology.yaml")
	content := fmt.Sprintf("apiVersion: flowplace.io/v1alpha1\nkind: AgentTopology\ncluster: a\nclusters:\n%sservices:\n%sworkloads:\n%s",
		clusters.String(), services(l.backends), wl.String())
	if err := os.WriteFile(topoFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	l.recv = otlptest.Start(t)
	cg := probetest.Cgroup(t)
	l.listen = freePort(t)
	args := []string{"--topology-file", topoFile, "--cgroup", cg, "--node-name", "node-a",
		"--otlp-endpoint", l.recv.Addr, "--otlp-insecure", "--otlp-header", "x-tenant=lab",
		"--export-interval", "500ms", "--poll-interval", "200ms", "--listen-address", l.listen}
	if extraArgs != nil {
		args = append(args, extraArgs(l)...)
	}
	l.agent = exec.Command(buildBinary(t, "./cmd/flowplace-agent"), args...)
	l.agent.Stdout, l.agent.Stderr = l.log, l.log
	if err := l.agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.agent.Process.Kill()
		l.agent.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", l.log.String())
		}
	})
	waitReady(t, "http://"+l.listen+"/readyz")
	return l
}

// talk opens conns connections from the frontend to addr, 15 request/response
// rounds each.
func (l *agentLab) talk(t *testing.T, addr netip.AddrPort, conns int) moved {
	t.Helper()
	var m moved
	for range conns {
		err := l.a.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: l.frontendIP.AsSlice()}, Timeout: 5 * time.Second}
			c, err := d.Dial("tcp4", addr.String())
			if err != nil {
				return err
			}
			defer c.Close()
			req, resp := bytes.Repeat([]byte{'q'}, 100), make([]byte, 4000)
			for range 15 {
				if _, err := c.Write(req); err != nil {
					return err
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					return err
				}
				m.sent += len(req)
				m.received += len(resp)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("frontend -> %s: %v", addr, err)
		}
	}
	return m
}

// servedBy drains what each backend's server saw of finished connections.
func (l *agentLab) servedBy(t *testing.T, name string, conns int) moved {
	t.Helper()
	var m moved
	for range conns {
		select {
		case s := <-l.served[name]:
			m.sent += s[0] // what the client sent is what the server read
			m.received += s[1]
		case <-time.After(10 * time.Second):
			t.Fatalf("backend %s: connection did not finish", name)
		}
	}
	return m
}

func clientOf(cluster string) map[string]string {
	return map[string]string{
		string(telemetry.AttrRole): telemetry.RoleClient, string(telemetry.AttrWorkloadName): "frontend",
		string(telemetry.AttrWorkloadKind): "Deployment", string(telemetry.AttrNamespace): "shop",
		string(telemetry.AttrServiceName): "cart", string(telemetry.AttrPeerClusterName): cluster,
		string(telemetry.AttrPeerClusterUID): "uid-" + cluster, string(telemetry.AttrPeerWorkloadName): "cart",
	}
}

func (l *agentLab) otlpBytes(cluster, dir string) int64 {
	attrs := clientOf(cluster)
	attrs[string(telemetry.AttrDirection)] = dir
	var n int64
	for _, p := range otlptest.Match(l.recv.Latest(telemetry.MetricBytes), attrs) {
		n += p.Int
	}
	return n
}

// waitExported waits until OTLP carries exactly want per destination cluster.
func (l *agentLab) waitExported(want map[string]moved) {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		done := true
		for name, m := range want {
			if l.otlpBytes(name, "transmit") != int64(m.sent) || l.otlpBytes(name, "receive") != int64(m.received) {
				done = false
			}
		}
		if done {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// check compares OTLP and Prometheus against what moved to each cluster.
func (l *agentLab) check(t *testing.T, want map[string]moved, conns map[string]int) {
	t.Helper()
	l.waitExported(want)
	metricsText := scrape(t, "http://"+l.listen+"/metrics")
	for name, m := range want {
		t.Run("to-"+name, func(t *testing.T) {
			if got := l.otlpBytes(name, "transmit"); got != int64(m.sent) {
				t.Errorf("OTLP bytes transmit = %d, want %d", got, m.sent)
			}
			if got := l.otlpBytes(name, "receive"); got != int64(m.received) {
				t.Errorf("OTLP bytes receive = %d, want %d", got, m.received)
			}
			cs := otlptest.Match(l.recv.Latest(telemetry.MetricConnections), clientOf(name))
			if len(cs) != 1 || cs[0].Int != int64(conns[name]) {
				t.Errorf("OTLP connections: %+v, want one series with %d", cs, conns[name])
			}
			if len(cs) == 1 {
				res := cs[0].Resource
				if res["k8s.cluster.uid"] != "uid-a" || res["k8s.cluster.name"] != "a" || res["k8s.node.name"] != "node-a" {
					t.Errorf("resource %v does not identify the reporting agent", res)
				}
			}
			rtt := otlptest.Match(l.recv.Latest(telemetry.MetricRTT), clientOf(name))
			if len(rtt) != 1 || rtt[0].Count == 0 {
				t.Fatalf("OTLP RTT: %+v, want one series with samples", rtt)
			}
			// The OTLP sum is exact (the recorder replays the kernel's
			// buckets mean-preserving), so its mean has the hub's bound.
			mean := rtt[0].Sum / float64(rtt[0].Count)
			if lo, hi := injectedRTT[name], injectedRTT[name]+wan.MeanTolerance(int(rtt[0].Count)); mean < lo.Seconds()-1e-6 || mean > hi.Seconds() {
				t.Errorf("OTLP mean RTT %.6fs over %d samples, injected %s: want within [%s, %s]", mean, rtt[0].Count, lo, lo, hi)
			}
			if rtt[0].Scale < 3 {
				t.Errorf("RTT histogram scale %d too coarse", rtt[0].Scale)
			}

			// Prometheus, parsed with Prometheus' own parser, agrees.
			labels := map[string]string{"k8s_cluster_uid": "uid-a"}
			for k, v := range clientOf(name) {
				labels[strings.ReplaceAll(k, ".", "_")] = v
			}
			labels["network_io_direction"] = "transmit"
			if got := promValue(t, metricsText, "flowplace_tcp_bytes_total", labels); got != float64(m.sent) {
				t.Errorf("Prometheus bytes transmit = %v, want %d", got, m.sent)
			}
			delete(labels, "network_io_direction")
			count, sum := promHistogram(t, metricsText, "flowplace_tcp_rtt_seconds", labels)
			if count != rtt[0].Count || math.Abs(sum-rtt[0].Sum) > 1e-6 {
				t.Errorf("Prometheus RTT count %d sum %g, OTLP %d %g", count, sum, rtt[0].Count, rtt[0].Sum)
			}
		})
	}
}

// TestAgentStandaloneAttribution runs the real agent binary in standalone
// mode: flows from a "frontend" in cluster a to "cart" backends in clusters b
// and c must arrive at a real OTLP receiver, and on /metrics, attributed to
// the right workload, service and destination cluster, with the bytes that
// moved and the injected RTT.
func TestAgentStandaloneAttribution(t *testing.T) {
	l := newAgentLab(t, func(be map[string]netip.AddrPort) string {
		return fmt.Sprintf("- {namespace: shop, name: cart, addresses: [%q, %q]}\n", be["b"], be["c"])
	}, nil)
	want := map[string]moved{}
	for name, be := range l.backends {
		want[name] = l.talk(t, be, 3)
	}
	l.check(t, want, map[string]int{"b": 3, "c": 3})
	if h := l.recv.LastHeaders().Get("x-tenant"); len(h) != 1 || h[0] != "lab" {
		t.Errorf("OTLP header x-tenant = %v, want [lab]", h)
	}

	// Graceful shutdown detaches the probes.
	l.agent.Process.Signal(syscall.SIGTERM)
	if err := l.agent.Wait(); err != nil {
		t.Errorf("agent exit: %v", err)
	}
	if !strings.Contains(l.log.String(), "detaching probes") {
		t.Errorf("agent did not log its shutdown:\n%s", l.log.String())
	}
}

// TestAgentTranslatedServiceAttribution sends the frontend's connections to
// a service VIP that a kube-proxy-style DNAT in cluster a's network namespace
// spreads over the backends in b and c. The socket only knows the VIP; the
// agent must find each connection's real backend in conntrack so that bytes
// and RTT land on the right destination cluster.
func TestAgentTranslatedServiceAttribution(t *testing.T) {
	if _, err := exec.LookPath("iptables"); err != nil {
		if os.Getenv("FLOWPLACE_REQUIRE_KERNEL") == "1" {
			t.Fatal("iptables is not installed (.ci/run installs it)")
		}
		t.Skip("skipping: iptables is not installed")
	}
	vip := netip.MustParseAddrPort("10.96.0.10:80")
	l := newAgentLab(t, func(map[string]netip.AddrPort) string {
		return fmt.Sprintf("- {namespace: shop, name: cart, translated: true, addresses: [%q]}\n", vip)
	}, func(l *agentLab) []string {
		// The translation happens in cluster a's namespace, so its
		// conntrack table knows the backends.
		return []string{"--conntrack-netns", "/run/netns/" + l.a.NetNS}
	})
	// kube-proxy's iptables mode: a per-service chain choosing a backend.
	// Like a node's default route: connect() needs a route to the VIP
	// before the OUTPUT chain translates it.
	if out, err := l.a.Command(context.Background(), "ip", "route", "add", "10.96.0.0/16", "dev", wan.TunName).CombinedOutput(); err != nil {
		t.Fatalf("route to the service range: %v: %s", err, out)
	}
	rules := [][]string{
		{"-t", "nat", "-N", "FP-SVC-CART"},
		{"-t", "nat", "-A", "OUTPUT", "-d", vip.Addr().String() + "/32", "-p", "tcp", "--dport", "80", "-j", "FP-SVC-CART"},
		{"-t", "nat", "-A", "FP-SVC-CART", "-m", "statistic", "--mode", "nth", "--every", "2", "--packet", "0", "-p", "tcp", "-j", "DNAT", "--to-destination", l.backends["b"].String()},
		{"-t", "nat", "-A", "FP-SVC-CART", "-p", "tcp", "-j", "DNAT", "--to-destination", l.backends["c"].String()},
	}
	for _, r := range rules {
		if out, err := l.a.Command(context.Background(), "iptables", r...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", r, err, out)
		}
	}
	const n = 6
	total := l.talk(t, vip, n)
	want := map[string]moved{"b": l.servedBy(t, "b", n/2), "c": l.servedBy(t, "c", n/2)}
	if got := want["b"].sent + want["c"].sent; got != total.sent {
		t.Fatalf("backends read %d bytes, client sent %d", got, total.sent)
	}
	l.check(t, want, map[string]int{"b": n / 2, "c": n / 2})
}

func waitReady(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", url)
}

func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	have := map[string]string{}
	for _, l := range m.Label {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func promValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	var v float64
	for _, m := range f.Metric {
		if labelsMatch(m, want) {
			v += m.GetCounter().GetValue()
		}
	}
	return v
}

func promHistogram(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) (uint64, float64) {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	for _, m := range f.Metric {
		if labelsMatch(m, want) {
			return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
		}
	}
	return 0, 0
}
