// Package karmada adapts flowplace's placement logic to Karmada's scheduler
// framework. It is a separate Go module because the module proxy used by CI
// does not serve github.com/karmada-io/karmada: every decision is made in
// the root module (scheduler-plugin/...), which CI tests; this package only
// converts types.
package karmada

import (
	"context"
	"fmt"

	clusterv1alpha1 "github.com/karmada-io/karmada/pkg/apis/cluster/v1alpha1"
	workv1alpha2 "github.com/karmada-io/karmada/pkg/apis/work/v1alpha2"
	"github.com/karmada-io/karmada/pkg/scheduler/framework"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/scheduler-plugin/events"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	fpruntime "github.com/flowplace/flowplace/scheduler-plugin/runtime"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
)

var (
	_ framework.FilterPlugin            = &LatencyBudget{}
	_ framework.FilterPluginWithContext = &LatencyBudget{}
	_ framework.ScorePlugin             = &TrafficLocality{}
	_ framework.ScoreExtensions         = &TrafficLocality{}
)

// LatencyBudget is the Karmada face of latencybudget.Plugin.
type LatencyBudget struct {
	p  *latencybudget.Plugin
	ev *events.Recorder
}

// NewLatencyBudget is the factory for app.WithPlugin.
func NewLatencyBudget() (framework.Plugin, error) {
	rt, err := fpruntime.Get()
	if err != nil {
		return nil, fmt.Errorf("flowplace %s: %w", latencybudget.Name, err)
	}
	return &LatencyBudget{p: rt.LatencyBudget, ev: rt.Events}, nil
}

// Name returns the plugin name.
func (l *LatencyBudget) Name() string { return latencybudget.Name }

// Filter excludes the cluster when it is beyond the workload's latency
// budget. Fitting returns nil (Success) to keep the common path free of
// allocations.
func (l *LatencyBudget) Filter(_ context.Context, spec *workv1alpha2.ResourceBindingSpec, _ *workv1alpha2.ResourceBindingStatus, cluster *clusterv1alpha1.Cluster) *framework.Result {
	k := key(spec)
	v := l.p.Filter(k, cluster.Name)
	if v.Fit {
		klog.V(5).InfoS("LatencyBudget", "binding", k, "cluster", cluster.Name, "reason", v.Reason)
		return nil
	}
	klog.V(4).InfoS("LatencyBudget excluded cluster", "binding", k, "cluster", cluster.Name, "reason", v.Reason)
	l.ev.Excluded(k, cluster.Name, v)
	return framework.NewResult(framework.Unschedulable, v.Reason)
}

// FilterWithContext is Filter (the framework prefers it when present).
func (l *LatencyBudget) FilterWithContext(fc *framework.FilterContext) *framework.Result {
	return l.Filter(fc.Context, fc.BindingSpec, fc.BindingStatus, fc.Cluster)
}

// TrafficLocality is the Karmada face of trafficlocality.Plugin.
type TrafficLocality struct {
	p  *trafficlocality.Plugin
	ev *events.Recorder
}

// NewTrafficLocality is the factory for app.WithPlugin.
func NewTrafficLocality() (framework.Plugin, error) {
	rt, err := fpruntime.Get()
	if err != nil {
		return nil, fmt.Errorf("flowplace %s: %w", trafficlocality.Name, err)
	}
	return &TrafficLocality{p: rt.TrafficLocality, ev: rt.Events}, nil
}

// Name returns the plugin name.
func (t *TrafficLocality) Name() string { return trafficlocality.Name }

// Score returns the raw (cost-encoded) score; NormalizeScore maps it to
// 0..100. It always succeeds: an error here would fail the whole
// scheduling attempt.
func (t *TrafficLocality) Score(_ context.Context, spec *workv1alpha2.ResourceBindingSpec, cluster *clusterv1alpha1.Cluster) (int64, *framework.Result) {
	k := key(spec)
	r := t.p.Score(k, cluster.Name)
	t.ev.Scored(k, cluster.Name, r)
	if klog.V(4).Enabled() {
		klog.InfoS("TrafficLocality", "binding", k, "cluster", cluster.Name, "reason", t.p.Explain(k, cluster.Name))
	}
	return r.Raw, nil
}

// ScoreExtensions returns t (it normalizes).
func (t *TrafficLocality) ScoreExtensions() framework.ScoreExtensions { return t }

// NormalizeScore maps raw scores to 0..100 in place.
func (t *TrafficLocality) NormalizeScore(_ context.Context, scores framework.ClusterScoreList) *framework.Result {
	raw := make([]int64, len(scores))
	for i := range scores {
		raw[i] = scores[i].Score
	}
	t.p.Normalize(raw)
	for i := range scores {
		scores[i].Score = raw[i]
	}
	return nil
}

func key(spec *workv1alpha2.ResourceBindingSpec) model.Key {
	return model.KeyFor(spec.Resource.Namespace, spec.Resource.Kind, spec.Resource.Name)
}
