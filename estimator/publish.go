package estimator

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"

	"github.com/flowplace/flowplace/estimator/aggregate"
)

func typesUID(s string) types.UID { return types.UID(s) }

// PublishPolicy says when an object is worth a write.
type PublishPolicy struct {
	// ValidFor is how long a written object stays valid (validUntil =
	// write time + ValidFor). It is extended when less than half is left,
	// and only while data keeps arriving.
	ValidFor time.Duration
	// RelativeChange of a rate or RTT quantile that is worth a write
	// (e.g. 0.1 = 10%); smaller changes wait for the validity extension.
	// A sample count is worth a write once it has doubled or halved.
	RelativeChange float64
	// NoEstimates leaves pairs nobody measured absent instead of filling
	// them from network coordinates (see estimate.go).
	NoEstimates bool
}

func (p *PublishPolicy) setDefaults() {
	if p.ValidFor <= 0 {
		p.ValidFor = 5 * time.Minute
	}
	if p.RelativeChange <= 0 {
		p.RelativeChange = 0.1
	}
}

// Absolute floors under the relative change: below them a change is noise
// whatever its ratio.
const (
	floorRTTMicros     = 50
	floorBytesPerSec   = 1024
	floorMilliConnsSec = 100
)

// publisher turns snapshots into API objects.
type publisher struct {
	dc      dynamic.Interface
	res     *resolver
	policy  PublishPolicy
	manager string
	metrics *selfMetrics

	// estimates is only used by build, which one goroutine calls.
	estimates *rttFiller

	mu sync.Mutex
	// written caches what this process last wrote, by key, because the
	// informer may not have caught up with our own write by the next round.
	written map[string]*unstructured.Unstructured
	stats   PublishStats
}

// PublishStats counts what the publisher did.
type PublishStats struct {
	Rounds                                    int64
	Creates, StatusUpdates, Conflicts, Errors int64
	// SampleCountWrites are the status updates for a sample count alone
	// (doubled or halved since the last write, see samplesChanged).
	SampleCountWrites                 int64
	UnknownClusters, UnboundWorkloads int64 // in the last round
	// EstimatedPairs is the number of estimated entries published in the
	// last round (package coordinates).
	EstimatedPairs int64
}

func newPublisher(dc dynamic.Interface, res *resolver, policy PublishPolicy, manager string, m *selfMetrics) *publisher {
	policy.setDefaults()
	return &publisher{dc: dc, res: res, policy: policy, manager: manager, metrics: m, written: map[string]*unstructured.Unstructured{},
		estimates: &rttFiller{disabled: policy.NoEstimates}}
}

func (p *publisher) Stats() PublishStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// Every published number goes through clampInt (or micros): a float64
// converted to int64 beyond its range is undefined in Go (on amd64 it
// becomes -2^63), so values saturate at the schema's bound in float64
// first and are converted only once in range. NaN becomes 0.
func micros(seconds float64) int64 {
	return clampInt(math.Round(seconds*1e6), v1.MaxRTTMicroseconds)
}

func clampInt(v float64, hi int64) int64 {
	if !(v > 0) {
		return 0
	}
	if v >= float64(hi) {
		return hi
	}
	return int64(v)
}

// maxWindowSeconds is the schema's bound on windowSeconds.
const maxWindowSeconds = 86400

// desired is one object to publish.
type desired struct {
	key      string // for the written cache: "cl/<name>" or "wt/<ns>/<name>"
	obj      runtime.Object
	lastSeen time.Time
}

// build turns a snapshot into the objects it describes.
func (p *publisher) build(s *aggregate.Snapshot) []desired {
	now := metav1.NewTime(s.Now.Truncate(time.Second))
	fresh := func(samples float64) v1.Freshness {
		return v1.Freshness{
			ValidUntil:     metav1.NewTime(now.Add(p.policy.ValidFor)),
			LastUpdateTime: now,
			WindowSeconds:  min(max(s.WindowSeconds, 1), maxWindowSeconds),
			SampleCount:    clampInt(samples, math.MaxInt64),
		}
	}
	var out []desired
	var unknownClusters, unbound int64
	name := func(uid string) (string, bool) {
		c, ok := p.res.clusterByID(uid)
		if !ok {
			unknownClusters++
		}
		return c.Name, ok
	}
	type row struct {
		obj      *v1.ClusterLatency
		total    float64
		lastSeen time.Time
	}
	rows := map[string]*row{}
	rowOf := func(src string) *row {
		if r, ok := rows[src]; ok {
			return r
		}
		srcRef, ok := p.res.clusterByID(src)
		if !ok {
			unknownClusters++
			rows[src] = nil
			return nil
		}
		r := &row{obj: &v1.ClusterLatency{
			TypeMeta:   metav1.TypeMeta{APIVersion: v1.SchemeGroupVersion.String(), Kind: "ClusterLatency"},
			ObjectMeta: metav1.ObjectMeta{Name: srcRef.Name, OwnerReferences: []metav1.OwnerReference{ownerRef(ClusterGVR.GroupVersion().String(), "Cluster", srcRef.Name, srcRef.UID)}},
			Spec:       v1.ClusterLatencySpec{ClusterID: src},
		}}
		rows[src] = r
		return r
	}
	for src, peers := range s.Latency {
		r := rowOf(src)
		if r == nil {
			continue
		}
		for dst, st := range peers {
			dstName, ok := name(dst)
			if !ok {
				continue
			}
			pl := v1.PeerLatency{
				Cluster:         dstName,
				MinMicroseconds: micros(st.Min), P50Microseconds: micros(st.P50),
				P90Microseconds: micros(st.P90), P99Microseconds: micros(st.P99),
				SampleCount:    max(clampInt(st.Samples, math.MaxInt64), 1),
				LastSampleTime: metav1.NewTime(st.LastSeen.Truncate(time.Second)),
			}
			// Rounding and clamping keep the order the schema demands.
			pl.P50Microseconds = max(pl.P50Microseconds, pl.MinMicroseconds)
			pl.P90Microseconds = max(pl.P90Microseconds, pl.P50Microseconds)
			pl.P99Microseconds = max(pl.P99Microseconds, pl.P90Microseconds)
			r.obj.Status.Peers = append(r.obj.Status.Peers, pl)
			r.total += st.Samples
			if st.LastSeen.After(r.lastSeen) {
				r.lastSeen = st.LastSeen
			}
		}
	}
	// Estimates come after the measured entries, so that the bound on
	// peers drops estimates first.
	var estimated int64
	for _, e := range p.estimates.fill(s.Latency) {
		// Clusters Karmada does not know were counted with their
		// measurements; their estimates are only skipped.
		dst, okDst := p.res.clusterByID(e.dst)
		if _, okSrc := p.res.clusterByID(e.src); !okSrc || !okDst {
			continue
		}
		r := rowOf(e.src)
		if r == nil || len(r.obj.Status.Peers) >= v1.MaxPeerClusters {
			continue
		}
		dstName := dst.Name
		r.obj.Status.Peers = append(r.obj.Status.Peers, e.peerLatency(dstName))
		estimated++
		if e.lastSeen.After(r.lastSeen) {
			r.lastSeen = e.lastSeen
		}
	}
	for _, r := range rows {
		if r == nil || len(r.obj.Status.Peers) == 0 {
			continue
		}
		obj := r.obj
		slices.SortFunc(obj.Status.Peers, func(a, b v1.PeerLatency) int { return strings.Compare(a.Cluster, b.Cluster) })
		if len(obj.Status.Peers) > v1.MaxPeerClusters {
			obj.Status.Peers = obj.Status.Peers[:v1.MaxPeerClusters]
		}
		obj.Status.Freshness = fresh(r.total)
		out = append(out, desired{key: "cl/" + obj.Name, obj: obj, lastSeen: r.lastSeen})
	}
	for wk, ws := range s.Traffic {
		b, ok := p.res.binding(wk)
		if !ok {
			unbound++
			continue
		}
		obj := &v1.WorkloadTraffic{
			TypeMeta: metav1.TypeMeta{APIVersion: v1.SchemeGroupVersion.String(), Kind: "WorkloadTraffic"},
			ObjectMeta: metav1.ObjectMeta{Namespace: wk.Namespace, Name: b.Name,
				OwnerReferences: []metav1.OwnerReference{ownerRef(ResourceBindingGVR.GroupVersion().String(), "ResourceBinding", b.Name, b.UID)}},
			Spec: v1.WorkloadTrafficSpec{Workload: v1.WorkloadReference{APIVersion: b.APIVersion, Kind: wk.Kind, Name: wk.Name}},
		}
		var total float64
		for pk, pairs := range ws.Peers {
			pt := v1.PeerTraffic{}
			if pk.Kind != "" {
				pt.Workload = &v1.PeerWorkloadReference{Kind: pk.Kind, Namespace: pk.Namespace, Name: pk.Name}
				if pb, ok := p.res.binding(aggregate.WorkloadKey{Namespace: pk.Namespace, Kind: pk.Kind, Name: pk.Name}); ok {
					pt.Workload.APIVersion = pb.APIVersion
				}
			}
			if pk.ServiceName != "" {
				pt.Service = &v1.ServiceReference{Namespace: pk.ServiceNamespace, Name: pk.ServiceName}
			}
			for cp, r := range pairs {
				src, ok1 := name(cp.Src)
				dst, ok2 := name(cp.Dst)
				if !ok1 || !ok2 {
					continue
				}
				cpt := v1.ClusterPairTraffic{SourceCluster: src, DestinationCluster: dst, TrafficRates: rates(r)}
				pt.Clusters = append(pt.Clusters, cpt)
				pt.BytesPerSecond += cpt.BytesPerSecond
				total += r.Samples
			}
			if len(pt.Clusters) == 0 {
				continue
			}
			pt.BytesPerSecond = min(pt.BytesPerSecond, 1e13)
			slices.SortFunc(pt.Clusters, func(a, b v1.ClusterPairTraffic) int {
				return strings.Compare(a.SourceCluster+"/"+a.DestinationCluster, b.SourceCluster+"/"+b.DestinationCluster)
			})
			if len(pt.Clusters) > v1.MaxClusterPairs {
				pt.Clusters = pt.Clusters[:v1.MaxClusterPairs]
			}
			obj.Status.Peers = append(obj.Status.Peers, pt)
		}
		slices.SortFunc(obj.Status.Peers, func(a, b v1.PeerTraffic) int {
			if a.BytesPerSecond != b.BytesPerSecond {
				return -cmp.Compare(a.BytesPerSecond, b.BytesPerSecond)
			}
			return strings.Compare(peerID(a), peerID(b))
		})
		if len(obj.Status.Peers) > v1.MaxPeers {
			obj.Status.Peers = obj.Status.Peers[:v1.MaxPeers]
		}
		for cp, r := range ws.Clients {
			src, ok1 := name(cp.Src)
			dst, ok2 := name(cp.Dst)
			if !ok1 || !ok2 {
				continue
			}
			obj.Status.Clients = append(obj.Status.Clients, v1.ClientTraffic{ClientCluster: src, ServingCluster: dst, TrafficRates: rates(r)})
			total += r.Samples
		}
		slices.SortFunc(obj.Status.Clients, func(a, b v1.ClientTraffic) int {
			return strings.Compare(a.ClientCluster+"/"+a.ServingCluster, b.ClientCluster+"/"+b.ServingCluster)
		})
		if len(obj.Status.Clients) > v1.MaxClusterPairs {
			obj.Status.Clients = obj.Status.Clients[:v1.MaxClusterPairs]
		}
		if len(obj.Status.Peers) == 0 && len(obj.Status.Clients) == 0 {
			continue
		}
		obj.Status.Freshness = fresh(total)
		out = append(out, desired{key: "wt/" + wk.Namespace + "/" + b.Name, obj: obj, lastSeen: ws.LastSeen})
	}
	p.mu.Lock()
	p.stats.UnknownClusters, p.stats.UnboundWorkloads = unknownClusters, unbound
	p.stats.EstimatedPairs = estimated
	p.mu.Unlock()
	return out
}

func peerID(p v1.PeerTraffic) string {
	var b strings.Builder
	if p.Workload != nil {
		fmt.Fprintf(&b, "%s/%s/%s", p.Workload.Namespace, p.Workload.Kind, p.Workload.Name)
	}
	if p.Service != nil {
		fmt.Fprintf(&b, "|%s/%s", p.Service.Namespace, p.Service.Name)
	}
	return b.String()
}

func rates(r aggregate.Rates) v1.TrafficRates {
	t := v1.TrafficRates{
		BytesPerSecond:            clampInt(math.Round(r.BytesPerSecond), 1e13),
		MilliConnectionsPerSecond: clampInt(math.Round(r.ConnectionsPerSecond*1000), 1e12),
		SampleCount:               clampInt(r.Samples, math.MaxInt64),
	}
	if t.SampleCount > 0 {
		t.RTTP50Microseconds = micros(r.RTTP50)
	}
	return t
}

// changed reports whether a is meaningfully different from b.
func changedValue(a, b, rel float64, floor float64) bool {
	d := math.Abs(a - b)
	return d > floor && d > rel*math.Max(math.Abs(a), math.Abs(b))
}

// samplesChanged reports whether a sample count is worth a write. Readers
// trust a pair only from a number of samples on (the plugins' minSamples),
// and a count grows while the quantiles stay put: a count that has doubled
// or halved since the last write is a change, so a pair first written with
// few samples is rewritten once it has enough rather than at the validity
// extension. Less than that is not, so a steady window's count writes nothing.
func samplesChanged(a, b int64) bool {
	lo, hi := min(a, b), max(a, b)
	return hi > 0 && hi >= 2*lo
}

// latencyChanged reports whether the peers differ in number, identity or
// by peerChanged.
func latencyChanged(cur, want *v1.ClusterLatencyStatus, peerChanged func(c, w *v1.PeerLatency) bool) bool {
	if len(cur.Peers) != len(want.Peers) {
		return true
	}
	for i := range want.Peers {
		c, w := &cur.Peers[i], &want.Peers[i]
		if c.Cluster != w.Cluster || c.Estimated != w.Estimated || peerChanged(c, w) {
			return true
		}
	}
	return false
}

func peerValuesChanged(rel float64) func(c, w *v1.PeerLatency) bool {
	return func(c, w *v1.PeerLatency) bool {
		return changedValue(float64(c.ExpectedErrorMicroseconds), float64(w.ExpectedErrorMicroseconds), rel, floorRTTMicros) ||
			changedValue(float64(c.P50Microseconds), float64(w.P50Microseconds), rel, floorRTTMicros) ||
			changedValue(float64(c.P90Microseconds), float64(w.P90Microseconds), rel, floorRTTMicros) ||
			changedValue(float64(c.P99Microseconds), float64(w.P99Microseconds), rel, floorRTTMicros) ||
			changedValue(float64(c.MinMicroseconds), float64(w.MinMicroseconds), rel, floorRTTMicros)
	}
}

func peerSamplesChanged(c, w *v1.PeerLatency) bool {
	return samplesChanged(c.SampleCount, w.SampleCount)
}

func ratesValuesChanged(rel float64) func(c, w *v1.TrafficRates) bool {
	return func(c, w *v1.TrafficRates) bool { return ratesChanged(c, w, rel) }
}

func ratesSamplesChanged(c, w *v1.TrafficRates) bool {
	return samplesChanged(c.SampleCount, w.SampleCount)
}

func ratesChanged(c, w *v1.TrafficRates, rel float64) bool {
	return changedValue(float64(c.BytesPerSecond), float64(w.BytesPerSecond), rel, floorBytesPerSec) ||
		changedValue(float64(c.MilliConnectionsPerSecond), float64(w.MilliConnectionsPerSecond), rel, floorMilliConnsSec) ||
		changedValue(float64(c.RTTP50Microseconds), float64(w.RTTP50Microseconds), rel, floorRTTMicros) ||
		(c.SampleCount == 0) != (w.SampleCount == 0)
}

// trafficChanged reports whether the peers and clients differ in number,
// identity or by ratesChanged.
func trafficChanged(cur, want *v1.WorkloadTrafficStatus, ratesChanged func(c, w *v1.TrafficRates) bool) bool {
	if len(cur.Peers) != len(want.Peers) || len(cur.Clients) != len(want.Clients) {
		return true
	}
	// Peers are ordered by bytes, which may swap without a meaningful
	// change: compare by identity.
	byID := make(map[string]*v1.PeerTraffic, len(cur.Peers))
	for i := range cur.Peers {
		byID[peerID(cur.Peers[i])] = &cur.Peers[i]
	}
	for i := range want.Peers {
		w := &want.Peers[i]
		c := byID[peerID(*w)]
		if c == nil || len(c.Clusters) != len(w.Clusters) {
			return true
		}
		for j := range w.Clusters {
			if c.Clusters[j].SourceCluster != w.Clusters[j].SourceCluster || c.Clusters[j].DestinationCluster != w.Clusters[j].DestinationCluster ||
				ratesChanged(&c.Clusters[j].TrafficRates, &w.Clusters[j].TrafficRates) {
				return true
			}
		}
	}
	for i := range want.Clients {
		c, w := &cur.Clients[i], &want.Clients[i]
		if c.ClientCluster != w.ClientCluster || c.ServingCluster != w.ServingCluster || ratesChanged(&c.TrafficRates, &w.TrafficRates) {
			return true
		}
	}
	return false
}

// current returns the object as last seen: our own last write if the
// informer has not caught up with it, else the informer's copy.
func (p *publisher) current(d desired) *unstructured.Unstructured {
	p.mu.Lock()
	w := p.written[d.key]
	p.mu.Unlock()
	var inf cacheGetter = p.res.latencies.GetIndexer()
	k := strings.TrimPrefix(d.key, "cl/")
	if strings.HasPrefix(d.key, "wt/") {
		inf, k = p.res.traffics.GetIndexer(), strings.TrimPrefix(d.key, "wt/")
	}
	obj, ok, _ := inf.GetByKey(k)
	if !ok {
		return w
	}
	u := obj.(*unstructured.Unstructured)
	if w != nil && w.GetUID() == u.GetUID() && newerRV(w.GetResourceVersion(), u.GetResourceVersion()) {
		return w
	}
	return u
}

type cacheGetter interface {
	GetByKey(key string) (any, bool, error)
}

// newerRV compares resource versions as the integers etcd makes them;
// anything unparsable counts as not newer (the informer's copy wins).
func newerRV(a, b string) bool {
	if len(a) != len(b) {
		return len(a) > len(b)
	}
	return a > b
}

// Why an object with fresh validity is written.
const (
	reasonChanged     = "changed"
	reasonSampleCount = "sample count"
)

// decide returns whether to write d given the current object, and why.
func (p *publisher) decide(d desired, cur *unstructured.Unstructured, now time.Time) (bool, string) {
	if cur == nil {
		return true, "new"
	}
	validUntil, lastUpdate := freshnessOf(cur)
	if validUntil.IsZero() || lastUpdate.IsZero() {
		return true, "no status"
	}
	// Only data that is still arriving earns a longer validity or a new
	// value: what the agents stopped reporting must go stale on its own.
	if now.Sub(d.lastSeen) > p.policy.ValidFor {
		return false, ""
	}
	if validUntil.Sub(now) < p.policy.ValidFor/2 {
		return true, "extend validity"
	}
	switch want := d.obj.(type) {
	case *v1.ClusterLatency:
		var c v1.ClusterLatency
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cur.Object, &c); err != nil {
			return true, "unreadable"
		}
		if latencyChanged(&c.Status, &want.Status, peerValuesChanged(p.policy.RelativeChange)) {
			return true, reasonChanged
		}
		if latencyChanged(&c.Status, &want.Status, peerSamplesChanged) {
			return true, reasonSampleCount
		}
	case *v1.WorkloadTraffic:
		var c v1.WorkloadTraffic
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(cur.Object, &c); err != nil {
			return true, "unreadable"
		}
		if trafficChanged(&c.Status, &want.Status, ratesValuesChanged(p.policy.RelativeChange)) {
			return true, reasonChanged
		}
		if trafficChanged(&c.Status, &want.Status, ratesSamplesChanged) {
			return true, reasonSampleCount
		}
	}
	return false, ""
}

func freshnessOf(u *unstructured.Unstructured) (validUntil, lastUpdate time.Time) {
	vs, _, _ := unstructured.NestedString(u.Object, "status", "validUntil")
	ls, _, _ := unstructured.NestedString(u.Object, "status", "lastUpdateTime")
	validUntil, _ = time.Parse(time.RFC3339, vs)
	lastUpdate, _ = time.Parse(time.RFC3339, ls)
	return validUntil, lastUpdate
}

// publish writes what changed meaningfully; it returns the number of
// writes and the first error (it goes on with the other objects).
func (p *publisher) publish(ctx context.Context, s *aggregate.Snapshot) (int, error) {
	var firstErr error
	n := 0
	defer p.count(func(s *PublishStats) { s.Rounds++ })
	built := p.build(s)
	if p.metrics.modelOn {
		inAPI := map[string][]*unstructured.Unstructured{
			"ClusterLatency":  unstructuredList(p.res.latencies.GetIndexer().List()),
			"WorkloadTraffic": unstructuredList(p.res.traffics.GetIndexer().List()),
		}
		p.metrics.model.Store(buildModelView(built, inAPI, s.Now, p.metrics.modelPairs))
	}
	for _, d := range built {
		cur := p.current(d)
		ok, why := p.decide(d, cur, s.Now)
		if !ok {
			continue
		}
		if err := p.write(ctx, d, cur); err != nil {
			klog.ErrorS(err, "Publishing failed", "object", d.key, "reason", why)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		n++
		if why == reasonSampleCount {
			p.count(func(s *PublishStats) { s.SampleCountWrites++ })
		}
		klog.V(3).InfoS("Published", "object", d.key, "reason", why)
	}
	return n, firstErr
}

func unstructuredList(objs []any) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

func (p *publisher) resource(d desired) dynamic.ResourceInterface {
	switch o := d.obj.(type) {
	case *v1.WorkloadTraffic:
		return p.dc.Resource(v1.WorkloadTrafficResource).Namespace(o.Namespace)
	default:
		return p.dc.Resource(v1.ClusterLatencyResource)
	}
}

func kindOf(d desired) string { return d.obj.GetObjectKind().GroupVersionKind().Kind }

// write creates the object if needed, then writes its status through the
// status subresource with optimistic concurrency: on a conflict (another
// writer, e.g. a previous leader, or our cache was behind) it re-reads the
// object and writes again. Status is wholly the estimator's, so the
// re-read only supplies the resourceVersion.
func (p *publisher) write(ctx context.Context, d desired, cur *unstructured.Unstructured) error {
	want, err := runtime.DefaultUnstructuredConverter.ToUnstructured(d.obj)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", d.key, err)
	}
	r := p.resource(d)
	kind := kindOf(d)
	status := want["status"]
	if cur == nil {
		start := time.Now()
		obj := &unstructured.Unstructured{Object: want}
		delete(obj.Object, "status")
		created, err := r.Create(ctx, obj, metav1.CreateOptions{FieldManager: p.manager})
		switch {
		case apierrors.IsAlreadyExists(err):
			// Created meanwhile (by a previous leader, or before our cache
			// saw it): fall through to the status write on a fresh read.
			p.metrics.recordWrite(ctx, kind, "create", "conflict", time.Since(start))
		case err != nil:
			p.metrics.recordWrite(ctx, kind, "create", "error", time.Since(start))
			p.count(func(s *PublishStats) { s.Errors++ })
			return fmt.Errorf("creating %s: %w", d.key, err)
		default:
			p.metrics.recordWrite(ctx, kind, "create", "ok", time.Since(start))
			p.count(func(s *PublishStats) { s.Creates++ })
			cur = created
		}
	}
	start := time.Now()
	attempt := 0
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		attempt++
		if cur == nil || attempt > 1 {
			fresh, err := r.Get(ctx, objName(d), metav1.GetOptions{})
			if err != nil {
				return err
			}
			cur = fresh
		}
		obj := cur.DeepCopy()
		obj.Object["status"] = status
		updated, err := r.UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: p.manager})
		if apierrors.IsConflict(err) {
			p.count(func(s *PublishStats) { s.Conflicts++ })
			return err
		}
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.written[d.key] = updated
		p.mu.Unlock()
		return nil
	})
	outcome := "ok"
	if err != nil {
		outcome = "error"
		p.count(func(s *PublishStats) { s.Errors++ })
	} else {
		p.count(func(s *PublishStats) { s.StatusUpdates++ })
	}
	p.metrics.recordWrite(ctx, kind, "update_status", outcome, time.Since(start))
	if err != nil {
		return fmt.Errorf("writing status of %s: %w", d.key, err)
	}
	return nil
}

func objName(d desired) string {
	return d.obj.(metav1.Object).GetName()
}

func (p *publisher) count(f func(*PublishStats)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

// resume seeds the aggregator from the published objects that are still
// valid, so that a new leader starts from the last published state rather
// than from nothing (and does not publish a thin first window over it).
func (p *publisher) resume(agg *aggregate.Aggregator, now time.Time) (latencies, traffics int) {
	for _, obj := range p.res.latencies.GetIndexer().List() {
		var cl v1.ClusterLatency
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, &cl); err != nil {
			klog.ErrorS(err, "Skipping unreadable ClusterLatency on resume", "name", obj.(*unstructured.Unstructured).GetName())
			continue
		}
		if !cl.Status.ValidUntil.After(now) {
			continue
		}
		for _, pl := range cl.Status.Peers {
			if pl.Estimated || pl.SampleCount <= 0 {
				// An estimate is recomputed from the measurements; restored
				// as a histogram it would count as measured.
				continue
			}
			dst, ok := p.res.clusterByName(pl.Cluster)
			if !ok {
				continue
			}
			agg.RestorePair(cl.Spec.ClusterID, dst.ID, aggregate.PairStat{
				Min: float64(pl.MinMicroseconds) / 1e6, P50: float64(pl.P50Microseconds) / 1e6,
				P90: float64(pl.P90Microseconds) / 1e6, P99: float64(pl.P99Microseconds) / 1e6,
				Samples: float64(pl.SampleCount), LastSeen: pl.LastSampleTime.Time,
			}, cl.Status.LastUpdateTime.Time)
		}
		latencies++
	}
	for _, obj := range p.res.traffics.GetIndexer().List() {
		var wt v1.WorkloadTraffic
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.(*unstructured.Unstructured).Object, &wt); err != nil {
			klog.ErrorS(err, "Skipping unreadable WorkloadTraffic on resume", "name", obj.(*unstructured.Unstructured).GetName())
			continue
		}
		st := &wt.Status
		if !st.ValidUntil.After(now) {
			continue
		}
		wk := aggregate.WorkloadKey{Namespace: wt.Namespace, Kind: wt.Spec.Workload.Kind, Name: wt.Spec.Workload.Name}
		window := time.Duration(st.WindowSeconds) * time.Second
		asOf := st.LastUpdateTime.Time
		uid := func(name string) (string, bool) {
			c, ok := p.res.clusterByName(name)
			return c.ID, ok
		}
		for _, pt := range st.Peers {
			pk := aggregate.PeerKey{}
			if pt.Workload != nil {
				pk.Namespace, pk.Kind, pk.Name = pt.Workload.Namespace, pt.Workload.Kind, pt.Workload.Name
			}
			if pt.Service != nil {
				pk.ServiceNamespace, pk.ServiceName = pt.Service.Namespace, pt.Service.Name
			}
			for _, c := range pt.Clusters {
				src, ok1 := uid(c.SourceCluster)
				dst, ok2 := uid(c.DestinationCluster)
				if ok1 && ok2 {
					agg.RestoreFlow("client", wk, pk, aggregate.ClusterPair{Src: src, Dst: dst}, restoredRates(c.TrafficRates), window, asOf, asOf)
				}
			}
		}
		for _, c := range st.Clients {
			src, ok1 := uid(c.ClientCluster)
			dst, ok2 := uid(c.ServingCluster)
			if ok1 && ok2 {
				agg.RestoreFlow("server", wk, aggregate.PeerKey{}, aggregate.ClusterPair{Src: src, Dst: dst}, restoredRates(c.TrafficRates), window, asOf, asOf)
			}
		}
		traffics++
	}
	return latencies, traffics
}

func restoredRates(t v1.TrafficRates) aggregate.Rates {
	return aggregate.Rates{
		BytesPerSecond:       float64(t.BytesPerSecond),
		ConnectionsPerSecond: float64(t.MilliConnectionsPerSecond) / 1000,
		RTTP50:               float64(t.RTTP50Microseconds) / 1e6,
		Samples:              float64(t.SampleCount),
	}
}
