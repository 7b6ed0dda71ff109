package probe

import (
	"fmt"
	"net/netip"
	"syscall"
	"time"

	"github.com/flowplace/flowplace/bpf"
)

// ConnInfo is the datapath's per-socket state of one connection.
type ConnInfo struct {
	Key        FlowKey       // the aggregate this connection counts in
	SRTT       time.Duration // smoothed RTT after the latest sample
	MinRTT     time.Duration
	Dialed     netip.AddrPort // what the application connected to
	Redirected bool           // connect4 rewrote the destination
	Tracking   bool           // established and not yet closed
	Adopted    bool           // open before the probes; measured since adoption
}

// Conn returns the datapath's state of a socket this process holds (a
// *net.TCPConn, say): socket storage is looked up by the socket's fd.
func (p *Probe) Conn(c syscall.Conn) (ConnInfo, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return ConnInfo{}, fmt.Errorf("socket of connection: %w", err)
	}
	var (
		st     bpf.SockopsFpConnState
		lookup error
	)
	if err := raw.Control(func(fd uintptr) {
		lookup = p.sockops.Conns.Lookup(int32(fd), &st)
	}); err != nil {
		return ConnInfo{}, fmt.Errorf("socket of connection: %w", err)
	}
	if lookup != nil {
		return ConnInfo{}, fmt.Errorf("look up socket state: %w", lookup)
	}
	return ConnInfo{
		Key:        flowKey(&st.Key),
		SRTT:       time.Duration(st.SrttUs) * time.Microsecond,
		MinRTT:     time.Duration(st.MinRttUs) * time.Microsecond,
		Dialed:     netip.AddrPortFrom(addrFrom16(st.DialedAddr), st.DialedPort),
		Redirected: st.Redirected != 0,
		Tracking:   st.Tracking != 0,
		Adopted:    st.Adopted != 0,
	}, nil
}
