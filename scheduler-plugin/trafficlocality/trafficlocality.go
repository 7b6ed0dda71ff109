// Package trafficlocality is the TrafficLocality score: the expected network
// cost of running a workload in a cluster, from its traffic to peers
// (weighted by where each peer's replicas run) and from its client clusters,
// times the measured RTT (plus an optional per-byte egress price), turned
// into 0..100 with the cheapest feasible cluster at 100. A pair measured in
// neither direction costs the estimator's estimate (network coordinates),
// its expected value; a measurement in either direction always wins.
//
// Karmada fails the whole scheduling attempt when a score plugin returns an
// error, so nothing here errors: missing or stale data gives the neutral
// score with a reason.
package trafficlocality

import (
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
)

// Name is the plugin's registered name.
const Name = config.TrafficLocalityName

const (
	// MaxScore is given to the cheapest cluster.
	MaxScore = 100
	// NeutralScore is given to every cluster for which the cost is unknown
	// (and to all clusters when the workload has no usable data): the middle
	// of the range, so an unmeasured cluster is neither preferred over a
	// good one nor ranked below a bad one.
	NeutralScore = 50
)

// Raw scores returned by Score and mapped by NormalizeScore. Karmada's
// NormalizeScore sees only (cluster, score) pairs, not the binding, so the
// raw score itself carries the cost: -(cost+1) for a known cost (always
// negative), RawNeutral for unknown. Encoding it this way keeps the plugin
// stateless between Score and NormalizeScore, which matters because the
// scheduler may score several bindings concurrently.
const RawNeutral int64 = 0

// Reason classifies a score. The String form is constant (no allocation on
// the Score path); Explain gives the detailed text.
type Reason uint8

const (
	ReasonCost Reason = iota
	ReasonDisabled
	ReasonNoSnapshot
	ReasonNoTraffic
	ReasonStaleTraffic
	ReasonZeroTraffic
	ReasonUnknownCluster
	ReasonMissingRTT
)

func (r Reason) String() string {
	switch r {
	case ReasonCost:
		return "expected cost from measured traffic and RTT"
	case ReasonDisabled:
		return "neutral: TrafficLocality disabled in the profile"
	case ReasonNoSnapshot:
		return "neutral: model not loaded yet"
	case ReasonNoTraffic:
		return "neutral: no WorkloadTraffic for this workload"
	case ReasonStaleTraffic:
		return "neutral: WorkloadTraffic is stale (validUntil passed)"
	case ReasonZeroTraffic:
		return "neutral: no traffic to placed peers or from clients"
	case ReasonUnknownCluster:
		return "neutral: cluster not in the latency matrix"
	case ReasonMissingRTT:
		return "neutral: RTT to a peer's or client's cluster missing or stale"
	}
	return "unknown"
}

// Class is the reason as a bounded metric attribute value.
func (r Reason) Class() string {
	switch r {
	case ReasonCost:
		return "cost"
	case ReasonDisabled:
		return "disabled"
	case ReasonNoSnapshot:
		return "no_snapshot"
	case ReasonNoTraffic:
		return "no_traffic"
	case ReasonStaleTraffic:
		return "stale_traffic"
	case ReasonZeroTraffic:
		return "zero_traffic"
	case ReasonUnknownCluster:
		return "unknown_cluster"
	case ReasonMissingRTT:
		return "missing_rtt"
	}
	return "unknown"
}

// Result is one Score outcome.
type Result struct {
	// Raw is what Karmada's Score returns (see RawNeutral).
	Raw int64
	// Cost is the expected cost in bytes/s x ms (valid when Reason is
	// ReasonCost).
	Cost   float64
	Reason Reason
}

// Source gives the current snapshot.
type Source interface {
	Snapshot() *model.Snapshot
}

// Plugin scores clusters. It is safe for concurrent use.
type Plugin struct {
	src  Source
	args config.TrafficLocality
	now  func() time.Time
	// egress caches the per-pair egress penalty (ms) for one snapshot; it
	// depends on cluster providers/regions, which change only with the
	// snapshot.
	egress atomic.Pointer[egressCache]
}

type egressCache struct {
	snap *model.Snapshot
	ms   []float64 // n*n, nil when no rules
}

// New returns the plugin reading src. now is the clock (nil: time.Now).
func New(src Source, args config.TrafficLocality, now func() time.Time) *Plugin {
	if now == nil {
		now = time.Now
	}
	return &Plugin{src: src, args: args, now: now}
}

// Name returns Name.
func (p *Plugin) Name() string { return Name }

// Score computes the raw score of running workload w in cluster. It does
// in-memory work only and never fails.
func (p *Plugin) Score(w model.Key, cluster string) Result {
	if !p.args.Enabled {
		return Result{Reason: ReasonDisabled}
	}
	s := p.src.Snapshot()
	if s == nil {
		return Result{Reason: ReasonNoSnapshot}
	}
	wl := s.Workload(w)
	if wl == nil || wl.Traffic == nil {
		return Result{Reason: ReasonNoTraffic}
	}
	now := p.now().UnixNano()
	if !wl.Traffic.Fresh(now) {
		return Result{Reason: ReasonStaleTraffic}
	}
	c, ok := s.ClusterIndex(cluster)
	if !ok {
		return Result{Reason: ReasonUnknownCluster}
	}
	cost, reason := p.total(s, wl, c, now)
	if reason != ReasonCost {
		return Result{Reason: reason}
	}
	return Result{Raw: encode(cost), Cost: cost, Reason: ReasonCost}
}

// cost is the expected bytes/s x ms of running in cluster c: traffic to
// peers and from clients, plus what taking c's capacity costs the workloads
// the capacity plan expects there.
func (p *Plugin) cost(s *model.Snapshot, wl *model.Workload, c int32, now int64) (float64, Reason) {
	t := wl.Traffic
	eg := p.egressFor(s)
	n := int32(s.NumClusters())
	rtt := s.RTTFrom(p.args.Quantile, c, now)
	var cost, weight float64
	for i := range t.Peers {
		e := &t.Peers[i]
		if len(e.Dist) == 0 {
			// Where the peer runs is unknown: the term is the same for
			// every cluster, so it cannot change the ranking.
			continue
		}
		var link float64
		for _, d := range e.Dist {
			us, ok := rtt.To(d.Cluster)
			if !ok {
				return 0, ReasonMissingRTT
			}
			l := float64(us) / 1000
			if eg != nil && d.Cluster != c {
				// A peer edge's bytes flow both ways: the mean of both
				// directions' prices, as the capacity plan prices it.
				l += (eg[c*n+d.Cluster] + eg[d.Cluster*n+c]) / 2
			}
			link += d.Fraction * l
		}
		cost += e.BytesPerSecond * link
		weight += e.BytesPerSecond
	}
	for _, k := range t.Clients {
		// RTT is read from either end's row (see Snapshot.RTT), so the
		// candidate's view serves client -> candidate too.
		us, ok := rtt.To(k.Cluster)
		if !ok {
			return 0, ReasonMissingRTT
		}
		l := float64(us) / 1000
		if eg != nil && k.Cluster != c {
			// Responses dominate client traffic: price the serving
			// cluster -> client cluster direction.
			l += eg[c*n+k.Cluster]
		}
		cost += k.BytesPerSecond * l
		weight += k.BytesPerSecond
	}
	if weight == 0 {
		return 0, ReasonZeroTraffic
	}
	return cost, ReasonCost
}

// planMargin is how much dearer than the planned cluster any other cluster
// scores for a workload the capacity plan placed: 2%, which Normalize turns
// into at least one point of difference (98 against 100).
const planMargin = 1.02

// total is the score's cost of running wl in c: its own traffic cost plus
// what taking c's capacity displaces; and, when the capacity plan placed
// wl elsewhere, never less than the planned cluster's cost by planMargin.
// The plan sees every unplaced workload at once (a binding's score alone
// cannot: taking the cheapest cluster now can cost more later), so the
// score follows it wherever Karmada's filters leave the planned cluster
// feasible, and ranks the others by cost and displacement.
func (p *Plugin) total(s *model.Snapshot, wl *model.Workload, c int32, now int64) (float64, Reason) {
	cost, reason := p.cost(s, wl, c, now)
	if reason != ReasonCost {
		return 0, reason
	}
	cost += s.DisplacementCost(wl, c)
	if pl := wl.Planned; pl >= 0 && pl != c && s.HasPlan() {
		if at, r := p.cost(s, wl, pl, now); r == ReasonCost {
			floor := p.floor()
			cost = max(cost, (at+floor)*planMargin-floor)
		}
	}
	return cost, ReasonCost
}

func (p *Plugin) floor() float64 {
	if f := p.args.CostFloor; f > 0 {
		return f
	}
	return config.DefaultCostFloor
}

func encode(cost float64) int64 {
	if cost > math.MaxInt64/2 {
		cost = math.MaxInt64 / 2
	}
	return -int64(cost) - 1
}

// Normalize maps raw scores in place to 0..100: unknown costs get
// NeutralScore; known costs get MaxScore * (min + floor) / (cost + floor),
// so the cheapest cluster gets 100 and a cluster costing floor more than it
// gets about half. Ratio rather than min-max scaling: two clusters whose
// costs differ by 1% must not be scored 100 and 0, because Karmada adds the
// scores of all plugins and a measurement-noise difference would then
// outweigh a real preference of another plugin.
func (p *Plugin) Normalize(raw []int64) {
	minCost := math.Inf(1)
	for _, r := range raw {
		if r < 0 {
			minCost = math.Min(minCost, float64(-r-1))
		}
	}
	floor := p.floor()
	for i, r := range raw {
		if r >= 0 {
			raw[i] = NeutralScore
			continue
		}
		cost := float64(-r - 1)
		raw[i] = int64(math.Round(MaxScore * (minCost + floor) / (cost + floor)))
	}
}

// Explain describes the score of w in cluster for logs and events: the
// reason and, when the cost is known, the largest contributions.
func (p *Plugin) Explain(w model.Key, cluster string) string {
	r := p.Score(w, cluster)
	if r.Reason != ReasonCost {
		return fmt.Sprintf("%s %s: %s", w, cluster, r.Reason)
	}
	s := p.src.Snapshot()
	wl := s.Workload(w)
	c, _ := s.ClusterIndex(cluster)
	now := p.now().UnixNano()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: expected cost %.3g B/s*ms from %d peers and %d client clusters", w, cluster, r.Cost, len(wl.Traffic.Peers), len(wl.Traffic.Clients))
	// The single largest term is what an operator wants to see first.
	var top string
	var topCost float64
	estimated := func(a, b int32) string {
		if e, ok := s.EstimatedError(a, b, now); ok {
			return fmt.Sprintf(", estimated ± %.1f ms", float64(e)/1000)
		}
		return ""
	}
	for _, e := range wl.Traffic.Peers {
		var link float64
		var est string
		for _, d := range e.Dist {
			rtt, _ := s.RTT(p.args.Quantile, c, d.Cluster, now)
			link += d.Fraction * float64(rtt) / 1000
			if _, ok := s.EstimatedError(c, d.Cluster, now); ok {
				est = ", some estimated"
			}
		}
		if v := e.BytesPerSecond * link; v > topCost {
			topCost, top = v, fmt.Sprintf("peer %s (%.0f B/s, mean RTT %.1f ms%s)", e.Name, e.BytesPerSecond, link, est)
		}
	}
	for _, k := range wl.Traffic.Clients {
		rtt, _ := s.RTT(p.args.Quantile, k.Cluster, c, now)
		if v := k.BytesPerSecond * float64(rtt) / 1000; v > topCost {
			topCost, top = v, fmt.Sprintf("clients in %s (%.0f B/s, RTT %.1f ms%s)", s.ClusterName(k.Cluster), k.BytesPerSecond, float64(rtt)/1000, estimated(k.Cluster, c))
		}
	}
	if top != "" {
		fmt.Fprintf(&b, "; largest: %s", top)
	}
	if d := s.DisplacementCost(wl, c); d > 0 {
		fmt.Fprintf(&b, "; capacity: %.3g of it displaces workloads planned for %s (%.0f milli-CPU needed, %.0f left by the plan)",
			d, cluster, wl.DemandMilliCPU, max(s.Slack(c), 0))
	}
	return b.String()
}

// egressFor returns the egress penalty matrix (ms per byte-weight) of s,
// computing it once per snapshot.
func (p *Plugin) egressFor(s *model.Snapshot) []float64 {
	if len(p.args.Egress.Rules) == 0 {
		return nil
	}
	if c := p.egress.Load(); c != nil && c.snap == s {
		return c.ms
	}
	n := s.NumClusters()
	ms := make([]float64, n*n)
	for a := 0; a < n; a++ {
		for b := 0; b < n; b++ {
			if a != b {
				ms[a*n+b] = EgressPrice(p.args.Egress.Rules, s.Cluster(int32(a)), s.Cluster(int32(b))) * p.args.Egress.MillisecondsPerCostUnit
			}
		}
	}
	p.egress.Store(&egressCache{snap: s, ms: ms})
	return ms
}

// EgressPrice is config.EgressPrice: the price per GiB of the first rule
// matching from -> to (0 when none matches).
func EgressPrice(rules []config.EgressRule, from, to model.ClusterInfo) float64 {
	return config.EgressPrice(rules, from, to)
}
