// Package latencybudget is the LatencyBudget filter: a cluster is excluded
// when the measured RTT from it to the nearest replica of any required peer
// of the workload, or from any of its required client clusters, exceeds the
// workload's latency budget.
//
// "Required" peers (and client clusters) are those carrying at least
// RequiredFraction of the workload's peer (client) traffic, so that a
// once-a-day call to a far-away service does not pin the workload.
// The nearest replica counts because flowplace's redirection sends each
// connection to the nearest healthy cluster.
//
// Where no direction of a pair is measured, the estimator's estimate (from
// network coordinates) stands in, conservatively: the RTT compared with the
// budget is the estimate plus its expected error, so a guess passes a
// cluster only if it would pass with its error added (and the nearest
// replica is the one nearest by that bound). A measured RTT, in either
// direction, always wins over an estimate.
//
// With missing or stale data the filter passes the cluster with a reason
// ("fail open") unless the profile is strict: a filter error in Karmada only
// excludes that cluster, but excluding every cluster because the estimator
// is down would stop all scheduling.
package latencybudget

import (
	"fmt"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
)

// Name is the plugin's registered name.
const Name = config.LatencyBudgetName

// Verdict is one Filter outcome.
type Verdict struct {
	// Fit is false when the cluster must be excluded.
	Fit bool
	// Reason explains the verdict. Constant strings on the common paths,
	// so that passing a cluster allocates nothing.
	Reason string
	// Cause classifies an exclusion (empty when Fit), for metrics.
	Cause Cause
}

// Cause is why a cluster was excluded, as a bounded metric attribute value.
type Cause string

const (
	CausePeerOverBudget   Cause = "peer_over_budget"
	CauseClientOverBudget Cause = "client_over_budget"
	// CauseMissingData: the profile is strict and data to judge is
	// missing or stale.
	CauseMissingData Cause = "missing_data"
)

// Source gives the current snapshot.
type Source interface {
	Snapshot() *model.Snapshot
}

// Plugin filters clusters. It is safe for concurrent use.
type Plugin struct {
	src  Source
	args config.LatencyBudget
	now  func() time.Time
}

// New returns the plugin reading src. now is the clock (nil: time.Now).
func New(src Source, args config.LatencyBudget, now func() time.Time) *Plugin {
	if now == nil {
		now = time.Now
	}
	return &Plugin{src: src, args: args, now: now}
}

// Name returns Name.
func (p *Plugin) Name() string { return Name }

const (
	reasonDisabled   = "LatencyBudget disabled in the profile"
	reasonNoBudget   = "no latency budget for this workload"
	reasonWithin     = "within latency budget"
	reasonNoSnapshot = "model not loaded yet"
	reasonNoTraffic  = "no WorkloadTraffic for this workload"
	reasonStale      = "WorkloadTraffic is stale (validUntil passed)"
	reasonUnknown    = "cluster not in the latency matrix"
	reasonMissingRTT = "RTT to a required peer's or client's cluster missing or stale"
	reasonNoPlaced   = "no required peer is placed yet"
)

// Filter decides whether workload w may run in cluster.
func (p *Plugin) Filter(w model.Key, cluster string) Verdict {
	if !p.args.Enabled {
		return Verdict{Fit: true, Reason: reasonDisabled}
	}
	s := p.src.Snapshot()
	wl := s.Workload(w)
	budget := p.args.DefaultBudget
	if wl != nil && wl.Budget > 0 {
		budget = wl.Budget
	}
	if budget <= 0 {
		return Verdict{Fit: true, Reason: reasonNoBudget}
	}
	if s == nil {
		return p.missing(reasonNoSnapshot)
	}
	if wl == nil || wl.Traffic == nil {
		return p.missing(reasonNoTraffic)
	}
	now := p.now().UnixNano()
	if !wl.Traffic.Fresh(now) {
		return p.missing(reasonStale)
	}
	c, ok := s.ClusterIndex(cluster)
	if !ok {
		return p.missing(reasonUnknown)
	}
	budgetUs := budget.Microseconds()
	q := p.args.Quantile
	rtt := s.RTTFrom(q, c, now)
	t := wl.Traffic
	minPeer := p.args.RequiredFraction * t.PeerBytesPerSecond
	missing, checked := false, 0
	for i := range t.Peers {
		e := &t.Peers[i]
		// A planned location is a preference, not where the peer runs: the
		// budget binds only against placed or observed replicas.
		if e.BytesPerSecond < minPeer || len(e.Dist) == 0 || e.Source == model.PlacementPlanned {
			continue
		}
		// Nearest replica of the peer, among clusters with RTT data.
		best, bestCluster, known, bestEst := int32(0), int32(-1), false, false
		for _, d := range e.Dist {
			us, est, ok := rtt.Bound(d.Cluster)
			if !ok {
				missing = true
				continue
			}
			if !known || us < best {
				best, bestCluster, known, bestEst = us, d.Cluster, true, est
			}
		}
		if !known {
			continue
		}
		checked++
		if int64(best) > budgetUs {
			return Verdict{Cause: CausePeerOverBudget, Reason: fmt.Sprintf("%s %s from %s to the nearest replica of peer %s (in %s) exceeds the budget %s",
				rttKind(q, bestEst), usDur(best), cluster, e.Name, s.ClusterName(bestCluster), budget)}
		}
	}
	minClient := p.args.RequiredFraction * t.ClientBytesPerSecond
	for _, k := range t.Clients {
		if k.BytesPerSecond < minClient {
			continue
		}
		// Prefer the client's own row (client -> candidate), as measured
		// by the agents in the client cluster.
		v, est, ok := s.RTTBound(q, k.Cluster, c, now)
		if !ok {
			missing = true
			continue
		}
		checked++
		if int64(v) > budgetUs {
			return Verdict{Cause: CauseClientOverBudget, Reason: fmt.Sprintf("%s %s from client cluster %s to %s exceeds the budget %s",
				rttKind(q, est), usDur(v), s.ClusterName(k.Cluster), cluster, budget)}
		}
	}
	if missing {
		// Everything measured is within budget, but something required
		// was not measured.
		return p.missing(reasonMissingRTT)
	}
	if checked == 0 {
		return Verdict{Fit: true, Reason: reasonNoPlaced}
	}
	return Verdict{Fit: true, Reason: reasonWithin}
}

// missing is the verdict when data needed to judge is absent.
func (p *Plugin) missing(why string) Verdict {
	if p.args.Strict {
		return Verdict{Cause: CauseMissingData, Reason: "strict: " + why}
	}
	return Verdict{Fit: true, Reason: "fail open: " + why}
}

func usDur(v int32) time.Duration { return time.Duration(v) * time.Microsecond }

// rttKind names the RTT in a reason: measured, or an estimate plus its
// expected error.
func rttKind(q model.Quantile, estimated bool) string {
	if estimated {
		return q.String() + " RTT estimate + expected error"
	}
	return q.String() + " RTT"
}
