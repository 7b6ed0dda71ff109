package events

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/metric"

	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
	"github.com/flowplace/flowplace/telemetry"
)

// Attempt outcomes (telemetry.AttrSchedulerOutcome).
const (
	OutcomeCosted   = "costed"
	OutcomeNeutral  = "neutral"
	OutcomeExcluded = "excluded"
)

// decisionMetrics counts attempts as they are flushed: once per attempt,
// off the Filter and Score path. A nil *decisionMetrics records nothing.
type decisionMetrics struct {
	attempts, exclusions, neutral, preferred metric.Int64Counter
	spread                                   metric.Float64Histogram
}

func newDecisionMetrics(meter metric.Meter) (*decisionMetrics, error) {
	m := &decisionMetrics{}
	counters := []struct {
		c          *metric.Int64Counter
		name, unit string
		desc       string
	}{
		{&m.attempts, telemetry.MetricSchedulerAttempts, telemetry.UnitAttempts, "Scheduling attempts of bindings, by outcome"},
		{&m.exclusions, telemetry.MetricSchedulerExclusions, telemetry.UnitClusters, "Clusters LatencyBudget excluded, by cluster and reason"},
		{&m.neutral, telemetry.MetricSchedulerNeutral, telemetry.UnitClusters, "Clusters TrafficLocality scored neutral (no data to judge), by reason"},
		{&m.preferred, telemetry.MetricSchedulerPreferred, telemetry.UnitAttempts, "Attempts by the cluster TrafficLocality ranked first"},
	}
	for _, c := range counters {
		var err error
		if *c.c, err = meter.Int64Counter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.desc)); err != nil {
			return nil, fmt.Errorf("create %s: %w", c.name, err)
		}
	}
	// Every bounded value at 0, so that dashboards and alerts see 0
	// rather than no data before the first occurrence (clusters are not
	// known up front).
	ctx := context.Background()
	for r := trafficlocality.ReasonDisabled; r <= trafficlocality.ReasonMissingRTT; r++ {
		m.neutral.Add(ctx, 0, metric.WithAttributes(telemetry.AttrSchedulerReason.String(r.Class())))
	}
	for _, o := range []string{OutcomeCosted, OutcomeNeutral, OutcomeExcluded} {
		m.attempts.Add(ctx, 0, metric.WithAttributes(telemetry.AttrSchedulerOutcome.String(o)))
	}
	var err error
	// A spread of 1 means every priced cluster costs the same: the
	// choice did not matter. Buckets up to 1000x, the range of
	// intra-region to intercontinental RTT.
	if m.spread, err = meter.Float64Histogram(telemetry.MetricSchedulerCostSpread, metric.WithUnit(telemetry.UnitRatio),
		metric.WithDescription("Highest over lowest expected cost among the clusters priced in one attempt"),
		metric.WithExplicitBucketBoundaries(1, 1.1, 1.25, 1.5, 2, 3, 5, 10, 30, 100, 1000)); err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricSchedulerCostSpread, err)
	}
	return m, nil
}

// record counts one attempt's verdicts.
func (m *decisionMetrics) record(excluded []exclusion, scored []score) {
	if m == nil {
		return
	}
	ctx := context.Background()
	for _, e := range excluded {
		m.exclusions.Add(ctx, 1, metric.WithAttributes(telemetry.AttrClusterName.String(e.cluster),
			telemetry.AttrSchedulerReason.String(string(e.cause))))
	}
	var best, hi float64
	bestCluster := ""
	for _, s := range scored {
		if s.res.Reason != trafficlocality.ReasonCost {
			m.neutral.Add(ctx, 1, metric.WithAttributes(telemetry.AttrSchedulerReason.String(s.res.Reason.Class())))
			continue
		}
		// scored is in cluster order, so ties go to the first name, as
		// in the Event.
		if bestCluster == "" || s.res.Cost < best {
			best, bestCluster = s.res.Cost, s.cluster
		}
		hi = max(hi, s.res.Cost)
	}
	outcome := OutcomeNeutral
	switch {
	case bestCluster != "":
		outcome = OutcomeCosted
		m.preferred.Add(ctx, 1, metric.WithAttributes(telemetry.AttrClusterName.String(bestCluster)))
		if best > 0 {
			m.spread.Record(ctx, hi/best)
		}
	case len(scored) == 0 && len(excluded) > 0:
		outcome = OutcomeExcluded
	}
	m.attempts.Add(ctx, 1, metric.WithAttributes(telemetry.AttrSchedulerOutcome.String(outcome)))
}
