package aggregate

import (
	"math"
	"time"
)

// Snapshot is the aggregate state at one instant, keyed by cluster UID (the
// publisher maps UIDs to Karmada cluster names).
type Snapshot struct {
	Now           time.Time
	WindowSeconds int32
	// Latency maps a source cluster UID to its peers.
	Latency map[string]map[string]PairStat
	// Traffic maps a workload to its traffic.
	Traffic map[WorkloadKey]*WorkloadStat
}

// PairStat is the RTT distribution of one (source, destination) cluster
// pair; quantiles in seconds, samples decayed.
type PairStat struct {
	Min, P50, P90, P99 float64
	Mean               float64 // from the merged buckets, within 2.2%
	Samples            float64
	LastSeen           time.Time
}

// WorkloadKey names a workload as the agents report it.
type WorkloadKey struct{ Namespace, Kind, Name string }

// PeerKey names what a workload called: a workload, a service, or both.
type PeerKey struct {
	Namespace, Kind, Name         string
	ServiceNamespace, ServiceName string
}

// ClusterPair is (source, destination) by cluster UID; for clients,
// (client cluster, serving cluster).
type ClusterPair struct{ Src, Dst string }

// Rates are a flow's decayed rates.
type Rates struct {
	BytesPerSecond, ConnectionsPerSecond float64
	RTTP50                               float64 // seconds; 0 without samples
	Samples                              float64
}

// WorkloadStat is one workload's traffic.
type WorkloadStat struct {
	Peers    map[PeerKey]map[ClusterPair]Rates
	Clients  map[ClusterPair]Rates
	LastSeen time.Time
}

// Negligible values are left out of a snapshot: a flow that stopped
// decays towards zero for ever, and must drop out of the published objects
// at some point.
const (
	minBytesPerSecond       = 1
	minConnectionsPerSecond = 0.001
	minSamples              = 1
)

// Snapshot computes the current decayed values.
func (a *Aggregator) Snapshot() *Snapshot {
	now := a.cfg.Now()
	nowSec := float64(now.UnixNano()) / 1e9
	snap := &Snapshot{
		Now:           now,
		WindowSeconds: int32(math.Round(a.tau)),
		Latency:       map[string]map[string]PairStat{},
		Traffic:       map[WorkloadKey]*WorkloadStat{},
	}
	a.mu.RLock()
	defer a.mu.RUnlock()
	var h hist
	for pk, p := range a.pairs {
		p.mu.Lock()
		f := p.d.factor(nowSec, a.tau)
		h.copyFrom(&p.h)
		lastSeen := p.d.lastSeen
		p.mu.Unlock()
		h.scale(f)
		n := h.total()
		if n < minSamples {
			continue
		}
		st := PairStat{
			P50: h.quantile(0.5), P90: h.quantile(0.9), P99: h.quantile(0.99),
			Mean: h.mean(), Samples: n, LastSeen: unixSeconds(lastSeen),
		}
		st.Min = math.Min(h.min(math.Min(0.5, n/100)), st.P50)
		if snap.Latency[pk.Src] == nil {
			snap.Latency[pk.Src] = map[string]PairStat{}
		}
		snap.Latency[pk.Src][pk.Dst] = st
	}
	for k, fl := range a.flows {
		fl.mu.Lock()
		f := fl.d.factor(nowSec, a.tau)
		// The effective length of the window so far: tau once the flow has
		// been seen for a few windows, the elapsed time when it is new (so
		// a new flow's rate is right at once, not diluted by a full window).
		w := a.tau * (1 - math.Exp(-(nowSec-fl.first)/a.tau))
		r := Rates{}
		if w > 0 {
			r.BytesPerSecond = fl.bytes * f / w
			r.ConnectionsPerSecond = fl.conns * f / w
		}
		h.copyFrom(&fl.rtt)
		lastSeen := fl.d.lastSeen
		fl.mu.Unlock()
		h.scale(f)
		if r.Samples = h.total(); r.Samples >= minSamples {
			r.RTTP50 = h.quantile(0.5)
		} else {
			r.Samples = 0
		}
		if r.BytesPerSecond < minBytesPerSecond && r.ConnectionsPerSecond < minConnectionsPerSecond && r.Samples == 0 {
			continue
		}
		wk := WorkloadKey{Namespace: k.Namespace, Kind: k.Kind, Name: k.Name}
		ws := snap.Traffic[wk]
		if ws == nil {
			ws = &WorkloadStat{Peers: map[PeerKey]map[ClusterPair]Rates{}, Clients: map[ClusterPair]Rates{}}
			snap.Traffic[wk] = ws
		}
		if t := unixSeconds(lastSeen); t.After(ws.LastSeen) {
			ws.LastSeen = t
		}
		if k.Role == "server" {
			cp := ClusterPair{Src: k.PeerClusterUID, Dst: k.ClusterUID}
			ws.Clients[cp] = mergeRates(ws.Clients[cp], r)
			continue
		}
		pk := PeerKey{Namespace: k.PeerNamespace, Kind: k.PeerKind, Name: k.PeerName,
			ServiceNamespace: k.ServiceNamespace, ServiceName: k.ServiceName}
		if ws.Peers[pk] == nil {
			ws.Peers[pk] = map[ClusterPair]Rates{}
		}
		cp := ClusterPair{Src: k.ClusterUID, Dst: k.PeerClusterUID}
		ws.Peers[pk][cp] = mergeRates(ws.Peers[pk][cp], r)
	}
	return snap
}

// mergeRates adds two rate sets of the same pair. Flow keys are unique per
// (workload, peer, pair), so this only happens for clients whose requests
// reached the same workload through different services; the RTT median of
// the merge is approximated by the sample-weighted mean of the medians.
func mergeRates(a, b Rates) Rates {
	if a.Samples+b.Samples > 0 {
		a.RTTP50 = (a.RTTP50*a.Samples + b.RTTP50*b.Samples) / (a.Samples + b.Samples)
	}
	a.BytesPerSecond += b.BytesPerSecond
	a.ConnectionsPerSecond += b.ConnectionsPerSecond
	a.Samples += b.Samples
	return a
}

func unixSeconds(s float64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(s*1e9))
}

// RestorePair seeds the RTT aggregate of (src, dst) from a published entry,
// as of when it was computed: a histogram with the published quantiles and
// sample count, decaying from asOf on.
func (a *Aggregator) RestorePair(src, dst string, st PairStat, asOf time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	pk := pairKey{Src: a.internString(src), Dst: a.internString(dst)}
	p := a.pairs[pk]
	if p == nil {
		if len(a.pairs) >= a.cfg.MaxPairs {
			return
		}
		p = &pairAgg{}
		a.pairs[pk] = p
		a.pairsPeak = max(a.pairsPeak, len(a.pairs))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.h.empty() {
		return // live data already arrived; it wins
	}
	p.d = decayed{epoch: seconds(asOf), lastSeen: seconds(st.LastSeen)}
	seedQuantiles(&p.h, st)
}

// seedQuantiles builds a histogram whose quantiles are those of st: the
// mass between consecutive published quantiles is spread log-uniformly
// between them (50% min..p50, 40% p50..p90, 9% p90..p99, 1% at p99).
func seedQuantiles(h *hist, st PairStat) {
	h.reset()
	n := st.Samples
	seg := func(lo, hi, mass float64) {
		jlo, jhi := bucketOf(lo), bucketOf(hi)
		if jhi < jlo {
			jhi = jlo
		}
		per := mass / float64(jhi-jlo+1)
		for j := jlo; j <= jhi; j++ {
			h.add(j, per)
		}
	}
	lo := st.Min
	if lo <= 0 {
		lo = st.P50
	}
	seg(lo, st.P50, 0.5*n)
	seg(st.P50, st.P90, 0.4*n)
	seg(st.P90, st.P99, 0.09*n)
	seg(st.P99, st.P99, 0.01*n)
}

// RestoreFlow seeds a flow aggregate from a published entry. role is
// "client" (pair = this workload's cluster -> peer's) or "server" (pair =
// client cluster -> serving cluster, peer empty).
func (a *Aggregator) RestoreFlow(role string, w WorkloadKey, peer PeerKey, pair ClusterPair, r Rates, window time.Duration, asOf, lastSeen time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	in := a.internString
	fk := flowKey{Role: role, Namespace: in(w.Namespace), Kind: in(w.Kind), Name: in(w.Name)}
	if role == "server" {
		fk.ClusterUID, fk.PeerClusterUID = in(pair.Dst), in(pair.Src)
	} else {
		fk.ClusterUID, fk.PeerClusterUID = in(pair.Src), in(pair.Dst)
		fk.PeerNamespace, fk.PeerKind, fk.PeerName = in(peer.Namespace), in(peer.Kind), in(peer.Name)
		fk.ServiceNamespace, fk.ServiceName = in(peer.ServiceNamespace), in(peer.ServiceName)
	}
	f := a.flows[fk]
	if f == nil {
		if len(a.flows) >= a.cfg.MaxFlows {
			return
		}
		f = &flowAgg{}
		a.flows[fk] = f
		a.flowsPeak = max(a.flowsPeak, len(a.flows))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.d.epoch != 0 {
		return
	}
	// The published rate was computed over an effective window of
	// tau*(1-exp(-age/tau)); the window the object states is the best
	// estimate of the age there is, and gives a weight that new data
	// neither swamps nor ignores.
	t := seconds(asOf)
	age := window.Seconds()
	wlen := a.tau * (1 - math.Exp(-age/a.tau))
	f.d = decayed{epoch: t, lastSeen: seconds(lastSeen)}
	f.first = t - age
	f.bytes = r.BytesPerSecond * wlen
	f.conns = r.ConnectionsPerSecond * wlen
	if r.Samples >= minSamples && r.RTTP50 > 0 {
		f.rtt.add(bucketOf(r.RTTP50), r.Samples)
	}
}

func (a *Aggregator) internString(s string) string {
	if v, ok := a.intern[s]; ok {
		return v
	}
	a.intern[s] = s
	return s
}

func seconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// FlowTotals returns the decayed byte and connection totals of a
// workload's flows in one role (diagnostics and tests).
func (a *Aggregator) FlowTotals(role string, w WorkloadKey) (bytes, conns float64) {
	nowSec := seconds(a.cfg.Now())
	a.mu.RLock()
	defer a.mu.RUnlock()
	for k, f := range a.flows {
		if k.Role != role || k.Namespace != w.Namespace || k.Kind != w.Kind || k.Name != w.Name {
			continue
		}
		f.mu.Lock()
		x := f.d.factor(nowSec, a.tau)
		bytes += f.bytes * x
		conns += f.conns * x
		f.mu.Unlock()
	}
	return bytes, conns
}

// Now is the aggregator's clock.
func (a *Aggregator) Now() time.Time { return a.cfg.Now() }

// RejectedByReason returns the rejected point counts indexed by Reason.
func (a *Aggregator) RejectedByReason() [NumReasons]int64 {
	var out [NumReasons]int64
	for i := range a.rejected {
		out[i] = a.rejected[i].Load()
	}
	return out
}
