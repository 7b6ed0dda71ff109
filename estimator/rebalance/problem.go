package rebalance

import (
	"math"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

// Skip reasons: why a running workload is not movable this round. It
// stays in the problem, fixed where it runs, when others talk to it.
const (
	ReasonNoResource     = "no_resource"     // binding without spec.resource apiVersion/kind/name
	ReasonUnknownCluster = "unknown_cluster" // binding targets a cluster Karmada does not know
	ReasonNoTraffic      = "no_traffic"      // no fresh WorkloadTraffic
	ReasonDivided        = "divided"         // replicas in more than one cluster
	ReasonOtherScheduler = "other_scheduler" // placed by a scheduler other than flowplace's
	ReasonUnbound        = "unbound"         // WorkloadTraffic without a scheduled ResourceBinding
)

// bindingMirror is the part of work.karmada.io/v1alpha2 ResourceBinding
// read here (JSON names from Karmada's CRD; the root module never imports
// Karmada).
type bindingMirror struct {
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Resource struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Namespace  string `json:"namespace,omitempty"`
			Name       string `json:"name,omitempty"`
		} `json:"resource"`
		Replicas            int32 `json:"replicas,omitempty"`
		ReplicaRequirements *struct {
			ResourceRequest corev1.ResourceList `json:"resourceRequest,omitempty"`
		} `json:"replicaRequirements,omitempty"`
		Clusters []struct {
			Name     string `json:"name"`
			Replicas int32  `json:"replicas,omitempty"`
		} `json:"clusters,omitempty"`
		SchedulerName string `json:"schedulerName,omitempty"`
	} `json:"spec"`
}

// demand is what the whole workload requests of r: replicas x the
// per-replica request, in milli-cores for CPU and bytes otherwise.
func (b *bindingMirror) demand(r corev1.ResourceName) float64 {
	if b.Spec.ReplicaRequirements == nil || b.Spec.Replicas <= 0 {
		return 0
	}
	q, ok := b.Spec.ReplicaRequirements.ResourceRequest[r]
	if !ok {
		return 0
	}
	return float64(b.Spec.Replicas) * amount(r, q)
}

func amount(r corev1.ResourceName, q resource.Quantity) float64 {
	if r == corev1.ResourceCPU {
		return float64(q.MilliValue())
	}
	return q.AsApproximateFloat64()
}

// clusterMirror is the part of cluster.karmada.io/v1alpha1 Cluster read here.
type clusterMirror struct {
	metav1.ObjectMeta `json:"metadata"`
	Status            struct {
		Conditions      []metav1.Condition `json:"conditions,omitempty"`
		ResourceSummary *struct {
			Allocatable corev1.ResourceList `json:"allocatable,omitempty"`
			Allocating  corev1.ResourceList `json:"allocating,omitempty"`
			Allocated   corev1.ResourceList `json:"allocated,omitempty"`
		} `json:"resourceSummary,omitempty"`
	} `json:"status,omitempty"`
}

// available is allocatable - allocated - allocating of r, as Karmada's
// general estimator computes it; +Inf when the cluster does not report r.
func (c *clusterMirror) available(r corev1.ResourceName) float64 {
	rs := c.Status.ResourceSummary
	if rs == nil {
		return plan.Unconstrained
	}
	alloc, ok := rs.Allocatable[r]
	if !ok {
		return plan.Unconstrained
	}
	free := amount(r, alloc)
	if q, ok := rs.Allocated[r]; ok {
		free -= amount(r, q)
	}
	if q, ok := rs.Allocating[r]; ok {
		free -= amount(r, q)
	}
	return max(free, 0)
}

// ready is false only when the Cluster says Ready=False or Unknown: a
// cluster that reports no conditions (yet) is not refused for it.
func (c *clusterMirror) ready() bool {
	for _, cond := range c.Status.Conditions {
		if cond.Type == "Ready" {
			return cond.Status == metav1.ConditionTrue
		}
	}
	return true
}

// bindingName is Karmada's names.GenerateBindingName (as estimator's
// BindingName; repeated because estimator imports this package).
func bindingName(kind, name string) string {
	return strings.ToLower(strings.ReplaceAll(name, ":", ".") + "-" + kind)
}

// inputs are the API objects of one round.
type inputs struct {
	clusters  []clusterMirror
	bindings  []bindingMirror
	traffic   []v1.WorkloadTraffic
	latencies []v1.ClusterLatency
}

// workload is one ResourceBinding (or WorkloadTraffic without one) in the
// problem.
type workload struct {
	key      string // binding namespace/name
	node     int
	movable  bool
	current  int // cluster of a movable workload
	binding  *bindingMirror
	shares   []plan.Share
	demand   plan.Resources
	clients  map[int]float64
	hasTraff bool
	inProb   bool // has a node in the problem
}

// built is a planning problem over the running workloads, with what the
// advisor needs to map its result back.
type built struct {
	p        plan.Problem
	names    []string // cluster names by index
	member   []bool   // a Karmada Cluster, ready
	actual   []plan.Resources
	nodes    []*workload // by node index; nil for a service peer
	byKey    map[string]*workload
	skipped  map[string][]string // reason -> workload keys
	linkMs   []float64           // the plan's link cost: mean RTT of both directions
	current  []int               // the current assignment (-1 for fixed nodes)
	movables []int
}

// build turns one round's objects into a plan.Problem. Unknown values
// never fail the round: what cannot be used is left out with a reason.
func build(in inputs, now time.Time, q string, minSamples int64, schedulerName string) *built {
	b := &built{byKey: map[string]*workload{}, skipped: map[string][]string{}}
	index := map[string]int{}
	add := func(name string) int {
		if i, ok := index[name]; ok {
			return i
		}
		i := len(b.names)
		index[name] = i
		b.names = append(b.names, name)
		return i
	}
	cl := append([]clusterMirror(nil), in.clusters...)
	sort.Slice(cl, func(i, j int) bool { return cl[i].Name < cl[j].Name })
	known := map[string]*clusterMirror{}
	for i := range cl {
		add(cl[i].Name)
		known[cl[i].Name] = &cl[i]
	}
	// Clusters only named by measurements (client clusters that are not
	// members) still get an index: their traffic costs RTT.
	for _, l := range in.latencies {
		add(l.Name)
		for _, p := range l.Status.Peers {
			add(p.Cluster)
		}
	}
	for _, t := range in.traffic {
		for _, p := range t.Status.Peers {
			for _, c := range p.Clusters {
				add(c.SourceCluster)
				add(c.DestinationCluster)
			}
		}
		for _, c := range t.Status.Clients {
			add(c.ClientCluster)
			add(c.ServingCluster)
		}
	}
	for _, rb := range in.bindings {
		for _, c := range rb.Spec.Clusters {
			add(c.Name)
		}
	}
	n := len(b.names)
	b.p.Clusters = n
	b.member = make([]bool, n)
	b.p.Free = make([]plan.Resources, n)
	b.actual = make([]plan.Resources, n)
	for c, name := range b.names {
		m := known[name]
		switch {
		case m == nil || !m.ready():
			// Nothing is planned into a cluster Karmada cannot place in.
			b.p.Free[c] = plan.Resources{}
		default:
			b.member[c] = true
			b.p.Free[c] = plan.Resources{m.available(corev1.ResourceCPU), m.available(corev1.ResourceMemory)}
		}
		b.actual[c] = b.p.Free[c]
	}
	b.p.RTTMs, b.linkMs = rttMatrix(in.latencies, index, n, now, q, minSamples)

	fresh := map[string]*v1.WorkloadTraffic{}
	for i := range in.traffic {
		t := &in.traffic[i]
		if now.Before(t.Status.ValidUntil.Time) {
			fresh[t.Namespace+"/"+t.Name] = t
		}
	}
	newNode := func(w *workload) int {
		w.node, w.inProb = len(b.p.Nodes), true
		nd := plan.Node{Demand: w.demand}
		if !w.movable {
			nd.Fixed = w.shares
		}
		b.p.Nodes = append(b.p.Nodes, nd)
		b.nodes = append(b.nodes, w)
		cur := -1
		if w.movable {
			cur = w.current
			b.movables = append(b.movables, w.node)
		}
		b.current = append(b.current, cur)
		return w.node
	}
	skip := func(reason, key string) { b.skipped[reason] = append(b.skipped[reason], key) }

	bindings := append([]bindingMirror(nil), in.bindings...)
	sort.Slice(bindings, func(i, j int) bool {
		return bindings[i].Namespace+"/"+bindings[i].Name < bindings[j].Namespace+"/"+bindings[j].Name
	})
	for i := range bindings {
		rb := &bindings[i]
		if len(rb.Spec.Clusters) == 0 {
			continue // not running anywhere yet: the scheduler's business
		}
		w := &workload{key: rb.Namespace + "/" + rb.Name, binding: rb,
			demand: plan.Resources{rb.demand(corev1.ResourceCPU), rb.demand(corev1.ResourceMemory)}}
		var total float64
		for _, c := range rb.Spec.Clusters {
			total += float64(max(c.Replicas, 0))
		}
		unknown := false
		for _, c := range rb.Spec.Clusters {
			if known[c.Name] == nil {
				unknown = true
			}
			f := 1 / float64(len(rb.Spec.Clusters))
			if total > 0 {
				f = float64(max(c.Replicas, 0)) / total
			}
			if f > 0 {
				w.shares = append(w.shares, plan.Share{Cluster: index[c.Name], Fraction: f})
			}
		}
		_, w.hasTraff = fresh[w.key]
		res := rb.Spec.Resource
		switch {
		case res.APIVersion == "" || res.Kind == "" || res.Name == "" ||
			bindingName(res.Kind, res.Name) != rb.Name || res.Namespace != "" && res.Namespace != rb.Namespace:
			// Nothing to name in a WorkloadRebalancer, or a name that is
			// not the workload whose traffic this is.
			skip(ReasonNoResource, w.key)
		case unknown:
			skip(ReasonUnknownCluster, w.key)
		case !w.hasTraff:
			skip(ReasonNoTraffic, w.key)
		case len(rb.Spec.Clusters) > 1:
			skip(ReasonDivided, w.key)
		case schedulerName != "" && rb.Spec.SchedulerName != schedulerName:
			skip(ReasonOtherScheduler, w.key)
		default:
			w.movable, w.current = true, index[rb.Spec.Clusters[0].Name]
			w.shares = []plan.Share{{Cluster: w.current, Fraction: 1}}
		}
		b.byKey[w.key] = w
	}

	// Nodes in a stable order: the traffic objects, then their peers.
	keys := make([]string, 0, len(fresh))
	for k := range fresh {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	nodeOf := func(key string, observed []plan.Share) int {
		w := b.byKey[key]
		if w == nil {
			// A workload Karmada does not place: where it was observed is
			// where it stays.
			w = &workload{key: key, shares: observed}
			b.byKey[key] = w
		}
		if !w.inProb {
			newNode(w)
		}
		return w.node
	}
	inbound := map[string]map[int]float64{}
	for _, k := range keys {
		t := fresh[k]
		src := observedShares(t, index)
		if b.byKey[k] == nil {
			skip(ReasonUnbound, k)
		}
		from := nodeOf(k, src)
		fw := b.nodes[from]
		for _, p := range t.Status.Peers {
			bps := float64(p.BytesPerSecond)
			if !(bps > 0) {
				continue
			}
			dst := peerShares(p, index)
			var to int
			if p.Workload != nil {
				pk := p.Workload.Namespace + "/" + bindingName(p.Workload.Kind, p.Workload.Name)
				if b.byKey[pk] == nil && len(dst) == 0 {
					continue
				}
				to = nodeOf(pk, dst)
				if inbound[pk] == nil {
					inbound[pk] = map[int]float64{}
				}
				for _, sh := range fw.shares {
					inbound[pk][sh.Cluster] += bps * sh.Fraction
				}
			} else {
				if len(dst) == 0 {
					continue
				}
				to = len(b.p.Nodes)
				b.p.Nodes = append(b.p.Nodes, plan.Node{Fixed: dst})
				b.nodes = append(b.nodes, nil)
				b.current = append(b.current, -1)
			}
			if to != from {
				b.p.Edges = append(b.p.Edges, plan.Edge{A: from, B: to, BytesPerSecond: bps})
			}
		}
	}
	// Client traffic, less what callers in the problem already send as
	// edges (the server side measures both as clients).
	for _, k := range keys {
		w := b.byKey[k]
		t := fresh[k]
		by := map[int]float64{}
		for _, c := range t.Status.Clients {
			if c.BytesPerSecond > 0 {
				by[index[c.ClientCluster]] += float64(c.BytesPerSecond)
			}
		}
		cs := make([]int, 0, len(by))
		for c := range by {
			cs = append(cs, c)
		}
		sort.Ints(cs)
		w.clients = map[int]float64{}
		for _, c := range cs {
			if v := by[c] - inbound[k][c]; v > 0 {
				w.clients[c] = v
				b.p.Nodes[w.node].External = append(b.p.Nodes[w.node].External, plan.Load{Cluster: c, BytesPerSecond: v})
			}
		}
	}
	// The considered workloads are re-planned: what they use is free to
	// them.
	for _, u := range b.movables {
		w := b.nodes[u]
		for r, v := range w.demand {
			if v > 0 && !math.IsInf(b.p.Free[w.current][r], 0) {
				b.p.Free[w.current][r] += v
			}
		}
	}
	b.p.Start = append([]int(nil), b.current...)
	return b
}

// observedShares is where a workload's own replicas were seen (the source
// clusters of its peer traffic, the serving clusters of its clients).
func observedShares(t *v1.WorkloadTraffic, index map[string]int) []plan.Share {
	by := map[int]float64{}
	for _, p := range t.Status.Peers {
		for _, c := range p.Clusters {
			by[index[c.SourceCluster]] += float64(c.BytesPerSecond)
		}
	}
	for _, c := range t.Status.Clients {
		by[index[c.ServingCluster]] += float64(c.BytesPerSecond)
	}
	return normalize(by)
}

// peerShares is where a peer's replicas answered.
func peerShares(p v1.PeerTraffic, index map[string]int) []plan.Share {
	by := map[int]float64{}
	for _, c := range p.Clusters {
		by[index[c.DestinationCluster]] += float64(c.BytesPerSecond)
	}
	return normalize(by)
}

func normalize(by map[int]float64) []plan.Share {
	var total float64
	for _, v := range by {
		if v > 0 {
			total += v
		}
	}
	if total == 0 {
		return nil
	}
	out := make([]plan.Share, 0, len(by))
	for c, v := range by {
		if v > 0 {
			out = append(out, plan.Share{Cluster: c, Fraction: v / total})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out
}

// rttMatrix is the fleet's RTT matrix (ms) at quantile q from the fresh
// ClusterLatency objects, filled everywhere so that the plan and the noise
// band price the same numbers: measured (either direction) first, then
// the estimator's estimates, then 0 within a cluster and the largest known
// RTT across (an unmeasured pair must not look free). link is the plan's
// cost of a byte on a pair: the mean of both directions.
func rttMatrix(rows []v1.ClusterLatency, index map[string]int, n int, now time.Time, q string, minSamples int64) (rtt, link []float64) {
	meas := make([]float64, n*n)
	est := make([]float64, n*n)
	for i := range meas {
		meas[i], est[i] = -1, -1
	}
	pick := func(p v1.PeerLatency) int64 {
		switch q {
		case "min":
			return p.MinMicroseconds
		case "p90":
			return p.P90Microseconds
		case "p99":
			return p.P99Microseconds
		}
		return p.P50Microseconds
	}
	for _, r := range rows {
		if !now.Before(r.Status.ValidUntil.Time) {
			continue
		}
		a := index[r.Name]
		for _, p := range r.Status.Peers {
			v := float64(pick(p)) / 1000
			if !(v >= 0) {
				continue
			}
			off := a*n + index[p.Cluster]
			switch {
			case p.Estimated:
				est[off] = v
			case p.SampleCount >= max(minSamples, 1):
				meas[off] = v
			}
		}
	}
	var worst float64
	for i := range meas {
		worst = math.Max(worst, math.Max(meas[i], est[i]))
	}
	rtt = make([]float64, n*n)
	for a := range n {
		for b := range n {
			v := meas[a*n+b]
			for _, c := range []float64{meas[b*n+a], est[a*n+b], est[b*n+a]} {
				if v < 0 {
					v = c
				}
			}
			if v < 0 {
				v = worst
				if a == b {
					v = 0
				}
			}
			rtt[a*n+b] = v
		}
	}
	link = make([]float64, n*n)
	for a := range n {
		for b := range n {
			link[a*n+b] = (rtt[a*n+b] + rtt[b*n+a]) / 2
		}
	}
	return rtt, link
}
