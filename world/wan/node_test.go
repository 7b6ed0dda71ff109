package wan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// nodeHandshakes dials addr from inside node n, gap apart, and returns the
// sorted handshake RTTs (see handshakeRTTs).
func nodeHandshakes(t *testing.T, n *Node, addr string, count int) []time.Duration {
	t.Helper()
	rtts := make([]time.Duration, 0, count)
	for i := 0; i < count; i++ {
		var conn net.Conn
		err := n.Do(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			conn, err = (&net.Dialer{}).DialContext(ctx, "tcp4", addr)
			return err
		})
		if err != nil {
			t.Fatalf("dial %s from node %s: %v", addr, n.Name, err)
		}
		rtts = append(rtts, tcpRTT(t, conn))
		conn.Close()
		time.Sleep(precisionGap)
	}
	slices.Sort(rtts)
	return rtts
}

func nodeListen(t *testing.T, n *Node, addr netip.Addr) string {
	t.Helper()
	var ln net.Listener
	if err := n.Do(func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		t.Fatalf("listen on %s in node %s: %v", addr, n.Name, err)
	}
	t.Cleanup(echoServer(t, ln))
	return ln.Addr().String()
}

// TestNodes checks the node network: a node reaches another cluster's node
// and pod subnet through the hub with the injected RTT, reaches a node of
// its own cluster and the host's management address without it, and
// everything the nodes added is gone after Close.
func TestNodes(t *testing.T) {
	const injected = 20 * time.Millisecond
	topo := NewForTestConfig(t, Config{
		Clusters: []string{"a", "b"},
		ExtraRTT: map[Pair]time.Duration{{"a", "b"}: injected},
		QuickACK: true,
		AddrBase: 79,
	})
	a, b := mustCluster(t, topo, "a"), mustCluster(t, topo, "b")
	a1, err := a.AddNode("a1")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := a.AddNode("a2")
	if err != nil {
		t.Fatal(err)
	}
	b1, err := b.AddNode("b1")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct {
		n             *Node
		addr, pods    string
		mgmt, netnsID string
	}{
		{a1, "10.79.1.2", "10.79.64.0/24", "10.79.254.2", topo.Prefix() + "-a.a1"},
		{a2, "10.79.1.3", "10.79.65.0/24", "10.79.254.3", topo.Prefix() + "-a.a2"},
		{b1, "10.79.2.2", "10.79.72.0/24", "10.79.254.4", topo.Prefix() + "-b.b1"},
	} {
		if got := fmt.Sprint(want.n.Addr, " ", want.n.PodCIDR, " ", want.n.MgmtAddr, " ", want.n.NetNS); got != fmt.Sprint(want.addr, " ", want.pods, " ", want.mgmt, " ", want.netnsID) {
			t.Errorf("node %s: addr, pods, mgmt, netns = %s", want.n.Name, got)
		}
	}
	if _, err := a.AddNode("a1"); err == nil {
		t.Error("AddNode accepted a duplicate name")
	}
	if _, err := a.AddNode("Bad_Name"); err == nil {
		t.Error("AddNode accepted an invalid name")
	}

	// A pod address of b1: on b1's loopback, reached through the region's
	// route for b1's pod subnet.
	pod := b1.PodCIDR.Addr().Next().Next()
	if err := b1.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(lo, hostAddr(pod))
	}); err != nil {
		t.Fatal(err)
	}
	gw, err := topo.ManagementGateway()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", netip.AddrPortFrom(gw, 0).String())
	if err != nil {
		t.Fatalf("listen on the management gateway %s: %v", gw, err)
	}
	t.Cleanup(echoServer(t, ln))

	for _, c := range []struct {
		what     string
		from     *Node
		addr     string
		injected time.Duration
	}{
		{"node to another cluster's node", a1, nodeListen(t, b1, b1.Addr), injected},
		{"node to another cluster's pod", a2, nodeListen(t, b1, pod), injected},
		{"node to a node of its cluster", a1, nodeListen(t, a2, a2.Addr), 0},
		{"node to the host", b1, ln.Addr().String(), 0},
	} {
		hs := nodeHandshakes(t, c.from, c.addr, 11)
		p50 := hs[len(hs)/2]
		t.Logf("%s (%s): handshake p50 %v, injected %v", c.what, c.addr, p50, c.injected)
		if e := offBy(c.what+": handshake RTT p50", p50, c.injected, MedianBias); e != "" {
			t.Error(e)
		}
	}

	// Everything the nodes put on the host goes with Close.
	stem := hostLinkStem(topo.Prefix())
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*Node{a1, a2, b1} {
		if nsExists(t, n.NetNS) {
			t.Errorf("Close left namespace %s", n.NetNS)
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, stem) {
			t.Errorf("Close left host device %s", l.Attrs().Name)
		}
	}
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil && strings.HasPrefix(r.Dst.String(), "10.79.") {
			t.Errorf("Close left host route %s", r.Dst)
		}
	}
}

// TestSweepNodes: a killed owner's nodes, management bridge and veths are
// swept like its clusters.
func TestSweepNodes(t *testing.T) {
	topo := NewForTestConfig(t, Config{Clusters: []string{"p"}, AddrBase: 80})
	n, err := mustCluster(t, topo, "p").AddNode("p1")
	if err != nil {
		t.Fatal(err)
	}
	bridge := mgmtBridgeName(topo.Prefix())
	if err := topo.abandon(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(bridge); err != nil {
		t.Fatalf("abandon removed the bridge %s: %v", bridge, err)
	}
	dead := owner{pid: 1 << 30, start: 1}
	if err := os.WriteFile(topo.statePath, []byte(dead.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Sweep(topo.Prefix()); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if nsExists(t, n.NetNS) {
		t.Errorf("Sweep left node namespace %s", n.NetNS)
	}
	var nf netlink.LinkNotFoundError
	if _, err := netlink.LinkByName(bridge); !errors.As(err, &nf) {
		t.Errorf("Sweep left the management bridge %s (%v)", bridge, err)
	}
	if _, err := netlink.LinkByName(n.hostLink()); !errors.As(err, &nf) {
		t.Errorf("Sweep left the node's host veth %s (%v)", n.hostLink(), err)
	}
}
