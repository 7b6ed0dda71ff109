package probe_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
)

// echoServer accepts connections on addr, reads reqSize bytes per request and
// answers with respSize bytes, until the client closes.
func echoServer(t *testing.T, addr string, reqSize, respSize int) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	serveEcho(t, ln, reqSize, respSize)
	return ln
}

// serveEcho is echoServer on a listener made elsewhere (in another network
// namespace, say).
func serveEcho(t *testing.T, ln net.Listener, reqSize, respSize int) {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, resp := make([]byte, reqSize), bytes.Repeat([]byte{'r'}, respSize)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// pingPong sends n requests of reqSize bytes and reads each response.
func pingPong(t *testing.T, c net.Conn, n, reqSize, respSize int) {
	t.Helper()
	req, resp := bytes.Repeat([]byte{'q'}, reqSize), make([]byte, respSize)
	for i := range n {
		if _, err := c.Write(req); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
	}
}

func tcpInfo(t *testing.T, c net.Conn) *unix.TCPInfo {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	raw.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if gerr != nil {
		t.Fatalf("TCP_INFO: %v", gerr)
	}
	return info
}

// waitFlows polls until cond holds for the snapshot or the deadline passes.
func waitFlows(t *testing.T, p *probe.Probe, cond func(*probe.Snapshot) bool) *probe.Snapshot {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := p.Poll()
		if err != nil {
			t.Fatalf("poll: %v", err)
		}
		if cond(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func find(s *probe.Snapshot, role probe.Role, dialed netip.AddrPort) (probe.Flow, bool) {
	for _, f := range s.Flows {
		if f.Key.Role == role && f.Key.Dialed == dialed {
			return f, true
		}
	}
	return probe.Flow{}, false
}

func TestRTTEqualsTCPInfo(t *testing.T) {
	p := probetest.Attach(t, probe.Options{})
	ln := echoServer(t, "127.0.0.1:0", 100, 1000)
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	pingPong(t, c, 50, 100, 1000)

	info, err := p.Conn(c.(*net.TCPConn))
	if err != nil {
		t.Fatalf("probe state of connection: %v", err)
	}
	ti := tcpInfo(t, c)
	if got, want := info.SRTT.Microseconds(), int64(ti.Rtt); got != want {
		t.Errorf("probe srtt %d µs, TCP_INFO rtt %d µs", got, want)
	}
	if info.SRTT <= 0 || !info.Tracking {
		t.Errorf("connection state not tracked: %+v", info)
	}
	if info.MinRTT <= 0 || info.MinRTT > info.SRTT*4 {
		t.Errorf("min rtt %v implausible next to srtt %v", info.MinRTT, info.SRTT)
	}
	if info.Key.Role != probe.RoleClient || info.Key.Dialed.String() != ln.Addr().String() {
		t.Errorf("connection key %+v, want client of %s", info.Key, ln.Addr())
	}
}

func TestBytesExactAtClose(t *testing.T) {
	p := probetest.Attach(t, probe.Options{})
	const reqSize, respSize, rounds = 1500, 70001, 7
	ln := echoServer(t, "127.0.0.1:0", reqSize, respSize)
	dialed := netip.MustParseAddrPort(ln.Addr().String())
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pingPong(t, c, rounds, reqSize, respSize)
	c.Close()

	s := waitFlows(t, p, func(s *probe.Snapshot) bool {
		cl, ok1 := find(s, probe.RoleClient, dialed)
		sv, ok2 := find(s, probe.RoleServer, dialed)
		return ok1 && ok2 && cl.Stats.Closed == 1 && sv.Stats.Closed == 1
	})
	cl, ok := find(s, probe.RoleClient, dialed)
	if !ok {
		t.Fatalf("no client flow to %s in %+v", dialed, s.Flows)
	}
	sv, ok := find(s, probe.RoleServer, dialed)
	if !ok {
		t.Fatalf("no server flow for %s in %+v", dialed, s.Flows)
	}
	for _, tc := range []struct {
		name      string
		got, want uint64
	}{
		{"client opened", cl.Stats.Opened, 1},
		{"client closed", cl.Stats.Closed, 1},
		{"client bytes sent", cl.Stats.BytesSent, reqSize * rounds},
		{"client bytes received", cl.Stats.BytesReceived, respSize * rounds},
		{"server opened", sv.Stats.Opened, 1},
		{"server closed", sv.Stats.Closed, 1},
		{"server bytes sent", sv.Stats.BytesSent, respSize * rounds},
		{"server bytes received", sv.Stats.BytesReceived, reqSize * rounds},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
	if cl.Stats.Duration <= 0 || cl.Stats.SegsOut == 0 || cl.Stats.SegsIn == 0 || cl.Stats.RTT.Count == 0 {
		t.Errorf("client flow lacks duration, segments or RTT samples: %+v", cl.Stats)
	}
	if sv.Key.Peer.Port() != 0 {
		t.Errorf("server flow keeps the client's ephemeral port: %v", sv.Key.Peer)
	}
}

// IPv6 connections are keyed by their IPv6 addresses, with exact bytes; a
// dual-stack socket dialing IPv4 is keyed like an IPv4 one.
func TestIPv6Flows(t *testing.T) {
	p := probetest.Attach(t, probe.Options{})
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	srv := echoServer(t, "[::1]:0", 50, 700)
	dialed := netip.MustParseAddrPort(srv.Addr().String())
	c, err := net.Dial("tcp6", dialed.String())
	if err != nil {
		t.Fatal(err)
	}
	pingPong(t, c, 4, 50, 700)
	info, err := p.Conn(c.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	if info.Dialed != dialed || !info.Key.Local.Is6() || info.SRTT <= 0 {
		t.Errorf("connection state %+v, want dialed %s over IPv6", info, dialed)
	}
	c.Close()
	s := waitFlows(t, p, func(s *probe.Snapshot) bool {
		f, ok := find(s, probe.RoleClient, dialed)
		return ok && f.Stats.Closed == 1
	})
	f, ok := find(s, probe.RoleClient, dialed)
	if !ok {
		t.Fatalf("no IPv6 client flow to %s: %+v", dialed, s.Flows)
	}
	if f.Stats.BytesSent != 200 || f.Stats.BytesReceived != 2800 || f.Key.Peer != dialed {
		t.Errorf("IPv6 flow %+v %+v: want 200/2800 bytes to %s", f.Key, f.Stats, dialed)
	}
}

func TestOverflowEvictsAndCounts(t *testing.T) {
	const maxFlows, listeners = 16, 48
	p := probetest.Attach(t, probe.Options{MaxFlows: maxFlows})
	var addrs []string
	for range listeners {
		addrs = append(addrs, echoServer(t, "127.0.0.1:0", 64, 64).Addr().String())
	}
	for round := range 2 {
		for _, a := range addrs {
			c, err := net.DialTimeout("tcp4", a, 2*time.Second)
			if err != nil {
				t.Fatalf("round %d: dial %s with a full flow table: %v", round, a, err)
			}
			pingPong(t, c, 2, 64, 64) // traffic must be undisturbed
			c.Close()
		}
	}
	s, err := p.Poll()
	if err != nil {
		t.Fatal(err)
	}
	c := s.Counters
	if c.Flows > maxFlows {
		t.Errorf("flow table holds %d entries, capacity %d", c.Flows, maxFlows)
	}
	// 48 client and 48 server flows, twice over, into 16 slots.
	if c.FlowsCreated < 2*listeners {
		t.Errorf("created %d flows, want at least %d", c.FlowsCreated, 2*listeners)
	}
	if want := c.FlowsCreated - uint64(c.Flows); c.Evicted != want {
		t.Errorf("evicted = %d, want created-live = %d", c.Evicted, want)
	}
	if c.Evicted < 2*listeners-maxFlows {
		t.Errorf("evicted = %d, want at least %d", c.Evicted, 2*listeners-maxFlows)
	}
	if c.InsertFailed != 0 || c.StorageFailed != 0 {
		t.Errorf("datapath refused work: %+v", c)
	}
}

func TestCloseLeavesNothingAttached(t *testing.T) {
	cg := probetest.Cgroup(t)
	p, err := probe.Load(probe.Options{Cgroup: cg})
	if err != nil {
		t.Fatal(err)
	}
	var progIDs []ebpf.ProgramID
	var mapIDs []ebpf.MapID
	for name, prog := range p.Programs() {
		info, err := prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, _ := info.ID()
		progIDs = append(progIDs, id)
		ids, _ := info.MapIDs()
		mapIDs = append(mapIDs, ids...)
		t.Logf("loaded %s as program %d using maps %v", name, id, ids)
	}
	// sock_ops, connect4, connect6 and the adoption iterator.
	if len(progIDs) != 4 {
		t.Fatalf("want 4 programs loaded, got %d", len(progIDs))
	}
	if n := attachedCount(t, cg); n != 3 {
		t.Fatalf("want 3 programs attached to %s, got %d", cg, n)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if n := attachedCount(t, cg); n != 0 {
		t.Errorf("%d programs still attached after Close", n)
	}
	// The kernel frees programs and maps once the last reference is gone
	// (after an RCU grace period).
	deadline := time.Now().Add(5 * time.Second)
	for _, id := range progIDs {
		for {
			prog, err := ebpf.NewProgramFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				prog.Close()
			}
			if time.Now().After(deadline) {
				t.Fatalf("program %d still exists after Close (err %v)", id, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	for _, id := range mapIDs {
		for {
			m, err := ebpf.NewMapFromID(id)
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				m.Close()
			}
			if time.Now().After(deadline) {
				t.Fatalf("map %d still exists after Close (err %v)", id, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := p.Poll(); err == nil {
		t.Error("Poll after Close succeeded")
	}
}

func attachedCount(t *testing.T, cg string) int {
	t.Helper()
	f, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupSockOps, ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect, ebpf.AttachCgroupInet4GetPeername} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatalf("query %s: %v", at, err)
		}
		n += len(res.Programs)
	}
	return n
}

func TestLoadRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts probe.Options
	}{
		{"no cgroup", probe.Options{}},
		{"tiny table", probe.Options{Cgroup: "/", MaxFlows: 3}},
		{"not a cgroup", probe.Options{Cgroup: os.TempDir()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.opts.Cgroup == os.TempDir() {
				probetest.RequireKernel(t)
			}
			if _, err := probe.Load(tc.opts); err == nil {
				t.Fatal("Load accepted bad options")
			}
		})
	}
}
