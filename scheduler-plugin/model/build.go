package model

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// BudgetAnnotation sets a workload's latency budget (a Go duration such as
// "25ms") on its resource template or its ResourceBinding.
const BudgetAnnotation = "flowplace.io/latency-budget"

// LatencyRow is one source cluster's ClusterLatency.
type LatencyRow struct {
	Source     string
	ValidUntil time.Time
	Peers      []PairLatency
}

// PairLatency is the RTT distribution from the row's source to Cluster.
type PairLatency struct {
	Cluster                    string
	MinUs, P50Us, P90Us, P99Us int64
	Samples                    int64
	// Estimated marks an entry the estimator filled for a pair nobody
	// measured (Samples is then 0), with ErrorUs its expected error.
	Estimated bool
	ErrorUs   int64
}

// TrafficInput is one WorkloadTraffic.
type TrafficInput struct {
	Workload   Key
	ValidUntil time.Time
	Samples    int64
	Peers      []PeerInput
	Clients    []ClientInput
}

// PeerInput is traffic to one peer. Workload is the peer's key when the
// estimator attributed it to a workload (its ResourceBinding then gives the
// placement); Service names a plain service otherwise.
type PeerInput struct {
	Workload       *Key
	Service        string
	BytesPerSecond float64
	// Pairs is the observed (source cluster, destination cluster) breakdown.
	Pairs []PairRate
}

// PairRate is traffic between two clusters.
type PairRate struct {
	From, To       string
	BytesPerSecond float64
}

// ClientInput is traffic from clients in Cluster (summed over serving
// clusters by the builder if repeated).
type ClientInput struct {
	Cluster        string
	BytesPerSecond float64
}

// BindingInput is one ResourceBinding: where the workload's replicas run.
type BindingInput struct {
	Workload    Key
	Clusters    []ClusterReplicas
	Annotations map[string]string
	// DemandMilliCPU is spec.replicas x spec.replicaRequirements'
	// resourceRequest cpu; 0 when the binding does not say.
	DemandMilliCPU float64
	// DemandMemoryBytes is the same for memory.
	DemandMemoryBytes float64
}

// ClusterReplicas is an entry of a binding's spec.clusters.
type ClusterReplicas struct {
	Name     string
	Replicas int32
}

// Inputs is everything a snapshot is built from.
type Inputs struct {
	Clusters []ClusterInfo
	Latency  []LatencyRow
	Traffic  []TrafficInput
	Bindings []BindingInput
	// Annotations of resource templates, by workload (the budget annotation
	// is read from here first, then from the binding).
	TemplateAnnotations map[Key]map[string]string
	// AvailableMilliCPU is each cluster's free CPU (allocatable - allocated
	// - allocating of the Cluster's status.resourceSummary); clusters
	// missing here are unconstrained in the capacity plan.
	AvailableMilliCPU map[string]float64
	// AvailableMemoryBytes is the same for memory.
	AvailableMemoryBytes map[string]float64
}

// BuildOptions tune how inputs are read.
type BuildOptions struct {
	// MinSamples: pairs with fewer RTT samples are treated as unmeasured.
	MinSamples int64
	// Plan makes a capacity plan (package plan) for workloads that are not
	// placed yet, so that traffic to them counts and capacity is priced.
	Plan bool
	// PlanQuantile is the RTT statistic the plan prices links with: the
	// one TrafficLocality scores with, so that plan and score agree.
	PlanQuantile Quantile
	// PlanEgressMs (optional) is the egress price of a byte from one
	// cluster to another in milliseconds-equivalent, as TrafficLocality
	// prices it.
	PlanEgressMs func(from, to ClusterInfo) float64
	// Previous (optional) is the last snapshot: its plan is the start the
	// new plan improves on, so plans do not flip between rebuilds.
	Previous *Snapshot
	// Now is the build time against which freshness is judged for the plan
	// (nil: time.Now).
	Now func() time.Time
}

// Build makes a snapshot. It never fails: inputs that do not make sense
// (negative rates, unknown quantile order) are dropped, because the plugins
// must keep scheduling on whatever valid data remains.
func Build(in Inputs, opts BuildOptions) *Snapshot {
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	s := &Snapshot{index: map[string]int32{}, BuiltAt: now()}
	add := func(name string) int32 {
		if i, ok := s.index[name]; ok {
			return i
		}
		i := int32(len(s.clusters))
		s.index[name] = i
		s.clusters = append(s.clusters, ClusterInfo{Name: name})
		return i
	}
	// Karmada clusters first, in a stable order, so that indexes (and thus
	// tie-breaking in tests and logs) do not depend on informer order.
	cl := slices.Clone(in.Clusters)
	sort.Slice(cl, func(i, j int) bool { return cl[i].Name < cl[j].Name })
	for _, c := range cl {
		s.clusters[add(c.Name)] = c
	}
	// Clusters only named by measurements (e.g. a client cluster that is
	// not a Karmada member) still get an index: their RTT rows matter.
	for _, r := range in.Latency {
		add(r.Source)
		for _, p := range r.Peers {
			add(p.Cluster)
		}
	}
	for _, t := range in.Traffic {
		for _, p := range t.Peers {
			for _, pr := range p.Pairs {
				add(pr.From)
				add(pr.To)
			}
		}
		for _, c := range t.Clients {
			add(c.Cluster)
		}
	}
	for _, b := range in.Bindings {
		for _, c := range b.Clusters {
			add(c.Name)
		}
	}
	n := len(s.clusters)
	s.n = n
	for q := range s.rtt {
		m := make([]int32, n*n)
		for i := range m {
			m[i] = -1
		}
		s.rtt[q] = m
	}
	s.rowValidUntil = make([]int64, n)
	for _, r := range in.Latency {
		src := s.index[r.Source]
		s.rowValidUntil[src] = r.ValidUntil.UnixNano()
		for _, p := range r.Peers {
			if p.P50Us < 0 || p.P90Us < p.P50Us || p.P99Us < p.P90Us || p.MinUs < 0 {
				continue
			}
			if p.Estimated {
				// An estimate of a cluster to itself, or one claiming
				// samples, is not what the estimator writes.
				if p.Samples == 0 && p.ErrorUs >= 0 && p.MinUs <= p.P50Us && p.Cluster != r.Source {
					s.setEstimate(int(src)*n+int(s.index[p.Cluster]), p)
				}
				continue
			}
			if p.Samples < opts.MinSamples || p.Samples <= 0 {
				continue
			}
			off := int(src)*n + int(s.index[p.Cluster])
			s.rtt[QuantileP50][off] = clampUs(p.P50Us)
			s.rtt[QuantileP90][off] = clampUs(p.P90Us)
			s.rtt[QuantileP99][off] = clampUs(p.P99Us)
			s.rtt[QuantileMin][off] = clampUs(p.MinUs)
		}
	}

	s.workloads = map[Key]*Workload{}
	wl := func(k Key) *Workload {
		w := s.workloads[k]
		if w == nil {
			w = &Workload{Key: k, Planned: -1}
			s.workloads[k] = w
		}
		return w
	}
	for _, b := range in.Bindings {
		w := wl(b.Workload)
		w.Bound = true
		var total float64
		for _, c := range b.Clusters {
			if c.Replicas > 0 {
				total += float64(c.Replicas)
			}
		}
		for _, c := range b.Clusters {
			switch {
			case total > 0 && c.Replicas > 0:
				w.Placement = append(w.Placement, Share{Cluster: s.index[c.Name], Fraction: float64(c.Replicas) / total})
			case total == 0:
				// Non-workload resources (ConfigMaps, Services) and
				// Duplicated bindings may list clusters without replica
				// counts: every listed cluster holds the whole thing.
				w.Placement = append(w.Placement, Share{Cluster: s.index[c.Name], Fraction: 1 / float64(len(b.Clusters))})
			}
		}
		setBudget(w, b.Annotations)
		if b.DemandMilliCPU > 0 && !math.IsInf(b.DemandMilliCPU, 0) {
			w.DemandMilliCPU = b.DemandMilliCPU
		}
		if b.DemandMemoryBytes > 0 && !math.IsInf(b.DemandMemoryBytes, 0) {
			w.DemandMemoryBytes = b.DemandMemoryBytes
		}
	}
	for k, ann := range in.TemplateAnnotations {
		if _, ok := ann[BudgetAnnotation]; ok {
			// The template's annotation wins over the binding's.
			w := wl(k)
			w.Budget, w.BudgetError = 0, ""
			setBudget(w, ann)
		}
	}
	for _, t := range in.Traffic {
		w := wl(t.Workload)
		tr := &Traffic{ValidUntil: t.ValidUntil.UnixNano(), Samples: t.Samples}
		for _, p := range t.Peers {
			if !(p.BytesPerSecond > 0) {
				continue
			}
			e := PeerEdge{BytesPerSecond: p.BytesPerSecond}
			switch {
			case p.Workload != nil:
				e.Name, e.Workload = p.Workload.String(), *p.Workload
			default:
				e.Name = "service " + p.Service
			}
			if p.Workload != nil {
				if pw := s.workloads[*p.Workload]; pw != nil && len(pw.Placement) > 0 {
					e.Dist, e.Source = pw.Placement, PlacementBinding
				}
			}
			if e.Source == PlacementUnknown {
				e.Dist = observedDist(s, p.Pairs)
				if len(e.Dist) > 0 {
					e.Source = PlacementObserved
				}
			}
			tr.Peers = append(tr.Peers, e)
			tr.PeerBytesPerSecond += p.BytesPerSecond
		}
		byCluster := map[int32]int{}
		for _, c := range t.Clients {
			if !(c.BytesPerSecond > 0) {
				continue
			}
			i := s.index[c.Cluster]
			if j, ok := byCluster[i]; ok {
				tr.Clients[j].BytesPerSecond += c.BytesPerSecond
			} else {
				byCluster[i] = len(tr.Clients)
				tr.Clients = append(tr.Clients, ClientEdge{Cluster: i, BytesPerSecond: c.BytesPerSecond})
			}
			tr.ClientBytesPerSecond += c.BytesPerSecond
		}
		w.Traffic = tr
	}
	if opts.Plan {
		s.plan(in, opts, s.BuiltAt.UnixNano())
	}
	return s
}

// waiting reports whether k has a ResourceBinding that is not scheduled.
func (s *Snapshot) waiting(k Key) bool {
	w := s.workloads[k]
	return w != nil && w.Bound && len(w.Placement) == 0
}

// observedDist is where the measured traffic to a peer went, as fractions.
func observedDist(s *Snapshot, pairs []PairRate) []Share {
	var total float64
	by := map[int32]float64{}
	for _, p := range pairs {
		if p.BytesPerSecond > 0 {
			by[s.index[p.To]] += p.BytesPerSecond
			total += p.BytesPerSecond
		}
	}
	if total == 0 {
		return nil
	}
	out := make([]Share, 0, len(by))
	for c, v := range by {
		out = append(out, Share{Cluster: c, Fraction: v / total})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

func setBudget(w *Workload, ann map[string]string) {
	v, ok := ann[BudgetAnnotation]
	if !ok {
		return
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	switch {
	case err != nil:
		w.BudgetError = fmt.Sprintf("annotation %s=%q: %v", BudgetAnnotation, v, err)
	case d <= 0:
		w.BudgetError = fmt.Sprintf("annotation %s=%q: must be positive", BudgetAnnotation, v)
	default:
		w.Budget = d
	}
}

// maxRTTUs is the CRD's bound on every RTT field (60 s).
const maxRTTUs = 60_000_000

func clampUs(v int64) int32 {
	// The CRD bounds RTTs to 60 s; clamp anyway so a bad object cannot
	// overflow the int32 matrix.
	if v > maxRTTUs {
		return maxRTTUs
	}
	return int32(v)
}

// setEstimate stores an estimated entry, allocating the estimate
// matrices on the first.
func (s *Snapshot) setEstimate(off int, p PairLatency) {
	if s.estErr == nil {
		nn := s.n * s.n
		for q := range s.est {
			s.est[q] = make([]int32, nn)
		}
		s.estErr = make([]int32, nn)
		for i := range s.estErr {
			s.estErr[i] = -1
		}
	}
	s.est[QuantileP50][off] = clampUs(p.P50Us)
	s.est[QuantileP90][off] = clampUs(p.P90Us)
	s.est[QuantileP99][off] = clampUs(p.P99Us)
	s.est[QuantileMin][off] = clampUs(p.MinUs)
	s.estErr[off] = clampUs(p.ErrorUs)
}
