// Package model is the scheduler plugins' in-memory picture of the fleet: the
// cluster-to-cluster RTT matrix, each workload's traffic to its peers and from
// its client clusters, and where each workload's replicas run.
//
// A Snapshot is immutable once built. The informer-backed source (package
// source) rebuilds one when the API objects change and swaps it in
// atomically; the plugins read it on every Filter/Score call without locks or
// allocation. Everything is indexed by small integers so that a Score call
// over 50 peers is a few hundred array reads, not map look-ups.
//
// Freshness is checked at call time, not at build time: an estimator that
// stops writing leaves objects whose validUntil passes without any API event,
// so a snapshot can never cache "fresh".
package model

import (
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

// Key identifies a workload the way Karmada's ResourceBinding does: the
// namespace of the resource template and the binding name,
// lower-case "<name>-<kind>".
type Key struct {
	Namespace string
	Name      string
}

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// BindingName is Karmada's names.GenerateBindingName: lower-case
// "<name>-<kind>", with ':' replaced by '.' (RBAC names may contain ':', CRD
// object names may not). Repeated here because the root module never
// imports Karmada.
func BindingName(kind, name string) string {
	if strings.Contains(name, ":") {
		name = strings.ReplaceAll(name, ":", ".")
	}
	return strings.ToLower(name + "-" + kind)
}

// KeyFor is the Key of the resource template namespace/kind/name.
func KeyFor(namespace, kind, name string) Key {
	return Key{Namespace: namespace, Name: BindingName(kind, name)}
}

// Quantile selects which RTT statistic of a cluster pair is used.
type Quantile uint8

const (
	QuantileP50 Quantile = iota
	QuantileP90
	QuantileP99
	QuantileMin
	numQuantiles
)

// String is the spelling used in configuration files.
func (q Quantile) String() string {
	switch q {
	case QuantileP50:
		return "p50"
	case QuantileP90:
		return "p90"
	case QuantileP99:
		return "p99"
	case QuantileMin:
		return "min"
	}
	return "unknown"
}

// ParseQuantile is the inverse of Quantile.String.
func ParseQuantile(s string) (Quantile, bool) {
	for q := Quantile(0); q < numQuantiles; q++ {
		if q.String() == s {
			return q, true
		}
	}
	return 0, false
}

// Share is a fraction of a workload's replicas (or of its observed traffic)
// in one cluster, by cluster index.
type Share struct {
	Cluster  int32
	Fraction float64
}

// PlacementSource says where a peer's cluster distribution came from.
type PlacementSource uint8

const (
	// PlacementUnknown: neither a ResourceBinding with clusters nor observed
	// traffic says where the peer runs.
	PlacementUnknown PlacementSource = iota
	// PlacementBinding: the peer's ResourceBinding spec.clusters (replicas).
	PlacementBinding
	// PlacementObserved: the destination clusters of the measured traffic
	// (a peer that is a plain Service, or has no binding yet).
	PlacementObserved
	// PlacementPlanned: the peer has a ResourceBinding not scheduled yet
	// (or nothing says where it runs); this is where the capacity plan
	// (package plan) expects Karmada to put it. A binding waiting to be
	// scheduled wins over where the peer was last observed.
	PlacementPlanned
)

// PeerEdge is this workload's traffic to one peer.
type PeerEdge struct {
	// Name identifies the peer in reasons ("ns/name-kind" or "svc ns/name").
	Name string
	// Workload is the peer workload's key; zero for a plain service.
	Workload Key
	// BytesPerSecond is the rate in both directions.
	BytesPerSecond float64
	// Dist is where the peer's replicas are, fractions summing to 1; empty
	// when unknown.
	Dist   []Share
	Source PlacementSource
}

// ClientEdge is traffic from clients in one cluster to this workload.
type ClientEdge struct {
	Cluster        int32
	BytesPerSecond float64
}

// Traffic is one WorkloadTraffic object, resolved against the snapshot.
type Traffic struct {
	// ValidUntil in Unix nanoseconds (compared on every call).
	ValidUntil int64
	Samples    int64
	Peers      []PeerEdge
	Clients    []ClientEdge
	// Totals over Peers and Clients, for the "required peer" threshold.
	PeerBytesPerSecond   float64
	ClientBytesPerSecond float64
}

// Fresh reports whether the traffic data may be used at now (Unix ns).
func (t *Traffic) Fresh(now int64) bool { return t != nil && now < t.ValidUntil }

// Workload is everything known about one workload.
type Workload struct {
	Key Key
	// Traffic is nil when there is no WorkloadTraffic object.
	Traffic *Traffic
	// Placement is from the ResourceBinding's spec.clusters; nil if none.
	Placement []Share
	// Bound: the workload has a ResourceBinding (Karmada places it; with
	// no Placement it is waiting to be scheduled).
	Bound bool
	// Budget is the latency budget from the workload's annotation (0: none).
	Budget time.Duration
	// BudgetError is set when the annotation was present but unparsable;
	// the default budget then applies.
	BudgetError string
	// DemandMilliCPU is the CPU the workload requests in all (replicas x
	// per-replica request, from its binding); 0 when unknown.
	DemandMilliCPU float64
	// DemandMemoryBytes is the same for memory.
	DemandMemoryBytes float64
	// Planned is the cluster the capacity plan expects the workload in when
	// it is not placed yet; -1 otherwise.
	Planned int32
}

// ClusterInfo is what the plugins need of a Karmada Cluster.
type ClusterInfo struct {
	Name     string
	Provider string
	Region   string
}

// Snapshot is an immutable model. The zero value and nil are valid empty
// snapshots (every lookup misses).
type Snapshot struct {
	clusters []ClusterInfo
	index    map[string]int32
	n        int
	// rtt[q][src*n+dst] in microseconds, -1 when unknown or below the
	// sample threshold.
	rtt [numQuantiles][]int32
	// est[q] and estErr are the estimated entries (pairs nobody measured,
	// filled by the estimator from network coordinates) and their expected
	// errors, laid out like rtt; all nil when there is none. Separate from
	// rtt so that a measured value, in either direction, always wins, and
	// the measured lookups cost what they did.
	est    [numQuantiles][]int32
	estErr []int32
	// rowValidUntil[src] is the source's ClusterLatency validUntil (Unix ns);
	// 0 when no object exists.
	rowValidUntil []int64
	workloads     map[Key]*Workload
	// slack and price are the capacity plan's per-cluster free capacity
	// left and cost (bytes/s x ms) per unit of taking it; nil when no plan
	// was made.
	slack, price []plan.Resources
	// displacement is the plan's cost of freeing capacity, per cluster and
	// resource (see plan.Result.Displacement).
	displacement [][plan.NumResources]plan.Curve
	// planCost is the plan's network cost (bytes/s x ms), for logs.
	planCost float64
	// BuiltAt is when the snapshot was built (for logs).
	BuiltAt time.Time
}

// NumClusters is the size of the cluster index.
func (s *Snapshot) NumClusters() int {
	if s == nil {
		return 0
	}
	return s.n
}

// Clusters lists the indexed clusters in index order.
func (s *Snapshot) Clusters() []ClusterInfo {
	if s == nil {
		return nil
	}
	return s.clusters
}

// ClusterIndex returns the index of a cluster name.
func (s *Snapshot) ClusterIndex(name string) (int32, bool) {
	if s == nil {
		return 0, false
	}
	i, ok := s.index[name]
	return i, ok
}

// ClusterName is the name at index i.
func (s *Snapshot) ClusterName(i int32) string { return s.clusters[i].Name }

// Cluster is the info at index i.
func (s *Snapshot) Cluster(i int32) ClusterInfo { return s.clusters[i] }

// Workload returns the workload for k, or nil.
func (s *Snapshot) Workload(k Key) *Workload {
	if s == nil {
		return nil
	}
	return s.workloads[k]
}

// NumWorkloads is the number of workloads known (with traffic, a binding or
// an annotation).
func (s *Snapshot) NumWorkloads() int {
	if s == nil {
		return 0
	}
	return len(s.workloads)
}

// RTT returns the RTT in microseconds between clusters a and b at quantile q,
// using only rows that are fresh at now (Unix ns). RTT is symmetric in
// practice, so when a's row lacks b (or is stale) b's row is used. For a == b
// the intra-cluster RTT is returned when measured, and 0 otherwise: staying
// in one cluster never costs a WAN round trip. Only when neither direction
// is measured is an estimated entry used (a's row first).
func (s *Snapshot) RTT(q Quantile, a, b int32, now int64) (int32, bool) {
	if v, ok := s.measuredRTT(q, a, b, now); ok {
		return v, true
	}
	if s.est[q] != nil {
		if off, ok := s.estimated(a, b, now); ok {
			return s.est[q][off], true
		}
	}
	return 0, false
}

// RTTBound is RTT for a reader that compares the RTT with a limit and must
// not pass a cluster on a guess: a measured value as RTT returns it, an
// estimated one plus its expected error (one standard error: an estimate
// passes a budget only if it would with the error added). estimated says
// which it is.
func (s *Snapshot) RTTBound(q Quantile, a, b int32, now int64) (us int32, estimated, ok bool) {
	if v, ok := s.measuredRTT(q, a, b, now); ok {
		return v, false, true
	}
	if s.est[q] != nil {
		if off, ok := s.estimated(a, b, now); ok {
			return addUs(s.est[q][off], s.estErr[off]), true, true
		}
	}
	return 0, false, false
}

// measuredRTT is RTT without the estimates.
func (s *Snapshot) measuredRTT(q Quantile, a, b int32, now int64) (int32, bool) {
	m := s.rtt[q]
	if now < s.rowValidUntil[a] {
		if v := m[int(a)*s.n+int(b)]; v >= 0 {
			return v, true
		}
	}
	if now < s.rowValidUntil[b] {
		if v := m[int(b)*s.n+int(a)]; v >= 0 {
			return v, true
		}
	}
	if a == b {
		return 0, true
	}
	return 0, false
}

// estimated returns the offset of the estimated entry for a and b from a
// fresh row, a's first; the estimator publishes both directions alike.
func (s *Snapshot) estimated(a, b int32, now int64) (int, bool) {
	if off := int(a)*s.n + int(b); now < s.rowValidUntil[a] && s.estErr[off] >= 0 {
		return off, true
	}
	if off := int(b)*s.n + int(a); now < s.rowValidUntil[b] && s.estErr[off] >= 0 {
		return off, true
	}
	return 0, false
}

// EstimatedError is the expected error of the estimated entry RTT would
// use for a and b (0, false when RTT would use a measurement or nothing).
func (s *Snapshot) EstimatedError(a, b int32, now int64) (int32, bool) {
	if s == nil || s.estErr == nil {
		return 0, false
	}
	if _, ok := s.measuredRTT(QuantileP50, a, b, now); ok {
		return 0, false
	}
	off, ok := s.estimated(a, b, now)
	if !ok {
		return 0, false
	}
	return s.estErr[off], true
}

// HasEstimates reports whether any estimated entry was loaded.
func (s *Snapshot) HasEstimates() bool { return s != nil && s.estErr != nil }

func addUs(a, b int32) int32 {
	if v := int64(a) + int64(b); v < maxRTTUs {
		return int32(v)
	}
	return maxRTTUs
}

// HasPlan reports whether the snapshot carries a capacity plan.
func (s *Snapshot) HasPlan() bool { return s != nil && s.price != nil }

// DisplacementCost is the network cost (bytes/s x ms) that running w in
// cluster c imposes on the workloads the plan expects there: when c's
// planned slack cannot hold w, the missing capacity times the cluster's
// price (the cheapest planned workload's cost, per unit, of going
// elsewhere), for the resource that costs most (CPU or memory). 0 without
// a plan, for w's own planned cluster, for a cluster w already runs in (its
// request is already allocated there), and when w's demand is unknown.
func (s *Snapshot) DisplacementCost(w *Workload, c int32) float64 {
	if s.price == nil || w == nil || w.Planned == c || int(c) >= len(s.price) {
		return 0
	}
	for _, sh := range w.Placement {
		if sh.Cluster == c {
			return 0
		}
	}
	var cost float64
	for r, demand := range w.demand() {
		if need := demand - max(s.slack[c][r], 0); need > 0 {
			if s.displacement != nil {
				cost = max(cost, s.displacement[c][r].At(need))
			} else {
				cost = max(cost, need*s.price[c][r])
			}
		}
	}
	return cost
}

// demand is w's request as a plan vector.
func (w *Workload) demand() plan.Resources {
	var d plan.Resources
	d[plan.CPU], d[plan.Memory] = w.DemandMilliCPU, w.DemandMemoryBytes
	return d
}

// PlanCost is the capacity plan's network cost in bytes/s x ms (0 without
// a plan): the rebuild log reports it, so an operator can follow it.
func (s *Snapshot) PlanCost() float64 {
	if s == nil {
		return 0
	}
	return s.planCost
}

// SlackMemory is cluster c's free memory in bytes left by the capacity plan
// (+Inf when unknown or no plan was made).
func (s *Snapshot) SlackMemory(c int32) float64 {
	if s == nil || s.slack == nil {
		return math.Inf(1)
	}
	return s.slack[c][plan.Memory]
}

// Slack is cluster c's free milli-CPU left by the capacity plan (+Inf when
// unknown or no plan was made).
func (s *Snapshot) Slack(c int32) float64 {
	if s == nil || s.slack == nil {
		return math.Inf(1)
	}
	return s.slack[c][plan.CPU]
}

// Holder holds the current snapshot for concurrent readers; the zero value
// holds nil (an empty model).
type Holder struct{ p atomic.Pointer[Snapshot] }

// Snapshot returns the current snapshot (may be nil).
func (h *Holder) Snapshot() *Snapshot { return h.p.Load() }

// Store replaces the current snapshot.
func (h *Holder) Store(s *Snapshot) { h.p.Store(s) }

// RTTView is RTT with the first cluster fixed: the Score and Filter loops
// look up many pairs from one candidate cluster, so the candidate's row and
// freshness are resolved once. Same semantics as Snapshot.RTT.
type RTTView struct {
	m      []int32
	valid  []int64
	row    []int32
	n      int
	a      int32
	aFresh bool
	now    int64
	// s and q reach the estimates, looked at only when nothing measured
	// exists.
	s *Snapshot
	q Quantile
}

// RTTFrom returns the view of RTTs from cluster a at quantile q and time now.
func (s *Snapshot) RTTFrom(q Quantile, a int32, now int64) RTTView {
	m := s.rtt[q]
	return RTTView{m: m, valid: s.rowValidUntil, row: m[int(a)*s.n : int(a+1)*s.n], n: s.n, a: a, aFresh: now < s.rowValidUntil[a], now: now, s: s, q: q}
}

// To returns the RTT from the view's cluster to b.
func (v *RTTView) To(b int32) (int32, bool) {
	if v.aFresh {
		if r := v.row[b]; r >= 0 {
			return r, true
		}
	}
	if v.now < v.valid[b] {
		if r := v.m[int(b)*v.n+int(v.a)]; r >= 0 {
			return r, true
		}
	}
	if b == v.a {
		return 0, true
	}
	if v.s.estErr != nil {
		if off, ok := v.s.estimated(v.a, b, v.now); ok {
			return v.s.est[v.q][off], true
		}
	}
	return 0, false
}

// Bound is Snapshot.RTTBound from the view's cluster to b.
func (v *RTTView) Bound(b int32) (us int32, estimated, ok bool) {
	if v.aFresh {
		if r := v.row[b]; r >= 0 {
			return r, false, true
		}
	}
	if v.now < v.valid[b] {
		if r := v.m[int(b)*v.n+int(v.a)]; r >= 0 {
			return r, false, true
		}
	}
	if b == v.a {
		return 0, false, true
	}
	if v.s.estErr != nil {
		if off, ok := v.s.estimated(v.a, b, v.now); ok {
			return addUs(v.s.est[v.q][off], v.s.estErr[off]), true, true
		}
	}
	return 0, false, false
}
