// Package agent runs flowplace's member-cluster agent loop: poll the kernel
// flow aggregates, attribute each flow to workloads, services and clusters,
// and record what moved on the telemetry instruments.
package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/telemetry"
)

// Source is where flows come from: the loaded probes.
type Source interface {
	Poll() (*probe.Snapshot, error)
}

// Config configures an Agent.
type Config struct {
	Source   Source
	Resolver attribution.Resolver
	Recorder *telemetry.Recorder
	Meter    metric.Meter // for the agent's own metrics; may be nil
	// PollInterval between kernel reads.
	PollInterval time.Duration
	// IdleAfter forgets flows and series with no open connection and no
	// traffic for this long, so memory follows live traffic.
	IdleAfter time.Duration
}

// Agent is the poll-attribute-record loop.
type Agent struct {
	cfg  Config
	acc  *probe.Accumulator
	log  klog.Logger
	mu   sync.Mutex
	keys map[probe.FlowKey]telemetry.SeriesKey // attribution cache
	gen  uint64

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
	a := &Agent{cfg: cfg, acc: probe.NewAccumulator(), keys: map[probe.FlowKey]telemetry.SeriesKey{}}
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
	t := time.NewTicker(a.cfg.PollInterval)
	defer t.Stop()
	for {
		if err := a.PollOnce(ctx); err != nil {
			a.log.Error(err, "Poll failed")
		}
		select {
		case <-ctx.Done():
			// One last poll so that what moved since the previous one is
			// recorded before shutdown flushes the exporters.
			if err := a.PollOnce(context.WithoutCancel(ctx)); err != nil {
				a.log.Error(err, "Final poll failed")
			}
			return nil
		case <-t.C:
		}
	}
}

// PollOnce reads the kernel once and records what moved.
func (a *Agent) PollOnce(ctx context.Context) error {
	s, err := a.cfg.Source.Poll()
	if err != nil {
		return fmt.Errorf("poll flows: %w", err)
	}
	deltas := a.acc.Add(s)
	a.mu.Lock()
	if g := a.cfg.Resolver.Generation(); g != a.gen {
		// Pods, services or endpoints changed: attribute afresh.
		clear(a.keys)
		a.gen = g
	}
	for i := range deltas {
		d := &deltas[i]
		sk, ok := a.keys[d.Key]
		if !ok {
			sk = seriesKey(a.cfg.Resolver, d.Key)
			a.keys[d.Key] = sk
		}
		rtt := d.Delta.RTT
		a.cfg.Recorder.Record(ctx, sk, telemetry.Delta{
			Opened: d.Delta.Opened, Closed: d.Delta.Closed,
			BytesSent: d.Delta.BytesSent, BytesReceived: d.Delta.BytesReceived,
			Retransmits: d.Delta.Retransmits, RTT: &rtt,
		})
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

// Ready reports whether at least one poll succeeded.
func (a *Agent) Ready() bool { return a.lastPoll.Load() != nil }
