// Package conntrack finds the backend a connection to a service address
// really reached when the address was translated outside the socket
// (kube-proxy's DNAT): the socket only knows the ClusterIP, the kernel's
// connection tracking knows both sides of the translation.
package conntrack

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/mdlayher/netlink"
	ct "github.com/ti-mo/conntrack"
	"golang.org/x/sys/unix"
)

// ErrNotFound means conntrack has no entry for the connection (it expired,
// or nothing translated it).
var ErrNotFound = errors.New("no conntrack entry")

// Table looks up connections in one network namespace's conntrack table.
type Table struct {
	conn *ct.Conn
}

// Open connects to the conntrack table of the network namespace at
// netnsPath (e.g. /run/netns/x or /proc/1/ns/net); "" means this process's.
func Open(netnsPath string) (*Table, error) {
	cfg := &netlink.Config{}
	if netnsPath != "" {
		f, err := os.Open(netnsPath)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", netnsPath, err)
		}
		defer f.Close()
		cfg.NetNS = int(f.Fd())
	}
	c, err := ct.Dial(cfg)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("conntrack netlink: %w (needs CAP_NET_ADMIN)", err)
		}
		return nil, fmt.Errorf("conntrack netlink: %w", err)
	}
	return &Table{conn: c}, nil
}

// Close releases the netlink socket.
func (t *Table) Close() error { return t.conn.Close() }

// Backend returns the address a TCP connection from client to service was
// translated to. It returns service itself when the entry exists but was not
// translated.
func (t *Table) Backend(client, service netip.AddrPort) (netip.AddrPort, error) {
	q := ct.Flow{TupleOrig: ct.Tuple{
		IP:    ct.IPTuple{SourceAddress: client.Addr(), DestinationAddress: service.Addr()},
		Proto: ct.ProtoTuple{Protocol: unix.IPPROTO_TCP, SourcePort: client.Port(), DestinationPort: service.Port()},
	}}
	f, err := t.conn.Get(q)
	if err != nil {
		var oe *netlink.OpError
		if errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOENT) {
			return netip.AddrPort{}, fmt.Errorf("%w for %s -> %s", ErrNotFound, client, service)
		}
		return netip.AddrPort{}, fmt.Errorf("conntrack lookup %s -> %s: %w", client, service, err)
	}
	// The reply comes from the real backend.
	r := f.TupleReply
	return netip.AddrPortFrom(r.IP.SourceAddress.Unmap(), r.Proto.SourcePort), nil
}
