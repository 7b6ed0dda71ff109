package wan

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A node is a network namespace of its own behind its cluster's namespace,
// which becomes the region's router: a veth joins them, the node's default
// route points at the region, and the region routes the node's address and
// pod subnet back to it. Traffic from a node to another cluster therefore
// crosses the hub like the cluster's own, while the node's kubelet,
// containerd and pods see an ordinary host.
//
// Addresses of a topology 10.<base>.0.0/16:
//
//	10.<base>.<c>.0/24          cluster c-1: .1 the region, then hosts and node addresses
//	10.<base>.<64+8(c-1)+n>.0/24 pods of node n of cluster c-1 (see PodCIDR)
//	10.<base>.254.0/24          the management network (.1 the host)
//
// The management network is a bridge in the caller's (host) namespace with
// one veth per node. It carries what in a real fleet runs outside the
// measured WAN: the API servers and the kubelets' serving ports, and OTLP
// to collectors on the host. It never crosses the hub.
const (
	// MaxNodes bounds the nodes of one cluster: each gets one /24 of pods.
	MaxNodes = 8
	// podBlockStart is the third octet of the first cluster's first pod /24.
	podBlockStart = 64
	// mgmtOctet is the third octet of the management network.
	mgmtOctet = 254
	// NodeLink is the node's veth towards its region; MgmtLink its veth on
	// the management bridge.
	NodeLink = "eth0"
	MgmtLink = "mgmt0"
)

var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)

// Node is the network of one node: a namespace of its own in its cluster's
// region.
type Node struct {
	Name    string
	Cluster *Cluster
	// NetNS is "<prefix>-<cluster>.<node>": '.' never occurs in cluster
	// names, so node and cluster namespaces cannot collide, and Sweep finds
	// both by the prefix.
	NetNS string
	// Index is the node's position in its cluster, 0..MaxNodes-1.
	Index int
	// Addr is the node's address in the cluster's subnet, on NodeLink;
	// traffic to other clusters leaves from it through the hub.
	Addr netip.Addr
	// PodCIDR is this node's pod subnet, routed to it by the region and
	// reachable from every other cluster through the hub.
	PodCIDR netip.Prefix
	// MgmtAddr is the node's address on the management network.
	MgmtAddr netip.Addr

	ns netns.NsHandle
}

// hostLinkStem starts the name of every device the topology puts in the
// caller's namespace: "fp" and a hash of the prefix, so the names fit
// IFNAMSIZ whatever the prefix, and Sweep can find them.
func hostLinkStem(prefix string) string {
	h := fnv.New32a()
	h.Write([]byte(prefix))
	return fmt.Sprintf("fp%08x", h.Sum32())
}

// HostLinkStem starts the name of every device the topology puts in the
// caller's namespace (the management bridge, the nodes' veths).
func (t *Topology) HostLinkStem() string { return hostLinkStem(t.prefix) }

func mgmtBridgeName(prefix string) string { return hostLinkStem(prefix) + "m" }

// ManagementNetwork returns the management network's prefix.
func (t *Topology) ManagementNetwork() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, t.base, mgmtOctet, 0}), 24)
}

// ManagementGateway returns the host's address on the management network,
// creating the bridge on first use. Servers on the host that nodes must
// reach (API servers, collectors) listen on it.
func (t *Topology) ManagementGateway() (netip.Addr, error) {
	t.mgmtMu.Lock()
	defer t.mgmtMu.Unlock()
	if err := t.ensureMgmtLocked(); err != nil {
		return netip.Addr{}, err
	}
	return t.mgmtGateway(), nil
}

func (t *Topology) mgmtGateway() netip.Addr {
	return netip.AddrFrom4([4]byte{10, t.base, mgmtOctet, 1})
}

func (t *Topology) ensureMgmtLocked() error {
	if t.closed.Load() {
		return errors.New("management network: topology closed")
	}
	if t.mgmtBridge != "" {
		return nil
	}
	name := mgmtBridgeName(t.prefix)
	mnet := t.ManagementNetwork()
	// The bridge and its routes live in the caller's namespace, shared by
	// every topology on the machine: two with the same address base would
	// fight over the routes.
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{
		Dst: &net.IPNet{IP: mnet.Addr().AsSlice(), Mask: net.CIDRMask(24, 32)},
	}, netlink.RT_FILTER_DST)
	if err != nil {
		return fmt.Errorf("management network: list routes: %w", err)
	}
	if len(routes) > 0 {
		dev := "?"
		if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil {
			dev = l.Attrs().Name
		}
		return fmt.Errorf("management network %s is already routed on this host (device %s): another topology with address base %d has nodes; give this one another Config.AddrBase", mnet, dev, t.base)
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("management network: add bridge %s: %w", name, err)
	}
	t.mgmtBridge = name
	gw := &netlink.Addr{IPNet: &net.IPNet{IP: t.mgmtGateway().AsSlice(), Mask: net.CIDRMask(24, 32)}}
	if err := netlink.AddrAdd(br, gw); err != nil {
		return fmt.Errorf("management network: address %s on %s: %w", gw, name, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("management network: set %s up: %w", name, err)
	}
	return nil
}

// deleteMgmt removes the bridge; the nodes' veths and the routes through it
// go with it.
func (t *Topology) deleteMgmt() error {
	t.mgmtMu.Lock()
	defer t.mgmtMu.Unlock()
	if t.mgmtBridge == "" {
		return nil
	}
	err := deleteHostLink(t.mgmtBridge)
	t.mgmtBridge = ""
	return err
}

func deleteHostLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("find link %s: %w", name, err)
	}
	// ENODEV: gone meanwhile. A node's host veth goes with its peer when
	// the kernel destroys the node's namespace, which it does
	// asynchronously once the namespace's last reference is dropped.
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// AddNode creates a node in the cluster: its namespace, joined to the
// region by a veth and to the management bridge by another, with its
// address, pod subnet and routes. The node's processes and its pods' CNI
// are the caller's (world/nodes).
func (c *Cluster) AddNode(name string) (*Node, error) {
	if len(name) > 63 || !nodeNameRE.MatchString(name) {
		return nil, fmt.Errorf("add node %q to cluster %s: want a DNS label (lowercase letters, digits, inner '-', at most 63)", name, c.Name)
	}
	t := c.topo
	t.mgmtMu.Lock()
	defer t.mgmtMu.Unlock()
	for _, n := range c.nodes {
		if n.Name == name {
			return nil, fmt.Errorf("add node %q to cluster %s: exists", name, c.Name)
		}
	}
	if len(c.nodes) >= MaxNodes {
		return nil, fmt.Errorf("add node %q to cluster %s: the cluster has %d nodes, at most %d", name, c.Name, len(c.nodes), MaxNodes)
	}
	if err := t.ensureMgmtLocked(); err != nil {
		return nil, fmt.Errorf("add node %q to cluster %s: %w", name, c.Name, err)
	}
	if t.nextMgmtHost >= maxHost {
		return nil, fmt.Errorf("add node %q to cluster %s: management network %s exhausted", name, c.Name, t.ManagementNetwork())
	}
	addr, err := c.allocHost()
	if err != nil {
		return nil, fmt.Errorf("add node %q: %w", name, err)
	}
	idx := len(c.nodes)
	t.nextMgmtHost++
	n := &Node{
		Name:     name,
		Cluster:  c,
		NetNS:    c.NetNS + "." + name,
		Index:    idx,
		Addr:     addr,
		PodCIDR:  netip.PrefixFrom(netip.AddrFrom4([4]byte{10, t.base, byte(podBlockStart + MaxNodes*c.Index + idx), 0}), 24),
		MgmtAddr: netip.AddrFrom4([4]byte{10, t.base, mgmtOctet, byte(t.nextMgmtHost)}),
		ns:       netns.None(),
	}
	// Recorded before creation so that teardown finds a half-built node.
	c.nodes = append(c.nodes, n)
	if err := n.create(); err != nil {
		return nil, fmt.Errorf("add node %q to cluster %s: %w", name, c.Name, err)
	}
	return n, nil
}

// Nodes returns the cluster's nodes in creation order.
func (c *Cluster) Nodes() []*Node {
	c.topo.mgmtMu.Lock()
	defer c.topo.mgmtMu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// allocHost takes the next address of the cluster's subnet without putting
// it anywhere.
func (c *Cluster) allocHost() (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.topo.closed.Load() || !c.ns.IsOpen() {
		return netip.Addr{}, fmt.Errorf("cluster %s: topology closed", c.Name)
	}
	if c.lastHost >= maxHost {
		return netip.Addr{}, fmt.Errorf("cluster %s: subnet %s exhausted", c.Name, c.Subnet)
	}
	c.lastHost++
	b := c.Subnet.Addr().As4()
	b[3] = byte(c.lastHost)
	return netip.AddrFrom4(b), nil
}

func (n *Node) regionLink() string { return fmt.Sprintf("fpn%d", n.Index) }

func (n *Node) hostLink() string {
	return fmt.Sprintf("%sc%dn%d", hostLinkStem(n.Cluster.topo.prefix), n.Cluster.Index, n.Index)
}

func (n *Node) create() error {
	c := n.Cluster
	t := c.topo
	h, err := createNamedNetNS(n.NetNS)
	if err != nil {
		return err
	}
	n.ns = h
	nh, err := netlink.NewHandleAt(n.ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", n.NetNS, err)
	}
	defer nh.Close()
	host, err := netns.Get()
	if err != nil {
		return fmt.Errorf("open the host netns: %w", err)
	}
	defer host.Close()

	// Both veths are created from inside the node, their peers placed
	// straight into the region and the host.
	toRegion := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: NodeLink, MTU: tunMTU}, PeerName: n.regionLink(), PeerNamespace: netlink.NsFd(int(c.ns))}
	if err := nh.LinkAdd(toRegion); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", NodeLink, n.regionLink(), err)
	}
	toMgmt := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: MgmtLink}, PeerName: n.hostLink(), PeerNamespace: netlink.NsFd(int(host))}
	if err := nh.LinkAdd(toMgmt); err != nil {
		return fmt.Errorf("add veth %s/%s: %w", MgmtLink, n.hostLink(), err)
	}

	// Host side: the management veth joins the bridge, and the node's pods
	// are routed through it so that they reach servers on the host without
	// NAT (and the host answers them).
	hl, err := netlink.LinkByName(n.hostLink())
	if err != nil {
		return fmt.Errorf("find %s: %w", n.hostLink(), err)
	}
	br, err := netlink.LinkByName(t.mgmtBridge)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", t.mgmtBridge, err)
	}
	if err := netlink.LinkSetMaster(hl, br); err != nil {
		return fmt.Errorf("attach %s to %s: %w", n.hostLink(), t.mgmtBridge, err)
	}
	if err := netlink.LinkSetUp(hl); err != nil {
		return fmt.Errorf("set %s up: %w", n.hostLink(), err)
	}
	// The node's own address too: a host-network process that dials a
	// Service whose backend is on the host (the API server) picks its
	// source address before kube-proxy's translation sends it here.
	for _, dst := range []netip.Prefix{n.PodCIDR, netip.PrefixFrom(n.Addr, 32)} {
		if err := netlink.RouteAdd(&netlink.Route{
			LinkIndex: br.Attrs().Index,
			Dst:       prefixNet(dst),
			Gw:        n.MgmtAddr.AsSlice(),
		}); err != nil {
			return fmt.Errorf("route %s via %s on the host: %w", dst, n.MgmtAddr, err)
		}
	}

	// Node side.
	if err := n.configure(nh); err != nil {
		return err
	}
	// Region side: the node's address and pods are behind its veth.
	rh, err := netlink.NewHandleAt(c.ns)
	if err != nil {
		return fmt.Errorf("netlink handle in netns %s: %w", c.NetNS, err)
	}
	defer rh.Close()
	rl, err := rh.LinkByName(n.regionLink())
	if err != nil {
		return fmt.Errorf("find %s in netns %s: %w", n.regionLink(), c.NetNS, err)
	}
	if err := rh.LinkSetUp(rl); err != nil {
		return fmt.Errorf("set %s up in netns %s: %w", n.regionLink(), c.NetNS, err)
	}
	if err := rh.RouteAdd(&netlink.Route{LinkIndex: rl.Attrs().Index, Dst: prefixNet(netip.PrefixFrom(n.Addr, 32)), Scope: netlink.SCOPE_LINK}); err != nil {
		return fmt.Errorf("route %s in netns %s: %w", n.Addr, c.NetNS, err)
	}
	if err := rh.RouteAdd(&netlink.Route{LinkIndex: rl.Attrs().Index, Dst: prefixNet(n.PodCIDR), Gw: n.Addr.AsSlice()}); err != nil {
		return fmt.Errorf("route %s in netns %s: %w", n.PodCIDR, c.NetNS, err)
	}
	return c.Do(func() error { return writeSysctls(routerSysctls) })
}

// routerSysctls make a namespace forward between its devices. rp_filter is
// off because a region's traffic from its nodes arrives on veths while the
// return path of other clusters' addresses is the TUN.
var routerSysctls = map[string]string{
	"net/ipv4/ip_forward":             "1",
	"net/ipv4/conf/all/rp_filter":     "0",
	"net/ipv4/conf/default/rp_filter": "0",
}

func (n *Node) configure(nh *netlink.Handle) error {
	for _, name := range []string{"lo", NodeLink, MgmtLink} {
		l, err := nh.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s in netns %s: %w", name, n.NetNS, err)
		}
		if err := nh.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up in netns %s: %w", name, n.NetNS, err)
		}
		switch name {
		case NodeLink:
			if err := nh.AddrAdd(l, hostAddr(n.Addr)); err != nil {
				return fmt.Errorf("add %s to %s in netns %s: %w", n.Addr, name, n.NetNS, err)
			}
			// The region's own address answers ARP on the region's veth
			// (Linux answers for any local address), so it can be the
			// gateway of a /32 without a subnet of its own.
			def := &netlink.Route{
				LinkIndex: l.Attrs().Index,
				Gw:        n.Cluster.NodeAddr.AsSlice(),
				Src:       n.Addr.AsSlice(),
				Flags:     int(netlink.FLAG_ONLINK),
			}
			if n.Cluster.topo.quickACK {
				def.QuickACK = 1
			}
			if err := nh.RouteAdd(def); err != nil {
				return fmt.Errorf("default route via %s in netns %s: %w", n.Cluster.NodeAddr, n.NetNS, err)
			}
		case MgmtLink:
			a := &netlink.Addr{IPNet: &net.IPNet{IP: n.MgmtAddr.AsSlice(), Mask: net.CIDRMask(24, 32)}}
			if err := nh.AddrAdd(l, a); err != nil {
				return fmt.Errorf("add %s to %s in netns %s: %w", a, name, n.NetNS, err)
			}
		}
	}
	return n.Do(func() error {
		// Like the regions: cached metrics would seed new connections with
		// an earlier RTT after SetExtraRTT; IPv6 would only add noise.
		return writeSysctls(map[string]string{
			"net/ipv4/ip_forward":                "1",
			"net/ipv4/tcp_no_metrics_save":       "1",
			"net/ipv4/conf/all/rp_filter":        "0",
			"net/ipv4/conf/default/rp_filter":    "0",
			"net/ipv6/conf/all/disable_ipv6":     "1",
			"net/ipv6/conf/default/disable_ipv6": "1",
		})
	})
}

// writeSysctls writes namespaced sysctls of the calling thread's network
// namespace (/proc/sys/net follows the thread's namespace).
func writeSysctls(kv map[string]string) error {
	for k, v := range kv {
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", strings.ReplaceAll(k, "/", "."), v, err)
		}
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// Do runs fn on an OS thread switched into the node's namespace (see
// Cluster.Do).
func (n *Node) Do(fn func() error) error {
	if !n.ns.IsOpen() {
		return fmt.Errorf("netns %s: closed", n.NetNS)
	}
	return doInNetNS(n.ns, n.NetNS, fn)
}

// NetNSPath is the node namespace's bind mount, for nsenter --net.
func (n *Node) NetNSPath() string { return netnsRunDir + "/" + n.NetNS }

// teardown deletes the node's namespace; its veths, and the routes through
// them, go with it once no process holds it.
func (n *Node) teardown(deleteNS bool) error {
	var errs []error
	if n.ns.IsOpen() {
		if err := n.ns.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close netns handle: %w", err))
		}
		n.ns = netns.None()
	}
	if deleteNS {
		if err := deleteNamedNetNS(n.NetNS); err != nil {
			errs = append(errs, err)
		}
		// The host end goes with the namespace only once the namespace is
		// gone; a process still inside would keep it, so delete it now.
		if err := deleteHostLink(n.hostLink()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
