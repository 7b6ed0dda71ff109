package routing

import (
	"sync"
	"time"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/internal/loghist"
)

// PeerRTT keeps this agent's own RTT samples to each other cluster over a
// sliding window, from the flows it measures (agent.Config.RTTObserver).
// Routing prefers it to the fleet matrix: it is this node's path, now.
type PeerRTT struct {
	mu      sync.Mutex
	slot    time.Duration
	slots   int
	min     uint64
	byPeer  map[string]*window
	nowFunc func() time.Time
}

type window struct {
	start []time.Time // start of each slot, ring
	hist  []loghist.Histogram
}

// DefaultPeerRTTWindow is 6 slots of 10 s: a minute of samples, so a
// change of path shows within a minute and one slow poll does not.
const (
	defaultSlot  = 10 * time.Second
	defaultSlots = 6
	// DefaultMinSamples: fewer samples than this in the window leave the
	// pair to the matrix (the median of 20 samples is within the
	// histogram's 3.2% resolution of the path's, for the spread a WAN
	// path shows).
	DefaultMinSamples = 20
)

// NewPeerRTT returns an empty tracker.
func NewPeerRTT() *PeerRTT {
	return &PeerRTT{slot: defaultSlot, slots: defaultSlots, min: DefaultMinSamples, byPeer: map[string]*window{}, nowFunc: time.Now}
}

// Observe adds RTT samples to cluster (the agent calls it per poll and
// per flow with new samples).
func (p *PeerRTT) Observe(cluster string, h *loghist.Histogram) {
	if cluster == "" || h == nil || h.Total() == 0 {
		return
	}
	now := p.nowFunc()
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.byPeer[cluster]
	if w == nil {
		w = &window{start: make([]time.Time, p.slots), hist: make([]loghist.Histogram, p.slots)}
		p.byPeer[cluster] = w
	}
	i := int(now.UnixNano()/int64(p.slot)) % p.slots
	begin := now.Truncate(p.slot)
	if !w.start[i].Equal(begin) {
		w.start[i], w.hist[i] = begin, loghist.Histogram{}
	}
	w.hist[i].Merge(h)
}

// RTT returns the median of the window's samples to cluster, and whether
// there are enough of them.
func (p *PeerRTT) RTT(cluster string) (time.Duration, bool) {
	now := p.nowFunc()
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.byPeer[cluster]
	if w == nil {
		return 0, false
	}
	var sum loghist.Histogram
	oldest := now.Truncate(p.slot).Add(-time.Duration(p.slots-1) * p.slot)
	for i := range w.hist {
		if !w.start[i].Before(oldest) {
			sum.Merge(&w.hist[i])
		}
	}
	if sum.Total() < p.min {
		return 0, false
	}
	return time.Duration(sum.Quantile(0.5) * float64(time.Microsecond)), true
}

// matrixRTT looks a pair up in the fleet's ClusterLatency objects (by
// source cluster name): the measured p50 from self, else the measured p50
// towards self (RTT is symmetric), else an estimate. Stale objects count
// as missing.
func matrixRTT(rows map[string]*flowplacev1alpha1.ClusterLatency, self, peer string, now time.Time) RTT {
	find := func(from, to string) (flowplacev1alpha1.PeerLatency, bool) {
		row := rows[from]
		if row == nil || !now.Before(row.Status.ValidUntil.Time) {
			return flowplacev1alpha1.PeerLatency{}, false
		}
		for _, p := range row.Status.Peers {
			if p.Cluster == to {
				return p, true
			}
		}
		return flowplacev1alpha1.PeerLatency{}, false
	}
	var est *flowplacev1alpha1.PeerLatency
	for _, dir := range [][2]string{{self, peer}, {peer, self}} {
		p, ok := find(dir[0], dir[1])
		switch {
		case !ok || p.P50Microseconds <= 0:
		case !p.Estimated && p.SampleCount > 0:
			return RTT{Value: time.Duration(p.P50Microseconds) * time.Microsecond, Source: Matrix}
		case p.Estimated && est == nil:
			est = &p // filled by the estimator, not measured
		}
	}
	if est != nil {
		return RTT{Value: time.Duration(est.P50Microseconds) * time.Microsecond, Source: Estimated}
	}
	return RTT{}
}
