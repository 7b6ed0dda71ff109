package estimator

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/telemetry"
)

// modelView is the model the leader's last publishing round computed (the
// objects it would publish; writes the relative-change rule skips leave the
// API up to that much behind), with the attribute sets of its series built
// once per round: the model metrics' callback only observes it.
type modelView struct {
	rtt            []observation // seconds
	clusterTraffic []observation // bytes/s
	workload       []observation // bytes/s, heaviest pairs then overflow
	workloadCross  []observation
	age            []observation // seconds
	objects        []observation
}

type observation struct {
	set   attribute.Set
	value float64
}

var rttQuantiles = [...]string{"0.5", "0.9", "0.99"}

// buildModelView derives the model metrics from the objects of one round
// (desired) and the objects in the API (for staleness). maxPairs bounds the
// workload-pair series.
func buildModelView(built []desired, inAPI map[string][]*unstructured.Unstructured, now time.Time, maxPairs int) *modelView {
	v := &modelView{}
	type pair struct{ src, dst string }
	clusterBytes := map[pair]float64{}
	type wpair struct {
		set          attribute.Set
		id           string
		bytes, cross float64
	}
	var pairs []wpair
	for _, d := range built {
		switch o := d.obj.(type) {
		case *v1.ClusterLatency:
			src := o.Name
			var newest time.Time
			for _, p := range o.Status.Peers {
				qs := [...]int64{p.P50Microseconds, p.P90Microseconds, p.P99Microseconds}
				for i, q := range rttQuantiles {
					v.rtt = append(v.rtt, observation{attribute.NewSet(
						telemetry.AttrClusterName.String(src), telemetry.AttrPeerClusterName.String(p.Cluster),
						telemetry.AttrRTTQuantile.String(q), telemetry.AttrRTTEstimated.Bool(p.Estimated)),
						float64(qs[i]) / 1e6})
				}
				if !p.Estimated && p.LastSampleTime.After(newest) {
					newest = p.LastSampleTime.Time
				}
			}
			if !newest.IsZero() {
				v.age = append(v.age, observation{attribute.NewSet(telemetry.AttrClusterName.String(src)),
					max(now.Sub(newest).Seconds(), 0)})
			}
		case *v1.WorkloadTraffic:
			local := []attribute.KeyValue{
				telemetry.AttrNamespace.String(o.Namespace),
				telemetry.AttrWorkloadKind.String(o.Spec.Workload.Kind),
				telemetry.AttrWorkloadName.String(o.Spec.Workload.Name),
			}
			for _, pt := range o.Status.Peers {
				kv := slices.Clone(local)
				id := o.Namespace + "/" + o.Spec.Workload.Kind + "/" + o.Spec.Workload.Name + ">" + peerID(pt)
				if w := pt.Workload; w != nil {
					kv = append(kv, telemetry.AttrPeerNamespace.String(w.Namespace),
						telemetry.AttrPeerWorkloadKind.String(w.Kind), telemetry.AttrPeerWorkloadName.String(w.Name))
				}
				if s := pt.Service; s != nil {
					kv = append(kv, telemetry.AttrServiceNamespace.String(s.Namespace), telemetry.AttrServiceName.String(s.Name))
				}
				var cross float64
				for _, c := range pt.Clusters {
					clusterBytes[pair{c.SourceCluster, c.DestinationCluster}] += float64(c.BytesPerSecond)
					if c.SourceCluster != c.DestinationCluster {
						cross += float64(c.BytesPerSecond)
					}
				}
				pairs = append(pairs, wpair{attribute.NewSet(kv...), id, float64(pt.BytesPerSecond), cross})
			}
		}
	}
	for p, b := range clusterBytes {
		v.clusterTraffic = append(v.clusterTraffic, observation{attribute.NewSet(
			telemetry.AttrClusterName.String(p.src), telemetry.AttrPeerClusterName.String(p.dst),
			telemetry.AttrCrossCluster.Bool(p.src != p.dst)), b})
	}
	// The heaviest pairs by total bytes; ties by identity so that the
	// series do not flap between rounds.
	slices.SortFunc(pairs, func(a, b wpair) int {
		if c := cmp.Compare(b.bytes, a.bytes); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	if len(pairs) > maxPairs {
		var bytes, cross float64
		for _, p := range pairs[maxPairs:] {
			bytes += p.bytes
			cross += p.cross
		}
		pairs = append(pairs[:maxPairs], wpair{set: attribute.NewSet(telemetry.AttrOverflow.Bool(true)), bytes: bytes, cross: cross})
	}
	for _, p := range pairs {
		v.workload = append(v.workload, observation{p.set, p.bytes})
		v.workloadCross = append(v.workloadCross, observation{p.set, p.cross})
	}
	for kind, objs := range inAPI {
		var fresh, stale float64
		for _, u := range objs {
			if validUntil, _ := freshnessOf(u); validUntil.After(now) {
				fresh++
			} else {
				stale++
			}
		}
		v.objects = append(v.objects,
			observation{attribute.NewSet(telemetry.AttrObjectKind.String(kind), telemetry.AttrObjectState.String("fresh")), fresh},
			observation{attribute.NewSet(telemetry.AttrObjectKind.String(kind), telemetry.AttrObjectState.String("stale")), stale})
	}
	return v
}

// registerModelMetrics exports the leader's last modelView (nothing while
// there is none: followers and a leader before its first round).
func (m *selfMetrics) registerModelMetrics(meter metric.Meter) error {
	type gauge struct {
		name, unit, desc string
		get              func(*modelView) []observation
	}
	gauges := []gauge{
		{telemetry.MetricClusterRTT, telemetry.UnitSeconds, "RTT between clusters by quantile, as computed for ClusterLatency",
			func(v *modelView) []observation { return v.rtt }},
		{telemetry.MetricClusterTraffic, telemetry.UnitBytesPerSec, "Traffic from workloads in one cluster to the peers they call in a cluster (the same one or another: flowplace.cross_cluster), callers' view, as computed for WorkloadTraffic",
			func(v *modelView) []observation { return v.clusterTraffic }},
		{telemetry.MetricWorkloadTraffic, telemetry.UnitBytesPerSec, "Traffic from a workload to a peer over all cluster pairs, heaviest pairs (the rest in the overflow series)",
			func(v *modelView) []observation { return v.workload }},
		{telemetry.MetricWorkloadCrossClusterTraffic, telemetry.UnitBytesPerSec, "The part of a workload pair's traffic between different clusters",
			func(v *modelView) []observation { return v.workloadCross }},
		{telemetry.MetricDataAge, telemetry.UnitSeconds, "Time since the agents of a cluster last reported an RTT sample",
			func(v *modelView) []observation { return v.age }},
		{telemetry.MetricObjectsPublished, telemetry.UnitObjects, "Published objects in the API, fresh or stale (validUntil passed)",
			func(v *modelView) []observation { return v.objects }},
	}
	insts := make([]metric.Float64ObservableGauge, len(gauges))
	obs := make([]metric.Observable, len(gauges))
	for i, g := range gauges {
		var err error
		if insts[i], err = meter.Float64ObservableGauge(g.name, metric.WithUnit(g.unit), metric.WithDescription(g.desc)); err != nil {
			return fmt.Errorf("create %s: %w", g.name, err)
		}
		obs[i] = insts[i]
	}
	_, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		v := m.model.Load()
		if v == nil {
			return nil
		}
		for i, g := range gauges {
			for _, x := range g.get(v) {
				o.ObserveFloat64(insts[i], x.value, metric.WithAttributeSet(x.set))
			}
		}
		return nil
	}, obs...)
	if err != nil {
		return fmt.Errorf("register model metric callback: %w", err)
	}
	m.modelOn = true
	return nil
}
