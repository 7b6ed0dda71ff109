package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/internal/lab/ui"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/scheduler-plugin/events"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/wan"
)

// RunOptions configure a lab run.
type RunOptions struct {
	Profile        *Profile
	Duration       time.Duration // split between the two measured phases
	RatePerCluster float64       // entry requests per second from each cluster
	Executable     string
	Progress       io.Writer
	// OnState, if set, receives the dashboard's state as the run goes.
	OnState func(ui.State)
	// WithAPIServer runs the real estimator publishing into a real Karmada
	// host API server for the first phase. Its binaries come from the cache
	// or are built from the tools module embedded in this binary, before any
	// cluster is created.
	WithAPIServer bool
	// Kubernetes runs the lab on real member clusters with kubelet nodes
	// (KubeWorld) instead of processes in network namespaces (World).
	Kubernetes bool
	// Telemetry, when set, serves every component's Prometheus metrics
	// (Telemetry.Handler) for the dashboards.
	Telemetry *Telemetry
	// RoutingDuration is the routing phase's measured time, split between
	// kube-proxy-style balancing and flowplace's routing; 0 skips the
	// phase. The process world only.
	RoutingDuration time.Duration
}

// Report is what a run found. The three top-level numbers are what CI and
// users compare.
type Report struct {
	Clusters []string `json:"clusters"`
	// MeasuredRTTMaxErrorMs is the largest |measured - injected| over the
	// cluster pairs that carried traffic (measured: mean of the estimator's
	// merged RTT distribution of the pair).
	MeasuredRTTMaxErrorMs float64 `json:"measured_rtt_max_error_ms"`
	// CrossClusterBytesRatio and MeanLatencyRatio are after/before.
	CrossClusterBytesRatio float64 `json:"cross_cluster_bytes_ratio"`
	MeanLatencyRatio       float64 `json:"mean_latency_ratio"`
	// OptimalGap is the re-placement's network cost (bytes/s x measured
	// p50 RTT, over the traffic graph measured before it) over the
	// exhaustive optimum of the same problem; Rebalance has the details.
	OptimalGap float64          `json:"optimal_gap"`
	Rebalance  *RebalanceReport `json:"rebalance,omitempty"`
	// Advisor is what the real rebalance advisor did (WithAPIServer);
	// its moves are the re-placement then.
	Advisor   *AdvisorReport   `json:"advisor,omitempty"`
	RTT       []ui.RTTCell     `json:"rtt"`
	Traffic   []ui.TrafficEdge `json:"traffic"`
	Placement []ui.Placement   `json:"placement"`
	Before    Phase            `json:"before"`
	// Published counts the estimator\'s objects in the API server
	// (WithAPIServer); each passed the API server\'s schema validation.
	Published *Published `json:"published,omitempty"`
	After     Phase      `json:"after"`
	// RoutingLatencyRatio (flowplace routing / kube-proxy-style mean
	// client latency), FailoverMs and FailedConnectsAfterFailover are the
	// routing phase's top-level numbers; Routing has the rest. Absent when
	// the phase did not run.
	RoutingLatencyRatio         *float64       `json:"routing_latency_ratio,omitempty"`
	FailoverMs                  *float64       `json:"failover_ms,omitempty"`
	FailedConnectsAfterFailover *int           `json:"failed_connects_after_failover,omitempty"`
	Routing                     *RoutingReport `json:"routing,omitempty"`
	Elapsed                     float64        `json:"elapsed_s"`
}

// RebalanceReport is the re-placement's plan against the optimum of the
// measured problem (costs in bytes/s x ms).
type RebalanceReport struct {
	Optimal     map[string]string `json:"optimal"`
	CostBefore  float64           `json:"cost_before"`
	CostPlanned float64           `json:"cost_planned"`
	CostOptimal float64           `json:"cost_optimal"`
}

// Phase is one measured placement.
type Phase struct {
	Placement                  map[string]string `json:"placement"`
	CrossClusterBytesPerSecond float64           `json:"cross_cluster_bytes_per_second"`
	Requests                   int               `json:"requests"`
	MeanMs                     float64           `json:"mean_ms"`
	P50Ms                      float64           `json:"p50_ms"`
	P99Ms                      float64           `json:"p99_ms"`
}

// Preflight checks, before anything on the machine changes, that a run can
// work here.
func Preflight(opts *RunOptions) error {
	if opts.Profile == nil {
		return errors.New("lab: no profile")
	}
	if err := opts.Profile.Validate(); err != nil {
		return err
	}
	if opts.Duration < 10*time.Second {
		return fmt.Errorf("lab: --duration %s: at least 10s (two measured phases)", opts.Duration)
	}
	if opts.RoutingDuration != 0 && opts.RoutingDuration < 10*time.Second {
		return fmt.Errorf("lab: --routing-duration %s: 0 (no routing phase) or at least 10s (two measured phases)", opts.RoutingDuration)
	}
	if err := probe.CheckKernel(); err != nil {
		return err
	}
	if reason := wan.Unsupported(); reason != "" {
		return fmt.Errorf("lab: cannot build the clusters: %s", reason)
	}
	// The services start in the clusters through `ip netns exec`.
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("lab: needs the ip command (iproute2) to start the shop in the clusters: %w", err)
	}
	if opts.Kubernetes {
		if opts.WithAPIServer {
			return errors.New("lab: --kubernetes and --with-apiserver cannot be combined yet: the Kubernetes lab's estimator runs in-process")
		}
		if err := kubernetesPreflight(); err != nil {
			return err
		}
	}
	if opts.WithAPIServer {
		// Found (or found buildable) now: after the world is built is too
		// late to learn that a control plane cannot be had.
		if _, err := controlplane.Resolve(); err != nil {
			return fmt.Errorf("lab: --with-apiserver: %w", err)
		}
	}
	return nil
}

// Run builds the world, measures the shop placed the way Karmada places it
// without flowplace, re-places it where the rebalance advisor's plan puts
// it, measures again, and tears everything down.
func Run(ctx context.Context, opts RunOptions) (_ *Report, err error) {
	if err := Preflight(&opts); err != nil {
		return nil, err
	}
	if opts.RatePerCluster <= 0 {
		opts.RatePerCluster = 5
	}
	start := time.Now()
	if opts.WithAPIServer {
		// A first run builds the binaries (minutes) before any cluster
		// exists, rather than with the world up and idle.
		if _, err := controlplane.Binaries(ctx, func(format string, args ...any) {
			if opts.Progress != nil {
				fmt.Fprintf(opts.Progress, "lab: "+format+"\n", args...)
			}
		}); err != nil {
			return nil, fmt.Errorf("lab: --with-apiserver: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	app := demo.Shop()
	clusters := opts.Profile.ClusterNames()
	capacity := Capacity{}
	for _, c := range clusters {
		// No cluster can hold the whole shop: placement has to choose.
		capacity[c] = (len(app.Services)+len(clusters)-1)/len(clusters) + 1
	}
	var w labWorld
	wopts := Options{Profile: opts.Profile, App: app, Executable: opts.Executable, Progress: opts.Progress, Telemetry: opts.Telemetry}
	if opts.Kubernetes {
		w, err = NewKubeWorld(ctx, wopts)
	} else {
		w, err = NewWorld(ctx, wopts)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := w.Close(); cerr != nil {
			if err == nil {
				err = cerr
			} else if opts.Progress != nil {
				// Not lost behind the error that ended the run.
				fmt.Fprintf(opts.Progress, "lab: teardown: %v\n", cerr)
			}
		}
	}()
	rep := &Report{Clusters: clusters}
	state := ui.State{Clusters: clusters}
	publish := func(phase string) {
		state.Phase, state.Updated = phase, time.Now()
		if opts.OnState != nil {
			opts.OnState(state)
		}
		w.progress("%s", phase)
	}
	for _, a := range clusters {
		for _, b := range clusters {
			if a != b {
				state.RTT = append(state.RTT, ui.RTTCell{From: a, To: b, InjectedMs: ms(opts.Profile.Injected(a, b))})
			}
		}
	}

	before, err := KarmadaDefault(app, clusters, capacity)
	if err != nil {
		return nil, err
	}
	phaseDur := opts.Duration / 2
	var snk sink
	if opts.WithAPIServer {
		publish("[2/6] starting a Karmada API server and the estimator")
		a, err := startAPIServerEstimator(ctx, app, clusters, capacity, before, opts.Telemetry)
		if err != nil {
			return nil, err
		}
		defer a.stop()
		snk = sink{endpoint: a.est.OTLPAddr().String(), snapshot: a.est.Aggregator().Snapshot, close: func() {}}
		publish(fmt.Sprintf("[2/6] measuring Karmada's default placement for %s", phaseDur))
		snapBefore, phBefore, err := measure(ctx, w, before, phaseDur, opts.RatePerCluster, snk)
		rep.Before = phBefore
		if err != nil {
			return nil, err
		}
		a.est.PublishOnce(ctx)
		p, err := a.published(ctx)
		if err != nil {
			return nil, err
		}
		rep.Published = &p
		advise := func(ctx context.Context) (AdvisorReport, map[string]string, error) { return a.advise(ctx, app, before) }
		return finish(ctx, opts, w, app, clusters, capacity, before, snapBefore, advise, rep, &state, publish, start)
	}
	publish(fmt.Sprintf("[2/6] measuring Karmada's default placement for %s", phaseDur))
	snapBefore, phBefore, err := measure(ctx, w, before, phaseDur, opts.RatePerCluster, sink{})
	rep.Before = phBefore
	if err != nil {
		return nil, err
	}
	return finish(ctx, opts, w, app, clusters, capacity, before, snapBefore, nil, rep, &state, publish, start)
}

// finish reports the first phase, re-places the shop where the rebalance
// advisor's plan puts it and measures again.
func finish(ctx context.Context, opts RunOptions, w labWorld, app *demo.App, clusters []string, capacity Capacity, before map[string]string,
	snapBefore *aggregate.Snapshot, advise func(context.Context) (AdvisorReport, map[string]string, error),
	rep *Report, state *ui.State, publish func(string), start time.Time) (*Report, error) {
	phaseDur := opts.Duration / 2
	state.Latency = append(state.Latency, ui.Latency{Phase: "before", MeanMs: rep.Before.MeanMs, P50Ms: rep.Before.P50Ms, P99Ms: rep.Before.P99Ms})
	// The matrix: mean RTT of each pair that carried traffic.
	for i := range state.RTT {
		c := &state.RTT[i]
		if row, ok := snapBefore.Latency[w.ClusterUID(c.From)]; ok {
			if st, ok := row[w.ClusterUID(c.To)]; ok && st.Samples > 0 {
				c.MeasuredMs, c.Samples = st.Mean*1e3, int64(st.Samples)
				rep.MeasuredRTTMaxErrorMs = math.Max(rep.MeasuredRTTMaxErrorMs, math.Abs(c.MeasuredMs-c.InjectedMs))
			}
		}
	}
	state.Traffic = traffic(snapBefore, before)
	publish("[3/6] computing flowplace's placement from the measurements")

	// The running shop is re-placed the way the rebalance advisor plans
	// it: the whole measured graph at once.
	rb, err := Rebalance(app, snapBefore, clusters, capacity, before, w.ClusterOf)
	if err != nil {
		return nil, err
	}
	after := rb.Placement
	if advise != nil {
		// With an API server the real advisor decides, from the objects
		// the estimator published, and creates the WorkloadRebalancers.
		ar, placed, err := advise(ctx)
		if err != nil {
			return nil, err
		}
		rep.Advisor, after = &ar, placed
		var ok bool
		if rb.CostPlanned, ok = rb.CostOf(after); !ok {
			return nil, fmt.Errorf("lab: the rebalance advisor's placement is not one the lab's clusters hold: %v", after)
		}
	}
	rep.OptimalGap = rb.Gap()
	rep.Rebalance = &RebalanceReport{Optimal: rb.Optimal, CostBefore: rb.CostBefore, CostPlanned: rb.CostPlanned, CostOptimal: rb.CostOptimal}
	// The scheduler plugins' scores of each cluster with the other
	// services where the plan puts them: what Karmada's scheduler weighs
	// when the advisor's WorkloadRebalancer has it re-place a service.
	var decisions *events.Recorder
	if opts.Telemetry != nil {
		decisions = opts.Telemetry.decisions
	}
	_, scored, err := Recommend(app, snapBefore, clusters, capacity, after, w.ClusterOf, decisions)
	if err != nil {
		return nil, err
	}
	for _, s := range Order(app) {
		state.Placement = append(state.Placement, ui.Placement{Workload: s, Current: before[s], Recommended: after[s],
			Scores: scored[s].Scores, Reasons: scored[s].Reasons})
	}
	publish(fmt.Sprintf("[4/6] measuring flowplace's placement for %s", phaseDur))
	_, phAfter, err := measure(ctx, w, after, phaseDur, opts.RatePerCluster, sink{})
	rep.After = phAfter
	if err != nil {
		return nil, err
	}
	state.Latency = append(state.Latency, ui.Latency{Phase: "after", MeanMs: rep.After.MeanMs, P50Ms: rep.After.P50Ms, P99Ms: rep.After.P99Ms})
	for i := range state.Placement {
		state.Placement[i].Current = after[state.Placement[i].Workload]
	}
	if pw, ok := w.(*World); ok && opts.RoutingDuration > 0 {
		rr, err := runRouting(ctx, pw, snapBefore, opts.RoutingDuration, opts.RatePerCluster, publish)
		if err != nil {
			return nil, err
		}
		rep.Routing = rr
		rep.RoutingLatencyRatio, rep.FailoverMs, rep.FailedConnectsAfterFailover = &rr.LatencyRatio, &rr.FailoverMs, &rr.FailedAfterFailover
		state.Routing = &ui.Routing{
			KubeProxy:  ui.Latency{Phase: "kube-proxy", MeanMs: rr.KubeProxy.MeanMs, P50Ms: rr.KubeProxy.P50Ms, P99Ms: rr.KubeProxy.P99Ms},
			Flowplace:  ui.Latency{Phase: "flowplace", MeanMs: rr.Flowplace.MeanMs, P50Ms: rr.Flowplace.P50Ms, P99Ms: rr.Flowplace.P99Ms},
			BytesRatio: rr.CrossClusterBytesRatio, Order: rr.Order,
			Killed: rr.Killed, KilledIn: rr.KilledIn, FailoverMs: rr.FailoverMs, FailedConnects: rr.FailedConnects, FailedAfterFailover: rr.FailedAfterFailover,
		}
	}
	publish(fmt.Sprintf("done in %s", time.Since(start).Round(time.Second)))

	rep.RTT, rep.Traffic, rep.Placement = state.RTT, state.Traffic, state.Placement
	rep.CrossClusterBytesRatio = ratio(rep.After.CrossClusterBytesPerSecond, rep.Before.CrossClusterBytesPerSecond)
	rep.MeanLatencyRatio = ratio(rep.After.MeanMs, rep.Before.MeanMs)
	rep.Elapsed = time.Since(start).Seconds()
	return rep, nil
}

// labWorld is where the lab runs the shop: processes in network namespaces
// (World) or pods in real member clusters (KubeWorld).
type labWorld interface {
	Place(ctx context.Context, placement map[string]string) error
	StartAgents(ctx context.Context, endpoint string, interval time.Duration) error
	StopAgents() error
	Load(ctx context.Context, d time.Duration, weights map[string]float64) (*LoadResult, error)
	ClusterNames() []string
	// ClusterUID is the UID a cluster's agents report; ClusterOf inverts it.
	ClusterUID(name string) string
	ClusterOf(uid string) string
	// PeerClusterUID resolves peers agents name without a UID.
	PeerClusterUID(name string) (string, bool)
	// CollectorHost is the address agents reach the lab's collector on.
	CollectorHost() string
	progress(format string, args ...any)
	Close() error
}

// sink is where a phase's measurements go; the zero sink means a fresh
// in-process estimator aggregate.
type sink struct {
	endpoint string
	snapshot func() *aggregate.Snapshot
	close    func()
}

// measure places the shop, runs client load with fresh agents exporting to
// snk, and returns what they measured.
func measure(ctx context.Context, w labWorld, place map[string]string, d time.Duration, rate float64, snk sink) (*aggregate.Snapshot, Phase, error) {
	if err := w.Place(ctx, place); err != nil {
		return nil, Phase{Placement: place}, err
	}
	snap, ph, err := measureRunning(ctx, w, d, rate, snk)
	ph.Placement = place
	return snap, ph, err
}

// measureRunning runs client load against the shop as it runs now, with
// fresh agents exporting to snk, and returns what they measured.
func measureRunning(ctx context.Context, w labWorld, d time.Duration, rate float64, snk sink) (*aggregate.Snapshot, Phase, error) {
	var ph Phase
	if snk.endpoint == "" {
		col, err := StartCollectorOn(w.CollectorHost(), d, w.PeerClusterUID)
		if err != nil {
			return nil, ph, err
		}
		snk = sink{endpoint: col.Endpoint(), snapshot: col.Snapshot, close: col.Close}
	}
	defer snk.close()
	if err := w.StartAgents(ctx, snk.endpoint, time.Second); err != nil {
		return nil, ph, err
	}
	weights := map[string]float64{}
	for _, c := range w.ClusterNames() {
		weights[c] = rate
	}
	res, err := w.Load(ctx, d, weights)
	if cerr := ctx.Err(); cerr != nil {
		err = cerr // Load returns early and quietly when interrupted
	}
	if err != nil {
		w.StopAgents()
		return nil, ph, err
	}
	// The final poll and flush land in the collector.
	if err := w.StopAgents(); err != nil {
		return nil, ph, err
	}
	snap := snk.snapshot()
	ph.CrossClusterBytesPerSecond = crossClusterBytes(snap)
	for _, n := range res.Requests {
		ph.Requests += n
	}
	ph.MeanMs, ph.P50Ms, ph.P99Ms = ms(res.Mean()), ms(res.Quantile(0.5)), ms(res.Quantile(0.99))
	return snap, ph, nil
}

// crossClusterBytes sums the measured bytes/s of every flow whose two ends
// are in different clusters: service to service (client side, so each
// connection counts once) and clients to the entry (server side: the load
// generators are not probed).
func crossClusterBytes(s *aggregate.Snapshot) float64 {
	var total float64
	for _, stat := range s.Traffic {
		for _, pairs := range stat.Peers {
			for pair, r := range pairs {
				if pair.Src != pair.Dst {
					total += r.BytesPerSecond
				}
			}
		}
		for pair, r := range stat.Clients {
			if pair.Src != pair.Dst && len(stat.Peers) > 0 {
				total += r.BytesPerSecond
			}
		}
	}
	return total
}

func traffic(s *aggregate.Snapshot, place map[string]string) []ui.TrafficEdge {
	var out []ui.TrafficEdge
	for w, stat := range s.Traffic {
		// The shop and its clients; not, say, the agents' own calls to
		// their API servers.
		if _, ok := place[w.Name]; !ok && !strings.HasPrefix(w.Name, loadGeneratorPrefix) {
			continue
		}
		for peer, pairs := range stat.Peers {
			to := peer.Name
			if to == "" {
				to = peer.ServiceName // a remote endpoint: see Recommend
			}
			if to == "" {
				continue
			}
			var b float64
			for _, r := range pairs {
				b += r.BytesPerSecond
			}
			out = append(out, ui.TrafficEdge{From: w.Name, To: to, FromCluster: place[w.Name], ToCluster: place[to], BytesPerSecond: math.Round(b)})
		}
	}
	slices.SortFunc(out, func(a, b ui.TrafficEdge) int {
		if a.BytesPerSecond != b.BytesPerSecond {
			if a.BytesPerSecond > b.BytesPerSecond {
				return -1
			}
			return 1
		}
		if a.From+a.To < b.From+b.To {
			return -1
		}
		return 1
	})
	return out
}

func ms(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

func ratio(after, before float64) float64 {
	if before == 0 {
		return math.NaN()
	}
	return math.Round(after/before*1000) / 1000
}
