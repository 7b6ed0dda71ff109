package estimator

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/flowplace/flowplace/estimator/aggregate"
)

// The estimator's own metrics. (The agents' names are in telemetry/names.go;
// these describe the estimator itself and are only produced here.)
const (
	ScopeName = "github.com/flowplace/flowplace/estimator"

	MetricPointsIngested     = "flowplace.estimator.points.ingested"
	MetricPointsRejected     = "flowplace.estimator.points.rejected"
	MetricPointsUnattributed = "flowplace.estimator.points.unattributed"
	MetricRequestsMalformed  = "flowplace.estimator.requests.malformed"
	MetricRequestsUnbound    = "flowplace.estimator.requests.unbound"
	MetricSeriesActive       = "flowplace.estimator.series.active"
	MetricFlowsActive        = "flowplace.estimator.flows.active"
	MetricObjectsWritten     = "flowplace.estimator.objects.written"
	MetricWriteDuration      = "flowplace.estimator.write.duration"
	MetricLeader             = "flowplace.estimator.leader"

	attrReason    = attribute.Key("flowplace.reject.reason")
	attrKind      = attribute.Key("flowplace.object.kind")
	attrOperation = attribute.Key("flowplace.write.operation") // create | update_status
	attrOutcome   = attribute.Key("flowplace.write.outcome")   // ok | conflict | error
)

// selfMetrics are the synchronous instruments; ingestion counters are
// observed from the aggregator's atomics instead, because a synchronous Add
// per data point would cost more than ingesting the point.
type selfMetrics struct {
	malformed     atomic.Int64
	unbound       atomic.Int64 // refused: client certificate bound to no cluster
	written       metric.Int64Counter
	writeDuration metric.Float64Histogram
	leader        atomic.Int64
}

func noopMetrics() *selfMetrics {
	m, _ := newSelfMetrics(noop.NewMeterProvider().Meter(ScopeName), nil)
	return m
}

func newSelfMetrics(meter metric.Meter, agg *aggregate.Aggregator) (*selfMetrics, error) {
	m := &selfMetrics{}
	var err error
	if m.written, err = meter.Int64Counter(MetricObjectsWritten, metric.WithUnit("{write}"),
		metric.WithDescription("Writes of ClusterLatency and WorkloadTraffic objects to the API server")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricObjectsWritten, err)
	}
	if m.writeDuration, err = meter.Float64Histogram(MetricWriteDuration, metric.WithUnit("s"),
		metric.WithDescription("Latency of one API write, including conflict retries")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricWriteDuration, err)
	}
	if agg == nil {
		return m, nil
	}
	ingested, err := meter.Int64ObservableCounter(MetricPointsIngested, metric.WithUnit("{point}"),
		metric.WithDescription("OTLP data points accepted"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricPointsIngested, err)
	}
	rejected, err := meter.Int64ObservableCounter(MetricPointsRejected, metric.WithUnit("{point}"),
		metric.WithDescription("OTLP data points rejected, by reason"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricPointsRejected, err)
	}
	unattributed, err := meter.Int64ObservableCounter(MetricPointsUnattributed, metric.WithUnit("{point}"),
		metric.WithDescription("Accepted data points without a local workload or peer, which placement cannot use"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricPointsUnattributed, err)
	}
	malformed, err := meter.Int64ObservableCounter(MetricRequestsMalformed, metric.WithUnit("{request}"),
		metric.WithDescription("Export requests refused as malformed protobuf"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricRequestsMalformed, err)
	}
	unbound, err := meter.Int64ObservableCounter(MetricRequestsUnbound, metric.WithUnit("{request}"),
		metric.WithDescription("Export requests refused because the client certificate names no cluster (points about a cluster other than the certificate's are counted in points.rejected, reason foreign_cluster)"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricRequestsUnbound, err)
	}
	seriesActive, err := meter.Int64ObservableGauge(MetricSeriesActive, metric.WithUnit("{series}"),
		metric.WithDescription("Input series tracked"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricSeriesActive, err)
	}
	flowsActive, err := meter.Int64ObservableGauge(MetricFlowsActive, metric.WithUnit("{flow}"),
		metric.WithDescription("(workload, peer, cluster pair) aggregates"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricFlowsActive, err)
	}
	leader, err := meter.Int64ObservableGauge(MetricLeader, metric.WithUnit("1"),
		metric.WithDescription("1 while this replica holds the lease and publishes"))
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricLeader, err)
	}
	reasonSets := make([]metric.ObserveOption, aggregate.NumReasons)
	for i := range reasonSets {
		reasonSets[i] = metric.WithAttributes(attrReason.String(aggregate.Reason(i).String()))
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
	attrs := metric.WithAttributes(attrKind.String(kind), attrOperation.String(op), attrOutcome.String(outcome))
	m.written.Add(ctx, 1, attrs)
	m.writeDuration.Record(ctx, d.Seconds(), metric.WithAttributes(attrKind.String(kind), attrOperation.String(op)))
}
