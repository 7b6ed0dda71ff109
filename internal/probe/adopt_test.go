package probe_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/world/wan"
)

// siblingCgroup creates a cgroup next to cg, outside the observed subtree.
func siblingCgroup(t *testing.T, cg string) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(cg), filepath.Base(cg)+"-other")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatalf("create sibling cgroup: %v", err)
	}
	t.Cleanup(func() {
		var err error
		for range 50 {
			if err = os.Remove(dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Errorf("remove sibling cgroup %s: %v", dir, err)
	})
	return dir
}

// sleeper starts a process of the test's cgroup inside c's network
// namespace, so that AdoptExisting finds that namespace the way the agent
// finds a pod's: through a process of the observed cgroup.
func sleeper(t *testing.T, c *wan.Cluster) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := c.Command(ctx, "sleep", "600")
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start a process in %s: %v", c.NetNS, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})
	want, err := nsInode("/run/netns/" + c.NetNS)
	if err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got, err := nsInode(path); err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d never entered %s", cmd.Process.Pid, c.NetNS)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func nsInode(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

func findKey(s *probe.Snapshot, k probe.FlowKey) (probe.FlowStats, bool) {
	for _, f := range s.Flows {
		if f.Key == k {
			return f.Stats, true
		}
	}
	return probe.FlowStats{}, false
}

// histSince is what h gained since the earlier reading o of the same flow.
func histSince(h, o *loghist.Histogram) loghist.Histogram {
	d := loghist.Histogram{Sum: h.Sum - o.Sum, Count: h.Count - o.Count, Min: h.Min}
	for i := range d.Counts {
		d.Counts[i] = h.Counts[i] - o.Counts[i]
	}
	return d
}

// TestAdoptExisting opens connections across an injected RTT before the
// probes are attached, adopts them, and checks that from then on they are
// measured like connections the probes saw open: the same flow keys, exact
// bytes from the adoption on, RTT within the instruments' bounds; that a
// second walk counts nothing twice; that sockets of another cgroup are left
// alone; and that connections opened after attach are unaffected.
func TestAdoptExisting(t *testing.T) {
	cg := probetest.Cgroup(t)
	const injected = 10 * time.Millisecond
	topo := wan.NewForTestConfig(t, wan.Config{
		Clusters: []string{"a", "b"}, ExtraRTT: map[wan.Pair]time.Duration{{A: "a", B: "b"}: injected}, QuickACK: true,
	})
	a, _ := topo.Cluster("a")
	b, _ := topo.Cluster("b")
	const (
		adopted               = 3
		reqSize, respSize     = 300, 20000
		preRounds, postRounds = 10, 25
	)
	ln, err := b.Listen("tcp4", netip.AddrPortFrom(b.NodeAddr, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	serveEcho(t, ln, reqSize, respSize)
	dialed := netip.MustParseAddrPort(ln.Addr().String())
	dial := func(to netip.AddrPort) net.Conn {
		t.Helper()
		c, err := a.Dial(context.Background(), "tcp4", to.String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	var old []net.Conn
	for range adopted {
		c := dial(dialed)
		pingPong(t, c, preRounds, reqSize, respSize) // before attach: not counted
		old = append(old, c)
	}
	// Both ends of this connection belong to another cgroup.
	other := siblingCgroup(t, cg)
	if err := probe.JoinCgroup(other, 0); err != nil {
		t.Fatal(err)
	}
	lnOther, err := b.Listen("tcp4", netip.AddrPortFrom(b.NodeAddr, 0).String())
	var cOther net.Conn
	if err == nil {
		serveEcho(t, lnOther, reqSize, respSize)
		cOther = dial(netip.MustParseAddrPort(lnOther.Addr().String()))
	}
	if jerr := probe.JoinCgroup(cg, 0); jerr != nil || err != nil {
		t.Fatalf("socket in another cgroup: %v", errors.Join(err, jerr))
	}
	pingPong(t, cOther, preRounds, reqSize, respSize)
	sleeper(t, a)
	sleeper(t, b)

	p := probetest.Attach(t, probe.Options{Cgroup: cg})
	res, err := p.AdoptExisting()
	if err != nil {
		t.Fatalf("adopt: %v (%+v)", err, res)
	}
	t.Logf("first walk: %+v", res)
	// The test process's namespace and the two clusters'; both ends of each
	// connection.
	if res.Netns != 3 || res.Adopted != 2*adopted || res.Tracked != 0 || res.Failed != 0 || res.OtherCgroup < 2 {
		t.Errorf("first walk %+v: want 3 namespaces, %d adopted, none tracked or failed, at least 2 of another cgroup", res, 2*adopted)
	}

	// Right after the walk (no traffic since) each adopted connection holds
	// the kernel's own smoothed RTT, which is one sample of its flow.
	var srttSum uint64
	var clientKey probe.FlowKey
	for i, c := range old {
		info, err := p.Conn(c.(*net.TCPConn))
		if err != nil {
			t.Fatalf("adopted connection %d: %v", i, err)
		}
		ti := tcpInfo(t, c)
		if !info.Adopted || !info.Tracking || info.Key.Role != probe.RoleClient || info.Key.Dialed != dialed || info.Key.Peer != dialed {
			t.Errorf("adopted connection %d: state %+v, want an adopted client of %s", i, info, dialed)
		}
		if got := info.SRTT.Microseconds(); got != int64(ti.Rtt) {
			t.Errorf("adopted connection %d: srtt %d µs, TCP_INFO rtt %d µs", i, got, ti.Rtt)
		}
		// srtt is an EWMA over the samples before attach (world/wan/precision.go).
		if lo, hi := injected.Microseconds()-1, (injected + wan.SRTTTolerance).Microseconds(); int64(ti.Rtt) < lo || int64(ti.Rtt) > hi {
			t.Errorf("adopted connection %d: srtt %d µs outside [%d, %d] for an injected %v", i, ti.Rtt, lo, hi, injected)
		}
		srttSum += uint64(ti.Rtt)
		clientKey = info.Key
	}
	if _, err := p.Conn(cOther.(*net.TCPConn)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("connection of another cgroup: state lookup gave %v, want no state", err)
	}
	serverKey := probe.FlowKey{
		CgroupID: clientKey.CgroupID, NetnsCookie: 0, Local: dialed.Addr(), Dialed: dialed,
		Peer: netip.AddrPortFrom(clientKey.Local, 0), Role: probe.RoleServer,
	}
	s0, err := p.Poll()
	if err != nil {
		t.Fatal(err)
	}
	var server0 probe.FlowStats
	for _, f := range s0.Flows {
		if f.Key.Role == probe.RoleServer && f.Key.Dialed == dialed {
			serverKey.NetnsCookie = f.Key.NetnsCookie
			server0 = f.Stats
		}
		if f.Key.Dialed.Port() == lnOther.Addr().(*net.TCPAddr).AddrPort().Port() {
			t.Errorf("flow of another cgroup adopted: %+v", f.Key)
		}
	}
	if serverKey.NetnsCookie == 0 || serverKey.NetnsCookie == clientKey.NetnsCookie {
		t.Fatalf("no server flow for %s in b's namespace: %+v", dialed, s0.Flows)
	}
	client0, ok := findKey(s0, clientKey)
	if !ok {
		t.Fatalf("no flow for adopted clients %+v", clientKey)
	}
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"client adopted", client0.Adopted, adopted},
		{"client opened", client0.Opened, 0},
		{"client bytes sent", client0.BytesSent, 0},
		{"client bytes received", client0.BytesReceived, 0},
		{"client RTT samples", client0.RTT.Count, adopted},
		{"client RTT sum (µs)", client0.RTT.Sum, srttSum},
		{"server adopted", server0.Adopted, adopted},
		{"server opened", server0.Opened, 0},
		{"server bytes sent", server0.BytesSent, 0},
		{"server bytes received", server0.BytesReceived, 0},
		{"server RTT samples", server0.RTT.Count, adopted},
	} {
		if c.got != c.want {
			t.Errorf("after adoption: %s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if m, lo, hi := server0.RTT.Mean(), float64(injected.Microseconds()-1), float64((injected + wan.SRTTTolerance).Microseconds()); m < lo || m > hi {
		t.Errorf("server srtt at adoption: mean %.0f µs outside [%.0f, %.0f]", m, lo, hi)
	}
	if server0.Active() != adopted || client0.Active() != adopted {
		t.Errorf("active connections: client %d, server %d, want %d", client0.Active(), server0.Active(), adopted)
	}

	// A second walk finds them measured already and changes nothing.
	res2, err := p.Adopt("/run/netns/"+a.NetNS, "/run/netns/"+b.NetNS)
	if err != nil {
		t.Fatalf("second walk: %v", err)
	}
	t.Logf("second walk: %+v", res2)
	// Two listeners; the two ends of the other cgroup's connection.
	if want := (probe.AdoptResult{Netns: 2, Tracked: 2 * adopted, OtherCgroup: 2, NotEstablished: 2}); res2 != want {
		t.Errorf("second walk %+v, want %+v", res2, want)
	}
	s1, err := p.Poll()
	if err != nil {
		t.Fatal(err)
	}
	if c1, _ := findKey(s1, clientKey); c1.Adopted != adopted || c1.RTT.Count != adopted {
		t.Errorf("after a second walk the client flow has %d adopted and %d RTT samples, want %d each", c1.Adopted, c1.RTT.Count, adopted)
	}
	if sv1, _ := findKey(s1, serverKey); sv1.Adopted != adopted || sv1.RTT.Count != adopted {
		t.Errorf("after a second walk the server flow has %d adopted and %d RTT samples, want %d each", sv1.Adopted, sv1.RTT.Count, adopted)
	}

	// A connection opened now is seen by sock_ops and counts in the same flow.
	fresh := dial(dialed)
	info, err := p.Conn(fresh.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	if info.Adopted || !info.Tracking || info.Key != clientKey {
		t.Errorf("new connection: state %+v, want tracked, not adopted, in flow %+v", info, clientKey)
	}
	all := append(old, fresh)
	for _, c := range all {
		pingPong(t, c, postRounds, reqSize, respSize)
	}
	pingPong(t, cOther, postRounds, reqSize, respSize)
	// The callbacks the walk enabled keep the adopted connection's RTT live.
	for i, c := range old {
		info, err := p.Conn(c.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := info.SRTT.Microseconds(), int64(tcpInfo(t, c).Rtt); got != want {
			t.Errorf("adopted connection %d after traffic: srtt %d µs, TCP_INFO rtt %d µs", i, got, want)
		}
	}
	for _, c := range all {
		c.Close()
	}
	n := uint64(len(all))
	s2 := waitFlows(t, p, func(s *probe.Snapshot) bool {
		cl, ok1 := findKey(s, clientKey)
		sv, ok2 := findKey(s, serverKey)
		return ok1 && ok2 && cl.Closed == n && sv.Closed == n
	})
	client, _ := findKey(s2, clientKey)
	server, _ := findKey(s2, serverKey)
	for _, c := range []struct {
		name      string
		got, want uint64
	}{
		{"client opened", client.Opened, 1},
		{"client adopted", client.Adopted, adopted},
		{"client closed", client.Closed, n},
		{"client bytes sent", client.BytesSent, n * postRounds * reqSize},
		{"client bytes received", client.BytesReceived, n * postRounds * respSize},
		{"server opened", server.Opened, 1},
		{"server adopted", server.Adopted, adopted},
		{"server closed", server.Closed, n},
		{"server bytes sent", server.BytesSent, n * postRounds * respSize},
		{"server bytes received", server.BytesReceived, n * postRounds * reqSize},
	} {
		if c.got != c.want {
			t.Errorf("after close: %s = %d, want %d", c.name, c.got, c.want)
		}
	}
	for _, f := range s2.Flows {
		if f.Key.Dialed.Port() == lnOther.Addr().(*net.TCPAddr).AddrPort().Port() {
			t.Errorf("traffic of another cgroup counted: %+v %+v", f.Key, f.Stats)
		}
	}

	// RTT samples since adoption: the sock_ops callbacks of adopted and new
	// connections. Bounds as in test/e2e's TestInjectedRTTPerDestination:
	// nothing below the injected RTT (less srtt's 1 µs truncation), the
	// median within the hub's MedianBias plus one histogram bucket, the mean
	// within MeanTolerance.
	hist := histSince(&client.RTT, &client0.RTT)
	if hist.Count < n*postRounds/2 {
		t.Fatalf("only %d RTT samples for %d round trips", hist.Count, n*postRounds)
	}
	wantUs := float64(injected.Microseconds())
	bucket := loghist.Resolution(wantUs)
	bias := float64(wan.MedianBias.Microseconds())
	mean, p50 := hist.Mean(), hist.Quantile(0.5)
	if float64(client.RTT.Min) < wantUs-1 {
		t.Errorf("min RTT %d µs is below the injected %.0f µs", client.RTT.Min, wantUs)
	}
	if lo, hi := wantUs-bucket, wantUs+bias+bucket; p50 < lo || p50 > hi {
		t.Errorf("p50 RTT %.0f µs, injected %.0f µs: want within [%.0f, %.0f]", p50, wantUs, lo, hi)
	}
	if hi := wantUs + float64(wan.MeanTolerance(int(hist.Count)).Microseconds()); mean < wantUs-1 || mean > hi {
		t.Errorf("mean RTT %.0f µs, injected %.0f µs: want within [%.0f, %.0f]", mean, wantUs, wantUs, hi)
	}
	t.Logf("injected %v: adopted srtt mean %.0f µs; since adoption mean %.0f µs, p50 %.0f µs, min %d µs over %d samples",
		injected, float64(srttSum)/adopted, mean, p50, client.RTT.Min, hist.Count)
}

// TestAdoptLoopbackRoles adopts loopback connections of the test's own
// namespace, IPv4 and IPv6, including IPv4 ones accepted by a dual-stack
// listener: each end gets the role and key sock_ops would have given it.
func TestAdoptLoopbackRoles(t *testing.T) {
	cg := probetest.Cgroup(t)
	const reqSize, respSize, rounds = 100, 5000, 4
	type conn struct {
		network, listenNetwork, listen string
	}
	// Listeners on an address, on IPv4's wildcard, and (IPv6 present) on
	// IPv6's, dual-stack, which takes IPv4 connections too.
	cases := []conn{{"tcp4", "tcp4", "127.0.0.1:0"}, {"tcp4", "tcp4", "0.0.0.0:0"}, {"tcp6", "tcp6", "[::1]:0"}, {"tcp4", "tcp", "[::]:0"}}
	if l, err := net.Listen("tcp6", "[::1]:0"); err != nil {
		t.Logf("no IPv6 loopback (%v): IPv4 only", err)
		cases = cases[:2]
	} else {
		l.Close()
	}
	var olds, news []net.Conn
	for _, c := range cases {
		ln, err := net.Listen(c.listenNetwork, c.listen)
		if err != nil {
			t.Fatal(err)
		}
		serveEcho(t, ln, reqSize, respSize)
		to := ln.Addr().String()
		if addr := ln.Addr().(*net.TCPAddr); addr.IP.IsUnspecified() {
			to = fmt.Sprintf("127.0.0.1:%d", addr.Port) // IPv4 into a wildcard listener
		}
		old, err := net.Dial(c.network, to)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { old.Close() })
		pingPong(t, old, rounds, reqSize, respSize)
		olds = append(olds, old)
	}
	p := probetest.Attach(t, probe.Options{Cgroup: cg})
	res, err := p.Adopt()
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if res.Adopted != 2*len(olds) || res.Tracked != 0 || res.Failed != 0 {
		t.Errorf("walk %+v: want %d adopted", res, 2*len(olds))
	}
	for i, old := range olds {
		c, err := net.Dial(old.RemoteAddr().Network(), old.RemoteAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		news = append(news, c)
		oi, err := p.Conn(old.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		ni, err := p.Conn(c.(*net.TCPConn))
		if err != nil {
			t.Fatal(err)
		}
		if !oi.Adopted || ni.Adopted || oi.Key != ni.Key {
			t.Errorf("%s via %s: adopted connection keyed %+v (adopted %v), new one %+v (adopted %v): want the same key",
				cases[i].network, cases[i].listen, oi.Key, oi.Adopted, ni.Key, ni.Adopted)
		}
	}
	for _, c := range append(olds, news...) {
		pingPong(t, c, rounds, reqSize, respSize)
		c.Close()
	}
	want := uint64(2) // one adopted and one new connection per case
	s := waitFlows(t, p, func(s *probe.Snapshot) bool {
		n := 0
		for _, f := range s.Flows {
			if f.Stats.Closed == want {
				n++
			}
		}
		return n == 2*len(cases)
	})
	for i, old := range olds {
		dialed := netip.MustParseAddrPort(old.RemoteAddr().String())
		for _, role := range []probe.Role{probe.RoleClient, probe.RoleServer} {
			f, ok := find(s, role, netip.AddrPortFrom(dialed.Addr().Unmap(), dialed.Port()))
			if !ok {
				t.Errorf("%s via %s: no %s flow to %s: %+v", cases[i].network, cases[i].listen, role, dialed, s.Flows)
				continue
			}
			sent, recv := uint64(want*rounds*reqSize), uint64(want*rounds*respSize)
			if role == probe.RoleServer {
				sent, recv = recv, sent
			}
			if f.Stats.Opened != 1 || f.Stats.Adopted != 1 || f.Stats.Closed != want || f.Stats.BytesSent != sent || f.Stats.BytesReceived != recv {
				t.Errorf("%s via %s: %s flow %+v: want 1 opened, 1 adopted, 2 closed, %d bytes sent, %d received",
					cases[i].network, cases[i].listen, role, f.Stats, sent, recv)
			}
		}
	}
}

// TestAdoptOutsideObservedCgroup checks that a walk over a namespace adopts
// nothing that belongs to a cgroup outside the observed one, even when both
// share the namespace (agents of several nodes share one kernel here).
func TestAdoptOutsideObservedCgroup(t *testing.T) {
	cg := probetest.Cgroup(t)
	other := siblingCgroup(t, cg)
	if err := probe.JoinCgroup(other, 0); err != nil {
		t.Fatal(err)
	}
	ln := echoServer(t, "127.0.0.1:0", 10, 10)
	c, err := net.Dial("tcp4", ln.Addr().String())
	if jerr := probe.JoinCgroup(cg, 0); jerr != nil || err != nil {
		t.Fatal(errors.Join(err, jerr))
	}
	t.Cleanup(func() { c.Close() })
	pingPong(t, c, 2, 10, 10)
	p := probetest.Attach(t, probe.Options{Cgroup: cg})
	res, err := p.Adopt()
	if err != nil {
		t.Fatal(err)
	}
	if res.Adopted != 0 || res.OtherCgroup < 2 {
		t.Errorf("walk %+v: want nothing adopted and both ends outside the cgroup", res)
	}
	if _, err := p.Conn(c.(*net.TCPConn)); !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Errorf("connection of another cgroup has state (lookup: %v)", err)
	}
	pingPong(t, c, 2, 10, 10)
	s, err := p.Poll()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Flows) != 0 {
		t.Errorf("flows of another cgroup: %+v", s.Flows)
	}
}
