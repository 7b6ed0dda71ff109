package wan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// TunName is the name of each cluster's WAN device.
	TunName = "fpwan0"
	tunMTU  = 1500
	// tunTxQLen is the kernel ring between the cluster's stack and the hub.
	// The default 500 drops bursts a cwnd-sized flight can produce while the
	// hub's reader is descheduled.
	tunTxQLen = 2048
	// maxHost is the last usable host number in a cluster's /24.
	maxHost = 254
)

// Cluster is one network namespace of the topology.
type Cluster struct {
	Name     string       // cluster name from Config.Clusters
	NetNS    string       // namespace name; /run/netns/<NetNS> exists
	Index    int          // position in Config.Clusters
	Subnet   netip.Prefix // 10.<base>.<Index+1>.0/24
	NodeAddr netip.Addr   // 10.<base>.<Index+1>.1, the cluster's node address

	topo *Topology

	// ns is an open handle to the namespace, used to enter it and to open
	// netlink sockets in it without going through /run/netns again.
	ns netns.NsHandle
	// tunFD is the TUN's non-blocking fd, -1 when closed. Closing the last
	// fd destroys the (non-persistent) device.
	tunFD int
	// nsCreated records that /run/netns/<NetNS> is ours to delete.
	nsCreated bool

	mu       sync.Mutex
	lastHost int
	tunIndex int

	nodes []*Node // guarded by topo.mgmtMu
}

func newCluster(t *Topology, i int, name string) *Cluster {
	third := byte(i + 1)
	return &Cluster{
		Name:     name,
		NetNS:    t.prefix + "-" + name,
		Index:    i,
		Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, t.base, third, 0}), 24),
		NodeAddr: netip.AddrFrom4([4]byte{10, t.base, third, 1}),
		topo:     t,
		ns:       netns.None(),
		tunFD:    -1,
		lastHost: 1,
	}
}

// create makes the namespace, the TUN device and the addresses and routes.
func (c *Cluster) create() error {
	h, err := createNamedNetNS(c.NetNS)
	if err != nil {
		return err
	}
	c.ns, c.nsCreated = h, true

	// The TUN must be opened and attached by a thread inside the namespace:
	// the kernel creates the device in the opener's network namespace.
	err = c.Do(func() error {
		fd, err := openTUN(TunName)
		if err != nil {
			return err
		}
		c.tunFD = fd
		// Best effort: IPv6 on the TUN only produces router solicitations the
		// IPv4-only hub would drop and count.
		_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+TunName+"/disable_ipv6", []byte("1"), 0)
		// Cached per-destination metrics would seed new connections with the
		// RTT of an earlier setting after SetExtraRTT.
		_ = os.WriteFile("/proc/sys/net/ipv4/tcp_no_metrics_save", []byte("1"), 0)
		return nil
	})
	if err != nil {
		return fmt.Errorf("create tun in netns %s: %w", c.NetNS, err)
	}

	nh, err := netlink.NewHandleAt(c.ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", c.NetNS, err)
	}
	defer nh.Close()
	lo, err := nh.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo in netns %s: %w", c.NetNS, err)
	}
	if err := nh.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up in netns %s: %w", c.NetNS, err)
	}
	link, err := nh.LinkByName(TunName)
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", TunName, c.NetNS, err)
	}
	c.tunIndex = link.Attrs().Index
	if err := nh.LinkSetMTU(link, tunMTU); err != nil {
		return fmt.Errorf("set mtu of %s in netns %s: %w", TunName, c.NetNS, err)
	}
	if err := nh.LinkSetTxQLen(link, tunTxQLen); err != nil {
		return fmt.Errorf("set txqueuelen of %s in netns %s: %w", TunName, c.NetNS, err)
	}
	if err := nh.AddrAdd(link, hostAddr(c.NodeAddr)); err != nil {
		return fmt.Errorf("add %s to %s in netns %s: %w", c.NodeAddr, TunName, c.NetNS, err)
	}
	if err := nh.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", TunName, c.NetNS, err)
	}
	// One route for the whole /16: every other cluster is reached through the
	// hub, while the cluster's own addresses are local and never hit it. The
	// source hint makes outgoing connections use the node address.
	wan := c.topo.Network()
	route := &netlink.Route{
		LinkIndex: c.tunIndex,
		Dst:       &net.IPNet{IP: wan.Addr().AsSlice(), Mask: net.CIDRMask(wan.Bits(), 32)},
		Src:       c.NodeAddr.AsSlice(),
		Scope:     netlink.SCOPE_LINK,
	}
	if c.topo.quickACK {
		route.QuickACK = 1
	}
	if err := nh.RouteAdd(route); err != nil {
		return fmt.Errorf("add route %s via %s in netns %s: %w", wan, TunName, c.NetNS, err)
	}
	return nil
}

// teardown releases the cluster's resources; with deleteNS it also deletes
// the namespace.
func (c *Cluster) teardown(deleteNS bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	// The hub has stopped using the TUN by now.
	if c.tunFD >= 0 {
		if err := unix.Close(c.tunFD); err != nil {
			errs = append(errs, fmt.Errorf("close tun: %w", err))
		}
		c.tunFD = -1
	}
	if c.ns.IsOpen() {
		if err := c.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns handle: %w", err))
		}
		c.ns = netns.None()
	}
	if deleteNS && c.nsCreated {
		if err := deleteNamedNetNS(c.NetNS); err != nil {
			errs = append(errs, err)
		}
		c.nsCreated = false
	}
	return errors.Join(errs...)
}

func hostAddr(a netip.Addr) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}
}

// AllocAddr returns a fresh address of the cluster's subnet (.2, .3, …),
// added as a /32 to the cluster's TUN so services can bind distinct IPs.
func (c *Cluster) AllocAddr() (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.topo.closed.Load() || !c.ns.IsOpen() {
		return netip.Addr{}, fmt.Errorf("alloc addr in cluster %s: topology closed", c.Name)
	}
	if c.lastHost >= maxHost {
		return netip.Addr{}, fmt.Errorf("alloc addr in cluster %s: subnet %s exhausted", c.Name, c.Subnet)
	}
	b := c.Subnet.Addr().As4()
	b[3] = byte(c.lastHost + 1)
	addr := netip.AddrFrom4(b)

	nh, err := netlink.NewHandleAt(c.ns)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("netlink handle in netns %s: %w", c.NetNS, err)
	}
	defer nh.Close()
	link, err := nh.LinkByIndex(c.tunIndex)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("find %s in netns %s: %w", TunName, c.NetNS, err)
	}
	if err := nh.AddrAdd(link, hostAddr(addr)); err != nil {
		return netip.Addr{}, fmt.Errorf("add %s to %s in netns %s: %w", addr, TunName, c.NetNS, err)
	}
	c.lastHost++
	return addr, nil
}

// Do runs fn on an OS thread switched into the cluster's namespace. Sockets
// and devices created by fn belong to the namespace; goroutines started by
// fn do not run in it. The thread is switched back afterwards, or discarded
// if that fails.
func (c *Cluster) Do(fn func() error) error {
	// A private duplicate of the handle lets Close run concurrently without
	// waiting for fn (which may block, e.g. in a dial).
	c.mu.Lock()
	if !c.ns.IsOpen() {
		c.mu.Unlock()
		return fmt.Errorf("netns %s: topology closed", c.NetNS)
	}
	fd, err := unix.FcntlInt(uintptr(c.ns), unix.F_DUPFD_CLOEXEC, 0)
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("netns %s: dup handle: %w", c.NetNS, err)
	}
	ns := netns.NsHandle(fd)
	defer ns.Close()
	return doInNetNS(ns, c.NetNS, fn)
}

// Listen creates a listener whose socket lives in the cluster's namespace.
func (c *Cluster) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := c.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, address, c.NetNS, err)
	}
	return ln, nil
}

// ListenPacket creates a packet socket in the cluster's namespace.
func (c *Cluster) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := c.Do(func() error {
		var err error
		pc, err = net.ListenPacket(network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in netns %s: %w", network, address, c.NetNS, err)
	}
	return pc, nil
}

// Dial connects from the cluster's namespace. address must be numeric: the
// namespace has no resolver.
func (c *Cluster) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := c.Do(func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from netns %s: %w", network, address, c.NetNS, err)
	}
	return conn, nil
}

// Command returns a command that runs name inside the cluster's namespace
// via `ip netns exec`.
func (c *Cluster) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", c.NetNS, name}, args...)...)
}

// doInNetNS runs fn on a fresh locked OS thread inside ns. A fresh goroutine
// is used so that, if the thread cannot be switched back, returning with the
// thread still locked makes the runtime terminate it instead of reusing a
// thread stuck in a foreign namespace. A panic in fn is re-raised in the
// caller's goroutine, after the thread has been restored.
func doInNetNS(ns netns.NsHandle, name string, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("get current netns: %w", err)}
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("enter netns %s: %w", name, err)}
			return
		}
		var r result
		func() {
			panicked := true
			defer func() {
				if panicked {
					r.panicked, r.panicVal = true, recover()
				}
			}()
			r.err = fn()
			panicked = false
		}()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			r.err = errors.Join(r.err, fmt.Errorf("restore netns after %s: %w", name, err))
			resc <- r
			return
		}
		runtime.UnlockOSThread()
		resc <- r
	}()
	r := <-resc
	if r.panicked {
		panic(r.panicVal)
	}
	return r.err
}

const netnsRunDir = "/run/netns"

// createNamedNetNS creates a namespace reachable as /run/netns/<name>, the
// same layout `ip netns add` uses, so `ip netns exec` works.
func createNamedNetNS(name string) (netns.NsHandle, error) {
	path := netnsRunDir + "/" + name
	type result struct {
		h   netns.NsHandle
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		fail := func(err error) {
			resc <- result{netns.None(), fmt.Errorf("create netns %s: %w", name, err)}
		}
		if err := os.MkdirAll(netnsRunDir, 0o755); err != nil {
			runtime.UnlockOSThread()
			fail(err)
			return
		}
		f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			runtime.UnlockOSThread()
			fail(err) // not ours: leave it alone
			return
		}
		f.Close()
		orig, err := netns.Get()
		if err != nil {
			os.Remove(path)
			runtime.UnlockOSThread()
			fail(err)
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			os.Remove(path)
			runtime.UnlockOSThread()
			fail(fmt.Errorf("unshare: %w", err))
			return
		}
		// The bind mount keeps the namespace alive after this thread leaves.
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		var h netns.NsHandle = netns.None()
		err = unix.Mount(self, path, "none", unix.MS_BIND, "")
		if err != nil {
			os.Remove(path)
			err = fmt.Errorf("bind mount: %w", err)
		} else if h, err = netns.GetFromPath(path); err != nil {
			_ = deleteNamedNetNS(name)
		}
		if rerr := netns.Set(orig); rerr != nil {
			// Stay locked: the thread dies with this goroutine.
			if h.IsOpen() {
				h.Close()
				_ = deleteNamedNetNS(name)
			}
			fail(errors.Join(err, fmt.Errorf("restore netns: %w", rerr)))
			return
		}
		runtime.UnlockOSThread()
		if err != nil {
			fail(err)
			return
		}
		resc <- result{h, nil}
	}()
	r := <-resc
	return r.h, r.err
}

// deleteNamedNetNS removes /run/netns/<name>. The namespace itself goes away
// once nothing (process, socket, fd) refers to it any more.
func deleteNamedNetNS(name string) error {
	path := netnsRunDir + "/" + name
	err := unix.Unmount(path, unix.MNT_DETACH)
	// EINVAL: not a mount point (a creation that died before mounting);
	// the file is still ours to remove.
	if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete netns %s: unmount: %w", name, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}

// openTUN creates an IFF_TUN|IFF_NO_PI device in the calling thread's network
// namespace. The fd is non-blocking: the hub polls it itself.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	return fd, nil
}
