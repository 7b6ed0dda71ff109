// Package estimator turns the agents' OTLP measurements into flowplace's
// published model: ClusterLatency (an RTT matrix row per source cluster) and
// WorkloadTraffic (a traffic graph row per workload) objects in the Karmada
// API server.
//
// Data flow: an OTLP gRPC receiver (server.go) hands raw requests to the
// Aggregator (package aggregate), which decodes them in place (otlpwire), turns
// cumulative and delta sums and histograms into deltas per input series
// (handling resets and agent restarts), and folds the deltas into
// exponentially decaying aggregates per cluster pair and per (workload,
// peer, cluster pair). The publisher (publish.go) periodically snapshots the
// aggregates, resolves cluster UIDs and workloads through Karmada's Cluster
// and ResourceBinding objects (resolve.go), and writes only the objects that
// changed meaningfully or whose validity needs extending. One replica, the
// Lease holder, receives and publishes; a new leader first resumes from the
// published objects.
package estimator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/estimator/rebalance"
	"github.com/flowplace/flowplace/telemetry"
)

// Config configures an Estimator.
type Config struct {
	// REST is the Karmada API server (where Cluster and ResourceBinding
	// objects live and the results are published).
	REST *rest.Config

	Aggregator aggregate.AggregatorConfig
	Publish    PublishPolicy
	// PublishInterval is how often the aggregates are compared with the
	// published objects.
	PublishInterval time.Duration

	// OTLPAddress is the OTLP gRPC listen address (host:port).
	OTLPAddress string
	TLS         ServerTLS
	// MaxMessageBytes bounds one export request.
	MaxMessageBytes int

	// HealthAddress serves /healthz, /readyz and, if given, Metrics at
	// /metrics. Empty disables it.
	HealthAddress  string
	MetricsHandler http.Handler
	// Meter receives the estimator's own metrics and, on the leader, the
	// model it publishes; nil disables them.
	Meter metric.Meter
	// ModelWorkloadPairs bounds the workload pairs exported as metrics
	// (telemetry.MetricWorkloadTraffic), heaviest first; 0 means
	// telemetry.ModelWorkloadPairs.
	ModelWorkloadPairs int

	// Leader election on a coordination.k8s.io Lease.
	LeaseNamespace, LeaseName string
	Identity                  string
	LeaseDuration             time.Duration
	RenewDeadline             time.Duration
	RetryPeriod               time.Duration

	// FieldManager names the estimator in managedFields.
	FieldManager string

	// MatrixConfigMap, when set, is where the latency matrix is also kept
	// for the agents' routing (the chart propagates it to the members).
	MatrixConfigMap types.NamespacedName

	// Rebalance, when set, runs the rebalance advisor on the leader
	// (package rebalance; opt-in). Its Meter defaults to Meter.
	Rebalance *rebalance.Config
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.REST == nil {
		return errors.New("estimator: no API server configuration")
	}
	if c.OTLPAddress == "" {
		return errors.New("estimator: no OTLP listen address")
	}
	if err := c.TLS.Validate(); err != nil {
		return err
	}
	if c.PublishInterval <= 0 {
		c.PublishInterval = 15 * time.Second
	}
	c.Publish.setDefaults()
	if !(c.Publish.RelativeChange > 0 && c.Publish.RelativeChange < 1) {
		return fmt.Errorf("estimator: relative change %g must be in (0, 1)", c.Publish.RelativeChange)
	}
	if c.ModelWorkloadPairs < 0 {
		return fmt.Errorf("estimator: model workload pairs %d must not be negative", c.ModelWorkloadPairs)
	}
	if c.MaxMessageBytes > MaxMessageBytesLimit {
		return fmt.Errorf("estimator: OTLP message limit %d above %d", c.MaxMessageBytes, MaxMessageBytesLimit)
	}
	if c.Publish.ValidFor < 2*c.PublishInterval {
		return fmt.Errorf("estimator: validity %s must be at least twice the publish interval %s", c.Publish.ValidFor, c.PublishInterval)
	}
	if c.LeaseNamespace == "" {
		c.LeaseNamespace = "karmada-system"
	}
	if c.LeaseName == "" {
		c.LeaseName = "flowplace-estimator"
	}
	if c.Identity == "" {
		host, _ := os.Hostname()
		c.Identity = fmt.Sprintf("%s_%d", host, os.Getpid())
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 15 * time.Second
	}
	if c.RenewDeadline <= 0 {
		c.RenewDeadline = 10 * time.Second
	}
	if c.RetryPeriod <= 0 {
		c.RetryPeriod = 2 * time.Second
	}
	if c.FieldManager == "" {
		c.FieldManager = "flowplace-estimator"
	}
	return nil
}

// Estimator is one replica.
type Estimator struct {
	cfg     Config
	agg     *aggregate.Aggregator
	res     *resolver
	pub     *publisher
	matrix  *matrixPublisher
	advisor *rebalance.Advisor
	metrics *selfMetrics
	kube    kubernetes.Interface

	leader     atomic.Bool
	serving    atomic.Bool
	mu         sync.Mutex
	addr       net.Addr
	healthAddr net.Addr
}

// New builds an estimator; Run starts it.
func New(cfg Config) (*Estimator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc := rest.CopyConfig(cfg.REST)
	if rc.UserAgent == "" {
		rc.UserAgent = "flowplace-estimator"
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("estimator: dynamic client: %w", err)
	}
	kc, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("estimator: clientset: %w", err)
	}
	res, err := newResolver(dc, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	if cfg.Aggregator.PeerClusterUID == nil {
		cfg.Aggregator.PeerClusterUID = res.clusterUIDByName
	}
	e := &Estimator{cfg: cfg, agg: aggregate.NewAggregator(cfg.Aggregator), res: res, kube: kc}
	if cfg.Meter != nil {
		if e.metrics, err = newSelfMetrics(cfg.Meter, e.agg); err != nil {
			return nil, err
		}
		e.metrics.modelPairs = cmp.Or(cfg.ModelWorkloadPairs, telemetry.ModelWorkloadPairs)
	} else {
		e.metrics = noopMetrics()
	}
	e.pub = newPublisher(dc, res, cfg.Publish, cfg.FieldManager, e.metrics)
	if cfg.MatrixConfigMap.Name != "" {
		e.matrix = &matrixPublisher{kube: kc, at: cfg.MatrixConfigMap, manager: cfg.FieldManager}
	}
	if cfg.Rebalance != nil {
		rc := *cfg.Rebalance
		if rc.Meter == nil {
			rc.Meter = cfg.Meter
		}
		if e.advisor, err = rebalance.New(dc, kc, rc); err != nil {
			return nil, fmt.Errorf("estimator: %w", err)
		}
	}
	return e, nil
}

// Advisor is the rebalance advisor, nil unless configured.
func (e *Estimator) Advisor() *rebalance.Advisor { return e.advisor }

// Aggregator is the estimator's aggregator (tests, benchmarks).
func (e *Estimator) Aggregator() *aggregate.Aggregator { return e.agg }

// PublishStats returns the publisher's counters.
func (e *Estimator) PublishStats() PublishStats { return e.pub.Stats() }

// IsLeader reports whether this replica holds the lease.
func (e *Estimator) IsLeader() bool { return e.leader.Load() }

// Ready reports whether this replica receives and publishes.
func (e *Estimator) Ready() bool { return e.leader.Load() && e.serving.Load() }

// OTLPAddr is the bound OTLP address while serving, else nil.
func (e *Estimator) OTLPAddr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.addr
}

// ErrLeadershipLost is returned by Run when another replica took over.
var ErrLeadershipLost = errors.New("estimator: leadership lost")

// Run runs until ctx ends (nil) or leadership is lost (ErrLeadershipLost;
// the process should exit, so that it restarts as a clean standby).
func (e *Estimator) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if e.cfg.HealthAddress != "" {
		srv, err := e.serveHealth()
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	// Informers run on standbys too, so that a takeover does not wait for
	// a full list of every binding.
	e.res.start(ctx.Done())

	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1ObjectMeta(e.cfg.LeaseNamespace, e.cfg.LeaseName),
		Client:     e.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.cfg.Identity},
	}
	var (
		runErr  atomic.Pointer[error]
		lost    atomic.Bool
		leading sync.WaitGroup
	)
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   e.cfg.LeaseDuration,
		RenewDeadline:   e.cfg.RenewDeadline,
		RetryPeriod:     e.cfg.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            e.cfg.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				leading.Add(1)
				defer leading.Done()
				e.leader.Store(true)
				e.metrics.leader.Store(1)
				klog.InfoS("Became leader", "identity", e.cfg.Identity, "lease", e.cfg.LeaseNamespace+"/"+e.cfg.LeaseName)
				if err := e.lead(lctx); err != nil && lctx.Err() == nil {
					runErr.Store(&err)
					cancel()
				}
			},
			OnStoppedLeading: func() {
				wasLeader := e.leader.Swap(false)
				e.metrics.leader.Store(0)
				if wasLeader && ctx.Err() == nil {
					lost.Store(true)
					klog.InfoS("Lost leadership", "identity", e.cfg.Identity)
					cancel()
				}
			},
			OnNewLeader: func(id string) {
				if id != e.cfg.Identity {
					klog.InfoS("Standing by", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("estimator: leader election: %w", err)
	}
	le.Run(ctx)
	// le.Run does not wait for OnStartedLeading: wait for the OTLP server
	// to stop, so that a returned Run means nothing is listening.
	leading.Wait()
	switch {
	case runErr.Load() != nil:
		return *runErr.Load()
	case lost.Load():
		return ErrLeadershipLost
	}
	return nil
}

// lead is the leader's work: resume, receive, publish, until lctx ends.
func (e *Estimator) lead(lctx context.Context) error {
	// A cache that never syncs means a resource the API server does not
	// serve (flowplace's CRDs not installed, or no Karmada): say so rather
	// than hold the lease doing nothing.
	syncCtx, cancel := context.WithTimeout(lctx, 2*time.Minute)
	defer cancel()
	if !cache.WaitForCacheSync(syncCtx.Done(), e.res.synced()...) {
		if lctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("estimator: Cluster, ResourceBinding, ClusterLatency and WorkloadTraffic informers did not sync in 2m; are Karmada's and flowplace's CRDs installed (api/crds)? %w", syncCtx.Err())
	}
	// Only the leader's model is current: cleared once this leadership's
	// last publishing round is over (OnStoppedLeading does not wait for it).
	defer e.metrics.model.Store(nil)
	l, t := e.pub.resume(e.agg, e.agg.Now())
	klog.InfoS("Resumed from published objects", "clusterLatencies", l, "workloadTraffics", t)

	srv, err := newGRPCServer(e.agg, e.cfg.TLS, e.cfg.MaxMessageBytes, e.metrics)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", e.cfg.OTLPAddress)
	if err != nil {
		return fmt.Errorf("estimator: OTLP listen on %s: %w", e.cfg.OTLPAddress, err)
	}
	e.mu.Lock()
	e.addr = ln.Addr()
	e.mu.Unlock()
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	e.serving.Store(true)
	klog.InfoS("Receiving OTLP", "address", ln.Addr().String(), "tls", e.cfg.TLS.CertFile != "", "mtls", e.cfg.TLS.ClientCAFile != "")
	defer func() {
		e.serving.Store(false)
		stopGRPC(srv, 5*time.Second)
		e.mu.Lock()
		e.addr = nil
		e.mu.Unlock()
	}()

	if e.advisor != nil {
		// Like the publisher, only the leader advises; it stops with the
		// lease.
		actx, stop := context.WithCancel(lctx)
		advised := make(chan struct{})
		go func() { defer close(advised); e.advisor.Run(actx) }()
		defer func() { stop(); <-advised }()
	}

	tick := time.NewTicker(e.cfg.PublishInterval)
	defer tick.Stop()
	expire := time.NewTicker(time.Minute)
	defer expire.Stop()
	for {
		select {
		case <-lctx.Done():
			return nil
		case err := <-serveErr:
			return fmt.Errorf("estimator: OTLP server: %w", err)
		case <-expire.C:
			if s, f := e.agg.Expire(); s+f > 0 {
				klog.V(2).InfoS("Expired", "series", s, "flows", f)
			}
		case <-tick.C:
			e.PublishOnce(lctx)
		}
	}
}

// PublishOnce publishes one round now (the leader does it every
// PublishInterval).
func (e *Estimator) PublishOnce(ctx context.Context) int {
	n, err := e.pub.publish(ctx, e.agg.Snapshot())
	if err != nil {
		klog.ErrorS(err, "Publishing round incomplete", "written", n)
	}
	if e.matrix != nil {
		// From the objects as published (the informer's view, which the
		// writes above reach within milliseconds; a round that misses
		// them is caught up by the next).
		if wrote, err := e.matrix.publish(ctx, e.res.latencyRows()); err != nil {
			klog.ErrorS(err, "Publishing the latency matrix for routing")
		} else if wrote {
			klog.V(3).InfoS("Published the latency matrix for routing", "configMap", e.cfg.MatrixConfigMap.String())
		}
	}
	return n
}

func stopGRPC(s *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		s.Stop()
	}
}

func (e *Estimator) serveHealth() (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		// Only the leader receives: a standby is alive but not ready, so a
		// Service sends the agents to the leader alone.
		if !e.Ready() {
			http.Error(w, "standby (not the leader)", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	if e.cfg.MetricsHandler != nil {
		mux.Handle("/metrics", e.cfg.MetricsHandler)
	}
	ln, err := net.Listen("tcp", e.cfg.HealthAddress)
	if err != nil {
		return nil, fmt.Errorf("estimator: health listen on %s: %w", e.cfg.HealthAddress, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "Health server stopped")
		}
	}()
	e.mu.Lock()
	e.healthAddr = ln.Addr()
	e.mu.Unlock()
	return srv, nil
}

// HealthAddr is the bound health address, or nil.
func (e *Estimator) HealthAddr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.healthAddr
}

func metav1ObjectMeta(ns, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: ns, Name: name}
}
