package redirect_test

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/internal/redirect"
)

// backend is a loopback server that answers every connection with its name
// and then echoes, so a test knows where a connect was routed.
type backend struct {
	name string
	ln   net.Listener
	addr netip.AddrPort
}

func startBackend(t *testing.T, name, listen string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ln: ln, addr: netip.MustParseAddrPort(ln.Addr().String())}
	go b.serve()
	t.Cleanup(func() { ln.Close() })
	return b
}

func (b *backend) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := c.Write([]byte(b.name + "\n")); err != nil {
				return
			}
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

// dialName connects to addr and returns the name of the backend that
// answered, and the peer address the application sees.
func dialName(t *testing.T, network string, addr netip.AddrPort) (string, netip.AddrPort, net.Conn, error) {
	t.Helper()
	c, err := net.DialTimeout(network, addr.String(), 3*time.Second)
	if err != nil {
		return "", netip.AddrPort{}, nil, err
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 32)
	n, err := c.Read(buf)
	if err != nil {
		c.Close()
		return "", netip.AddrPort{}, nil, err
	}
	_ = c.SetReadDeadline(time.Time{})
	return strings.TrimSpace(string(buf[:n])), netip.MustParseAddrPort(c.RemoteAddr().String()), c, nil
}

func mustDialName(t *testing.T, network string, addr netip.AddrPort) string {
	t.Helper()
	name, peer, c, err := dialName(t, network, addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.Close()
	if peer != addr {
		t.Errorf("application sees peer %s, want the dialed service %s", peer, addr)
	}
	return name
}

func open(t *testing.T, opts redirect.Options) *redirect.Datapath {
	t.Helper()
	d, err := redirect.Open(ktesting.NewLogger(t, ktesting.NewConfig()), opts)
	if err != nil {
		t.Fatalf("open routing datapath: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func apply(t *testing.T, d *redirect.Datapath, svcs ...redirect.Service) {
	t.Helper()
	if _, err := d.Apply(svcs); err != nil {
		t.Fatalf("apply: %v", err)
	}
}

func tiers(bs ...[]*backend) [][]redirect.Backend {
	var out [][]redirect.Backend
	for i, tier := range bs {
		var t []redirect.Backend
		for _, b := range tier {
			t = append(t, redirect.Backend{Addr: b.addr, Cluster: uint16(i)})
		}
		out = append(out, t)
	}
	return out
}

// A loopback service address nothing listens on: a connect that is not
// rewritten is refused.
var vip4 = netip.MustParseAddrPort("127.77.0.10:8080")

func TestRoutesToFirstNonEmptyTierAndRestoresPeer(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg})
	local, remote := startBackend(t, "local", "127.0.0.1:0"), startBackend(t, "remote", "127.0.0.1:0")
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{local}, []*backend{remote})})
	for range 5 {
		if got := mustDialName(t, "tcp4", vip4); got != "local" {
			t.Fatalf("routed to %s, want the first tier's backend", got)
		}
	}
	// No local endpoints: the next tier serves.
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers(nil, []*backend{remote})})
	if got := mustDialName(t, "tcp4", vip4); got != "remote" {
		t.Fatalf("with tier 0 empty, routed to %s, want remote", got)
	}
	// Not routed any more: the service address is dead again.
	apply(t, d)
	if _, _, c, err := dialName(t, "tcp4", vip4); err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded after the service was removed", vip4)
	}
	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 0 {
		t.Errorf("stats of a removed service reported: %+v", stats)
	}
}

func TestIPv6AndDualStackSockets(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg})
	b6 := startBackend(t, "six", "[::1]:0")
	b4 := startBackend(t, "four", "127.0.0.1:0")
	vip6 := netip.MustParseAddrPort("[fd7f::10]:8080")
	apply(t, d,
		redirect.Service{Addr: vip6, Tiers: tiers([]*backend{b6})},
		redirect.Service{Addr: vip4, Tiers: tiers([]*backend{b4})})
	if got := mustDialName(t, "tcp6", vip6); got != "six" {
		t.Fatalf("IPv6 service routed to %s", got)
	}
	// An AF_INET6 socket dialing the IPv4 service as ::ffff:a.b.c.d goes
	// through connect6 and getpeername6 only.
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	mapped := netip.AddrFrom16(vip4.Addr().As16())
	if err := unix.Connect(fd, &unix.SockaddrInet6{Port: int(vip4.Port()), Addr: mapped.As16()}); err != nil {
		t.Fatalf("dual-stack connect to %s: %v", mapped, err)
	}
	sa, err := unix.Getpeername(fd)
	if err != nil {
		t.Fatal(err)
	}
	peer := sa.(*unix.SockaddrInet6)
	if got := netip.AddrPortFrom(netip.AddrFrom16(peer.Addr), uint16(peer.Port)); got != netip.AddrPortFrom(mapped, vip4.Port()) {
		t.Errorf("dual-stack socket sees peer %s, want %s", got, mapped)
	}
	buf := make([]byte, 16)
	n, err := unix.Read(fd, buf)
	if err != nil || strings.TrimSpace(string(buf[:n])) != "four" {
		t.Errorf("dual-stack socket reached %q (%v), want four", buf[:n], err)
	}
}

func TestSpreadsWithinTier(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg})
	a, b := startBackend(t, "a", "127.0.0.1:0"), startBackend(t, "b", "127.0.0.1:0")
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{a, b})})
	const n = 200
	got := map[string]int{}
	for range n {
		got[mustDialName(t, "tcp4", vip4)]++
	}
	// Binomial(200, 1/2): sd 7.1, so 50 is 7 sd below the mean of 100.
	if got["a"] < 50 || got["b"] < 50 || got["a"]+got["b"] != n {
		t.Errorf("spread over one tier of two: %v, want each at least 50 of %d", got, n)
	}
	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if len(stats) != 1 || stats[0].Connects != n || stats[0].Tier != 0 || stats[0].Service != vip4 {
		t.Errorf("stats %+v, want %d connects from tier 0 of %s", stats, n, vip4)
	}
}

func TestEjectsFailingBackendAndReadmitsIt(t *testing.T) {
	cg := probetest.Cgroup(t)
	health := redirect.Health{FailThreshold: 3, BaseEjection: 400 * time.Millisecond, MaxEjection: 10 * time.Second}
	d := open(t, redirect.Options{Cgroup: cg, Health: health})
	dead := startBackend(t, "near", "127.0.0.1:0")
	deadAddr := dead.addr
	dead.ln.Close() // connects to it are refused (reset)
	far := startBackend(t, "far", "127.0.0.1:0")
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{dead}, []*backend{far})})

	failures := 0
	for failures <= int(health.FailThreshold) {
		name, _, c, err := dialName(t, "tcp4", vip4)
		if err == nil {
			c.Close()
			if name != "far" {
				t.Fatalf("routed to %s", name)
			}
			break
		}
		failures++
	}
	if failures != int(health.FailThreshold) {
		t.Fatalf("%d connects failed before the dead backend was ejected, want exactly %d", failures, health.FailThreshold)
	}
	h, err := d.Health()
	if err != nil {
		t.Fatal(err)
	}
	if hh := h[deadAddr]; hh.Ejections != 1 || !hh.Ejected(time.Now()) {
		t.Errorf("health of the dead backend %+v, want ejected once and still ejected", hh)
	}
	// While ejected, the next tier serves every connect.
	for range 5 {
		if got := mustDialName(t, "tcp4", vip4); got != "far" {
			t.Fatalf("routed to %s while the near backend is ejected", got)
		}
	}
	// It recovers; once its ejection ends it serves again.
	ln, err := net.Listen("tcp", deadAddr.String())
	if err != nil {
		t.Fatalf("restart backend on %s: %v", deadAddr, err)
	}
	recovered := &backend{name: "near", ln: ln, addr: deadAddr}
	go recovered.serve()
	t.Cleanup(func() { ln.Close() })
	time.Sleep(time.Until(h[deadAddr].EjectedUntil) + 50*time.Millisecond)
	if got := mustDialName(t, "tcp4", vip4); got != "near" {
		t.Errorf("after its ejection ended, routed to %s, want the recovered near backend", got)
	}

	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	var failed, farConnects uint64
	for _, s := range stats {
		failed += s.Failed
		if s.Tier == 1 {
			farConnects += s.Connects
		}
	}
	if failed != uint64(health.FailThreshold) || farConnects != 6 {
		t.Errorf("stats %+v: want %d failed and 6 connects from tier 1", stats, health.FailThreshold)
	}
}

func TestEverythingEjectedFallsBackToAll(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg, Health: redirect.Health{FailThreshold: 1, BaseEjection: time.Minute, MaxEjection: time.Minute}})
	b := startBackend(t, "only", "127.0.0.1:0")
	b.ln.Close()
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{b})})
	for range 3 {
		if _, _, c, err := dialName(t, "tcp4", vip4); err == nil {
			c.Close()
			t.Fatal("connect to a dead backend succeeded")
		}
	}
	stats, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]uint64{}
	for _, s := range stats {
		got[s.Tier] += s.Connects
	}
	// The first connect ejected the only backend; the next two were still
	// routed to it (never nowhere), as the fallback.
	if got[0] != 1 || got[redirect.FallbackTier] != 2 {
		t.Errorf("connects by tier %v, want 1 from tier 0 and 2 as fallback", got)
	}
}

func TestCloseRoutedClosesOnlyDepartedRoutes(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg})
	a, b := startBackend(t, "a", "127.0.0.1:0"), startBackend(t, "b", "127.0.0.1:0")
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{a})})
	_, _, toA, err := dialName(t, "tcp4", vip4)
	if err != nil {
		t.Fatal(err)
	}
	defer toA.Close()
	direct, err := net.Dial("tcp4", a.addr.String()) // not routed: never closed
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{b})})
	_, _, toB, err := dialName(t, "tcp4", vip4)
	if err != nil {
		t.Fatal(err)
	}
	defer toB.Close()

	n, err := d.CloseRouted([]redirect.Route{{Service: vip4, Backend: a.addr}})
	if err != nil || n != 1 {
		t.Fatalf("CloseRouted = %d, %v; want 1 closed", n, err)
	}
	alive := func(c net.Conn) error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		_, err := c.Read(buf)
		return err
	}
	if err := alive(toA); err == nil {
		t.Error("routed connection to the departed backend still works")
	}
	if err := alive(toB); err != nil {
		t.Errorf("routed connection to the remaining backend broken: %v", err)
	}
	// The direct connection's first read gets the greeting.
	if err := alive(direct); err != nil {
		t.Errorf("unrouted connection to the departed backend broken: %v", err)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg})
	a := startBackend(t, "a", "127.0.0.1:0")
	good := redirect.Service{Addr: vip4, Tiers: tiers([]*backend{a})}
	apply(t, d, good)
	other := netip.MustParseAddrPort("127.77.0.11:80")
	cases := []struct {
		name string
		svcs []redirect.Service
		want string
	}{
		{"family", []redirect.Service{good, {Addr: other, Tiers: [][]redirect.Backend{{{Addr: netip.MustParseAddrPort("[::1]:80")}}}}}, "other IP family"},
		{"tiers", []redirect.Service{{Addr: other, Tiers: make([][]redirect.Backend, 9)}}, "9 tiers"},
		{"twice", []redirect.Service{good, good}, "given twice"},
		{"port", []redirect.Service{{Addr: netip.MustParseAddrPort("127.77.0.12:0")}}, "invalid service address"},
		{"backend", []redirect.Service{{Addr: other, Tiers: [][]redirect.Backend{{{Addr: netip.AddrPort{}}}}}}, "invalid backend"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := d.Apply(c.svcs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Apply = %v, want an error saying %q", err, c.want)
			}
			if got := mustDialName(t, "tcp4", vip4); got != "a" {
				t.Errorf("after refused input, routed to %s", got)
			}
			if tb := d.Tables(); len(tb) != 1 {
				t.Errorf("tables changed: %v", tb)
			}
		})
	}
}

// The agent opens routing before the probes, so routing's connect4 runs
// first and has already rewritten the address when measurement's runs.
func TestMeasurementAttributesRoutedConnectToDialedService(t *testing.T) {
	cg := probetest.Cgroup(t)
	d := open(t, redirect.Options{Cgroup: cg})
	p, err := probe.Load(probe.Options{Cgroup: cg, RoutedSockets: d.RoutedSockets()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	a := startBackend(t, "a", "127.0.0.1:0")
	apply(t, d, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{a})})
	_, _, c, err := dialName(t, "tcp4", vip4)
	if err != nil {
		t.Fatal(err)
	}
	info, err := p.Conn(c.(*net.TCPConn))
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !info.Redirected || info.Dialed != vip4 || info.Key.Peer != a.addr {
		t.Errorf("measured %+v: want dialed %s, peer %s, redirected", info, vip4, a.addr)
	}
}

// bpffs mounts a private bpffs for pinning.
func bpffs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Skipf("cannot mount a bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return filepath.Join(dir, "flowplace", "routing")
}

func attachedRoutingPrograms(t *testing.T, cg string) []string {
	t.Helper()
	f, err := os.Open(cg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect,
		ebpf.AttachCgroupInet4GetPeername, ebpf.AttachCgroupInet6GetPeername, ebpf.AttachCGroupSockOps} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			t.Fatal(err)
		}
		for _, ap := range res.Programs {
			p, err := ebpf.NewProgramFromID(ap.ID)
			if err != nil {
				continue
			}
			info, err := p.Info()
			p.Close()
			if err == nil && strings.HasPrefix(info.Name, "flowplace_rout") {
				names = append(names, info.Name)
			}
		}
	}
	return names
}

func TestPinnedRoutingOutlivesTheAgentAndIsAdoptedWithoutGap(t *testing.T) {
	cg := probetest.Cgroup(t)
	pins := bpffs(t)
	log := ktesting.NewLogger(t, ktesting.NewConfig())
	a := startBackend(t, "a", "127.0.0.1:0")
	first, err := redirect.Open(log, redirect.Options{Cgroup: cg, PinDir: pins})
	if err != nil {
		t.Fatal(err)
	}
	if first.AdoptedPinnedState() {
		t.Error("a first open reports adopted state")
	}
	apply(t, first, redirect.Service{Addr: vip4, Tiers: tiers([]*backend{a})})
	held, err := net.DialTimeout("tcp4", vip4.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// The agent dies: its descriptors close, the pins stay.
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Apply(nil); !errors.Is(err, redirect.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
	if _, err := first.Health(); !errors.Is(err, redirect.ErrClosed) {
		t.Errorf("Health after Close: %v, want ErrClosed", err)
	}
	if _, err := first.Stats(); !errors.Is(err, redirect.ErrClosed) {
		t.Errorf("Stats after Close: %v, want ErrClosed", err)
	}
	if got := mustDialName(t, "tcp4", vip4); got != "a" {
		t.Fatalf("with no agent running, routed to %s", got)
	}

	// A new agent starts while clients keep connecting.
	var (
		stop             atomic.Bool
		wg               sync.WaitGroup
		dials, dialFails atomic.Int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			c, err := net.DialTimeout("tcp4", vip4.String(), time.Second)
			dials.Add(1)
			if err != nil {
				dialFails.Add(1)
				continue
			}
			c.Close()
		}
	}()
	second, err := redirect.Open(log, redirect.Options{Cgroup: cg, PinDir: pins})
	if err != nil {
		stop.Store(true)
		wg.Wait()
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if !second.AdoptedPinnedState() {
		t.Error("the restarted datapath did not adopt the pinned state")
	}
	if dialFails.Load() != 0 || dials.Load() == 0 {
		t.Errorf("%d of %d connects failed across the restart, want none", dialFails.Load(), dials.Load())
	}
	if tb := second.Tables(); len(tb[vip4]) != 1 || len(tb[vip4][0]) != 1 || tb[vip4][0][0].Addr != a.addr {
		t.Errorf("adopted tables %v, want %s -> %s", tb, vip4, a.addr)
	}
	if n := len(attachedRoutingPrograms(t, cg)); n != 5 {
		t.Errorf("%d routing programs attached after the restart, want 5 (links updated, not added)", n)
	}
	// A connection routed by the first agent: its socket's routing state
	// lives in the pinned storage, so it still names the service.
	if peer := peerOf(t, held); peer != vip4 {
		t.Errorf("a connection routed before the restart reports peer %s, want %s", peer, vip4)
	}
	second.Close()

	// Disabling removes every program and map.
	if err := redirect.Remove(pins); err != nil {
		t.Fatal(err)
	}
	if names := attachedRoutingPrograms(t, cg); len(names) != 0 {
		t.Errorf("programs still attached after Remove: %v", names)
	}
	if _, err := os.Stat(pins); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory left after Remove: %v", err)
	}
	if _, _, c, err := dialName(t, "tcp4", vip4); err == nil {
		c.Close()
		t.Error("service address still routed after Remove")
	}
}

func TestRefusesForeignSocketLoadBalancer(t *testing.T) {
	cg := probetest.Cgroup(t)
	// A stand-in for Cilium's socket LB: same program name, allows every
	// connect unchanged.
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "cil_sock4_connect", Type: ebpf.CGroupSockAddr, AttachType: ebpf.AttachCGroupInet4Connect, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cg, Attach: ebpf.AttachCGroupInet4Connect, Program: prog})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = redirect.Open(ktesting.NewLogger(t, ktesting.NewConfig()), redirect.Options{Cgroup: cg})
	if !errors.Is(err, redirect.ErrForeignLoadBalancer) || !strings.Contains(err.Error(), "Cilium") {
		t.Fatalf("Open = %v, want ErrForeignLoadBalancer naming Cilium", err)
	}
	if names := attachedRoutingPrograms(t, cg); len(names) != 0 {
		t.Errorf("refused open left programs attached: %v", names)
	}
}

// A backend whose host has gone silent: SYNs are dropped without an
// answer, so only the retransmission timeout tells. A listener whose accept
// queue is full drops SYNs just so (Linux counts them as ListenOverflows).
func TestEjectsBackendWhoseSYNsGoUnanswered(t *testing.T) {
	cg := probetest.Cgroup(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil { // room for one connection
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	silent := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sa.(*unix.SockaddrInet4).Port))
	filler, err := net.Dial("tcp4", silent.String()) // fills the queue; not routed
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()

	health := redirect.Health{FailThreshold: 2, BaseEjection: time.Minute, MaxEjection: time.Minute}
	d := open(t, redirect.Options{Cgroup: cg, Health: health})
	far := startBackend(t, "far", "127.0.0.1:0")
	apply(t, d, redirect.Service{Addr: vip4, Tiers: [][]redirect.Backend{{{Addr: silent}}, {{Addr: far.addr, Cluster: 1}}}})

	// Two clients dial at once; both reach the silent backend, and each
	// SYN's first retransmission timeout (1 s) counts one failure.
	var wg sync.WaitGroup
	for range int(health.FailThreshold) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c, err := net.DialTimeout("tcp4", vip4.String(), 1500*time.Millisecond); err == nil {
				c.Close()
				t.Error("connect to the silent backend succeeded")
			}
		}()
	}
	wg.Wait()
	h, err := d.Health()
	if err != nil {
		t.Fatal(err)
	}
	if hh := h[silent]; hh.Ejections != 1 || !hh.Ejected(time.Now()) {
		t.Fatalf("health of the silent backend %+v, want ejected once", hh)
	}
	if got := mustDialName(t, "tcp4", vip4); got != "far" {
		t.Errorf("after the silent backend was ejected, routed to %s", got)
	}
}

// peerOf asks the kernel for c's peer now (net.Conn caches the one it
// read at connect).
func peerOf(t *testing.T, c net.Conn) netip.AddrPort {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var sa unix.Sockaddr
	var serr error
	if err := rc.Control(func(fd uintptr) { sa, serr = unix.Getpeername(int(fd)) }); err != nil || serr != nil {
		t.Fatalf("getpeername: %v %v", err, serr)
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port))
	}
	t.Fatalf("getpeername: address %T", sa)
	return netip.AddrPort{}
}
