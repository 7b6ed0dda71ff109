package routing

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/telemetry"
)

// RoutedStat is one of the kernel's routing counters with what it names.
type RoutedStat struct {
	Service ServiceRef
	Tier    int // redirect.FallbackTier when chosen from all backends
	Cluster string
	// Connects routed, and those of them that failed.
	Connects, Failed uint64
}

// MetricsSource is what the routing metrics read at each collection: a
// Controller, or whatever else programs a datapath (DatapathSource).
type MetricsSource interface {
	// RoutedStats returns the kernel's counters, named.
	RoutedStats() ([]RoutedStat, error)
	// Ejections returns the ejections so far by destination cluster.
	Ejections() map[string]int64
	// RoutedServices is the number of services routed now.
	RoutedServices() int
}

type statKey struct {
	svc     ServiceRef
	tier    int
	cluster string
}

// RegisterMetrics exports src's routing counters, read at each
// collection, on m (names in telemetry/names.go).
func RegisterMetrics(m metric.Meter, src MetricsSource) error {
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
	var mu sync.Mutex // the attribute sets, across concurrent collections
	attrs := map[statKey]attribute.Set{}
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		stats, err := src.RoutedStats()
		if err != nil {
			return err
		}
		// Sum the kernel's keys (per service id and cluster index) by what
		// the attributes name.
		type sums struct{ conns, fails int64 }
		total := map[statKey]*sums{}
		fb := map[ServiceRef]int64{}
		for _, s := range stats {
			k := statKey{svc: s.Service, tier: s.Tier, cluster: s.Cluster}
			if total[k] == nil {
				total[k] = &sums{}
			}
			total[k].conns += int64(s.Connects)
			total[k].fails += int64(s.Failed)
			// Every routed service's fallbacks, 0 until every backend
			// is ejected once.
			fb[s.Service] += 0
			if s.Tier == redirect.FallbackTier {
				fb[s.Service] += int64(s.Connects)
			}
		}
		mu.Lock()
		defer mu.Unlock()
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
		for cl, n := range src.Ejections() {
			o.ObserveInt64(ejections, n, metric.WithAttributes(telemetry.AttrPeerClusterName.String(cl)))
		}
		o.ObserveInt64(services, int64(src.RoutedServices()))
		return nil
	}, conns, fails, fallbacks, ejections, services)
	if err != nil {
		return fmt.Errorf("register routing metrics: %w", err)
	}
	return nil
}

// RegisterMetrics exports the controller's routing counters on m.
func (c *Controller) RegisterMetrics(m metric.Meter) error { return RegisterMetrics(m, c) }

// RoutedStats implements MetricsSource.
func (c *Controller) RoutedStats() ([]RoutedStat, error) {
	stats, err := c.cfg.Datapath.Stats()
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]RoutedStat, 0, len(stats))
	for _, s := range stats {
		ref, ok := c.vipService[s.Service]
		if !ok {
			continue
		}
		out = append(out, RoutedStat{Service: ref, Tier: s.Tier, Cluster: c.clusterName(s.Cluster), Connects: s.Connects, Failed: s.Failed})
	}
	return out, nil
}

// Ejections implements MetricsSource.
func (c *Controller) Ejections() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.ejections)
}

// RoutedServices implements MetricsSource.
func (c *Controller) RoutedServices() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last.Services
}

func (c *Controller) clusterName(i uint16) string {
	if int(i) < len(c.clusterOf) {
		return c.clusterOf[i]
	}
	return "other"
}

// DatapathSource is the MetricsSource of a datapath programmed without a
// Controller (the lab's routing phase): services named by VIP, clusters by
// the index the tables' backends carry. Its ejections are the kernel's
// per-backend counts, summed by the backend's cluster: for tables that
// keep their backends (a backend removed from the tables moves its count
// to "other", which Prometheus sees as a reset of its cluster's counter).
type DatapathSource struct {
	Datapath *redirect.Datapath
	Services map[netip.AddrPort]ServiceRef
	Clusters []string
}

func (d *DatapathSource) cluster(i uint16) string {
	if int(i) < len(d.Clusters) {
		return d.Clusters[i]
	}
	return "other"
}

// RoutedStats implements MetricsSource.
func (d *DatapathSource) RoutedStats() ([]RoutedStat, error) {
	stats, err := d.Datapath.Stats()
	if err != nil {
		return nil, err
	}
	out := make([]RoutedStat, 0, len(stats))
	for _, s := range stats {
		if ref, ok := d.Services[s.Service]; ok {
			out = append(out, RoutedStat{Service: ref, Tier: s.Tier, Cluster: d.cluster(s.Cluster), Connects: s.Connects, Failed: s.Failed})
		}
	}
	return out, nil
}

// Ejections implements MetricsSource.
func (d *DatapathSource) Ejections() map[string]int64 {
	health, err := d.Datapath.Health()
	if err != nil {
		return nil
	}
	clusterOf := map[netip.AddrPort]string{}
	out := map[string]int64{} // every cluster with a backend, 0 until one is ejected
	for _, tiers := range d.Datapath.Tables() {
		for _, tier := range tiers {
			for _, b := range tier {
				clusterOf[b.Addr] = d.cluster(b.Cluster)
				out[d.cluster(b.Cluster)] += 0
			}
		}
	}
	for a, h := range health {
		if cl, ok := clusterOf[a]; ok {
			out[cl] += int64(h.Ejections)
		} else if h.Ejections > 0 {
			out["other"] += int64(h.Ejections)
		}
	}
	return out
}

// RoutedServices implements MetricsSource.
func (d *DatapathSource) RoutedServices() int { return len(d.Datapath.Tables()) }
