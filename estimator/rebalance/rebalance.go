// Package rebalance holds the estimator's rebalance advisor (opt-in): it
// re-plans the workloads that already run, from the objects the estimator
// publishes, and asks Karmada to re-place a workload (a WorkloadRebalancer,
// apps.karmada.io/v1alpha1) once moving it has paid off.
//
// Each round (the leader's, every Interval):
//
//  1. The problem: every workload with a scheduled ResourceBinding and a
//     fresh WorkloadTraffic is a node, with its demand (spec.replicas x
//     replicaRequirements), edges and client traffic from the
//     WorkloadTraffic objects, RTT from the fresh ClusterLatency objects
//     (the published truth the scheduler also reads), and each Cluster's
//     free capacity (resourceSummary allocatable - allocated - allocating)
//     plus what the movable workloads use there. Only a workload whole in
//     one cluster and placed by flowplace's scheduler is movable; the rest
//     is fixed where it runs, and skipped with a reason (a metric, a log
//     line).
//  2. plan.Solve, started from where the workloads run.
//  3. Moves that depend on each other form a group; each workload's share
//     of the group's saving is its Shapley value (saving.go).
//  4. No moves on noise: a group whose saving is within the band that the
//     inputs' resolution allows (saving.go) is not advised at all.
//  5. Ski rental (skirental.go): per workload, the saving is integrated
//     over the time the same advice holds; once a group's accumulated
//     saving reaches its cost of moving (MoveCost: its members' own
//     network cost over that long) and the advice has held MinRounds,
//     the group is advised.
//  6. Acting, highest saving first, at most MaxMoves workloads a round, no
//     workload twice within Cooldown: one WorkloadRebalancer per group
//     (so Karmada re-places the co-movers together; its status reports
//     per workload), an Event RebalanceRequested on each binding. In
//     DryRun (the default) nothing is written but an Event
//     RebalanceAdvised and the advice metric. The cooldown survives
//     restarts: it is read from the WorkloadRebalancers labelled as
//     flowplace's, which live (ttlSecondsAfterFinished) as long as it.
package rebalance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/scheduler-plugin/plan"
	"github.com/flowplace/flowplace/telemetry"
)

// Resources read and written here.
var (
	ClusterGVR            = schema.GroupVersionResource{Group: "cluster.karmada.io", Version: "v1alpha1", Resource: "clusters"}
	ResourceBindingGVR    = schema.GroupVersionResource{Group: "work.karmada.io", Version: "v1alpha2", Resource: "resourcebindings"}
	WorkloadRebalancerGVR = schema.GroupVersionResource{Group: "apps.karmada.io", Version: "v1alpha1", Resource: "workloadrebalancers"}
)

const (
	// ManagedByLabel marks the WorkloadRebalancers the advisor created
	// (app.kubernetes.io/managed-by=ManagedBy).
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedBy      = "flowplace-estimator"
	// RequestedAtAnnotation is when the advisor asked (RFC 3339, its own
	// clock); the cooldown counts from it.
	RequestedAtAnnotation = "flowplace.io/rebalance-requested-at"
	// MovesAnnotation lists the planned moves, "ns/binding=cluster,...".
	MovesAnnotation = "flowplace.io/rebalance-moves"
	// SavingAnnotation is the expected saving rate, bytes/s x ms.
	SavingAnnotation = "flowplace.io/rebalance-saving"

	// Event reasons on the ResourceBinding.
	ReasonAdvised   = "RebalanceAdvised"
	ReasonRequested = "RebalanceRequested"
)

// Outcomes of a planned move (AttrRebalanceOutcome).
const (
	OutcomeDryRun       = "dry_run"
	OutcomeRequested    = "requested"
	OutcomeBelowNoise   = "below_noise"
	OutcomeCooldown     = "cooldown"
	OutcomeCap          = "cap"
	OutcomeGroupOverCap = "group_over_cap"
	OutcomeCapacity     = "capacity"
	OutcomeNotMember    = "not_member"
	OutcomeError        = "error"
)

// Config tunes the advisor. Zero values take the defaults noted.
type Config struct {
	// Interval between rounds (5m).
	Interval time.Duration
	// DryRun records the advice (Event, metric) and creates no
	// WorkloadRebalancer.
	DryRun bool
	// MoveCost is the price of moving a workload, expressed as how long
	// its own current network cost (bytes/s x ms of every term involving
	// it) must be saved to pay it off (10m). Moving restarts pods, empties
	// caches and drops connections, all roughly in proportion to the
	// traffic the workload carries.
	MoveCost time.Duration
	// MinRounds the same advice must hold, this round included (3).
	MinRounds int
	// Cooldown: no second WorkloadRebalancer for a workload within it
	// (1h); also the rebalancers' ttlSecondsAfterFinished, so that the
	// objects the cooldown is read from outlive it.
	Cooldown time.Duration
	// MaxMoves is the most workloads asked to move per round (5).
	MaxMoves int
	// NoiseRelative is the relative resolution of the published rates and
	// RTTs: the estimator's --relative-change (0.1).
	NoiseRelative float64
	// NoiseFloor is an absolute floor under every group's band, bytes/s x
	// ms (1024: a KiB/s one millisecond closer).
	NoiseFloor float64
	// Quantile of RTT priced ("p50"; min, p50, p90, p99): the scheduler's
	// TrafficLocality quantile.
	Quantile string
	// MinSamples: measured RTT pairs with fewer samples are unmeasured
	// (10, the chart's scheduler model.minSamples).
	MinSamples int64
	// SchedulerName: only bindings placed by this scheduler are movable
	// (a WorkloadRebalancer re-places with the binding's own scheduler,
	// which for others does not know traffic). Empty: any.
	SchedulerName string
	// Component names the Events' source.
	Component string
	// Now is the clock (time.Now).
	Now func() time.Time
	// Meter receives the advisor's metrics; nil: none.
	Meter metric.Meter
}

// Validate fills defaults and checks the values.
func (c *Config) Validate() error {
	if c.Interval == 0 {
		c.Interval = 5 * time.Minute
	}
	if c.MoveCost == 0 {
		c.MoveCost = 10 * time.Minute
	}
	if c.MinRounds == 0 {
		c.MinRounds = 3
	}
	if c.Cooldown == 0 {
		c.Cooldown = time.Hour
	}
	if c.MaxMoves == 0 {
		c.MaxMoves = 5
	}
	if c.NoiseRelative == 0 {
		c.NoiseRelative = 0.1
	}
	if c.NoiseFloor == 0 {
		c.NoiseFloor = 1024
	}
	if c.Quantile == "" {
		c.Quantile = "p50"
	}
	if c.MinSamples == 0 {
		c.MinSamples = 10
	}
	if c.Component == "" {
		c.Component = "flowplace-estimator"
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case c.Interval < time.Second:
		return fmt.Errorf("rebalance: interval %s: must be at least 1s", c.Interval)
	case c.MoveCost < 0:
		return fmt.Errorf("rebalance: move cost %s: must not be negative", c.MoveCost)
	case c.MinRounds < 1:
		return fmt.Errorf("rebalance: min rounds %d: must be at least 1", c.MinRounds)
	case c.Cooldown < time.Second || c.Cooldown.Seconds() > math.MaxInt32:
		return fmt.Errorf("rebalance: cooldown %s: must be between 1s and %ds", c.Cooldown, math.MaxInt32)
	case c.MaxMoves < 1:
		return fmt.Errorf("rebalance: max moves %d: must be at least 1", c.MaxMoves)
	case !(c.NoiseRelative > 0 && c.NoiseRelative < 1):
		return fmt.Errorf("rebalance: noise relative %g: must be in (0, 1)", c.NoiseRelative)
	case !(c.NoiseFloor >= 0) || math.IsInf(c.NoiseFloor, 0):
		return fmt.Errorf("rebalance: noise floor %g: must be a non-negative number", c.NoiseFloor)
	case c.MinSamples < 1:
		return fmt.Errorf("rebalance: min samples %d: must be at least 1", c.MinSamples)
	}
	switch c.Quantile {
	case "min", "p50", "p90", "p99":
	default:
		return fmt.Errorf("rebalance: quantile %q: want min, p50, p90 or p99", c.Quantile)
	}
	return nil
}

// Advisor is the rebalance advisor. Round is not safe for concurrent use
// (one goroutine, the leader's, runs it).
type Advisor struct {
	cfg  Config
	dc   dynamic.Interface
	kc   kubernetes.Interface
	acc  Accumulator
	last map[string]time.Time // workload -> when it was last requested or advised
	m    metrics
}

// New returns an advisor on the Karmada API server's clients.
func New(dc dynamic.Interface, kc kubernetes.Interface, cfg Config) (*Advisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &Advisor{cfg: cfg, dc: dc, kc: kc, last: map[string]time.Time{}}
	a.acc.MaxGap = 2 * cfg.Interval
	meter := cfg.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("rebalance")
	}
	if err := a.m.init(meter); err != nil {
		return nil, err
	}
	return a, nil
}

// Run runs a round every Interval until ctx ends.
func (a *Advisor) Run(ctx context.Context) {
	klog.InfoS("Rebalance advisor started", "interval", a.cfg.Interval, "dryRun", a.cfg.DryRun, "moveCost", a.cfg.MoveCost,
		"minRounds", a.cfg.MinRounds, "cooldown", a.cfg.Cooldown, "maxMoves", a.cfg.MaxMoves)
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := a.Round(ctx); err != nil && ctx.Err() == nil {
				klog.ErrorS(err, "Rebalance round failed")
			}
		}
	}
}

// Move is one workload's verdict in a round.
type Move struct {
	// Workload is the binding, namespace/name; From and To are clusters.
	Workload, From, To string
	// Saving is the workload's attributed saving rate, bytes/s x ms;
	// GroupSaving, Noise and MoveCost are its group's.
	Saving, GroupSaving, Noise float64
	// Accumulated (byte-ms) and MoveCost (byte-ms) of its group.
	Accumulated, MoveCost float64
	Rounds                int
	// With are the co-movers.
	With    []string
	Outcome string // "" while accumulating
	// Rebalancer is the WorkloadRebalancer created.
	Rebalancer string
}

// Report is what one round did.
type Report struct {
	// Planned are the planned moves with their verdicts, by workload.
	Planned []Move
	// Skipped are the workloads not movable, by reason.
	Skipped map[string][]string
	// CostNow and CostPlanned are the plan's network cost of the current
	// and the planned assignment, bytes/s x ms.
	CostNow, CostPlanned float64
}

// Outcome returns the verdict on workload w ("" if not planned to move).
func (r Report) Outcome(w string) (Move, bool) {
	for _, m := range r.Planned {
		if m.Workload == w {
			return m, true
		}
	}
	return Move{}, false
}

// Round runs one round now.
func (a *Advisor) Round(ctx context.Context) (Report, error) {
	now := a.cfg.Now()
	in, err := a.read(ctx)
	if err != nil {
		return Report{}, err
	}
	if err := a.loadCooldowns(ctx); err != nil {
		return Report{}, err
	}
	b := build(in, now, a.cfg.Quantile, a.cfg.MinSamples, a.cfg.SchedulerName)
	rep := Report{Skipped: b.skipped}
	for reason, ws := range b.skipped {
		a.m.skipped.Add(ctx, int64(len(ws)), metric.WithAttributes(telemetry.AttrRebalanceReason.String(reason)))
		for _, w := range ws {
			lvl := klog.Level(2)
			if reason == ReasonNoTraffic {
				lvl = 4 // every ConfigMap's binding has none
			}
			klog.V(lvl).InfoS("Rebalance: workload not movable", "binding", w, "reason", reason)
		}
	}
	a.acc.BeginRound()
	defer func() {
		a.acc.Sweep()
		a.m.pending.Store(int64(a.acc.Len()))
	}()
	if len(b.movables) == 0 {
		return rep, nil
	}
	r := plan.Solve(b.p)
	rep.CostNow, rep.CostPlanned = plan.CostOf(b.p, b.current), plan.CostOf(b.p, r.Cluster)
	moves := b.moves(r.Cluster, a.cfg.NoiseRelative, a.cfg.NoiseFloor)

	type due struct {
		m     *move
		moves []Move
	}
	var ready []due
	for _, m := range moves {
		ms := make([]Move, len(m.members))
		for i, u := range m.members {
			ms[i] = Move{Workload: b.nodes[u].key, From: b.names[b.current[u]], To: b.names[m.target[i]], Saving: m.share[i],
				GroupSaving: m.saving, Noise: m.noise(), MoveCost: a.cfg.MoveCost.Seconds() * sum(m.own)}
			for _, w := range m.members {
				if w != u {
					ms[i].With = append(ms[i].With, b.nodes[w].key)
				}
			}
		}
		outcome := ""
		switch {
		case !(m.saving > m.noise()):
			outcome = OutcomeBelowNoise
		case !allMembers(b, m):
			outcome = OutcomeNotMember
		case !m.fits:
			outcome = OutcomeCapacity
		}
		if outcome != "" {
			// No advice: whatever was accumulating starts over.
			a.record(ctx, ms, outcome)
			rep.Planned = append(rep.Planned, ms...)
			continue
		}
		var acc float64
		rounds := math.MaxInt
		for i, u := range m.members {
			h := a.acc.Observe(b.nodes[u].key, m.key, m.share[i], now)
			acc += h.Accumulated
			rounds = min(rounds, h.Rounds)
		}
		for i := range ms {
			ms[i].Accumulated, ms[i].Rounds = acc, rounds
		}
		if acc >= ms[0].MoveCost && rounds >= a.cfg.MinRounds {
			ready = append(ready, due{m, ms})
			continue
		}
		rep.Planned = append(rep.Planned, ms...)
	}
	// Highest saving first; ties by name, so rounds are reproducible.
	sort.SliceStable(ready, func(i, j int) bool {
		if ready[i].m.saving != ready[j].m.saving {
			return ready[i].m.saving > ready[j].m.saving
		}
		return ready[i].m.key < ready[j].m.key
	})
	budget := a.cfg.MaxMoves
	for _, d := range ready {
		outcome := ""
		for _, mv := range d.moves {
			if t, ok := a.last[mv.Workload]; ok && now.Sub(t) < a.cfg.Cooldown {
				outcome = OutcomeCooldown
			}
		}
		switch {
		case outcome != "":
		case len(d.moves) > a.cfg.MaxMoves:
			outcome = OutcomeGroupOverCap
		case len(d.moves) > budget:
			outcome = OutcomeCap
		default:
			budget -= len(d.moves)
			outcome = a.act(ctx, b, d.m, d.moves, now)
		}
		if outcome != OutcomeCooldown && outcome != OutcomeCap && outcome != OutcomeError {
			// Done with this advice (acted on, or never actionable):
			// accumulate afresh. Cooldown and cap keep it for next round.
			for _, mv := range d.moves {
				a.acc.Reset(mv.Workload)
			}
		}
		a.record(ctx, d.moves, outcome)
		rep.Planned = append(rep.Planned, d.moves...)
	}
	sort.Slice(rep.Planned, func(i, j int) bool { return rep.Planned[i].Workload < rep.Planned[j].Workload })
	for _, mv := range rep.Planned {
		klog.V(3).InfoS("Rebalance: planned move", "binding", mv.Workload, "from", mv.From, "to", mv.To, "saving", mv.Saving,
			"groupSaving", mv.GroupSaving, "noise", mv.Noise, "accumulated", mv.Accumulated, "moveCost", mv.MoveCost,
			"rounds", mv.Rounds, "with", mv.With, "outcome", mv.Outcome)
	}
	klog.V(2).InfoS("Rebalance round", "movable", len(b.movables), "plannedMoves", len(rep.Planned),
		"costNow", rep.CostNow, "costPlanned", rep.CostPlanned, "pending", a.acc.Len())
	return rep, nil
}

func allMembers(b *built, m *move) bool {
	for _, t := range m.target {
		if !b.member[t] {
			return false
		}
	}
	return true
}

func (a *Advisor) record(ctx context.Context, ms []Move, outcome string) {
	for i := range ms {
		ms[i].Outcome = outcome
	}
	a.m.advice.Add(ctx, int64(len(ms)), metric.WithAttributes(telemetry.AttrRebalanceOutcome.String(outcome)))
	if outcome == OutcomeDryRun || outcome == OutcomeRequested {
		a.m.saving.Record(ctx, ms[0].GroupSaving, metric.WithAttributes(telemetry.AttrRebalanceOutcome.String(outcome)))
	}
}

// act advises (dry run) or requests the group's move and records it
// against the cooldown.
func (a *Advisor) act(ctx context.Context, b *built, m *move, ms []Move, now time.Time) string {
	reason, outcome := ReasonAdvised, OutcomeDryRun
	name := ""
	if !a.cfg.DryRun {
		reason, outcome = ReasonRequested, OutcomeRequested
		var err error
		if name, err = a.createRebalancer(ctx, b, m, now); err != nil {
			klog.ErrorS(err, "Rebalance: creating the WorkloadRebalancer", "moves", m.key)
			return OutcomeError
		}
	}
	for i, u := range m.members {
		a.last[ms[i].Workload] = now
		ms[i].Rebalancer = name
		if err := a.event(ctx, b.nodes[u].binding, reason, ms[i], now); err != nil {
			// The move stands; only its record is missing.
			klog.ErrorS(err, "Rebalance: writing the Event", "binding", ms[i].Workload)
		}
	}
	klog.InfoS("Rebalance: "+map[bool]string{true: "advised (dry run)", false: "requested"}[a.cfg.DryRun],
		"moves", m.key, "saving", m.saving, "noise", m.noise(), "accumulated", ms[0].Accumulated, "moveCost", ms[0].MoveCost,
		"rounds", ms[0].Rounds, "workloadRebalancer", name)
	return outcome
}

// rebalancer is apps.karmada.io/v1alpha1 WorkloadRebalancer, the fields
// used here.
type rebalancer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Workloads               []rebalancerWorkload `json:"workloads"`
		TTLSecondsAfterFinished *int32               `json:"ttlSecondsAfterFinished,omitempty"`
	} `json:"spec"`
}

type rebalancerWorkload struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
}

func (a *Advisor) createRebalancer(ctx context.Context, b *built, m *move, now time.Time) (string, error) {
	wr := rebalancer{TypeMeta: metav1.TypeMeta{APIVersion: "apps.karmada.io/v1alpha1", Kind: "WorkloadRebalancer"}}
	wr.GenerateName = "flowplace-"
	wr.Labels = map[string]string{ManagedByLabel: ManagedBy}
	wr.Annotations = map[string]string{
		RequestedAtAnnotation: now.UTC().Format(time.RFC3339Nano),
		MovesAnnotation:       m.key,
		SavingAnnotation:      fmt.Sprintf("%.4g", m.saving),
	}
	ttl := int32(a.cfg.Cooldown.Seconds())
	wr.Spec.TTLSecondsAfterFinished = &ttl
	for _, u := range m.members {
		res := b.nodes[u].binding.Spec.Resource
		ns := res.Namespace
		if ns == "" {
			ns = b.nodes[u].binding.Namespace
		}
		wr.Spec.Workloads = append(wr.Spec.Workloads, rebalancerWorkload{APIVersion: res.APIVersion, Kind: res.Kind, Name: res.Name, Namespace: ns})
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&wr)
	if err != nil {
		return "", fmt.Errorf("encoding WorkloadRebalancer: %w", err)
	}
	got, err := a.dc.Resource(WorkloadRebalancerGVR).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{FieldManager: ManagedBy})
	if err != nil {
		return "", fmt.Errorf("create WorkloadRebalancer for %s: %w", m.key, err)
	}
	return got.GetName(), nil
}

func (a *Advisor) event(ctx context.Context, rb *bindingMirror, reason string, mv Move, now time.Time) error {
	msg := fmt.Sprintf("move %s -> %s: saves %.3g B/s*ms", mv.From, mv.To, mv.Saving)
	if len(mv.With) > 0 {
		msg += fmt.Sprintf(" (with %s; together %.3g)", strings.Join(mv.With, ", "), mv.GroupSaving)
	}
	msg += fmt.Sprintf(", noise band %.3g; accumulated %.3g B*ms >= move cost %.3g B*ms (%s of its own network cost) over %d rounds",
		mv.Noise, mv.Accumulated/1000, mv.MoveCost/1000, a.cfg.MoveCost, mv.Rounds)
	if mv.Rebalancer != "" {
		msg += "; WorkloadRebalancer " + mv.Rebalancer
	} else {
		msg += "; dry run, nothing moved"
	}
	t := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", rb.Name, now.UnixNano()), Namespace: rb.Namespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: ResourceBindingGVR.GroupVersion().String(), Kind: "ResourceBinding",
			Namespace: rb.Namespace, Name: rb.Name, UID: rb.UID, ResourceVersion: rb.ResourceVersion},
		Reason: reason, Message: msg, Type: corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: a.cfg.Component},
		FirstTimestamp: t, LastTimestamp: t, Count: 1,
		ReportingController: "flowplace.io/" + a.cfg.Component, ReportingInstance: a.cfg.Component,
	}
	if _, err := a.kc.CoreV1().Events(rb.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create Event %s on ResourceBinding %s/%s: %w", reason, rb.Namespace, rb.Name, err)
	}
	return nil
}

// loadCooldowns merges the cooldowns recorded in flowplace's
// WorkloadRebalancers (a restarted or new leader's memory).
func (a *Advisor) loadCooldowns(ctx context.Context) error {
	l, err := a.dc.Resource(WorkloadRebalancerGVR).List(ctx, metav1.ListOptions{LabelSelector: ManagedByLabel + "=" + ManagedBy})
	if err != nil {
		return fmt.Errorf("list WorkloadRebalancers: %w", err)
	}
	for i := range l.Items {
		var wr rebalancer
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(l.Items[i].Object, &wr); err != nil {
			klog.V(2).InfoS("Rebalance: skipping malformed WorkloadRebalancer", "name", l.Items[i].GetName(), "err", err)
			continue
		}
		at := wr.CreationTimestamp.Time
		if t, err := time.Parse(time.RFC3339Nano, wr.Annotations[RequestedAtAnnotation]); err == nil {
			at = t
		}
		for _, w := range wr.Spec.Workloads {
			k := w.Namespace + "/" + bindingName(w.Kind, w.Name)
			if at.After(a.last[k]) {
				a.last[k] = at
			}
		}
	}
	return nil
}

// read lists one round's objects.
func (a *Advisor) read(ctx context.Context) (inputs, error) {
	var in inputs
	var errs []error
	list := func(gvr schema.GroupVersionResource, each func(u *unstructured.Unstructured) error) {
		l, err := a.dc.Resource(gvr).List(ctx, metav1.ListOptions{})
		if err != nil {
			errs = append(errs, fmt.Errorf("list %s: %w", gvr.Resource, err))
			return
		}
		for i := range l.Items {
			if err := each(&l.Items[i]); err != nil {
				// One malformed object must not stop the round.
				klog.V(2).InfoS("Rebalance: skipping malformed object", "resource", gvr.Resource,
					"namespace", l.Items[i].GetNamespace(), "name", l.Items[i].GetName(), "err", err)
			}
		}
	}
	conv := runtime.DefaultUnstructuredConverter
	list(ClusterGVR, func(u *unstructured.Unstructured) error {
		var c clusterMirror
		err := conv.FromUnstructured(u.Object, &c)
		if err == nil {
			in.clusters = append(in.clusters, c)
		}
		return err
	})
	list(ResourceBindingGVR, func(u *unstructured.Unstructured) error {
		var rb bindingMirror
		err := conv.FromUnstructured(u.Object, &rb)
		if err == nil {
			in.bindings = append(in.bindings, rb)
		}
		return err
	})
	list(v1.WorkloadTrafficResource, func(u *unstructured.Unstructured) error {
		var t v1.WorkloadTraffic
		err := conv.FromUnstructured(u.Object, &t)
		if err == nil {
			in.traffic = append(in.traffic, t)
		}
		return err
	})
	list(v1.ClusterLatencyResource, func(u *unstructured.Unstructured) error {
		var l v1.ClusterLatency
		err := conv.FromUnstructured(u.Object, &l)
		if err == nil {
			in.latencies = append(in.latencies, l)
		}
		return err
	})
	return in, errors.Join(errs...)
}

// metrics are the advisor's instruments (names in telemetry/names.go).
type metrics struct {
	advice  metric.Int64Counter
	skipped metric.Int64Counter
	saving  metric.Float64Histogram
	// pending is set at the end of a round: the exporter reads it from
	// its own goroutine.
	pending atomic.Int64
}

func (m *metrics) init(meter metric.Meter) error {
	var err error
	if m.advice, err = meter.Int64Counter(telemetry.MetricRebalanceAdvice, metric.WithUnit(telemetry.UnitWorkloads),
		metric.WithDescription("Planned moves of running workloads by the rebalance advisor's verdict")); err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRebalanceAdvice, err)
	}
	if m.skipped, err = meter.Int64Counter(telemetry.MetricRebalanceSkipped, metric.WithUnit(telemetry.UnitWorkloads),
		metric.WithDescription("Running workloads the rebalance advisor could not consider, per round, by reason")); err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRebalanceSkipped, err)
	}
	if m.saving, err = meter.Float64Histogram(telemetry.MetricRebalanceSaving, metric.WithUnit(telemetry.UnitByteMs),
		metric.WithDescription("Expected saving rate of each advised or requested move")); err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRebalanceSaving, err)
	}
	// Every known value at 0, so that a dashboard or an alert sees 0
	// rather than no data before the first occurrence.
	ctx := context.Background()
	for _, r := range []string{ReasonNoResource, ReasonUnknownCluster, ReasonNoTraffic, ReasonDivided, ReasonOtherScheduler, ReasonUnbound} {
		m.skipped.Add(ctx, 0, metric.WithAttributes(telemetry.AttrRebalanceReason.String(r)))
	}
	for _, o := range []string{OutcomeDryRun, OutcomeRequested, OutcomeBelowNoise, OutcomeCooldown, OutcomeCap, OutcomeGroupOverCap, OutcomeCapacity, OutcomeNotMember, OutcomeError} {
		m.advice.Add(ctx, 0, metric.WithAttributes(telemetry.AttrRebalanceOutcome.String(o)))
	}
	pending, err := meter.Int64ObservableGauge(telemetry.MetricRebalancePending, metric.WithUnit(telemetry.UnitWorkloads),
		metric.WithDescription("Workloads whose move advice is accumulating saving"))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRebalancePending, err)
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(pending, m.pending.Load())
		return nil
	}, pending)
	if err != nil {
		return fmt.Errorf("register %s: %w", telemetry.MetricRebalancePending, err)
	}
	return nil
}
