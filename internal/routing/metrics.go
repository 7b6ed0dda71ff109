package routing

import (
	"context"
	"fmt"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/telemetry"
)

type statKey struct {
	svc     ServiceRef
	tier    int
	cluster string
}

// RegisterMetrics exports the kernel's routing counters, read at each
// collection, on m (names in telemetry/names.go).
func (c *Controller) RegisterMetrics(m metric.Meter) error {
	conns, err := m.Int64ObservableCounter(telemetry.MetricRoutingConnections, metric.WithUnit(telemetry.UnitConnections),
		metric.WithDescription("Connects routed to a backend, by service, tier and destination cluster"))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRoutingConnections, err)
	}
	fails, err := m.Int64ObservableCounter(telemetry.MetricRoutingConnectFailures, metric.WithUnit(telemetry.UnitConnections),
		metric.WithDescription("Routed connects that failed (unanswered SYN, reset, abandoned), by service, tier and destination cluster"))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRoutingConnectFailures, err)
	}
	fallbacks, err := m.Int64ObservableCounter(telemetry.MetricRoutingFallbacks, metric.WithUnit(telemetry.UnitConnections),
		metric.WithDescription("Connects made while every backend of the service was ejected"))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRoutingFallbacks, err)
	}
	ejections, err := m.Int64ObservableCounter(telemetry.MetricRoutingEjections, metric.WithUnit(telemetry.UnitEjections),
		metric.WithDescription("Backends ejected by passive health checks, by destination cluster"))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRoutingEjections, err)
	}
	services, err := m.Int64ObservableGauge(telemetry.MetricRoutingServices, metric.WithUnit(telemetry.UnitServices),
		metric.WithDescription("Services routed now"))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricRoutingServices, err)
	}
	attrs := map[statKey]attribute.Set{}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		stats, err := c.cfg.Datapath.Stats()
		if err != nil {
			return err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		// Sum the kernel's keys (per service id and cluster index) by what
		// the attributes name.
		type sums struct{ conns, fails int64 }
		total := map[statKey]*sums{}
		fb := map[ServiceRef]int64{}
		for _, s := range stats {
			ref, ok := c.vipService[s.Service]
			if !ok {
				continue
			}
			k := statKey{svc: ref, tier: s.Tier, cluster: c.clusterName(s.Cluster)}
			if total[k] == nil {
				total[k] = &sums{}
			}
			total[k].conns += int64(s.Connects)
			total[k].fails += int64(s.Failed)
			if s.Tier == redirect.FallbackTier {
				fb[ref] += int64(s.Connects)
			}
		}
		for k, v := range total {
			set, ok := attrs[k]
			if !ok {
				tier := strconv.Itoa(k.tier)
				if k.tier == redirect.FallbackTier {
					tier = "fallback"
				}
				set = attribute.NewSet(telemetry.AttrServiceNamespace.String(k.svc.Namespace), telemetry.AttrServiceName.String(k.svc.Name),
					telemetry.AttrRoutingTier.String(tier), telemetry.AttrPeerClusterName.String(k.cluster))
				attrs[k] = set
			}
			o.ObserveInt64(conns, v.conns, metric.WithAttributeSet(set))
			o.ObserveInt64(fails, v.fails, metric.WithAttributeSet(set))
		}
		for ref, n := range fb {
			o.ObserveInt64(fallbacks, n, metric.WithAttributes(telemetry.AttrServiceNamespace.String(ref.Namespace), telemetry.AttrServiceName.String(ref.Name)))
		}
		for cl, n := range c.ejections {
			o.ObserveInt64(ejections, n, metric.WithAttributes(telemetry.AttrPeerClusterName.String(cl)))
		}
		o.ObserveInt64(services, int64(c.last.Services))
		return nil
	}, conns, fails, fallbacks, ejections, services)
	if err != nil {
		return fmt.Errorf("register routing metrics: %w", err)
	}
	return nil
}

func (c *Controller) clusterName(i uint16) string {
	if int(i) < len(c.clusterOf) {
		return c.clusterOf[i]
	}
	return "other"
}
