package estimator

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/telemetry"
)

// ScopeName is the instrumentation scope of the estimator's metrics (all
// names are in package telemetry).
const ScopeName = telemetry.ScopeEstimator

// selfMetrics are the synchronous instruments; ingestion counters are
// observed from the aggregator's atomics instead, because a synchronous Add
// per data point would cost more than ingesting the point.
type selfMetrics struct {
	malformed     atomic.Int64
	unbound       atomic.Int64 // refused: client certificate bound to no cluster
	written       metric.Int64Counter
	writeDuration metric.Float64Histogram
	leader        atomic.Int64

	// The published model (modelmetrics.go): set by the leader's
	// publishing rounds when modelOn.
	model      atomic.Pointer[modelView]
	modelOn    bool
	modelPairs int
}

func noopMetrics() *selfMetrics {
	m, _ := newSelfMetrics(noop.NewMeterProvider().Meter(ScopeName), nil)
	return m
}

func newSelfMetrics(meter metric.Meter, agg *aggregate.Aggregator) (*selfMetrics, error) {
	m := &selfMetrics{}
	var err error
	if m.written, err = meter.Int64Counter(telemetry.MetricObjectsWritten, metric.WithUnit("{write}"),
		metric.WithDescription("Writes of ClusterLatency and WorkloadTraffic objects to the API server")); err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricObjectsWritten, err)
	}
	if m.writeDuration, err = meter.Float64Histogram(telemetry.MetricWriteDuration, metric.WithUnit("s"),
		metric.WithDescription("Latency of one API write, including conflict retries")); err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricWriteDuration, err)
	}
	if agg == nil {
		return m, nil
	}
	if err := m.registerModelMetrics(meter); err != nil {
		return nil, err
	}
	ingested, err := meter.Int64ObservableCounter(telemetry.MetricPointsIngested, metric.WithUnit("{point}"),
		metric.WithDescription("OTLP data points accepted"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricPointsIngested, err)
	}
	rejected, err := meter.Int64ObservableCounter(telemetry.MetricPointsRejected, metric.WithUnit("{point}"),
		metric.WithDescription("OTLP data points rejected, by reason"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricPointsRejected, err)
	}
	unattributed, err := meter.Int64ObservableCounter(telemetry.MetricPointsUnattributed, metric.WithUnit("{point}"),
		metric.WithDescription("Accepted data points without a local workload or peer, which placement cannot use"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricPointsUnattributed, err)
	}
	malformed, err := meter.Int64ObservableCounter(telemetry.MetricRequestsMalformed, metric.WithUnit("{request}"),
		metric.WithDescription("Export requests refused as malformed protobuf"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricRequestsMalformed, err)
	}
	unbound, err := meter.Int64ObservableCounter(telemetry.MetricRequestsUnbound, metric.WithUnit("{request}"),
		metric.WithDescription("Export requests refused because the client certificate names no cluster (points about a cluster other than the certificate's are counted in points.rejected, reason foreign_cluster)"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricRequestsUnbound, err)
	}
	seriesActive, err := meter.Int64ObservableGauge(telemetry.MetricSeriesActive, metric.WithUnit("{series}"),
		metric.WithDescription("Input series tracked"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricSeriesActive, err)
	}
	flowsActive, err := meter.Int64ObservableGauge(telemetry.MetricFlowsActive, metric.WithUnit("{flow}"),
		metric.WithDescription("(workload, peer, cluster pair) aggregates"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricFlowsActive, err)
	}
	leader, err := meter.Int64ObservableGauge(telemetry.MetricLeader, metric.WithUnit("1"),
		metric.WithDescription("1 while this replica holds the lease and publishes"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", telemetry.MetricLeader, err)
	}
	reasonSets := make([]metric.ObserveOption, aggregate.NumReasons)
	for i := range reasonSets {
		reasonSets[i] = metric.WithAttributes(telemetry.AttrRejectReason.String(aggregate.Reason(i).String()))
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		st := agg.Stats()
		o.ObserveInt64(ingested, st.Ingested)
		o.ObserveInt64(unattributed, st.Unattributed)
		for i, n := range agg.RejectedByReason() {
			if i > 0 {
				o.ObserveInt64(rejected, n, reasonSets[i])
			}
		}
		o.ObserveInt64(malformed, m.malformed.Load())
		o.ObserveInt64(unbound, m.unbound.Load())
		o.ObserveInt64(seriesActive, st.Series)
		o.ObserveInt64(flowsActive, st.Flows)
		o.ObserveInt64(leader, m.leader.Load())
		return nil
	}, ingested, rejected, unattributed, malformed, unbound, seriesActive, flowsActive, leader)
	if err != nil {
		return nil, fmt.Errorf("register estimator metric callback: %w", err)
	}
	return m, nil
}

func (m *selfMetrics) recordWrite(ctx context.Context, kind, op, outcome string, d time.Duration) {
	attrs := metric.WithAttributes(telemetry.AttrObjectKind.String(kind), telemetry.AttrWriteOperation.String(op), telemetry.AttrWriteOutcome.String(outcome))
	m.written.Add(ctx, 1, attrs)
	m.writeDuration.Record(ctx, d.Seconds(), metric.WithAttributes(telemetry.AttrObjectKind.String(kind), telemetry.AttrWriteOperation.String(op)))
}
