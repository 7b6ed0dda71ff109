// Package agent runs flowplace's member-cluster agent loop: poll the kernel
// flow aggregates, attribute each flow to workloads, services and clusters,
// and record what moved on the telemetry instruments.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/telemetry"
)

// Datapath is the loaded probes, as the agent uses them.
type Datapath interface {
	Poll() (*probe.Snapshot, error)
	DeleteFlow(probe.FlowKey) error
	SetNATService(netip.AddrPort) error
	DeleteNATService(netip.AddrPort) error
}

// Adopter measures, from now on, the connections that were open before the
// probes were attached (probe.Probe.AdoptExisting).
type Adopter interface {
	AdoptExisting() (probe.AdoptResult, error)
}

// NATTable finds the backend behind a translated service address.
type NATTable interface {
	Backend(client, service netip.AddrPort) (netip.AddrPort, error)
}

// Config configures an Agent.
type Config struct {
	Source Datapath
	// NAT resolves connections to translated service addresses; nil
	// leaves them attributed to the service address alone.
	NAT      NATTable
	Resolver attribution.Resolver
	// Adopter, when set, adopts the connections open before the agent
	// started once, before the first poll; nil leaves them unmeasured
	// until they reconnect.
	Adopter  Adopter
	Recorder *telemetry.Recorder
	Meter    metric.Meter // for the agent's own metrics; may be nil
	// PollInterval between kernel reads.
	PollInterval time.Duration
	// IdleAfter forgets flows and series with no open connection and no
	// traffic for this long, so memory follows live traffic.
	IdleAfter time.Duration
	// RTTObserver, when set, receives the RTT samples of client
	// connections to each other cluster, per poll (routing orders clusters
	// by them).
	RTTObserver RTTObserver
}

// RTTObserver takes RTT samples by peer cluster name.
type RTTObserver interface {
	Observe(peerCluster string, samples *loghist.Histogram)
}

// Agent is the poll-attribute-record loop.
type Agent struct {
	cfg  Config
	acc  *probe.Accumulator
	log  klog.Logger
	mu   sync.Mutex
	keys map[probe.FlowKey]telemetry.SeriesKey // attribution cache
	gen  uint64
	nat  map[netip.AddrPort]bool // translated services programmed in the kernel

	natUnresolved atomic.Uint64

	polls    atomic.Uint64
	lastPoll atomic.Pointer[probe.Snapshot]
}

// New validates cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	switch {
	case cfg.Source == nil:
		return nil, errors.New("agent: no flow source")
	case cfg.Resolver == nil:
		return nil, errors.New("agent: no resolver")
	case cfg.Recorder == nil:
		return nil, errors.New("agent: no recorder")
	case cfg.PollInterval <= 0:
		return nil, errors.New("agent: poll interval must be positive")
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = 10 * time.Minute
	}
	a := &Agent{cfg: cfg, acc: probe.NewAccumulator(), keys: map[probe.FlowKey]telemetry.SeriesKey{}, nat: map[netip.AddrPort]bool{}}
	if cfg.Meter != nil {
		if err := a.selfMetrics(cfg.Meter); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *Agent) selfMetrics(m metric.Meter) error {
	_, err := m.Int64ObservableCounter(telemetry.MetricDatapathEvictions, metric.WithUnit(telemetry.UnitFlows),
		metric.WithDescription("Kernel flow-table entries evicted to make room (their later traffic still counts)"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if s := a.lastPoll.Load(); s != nil {
				o.Observe(int64(s.Counters.Evicted))
			}
			return nil
		}))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricDatapathEvictions, err)
	}
	_, err = m.Int64ObservableGauge(telemetry.MetricDatapathFlows, metric.WithUnit(telemetry.UnitFlows),
		metric.WithDescription("Kernel flow-table entries in use"),
		metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
			if s := a.lastPoll.Load(); s != nil {
				o.Observe(int64(s.Counters.Flows))
			}
			return nil
		}))
	if err != nil {
		return fmt.Errorf("create %s: %w", telemetry.MetricDatapathFlows, err)
	}
	return nil
}

// Run polls until ctx is done. A failed poll is logged and retried; the
// loop never exits on its own.
func (a *Agent) Run(ctx context.Context) error {
	a.log = klog.FromContext(ctx).WithName("agent")
	if a.cfg.Adopter != nil {
		// Failure is logged inside: new connections are measured anyway.
		_, _ = a.AdoptExisting(ctx)
	}
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := a.PollOnce(ctx); err != nil {
			a.logger().Error(err, "Poll failed")
		}
		select {
		case <-ctx.Done():
			// One last poll so that what moved since the previous one is
			// recorded before shutdown flushes the exporters.
			if err := a.PollOnce(context.WithoutCancel(ctx)); err != nil {
				a.logger().Error(err, "Final poll failed")
			}
			return nil
		case <-t.C:
		}
	}
}

// AdoptExisting has the connections that were open before the probes were
// attached measured from now on, and logs how many. Translated service
// addresses are programmed first, so that an adopted connection to a
// ClusterIP is keyed, and attributed, exactly like a new one.
func (a *Agent) AdoptExisting(ctx context.Context) (probe.AdoptResult, error) {
	log := a.logger()
	if a.log.GetSink() == nil {
		log = klog.FromContext(ctx).WithName("agent")
	}
	if a.cfg.Adopter == nil {
		return probe.AdoptResult{}, errors.New("agent: no adopter configured")
	}
	a.mu.Lock()
	err := a.syncNATServices()
	a.mu.Unlock()
	if err != nil {
		log.Error(err, "Programming translated services before adopting connections")
	}
	start := time.Now()
	res, err := a.cfg.Adopter.AdoptExisting()
	kv := []any{"took", time.Since(start).Round(time.Millisecond), "adopted", res.Adopted, "alreadyTracked", res.Tracked, "otherCgroups", res.OtherCgroup,
		"notEstablished", res.NotEstablished, "failed", res.Failed, "netns", res.Netns}
	switch {
	case err == nil:
		log.Info("Adopted connections open before the agent started", kv...)
	case errors.Is(err, probe.ErrUnsupportedProg) && res.Adopted == 0:
		log.Info("Connections open before the agent started are measured only once they reconnect", append(kv, "reason", err.Error())...)
	default:
		log.Error(err, "Adopting connections open before the agent started", kv...)
	}
	if err != nil {
		return res, fmt.Errorf("adopt existing connections: %w", err)
	}
	return res, nil
}

// PollOnce reads the kernel once and records what moved.
func (a *Agent) PollOnce(ctx context.Context) error {
	s, err := a.cfg.Source.Poll()
	if err != nil {
		return fmt.Errorf("poll flows: %w", err)
	}
	deltas := a.acc.Add(s)
	a.mu.Lock()
	if g := a.cfg.Resolver.Generation(); g != a.gen || a.polls.Load() == 0 {
		// Pods, services or endpoints changed: attribute afresh.
		clear(a.keys)
		a.gen = g
		if err := a.syncNATServices(); err != nil {
			a.logger().Error(err, "Programming translated services")
		}
	}
	var finished []probe.FlowKey
	for i := range deltas {
		d := &deltas[i]
		sk, ok := a.keys[d.Key]
		if !ok {
			sk = seriesKey(a.cfg.Resolver, a.translate(d.Key))
			a.keys[d.Key] = sk
			a.logger().V(5).Info("Attributed flow", "flow", d.Key, "series", sk)
		}
		a.cfg.Recorder.Record(ctx, sk, telemetry.Delta{
			Opened: d.Delta.Opened, Adopted: d.Delta.Adopted, Closed: d.Delta.Closed,
			BytesSent: d.Delta.BytesSent, BytesReceived: d.Delta.BytesReceived,
			Retransmits: d.Delta.Retransmits, RTT: &d.Delta.RTT, // no copy of the 320 buckets
		})
		if o := a.cfg.RTTObserver; o != nil && sk.Role == telemetry.RoleClient && sk.Peer.ClusterName != "" {
			o.Observe(sk.Peer.ClusterName, &d.Delta.RTT)
		}
		if d.Key.LocalPort != 0 {
			if t, ok := a.acc.Total(d.Key); ok && t.Opened+t.Adopted > 0 && t.Closed >= t.Opened+t.Adopted {
				finished = append(finished, d.Key)
			}
		}
	}
	// A per-connection flow is done once its close is accounted: free its
	// kernel entry and everything kept for it.
	for _, k := range finished {
		if err := a.cfg.Source.DeleteFlow(k); err != nil {
			a.logger().Error(err, "Removing finished connection flow")
		}
		a.acc.Drop(k)
		delete(a.keys, k)
	}
	if n := a.polls.Add(1); n%64 == 0 {
		cutoff := s.Time.Add(-a.cfg.IdleAfter)
		a.acc.Forget(cutoff)
		a.cfg.Recorder.Forget(cutoff)
		clear(a.keys)
	}
	a.mu.Unlock()
	a.lastPoll.Store(s)
	return nil
}

// translate replaces a translated service address by the backend the
// connection reached, per conntrack.
func (a *Agent) translate(k probe.FlowKey) probe.FlowKey {
	if k.LocalPort == 0 || a.cfg.NAT == nil {
		return k
	}
	be, err := a.cfg.NAT.Backend(netip.AddrPortFrom(k.Local, k.LocalPort), k.Peer)
	if err != nil {
		a.natUnresolved.Add(1)
		a.logger().V(4).Info("Backend of translated connection unknown", "flow", k, "err", err)
		return k
	}
	k.Peer = be
	return k
}

// syncNATServices makes the kernel's set of translated service addresses
// match the resolver's.
func (a *Agent) syncNATServices() error {
	want := map[netip.AddrPort]bool{}
	for _, ap := range a.cfg.Resolver.TranslatedServices() {
		want[ap] = true
	}
	var errs []error
	for ap := range want {
		if !a.nat[ap] {
			if err := a.cfg.Source.SetNATService(ap); err != nil {
				errs = append(errs, err)
				continue
			}
			a.nat[ap] = true
		}
	}
	for ap := range a.nat {
		if !want[ap] {
			if err := a.cfg.Source.DeleteNATService(ap); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(a.nat, ap)
		}
	}
	return errors.Join(errs...)
}

// NATUnresolved counts translated connections whose backend was not found.
func (a *Agent) NATUnresolved() uint64 { return a.natUnresolved.Load() }

func (a *Agent) logger() klog.Logger {
	if a.log.GetSink() == nil {
		return klog.Background().WithName("agent")
	}
	return a.log
}

// Ready reports whether at least one poll succeeded.
func (a *Agent) Ready() bool { return a.lastPoll.Load() != nil }
