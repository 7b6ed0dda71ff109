// Package events tells operators why flowplace's plugins placed a binding:
// one Kubernetes Event per scheduling attempt on the ResourceBinding, with
// the clusters LatencyBudget excluded (and why) and each cluster's expected
// cost from TrafficLocality, cheapest first; and the same decisions as
// metrics (metrics.go), for dashboards.
//
// Karmada calls Filter and Score once per cluster and NormalizeScore without
// the binding, so no single call sees a whole attempt. The Recorder collects
// the verdicts per binding and writes the Event once the binding has been
// quiet for a moment (Quiet): one readable Event instead of one per cluster.
package events

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
)

const (
	// Reason of the Events written.
	Reason = "FlowplacePlacement"
	// Quiet is how long a binding gets no verdict before its attempt is
	// considered over. Karmada scores all clusters of an attempt in one
	// go, microseconds apart.
	Quiet = 500 * time.Millisecond
	// MaxMessage bounds an Event's message (events.k8s.io limits notes to
	// 1 kB; core Events have no limit but kubectl shows them on one line).
	MaxMessage = 1024
	// shownCosts is how many cluster costs the message lists.
	shownCosts = 5
)

// UIDs resolves a binding's UID (so the Event is attached to the object
// kubectl describe shows); false when unknown.
type UIDs func(model.Key) (types.UID, bool)

// Recorder collects verdicts and writes Events. Its methods are safe for
// concurrent use; the zero value is not usable (use New). A nil *Recorder
// records nothing.
type Recorder struct {
	rec     record.EventRecorder
	uids    UIDs
	now     func() time.Time
	metrics *decisionMetrics

	mu      sync.Mutex
	pending map[model.Key]*attempt
}

// attempt holds the latest verdict per cluster: Karmada may schedule a
// binding again within Quiet (e.g. after its own status patch), and the
// Event then describes the last attempt rather than listing clusters twice.
type attempt struct {
	last     time.Time
	excluded map[string]latencybudget.Verdict
	scored   map[string]trafficlocality.Result
}

type exclusion struct {
	cluster, reason string
	cause           latencybudget.Cause
}

type score struct {
	cluster string
	res     trafficlocality.Result
}

// New returns a Recorder writing Events through rec (nil: none) and the
// decision metrics to meter (nil: none). uids may be nil; now nil means
// time.Now.
func New(rec record.EventRecorder, uids UIDs, now func() time.Time, meter metric.Meter) (*Recorder, error) {
	if now == nil {
		now = time.Now
	}
	r := &Recorder{rec: rec, uids: uids, now: now, pending: map[model.Key]*attempt{}}
	if meter != nil {
		var err error
		if r.metrics, err = newDecisionMetrics(meter); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Excluded records that LatencyBudget excluded cluster for k with v.
func (r *Recorder) Excluded(k model.Key, cluster string, v latencybudget.Verdict) {
	if r == nil {
		return
	}
	r.mu.Lock()
	a := r.attempt(k)
	delete(a.scored, cluster)
	a.excluded[cluster] = v
	r.mu.Unlock()
}

// Scored records TrafficLocality's result for k in cluster.
func (r *Recorder) Scored(k model.Key, cluster string, res trafficlocality.Result) {
	if r == nil {
		return
	}
	r.mu.Lock()
	a := r.attempt(k)
	delete(a.excluded, cluster)
	a.scored[cluster] = res
	r.mu.Unlock()
}

func (r *Recorder) attempt(k model.Key) *attempt {
	a := r.pending[k]
	if a == nil {
		a = &attempt{excluded: map[string]latencybudget.Verdict{}, scored: map[string]trafficlocality.Result{}}
		r.pending[k] = a
	}
	a.last = r.now()
	return a
}

// Run flushes quiet attempts until ctx is done.
func (r *Recorder) Run(ctx context.Context) {
	t := time.NewTicker(Quiet / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Flush(false)
		}
	}
}

// Flush writes an Event for every attempt quiet for Quiet (all of them when
// force is set), counts it in the metrics, and returns how many it wrote.
func (r *Recorder) Flush(force bool) int {
	now := r.now()
	r.mu.Lock()
	var done []model.Key
	var attempts []*attempt
	for k, a := range r.pending {
		if force || now.Sub(a.last) >= Quiet {
			done = append(done, k)
			attempts = append(attempts, a)
			delete(r.pending, k)
		}
	}
	r.mu.Unlock()
	for i, k := range done {
		a := attempts[i]
		var excluded []exclusion
		for c, v := range a.excluded {
			excluded = append(excluded, exclusion{c, v.Reason, v.Cause})
		}
		slices.SortFunc(excluded, func(x, y exclusion) int { return strings.Compare(x.cluster, y.cluster) })
		var scored []score
		for c, res := range a.scored {
			scored = append(scored, score{c, res})
		}
		slices.SortFunc(scored, func(x, y score) int { return strings.Compare(x.cluster, y.cluster) })
		r.metrics.record(excluded, scored)
		if r.rec != nil {
			r.rec.Event(r.reference(k), corev1.EventTypeNormal, Reason, message(excluded, scored))
		}
	}
	return len(done)
}

// reference is the ResourceBinding (ClusterResourceBinding when k has no
// namespace) the Event is about.
func (r *Recorder) reference(k model.Key) *corev1.ObjectReference {
	ref := &corev1.ObjectReference{APIVersion: "work.karmada.io/v1alpha2", Kind: "ResourceBinding", Namespace: k.Namespace, Name: k.Name}
	if k.Namespace == "" {
		ref.Kind = "ClusterResourceBinding"
	}
	if r.uids != nil {
		ref.UID, _ = r.uids(k)
	}
	return ref
}

// message summarizes one attempt (verdicts in cluster order): costs
// cheapest first (at most five), neutral clusters with their reason, then
// exclusions with theirs.
func message(excluded []exclusion, scored []score) string {
	var b strings.Builder
	costed := slices.DeleteFunc(slices.Clone(scored), func(s score) bool { return s.res.Reason != trafficlocality.ReasonCost })
	slices.SortStableFunc(costed, func(x, y score) int {
		switch {
		case x.res.Cost < y.res.Cost:
			return -1
		case x.res.Cost > y.res.Cost:
			return 1
		}
		return strings.Compare(x.cluster, y.cluster)
	})
	if len(costed) > 0 {
		b.WriteString("TrafficLocality expected cost (B/s*ms): ")
		for i, s := range costed {
			if i == shownCosts {
				fmt.Fprintf(&b, ", and %d more", len(costed)-shownCosts)
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "%s %.3g", s.cluster, s.res.Cost)
		}
	}
	// Neutral verdicts grouped by reason: usually one reason for all.
	byReason := map[trafficlocality.Reason][]string{}
	var reasons []trafficlocality.Reason
	for _, s := range scored {
		if s.res.Reason == trafficlocality.ReasonCost {
			continue
		}
		if _, ok := byReason[s.res.Reason]; !ok {
			reasons = append(reasons, s.res.Reason)
		}
		byReason[s.res.Reason] = append(byReason[s.res.Reason], s.cluster)
	}
	for _, reason := range reasons {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "TrafficLocality %s: %s", reason, strings.Join(byReason[reason], ", "))
	}
	for _, e := range excluded {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "LatencyBudget excluded %s: %s", e.cluster, e.reason)
	}
	msg := b.String()
	if len(msg) > MaxMessage {
		msg = strings.ToValidUTF8(msg[:MaxMessage-3], "") + "..."
	}
	return msg
}
