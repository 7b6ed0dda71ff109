package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/flowplace/flowplace/internal/agent"
	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/telemetry"
)

// clusterAgent is one cluster's flowplace agent, in this process: the real
// probes attached to the cluster's cgroup, standalone attribution from the
// lab's current placement, and OTLP export.
type clusterAgent struct {
	probe    *probe.Probe
	provider *telemetry.Provider
	cancel   context.CancelFunc
	done     chan error
}

// labResolver answers from the lab's current placement; Place swaps it.
type labResolver struct {
	cur atomic.Pointer[attribution.Static]
	gen atomic.Uint64
}

func (r *labResolver) s() *attribution.Static { return r.cur.Load() }
func (r *labResolver) Self() attribution.Cluster {
	return r.s().Self()
}
func (r *labResolver) Local(a netip.Addr, cg uint64) (attribution.Workload, bool) {
	return r.s().Local(a, cg)
}
func (r *labResolver) Service(d netip.AddrPort) (attribution.Service, bool) {
	return r.s().Service(d)
}
func (r *labResolver) Endpoint(a netip.AddrPort) (attribution.Endpoint, bool) {
	return r.s().Endpoint(a)
}
func (r *labResolver) Generation() uint64                   { return r.gen.Load() }
func (r *labResolver) TranslatedServices() []netip.AddrPort { return nil }

// ClusterUID is the stand-in for a member's kube-system UID in the lab.
func ClusterUID(cluster string) string { return "lab-" + cluster }

// LoadGenerator is the workload name of a cluster's client load.
func LoadGenerator(cluster string) string { return loadGeneratorPrefix + cluster }

const loadGeneratorPrefix = "clients-"

// topologyFor describes the lab as the agent of cluster self sees it.
func (w *World) topologyFor(self string) *attribution.TopologyFile {
	app := w.opts.App
	tf := &attribution.TopologyFile{APIVersion: attribution.TopologyAPIVersion, Kind: attribution.TopologyKind, Cluster: self}
	for _, c := range w.topo.Clusters() {
		tf.Clusters = append(tf.Clusters, attribution.TopologyCluster{Name: c.Name, UID: ClusterUID(c.Name), CIDRs: []string{c.Subnet.String()}})
		// Clients dial from the cluster's node address.
		tf.Workloads = append(tf.Workloads, attribution.TopologyWorkload{Namespace: app.Namespace, Name: LoadGenerator(c.Name),
			Kind: "Deployment", Cluster: c.Name, Addresses: []string{c.NodeAddr.String()}})
	}
	if len(w.vips) > 0 {
		// The routing phase: services at their service addresses, and
		// one instance of each in every cluster.
		for _, s := range app.Services {
			tf.Services = append(tf.Services, attribution.TopologyService{Namespace: app.Namespace, Name: s.Name, Addresses: []string{w.vips[s.Name].String()}})
			for _, c := range w.topo.Clusters() {
				if a, ok := w.replicas[s.Name][c.Name]; ok {
					tf.Workloads = append(tf.Workloads, attribution.TopologyWorkload{Namespace: app.Namespace, Name: s.Name, Kind: "Deployment",
						Cluster: c.Name, Service: s.Name, Addresses: []string{a.Addr().String()}})
				}
			}
		}
		return tf
	}
	for _, s := range app.Services {
		a, ok := w.addrs[s.Name]
		if !ok {
			continue
		}
		tf.Services = append(tf.Services, attribution.TopologyService{Namespace: app.Namespace, Name: s.Name, Addresses: []string{a.String()}})
		tf.Workloads = append(tf.Workloads, attribution.TopologyWorkload{Namespace: app.Namespace, Name: s.Name, Kind: "Deployment",
			Cluster: w.placement[s.Name], Service: s.Name, Addresses: []string{a.Addr().String()}})
	}
	return tf
}

// StartAgents runs one agent per cluster, exporting OTLP to endpoint every
// interval.
func (w *World) StartAgents(ctx context.Context, endpoint string, interval time.Duration) (err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.agents) > 0 {
		return errors.New("lab: agents already running")
	}
	defer func() {
		if err != nil {
			w.stopAgentsLocked()
		}
	}()
	for _, c := range w.topo.Clusters() {
		r := &labResolver{}
		st, err := attribution.NewStatic(w.topologyFor(c.Name))
		if err != nil {
			return fmt.Errorf("lab: attribution for %s: %w", c.Name, err)
		}
		r.cur.Store(st)
		r.gen.Add(1)
		popts := probe.Options{Cgroup: w.cgroups[c.Name]}
		if d := w.routers[c.Name]; d != nil {
			popts.RoutedSockets = d.RoutedSockets()
		}
		p, err := probe.Load(popts)
		if err != nil {
			return fmt.Errorf("lab: probes for %s: %w", c.Name, err)
		}
		a := &clusterAgent{probe: p, done: make(chan error, 1)}
		w.agents[c.Name] = a
		w.resolvers[c.Name] = r
		a.provider, err = telemetry.NewProvider(ctx, telemetry.Config{
			Resource: []attribute.KeyValue{telemetry.AttrClusterUID.String(ClusterUID(c.Name)),
				telemetry.AttrClusterName.String(c.Name), telemetry.AttrNodeName.String(c.Name + "-node")},
			OTLP:       telemetry.OTLPConfig{Endpoint: endpoint, Insecure: true, Interval: interval, Timeout: 5 * time.Second},
			Prometheus: w.opts.Telemetry != nil,
		})
		if err != nil {
			return fmt.Errorf("lab: telemetry for %s: %w", c.Name, err)
		}
		w.opts.Telemetry.add("agent/"+c.Name, a.provider.Gatherer())
		rec, err := telemetry.NewRecorder(a.provider.Meter(), 0)
		if err != nil {
			return err
		}
		ag, err := agent.New(agent.Config{Source: p, Resolver: r, Recorder: rec, Meter: a.provider.Meter(), PollInterval: 500 * time.Millisecond})
		if err != nil {
			return err
		}
		actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		a.cancel = cancel
		go func() { a.done <- ag.Run(actx) }()
	}
	w.progress("eBPF agents attached in %d clusters", len(w.agents))
	return nil
}

// refreshAttributionLocked gives every agent the current placement.
func (w *World) refreshAttributionLocked() error {
	for name, r := range w.resolvers {
		st, err := attribution.NewStatic(w.topologyFor(name))
		if err != nil {
			return fmt.Errorf("lab: attribution for %s: %w", name, err)
		}
		r.cur.Store(st)
		r.gen.Add(1)
	}
	return nil
}

// FlushAgents makes every agent poll and export now.
func (w *World) FlushAgents(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var errs []error
	for _, a := range w.agents {
		if err := a.provider.ForceFlush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (w *World) stopAgentsLocked() error {
	var (
		errs []error
		mu   sync.Mutex
		wg   sync.WaitGroup
	)
	add := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for name, a := range w.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if a.cancel != nil {
				a.cancel()
				<-a.done // the final poll records what is left
			}
			if a.provider != nil {
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if err := a.provider.Shutdown(sctx); err != nil {
					add(fmt.Errorf("lab: flush telemetry of %s: %w", name, err))
				}
				cancel()
			}
			if err := a.probe.Close(); err != nil {
				add(fmt.Errorf("lab: detach probes of %s: %w", name, err))
			}
		}()
	}
	wg.Wait()
	clear(w.agents)
	clear(w.resolvers)
	return errors.Join(errs...)
}

// StopAgents stops every agent after a final poll and flush, and detaches
// their probes.
func (w *World) StopAgents() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.stopAgentsLocked()
}
