package probe

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/bpf"
	"github.com/flowplace/flowplace/internal/loghist"
)

// Role says which end of the connection the observed socket is.
type Role uint8

const (
	RoleClient Role = 1 // the socket connected (active open)
	RoleServer Role = 2 // the socket was accepted (passive open)
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// FlowKey identifies an aggregate: who (cgroup, network namespace, local
// address) talked to what it dialed, and which peer actually answered.
// For a server-side flow Dialed is the local listening address and Peer has
// port 0 (clients' ephemeral ports are not kept).
type FlowKey struct {
	CgroupID    uint64
	NetnsCookie uint64
	Local       netip.Addr
	Dialed      netip.AddrPort
	Peer        netip.AddrPort
	Role        Role
	// LocalPort is set only on per-connection flows to a NAT'd service
	// address (see SetNATService); Peer is then the service address and the
	// real backend is in conntrack.
	LocalPort uint16
}

// FlowStats are cumulative counters of a flow.
type FlowStats struct {
	Opened        uint64 // connections established
	Adopted       uint64 // connections already open at attach (AdoptExisting), counted from then on
	Closed        uint64 // connections closed (their bytes are final)
	BytesSent     uint64 // payload bytes acknowledged by the peer
	BytesReceived uint64 // payload bytes received in order
	SegsOut       uint64
	SegsIn        uint64
	Retransmits   uint64
	Duration      time.Duration // summed over closed connections
	RTT           loghist.Histogram
}

// Active is the number of connections open now.
func (s *FlowStats) Active() uint64 {
	if s.Opened+s.Adopted < s.Closed {
		return 0
	}
	return s.Opened + s.Adopted - s.Closed
}

// Add adds o's counters and samples to s.
func (s *FlowStats) Add(o *FlowStats) {
	s.Opened += o.Opened
	s.Adopted += o.Adopted
	s.Closed += o.Closed
	s.BytesSent += o.BytesSent
	s.BytesReceived += o.BytesReceived
	s.SegsOut += o.SegsOut
	s.SegsIn += o.SegsIn
	s.Retransmits += o.Retransmits
	s.Duration += o.Duration
	s.RTT.Merge(&o.RTT)
}

// sub returns s - o for counters that only grow; o must be an earlier
// reading of the same kernel entry.
func (s *FlowStats) sub(o *FlowStats) FlowStats {
	d := FlowStats{
		Opened:        s.Opened - o.Opened,
		Adopted:       s.Adopted - o.Adopted,
		Closed:        s.Closed - o.Closed,
		BytesSent:     s.BytesSent - o.BytesSent,
		BytesReceived: s.BytesReceived - o.BytesReceived,
		SegsOut:       s.SegsOut - o.SegsOut,
		SegsIn:        s.SegsIn - o.SegsIn,
		Retransmits:   s.Retransmits - o.Retransmits,
		Duration:      s.Duration - o.Duration,
	}
	for i := range d.RTT.Counts {
		d.RTT.Counts[i] = s.RTT.Counts[i] - o.RTT.Counts[i]
	}
	d.RTT.Sum = s.RTT.Sum - o.RTT.Sum
	d.RTT.Count = s.RTT.Count - o.RTT.Count
	d.RTT.Min = s.RTT.Min
	return d
}

// Flow is one kernel aggregate as read by Poll.
type Flow struct {
	Key   FlowKey
	Stats FlowStats
	// Incarnation changes when the kernel entry was evicted and created
	// again; counters restart from zero then.
	Incarnation uint64
}

// Counters describe the datapath itself.
type Counters struct {
	Flows         int    // entries in the flow table now
	MaxFlows      int    // its capacity
	FlowsCreated  uint64 // entries ever inserted
	Evicted       uint64 // entries the LRU pushed out to make room
	InsertFailed  uint64 // inserts refused (flow not counted)
	StorageFailed uint64 // sockets without per-socket state (not tracked)
	Redirected    uint64 // connects rewritten by socket-level redirection
}

// Snapshot is one reading of the kernel's flow table.
type Snapshot struct {
	Time     time.Time
	Flows    []Flow
	Counters Counters
}

// Poll reads every flow aggregate and the datapath counters.
func (p *Probe) Poll() (*Snapshot, error) {
	if p.sockops.Flows == nil {
		return nil, errors.New("probe is closed")
	}
	created, err := p.counters()
	if err != nil {
		return nil, err
	}
	s := &Snapshot{Time: time.Now(), Counters: created}
	var (
		k  bpf.SockopsFpFlowKey
		v  bpf.SockopsFpFlowStats
		it = p.sockops.Flows.Iterate()
	)
	for it.Next(&k, &v) {
		s.Flows = append(s.Flows, Flow{Key: flowKey(&k), Stats: flowStats(&v), Incarnation: v.CreatedNs})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read flow table: %w", err)
	}
	s.Counters.Flows = len(s.Flows)
	s.Counters.MaxFlows = int(p.sockops.Flows.MaxEntries())
	// The LRU evicts silently: every inserted entry is either still in the
	// table, removed by us, or evicted. Inserts racing with the walk can
	// make one reading low, so the count never goes backwards.
	if ev := int64(s.Counters.FlowsCreated) - int64(s.Counters.Flows) - int64(p.deleted); ev > int64(p.evicted) {
		p.evicted = uint64(ev)
	}
	s.Counters.Evicted = p.evicted
	return s, nil
}

func (p *Probe) counters() (Counters, error) {
	sum := func(idx uint32) (uint64, error) {
		var per []uint64
		if err := p.sockops.Counters.Lookup(idx, &per); err != nil {
			return 0, fmt.Errorf("read datapath counter %d: %w", idx, err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n, nil
	}
	var c Counters
	for idx, dst := range []*uint64{&c.FlowsCreated, &c.InsertFailed, &c.StorageFailed, &c.Redirected} {
		v, err := sum(uint32(idx))
		if err != nil {
			return c, err
		}
		*dst = v
	}
	return c, nil
}

// DeleteFlow removes an aggregate, e.g. one that has been idle for long;
// it does not count as an eviction.
func (p *Probe) DeleteFlow(k FlowKey) error {
	kk := kernelKey(k)
	if err := p.sockops.Flows.Delete(&kk); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil
		}
		return fmt.Errorf("delete flow: %w", err)
	}
	p.deleted++
	return nil
}

func addrFrom16(b [16]uint8) netip.Addr {
	return netip.AddrFrom16(b).Unmap()
}

func flowKey(k *bpf.SockopsFpFlowKey) FlowKey {
	return FlowKey{
		CgroupID:    k.CgroupId,
		NetnsCookie: k.NetnsCookie,
		Local:       addrFrom16(k.LocalAddr),
		Dialed:      netip.AddrPortFrom(addrFrom16(k.DialedAddr), k.DialedPort),
		Peer:        netip.AddrPortFrom(addrFrom16(k.PeerAddr), k.PeerPort),
		Role:        Role(k.Role),
		LocalPort:   k.LocalPort,
	}
}

func kernelKey(k FlowKey) bpf.SockopsFpFlowKey {
	kk := bpf.SockopsFpFlowKey{
		CgroupId:    k.CgroupID,
		NetnsCookie: k.NetnsCookie,
		LocalAddr:   as16(k.Local),
		DialedAddr:  as16(k.Dialed.Addr()),
		PeerAddr:    as16(k.Peer.Addr()),
		DialedPort:  k.Dialed.Port(),
		PeerPort:    k.Peer.Port(),
		Role:        uint8(k.Role),
		LocalPort:   k.LocalPort,
	}
	if k.Local.Is4() {
		kk.Family = afInet
	} else {
		kk.Family = afInet6
	}
	return kk
}

const (
	afInet  = 2
	afInet6 = 10
)

func as16(a netip.Addr) [16]byte {
	if !a.IsValid() {
		return [16]byte{}
	}
	return a.As16()
}

func flowStats(v *bpf.SockopsFpFlowStats) FlowStats {
	s := FlowStats{
		Opened:        v.Opened,
		Adopted:       uint64(v.Adopted),
		Closed:        v.Closed,
		BytesSent:     v.BytesSent,
		BytesReceived: v.BytesReceived,
		SegsOut:       v.SegsOut,
		SegsIn:        v.SegsIn,
		Retransmits:   v.Retrans,
		Duration:      time.Duration(v.DurationNs),
	}
	for i, c := range v.RttHist {
		s.RTT.Counts[i] = uint64(c)
	}
	s.RTT.Sum = v.RttSumUs
	s.RTT.Count = v.RttCount
	s.RTT.Min = v.RttMinUs
	return s
}
