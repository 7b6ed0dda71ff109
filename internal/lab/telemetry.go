package lab

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"

	"github.com/flowplace/flowplace/internal/routing"
	"github.com/flowplace/flowplace/scheduler-plugin/events"
	"github.com/flowplace/flowplace/telemetry"
)

// Telemetry serves the Prometheus metrics of every component the lab runs
// (each cluster's agent, the estimator, the scheduler plugins' decisions)
// on one /metrics, as a fleet's Prometheus would scrape them from each:
// what the dashboards in charts/flowplace/dashboards query.
type Telemetry struct {
	mu         sync.Mutex
	components map[string]prometheus.Gatherer

	scheduler *telemetry.Provider
	decisions *events.Recorder
}

// NewTelemetry returns an empty Telemetry with the scheduler plugins'
// decision metrics registered.
func NewTelemetry(ctx context.Context) (*Telemetry, error) {
	t := &Telemetry{components: map[string]prometheus.Gatherer{}}
	var err error
	if t.scheduler, err = t.provider(ctx, "scheduler"); err != nil {
		return nil, err
	}
	if t.decisions, err = events.New(nil, nil, nil, t.scheduler.MeterProvider.Meter(telemetry.ScopeScheduler)); err != nil {
		return nil, fmt.Errorf("lab: decision metrics: %w", err)
	}
	return t, nil
}

// provider is a Prometheus-only meter provider for component name
// (replacing an earlier one of that name: agents restart between phases).
func (t *Telemetry) provider(ctx context.Context, name string, res ...attribute.KeyValue) (*telemetry.Provider, error) {
	p, err := telemetry.NewProvider(ctx, telemetry.Config{Prometheus: true,
		Resource: append([]attribute.KeyValue{semconv.ServiceName("flowplace-" + name)}, res...)})
	if err != nil {
		return nil, fmt.Errorf("lab: metrics of %s: %w", name, err)
	}
	t.add(name, p.Gatherer())
	return p, nil
}

func (t *Telemetry) add(name string, g prometheus.Gatherer) {
	if t == nil || g == nil {
		return
	}
	t.mu.Lock()
	t.components[name] = g
	t.mu.Unlock()
}

// Gather merges every component's metrics. Families of the same name from
// several components (the agents of each cluster) are one family, their
// series told apart by the components' constant labels.
func (t *Telemetry) Gather() ([]*dto.MetricFamily, error) {
	t.mu.Lock()
	var gs prometheus.Gatherers
	names := make([]string, 0, len(t.components))
	for n := range t.components {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		gs = append(gs, t.components[n])
	}
	t.mu.Unlock()
	return gs.Gather()
}

// Handler serves Gather in Prometheus' exposition formats.
func (t *Telemetry) Handler() http.Handler {
	return promhttp.HandlerFor(t, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// addRouting exports the routing metrics of one cluster's datapath, as
// that cluster's agents would (their k8s.cluster.name on every series).
func (t *Telemetry) addRouting(ctx context.Context, cluster string, src routing.MetricsSource) error {
	p, err := t.provider(ctx, "routing/"+cluster, telemetry.AttrClusterName.String(cluster), telemetry.AttrNodeName.String(cluster+"-node"))
	if err != nil {
		return err
	}
	if err := routing.RegisterMetrics(p.Meter(), src); err != nil {
		return fmt.Errorf("lab: routing metrics of %s: %w", cluster, err)
	}
	return nil
}
