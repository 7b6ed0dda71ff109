// Command flowplace-estimator receives the agents' OTLP metrics and
// publishes the cluster latency matrix (ClusterLatency) and the workload
// traffic graph (WorkloadTraffic) in the Karmada API server. Run two or more
// replicas: they elect a leader on a Lease; only the leader listens for OTLP
// and writes, and a new leader resumes from the published objects.
package main

import (
	"context"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/estimator"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/estimator/rebalance"
	"github.com/flowplace/flowplace/telemetry"
)

type options struct {
	kubeconfig      string
	context         string
	otlpAddress     string
	tls             estimator.ServerTLS
	maxMessageBytes int
	healthAddress   string
	window          time.Duration
	publishInterval time.Duration
	validFor        time.Duration
	relativeChange  float64
	maxSeries       int
	maxFlows        int
	modelPairs      int
	metricsSeries   int
	seriesTTL       time.Duration
	maxClockSkew    time.Duration
	leaseNamespace  string
	leaseName       string
	identity        string
	leaseDuration   time.Duration
	renewDeadline   time.Duration
	retryPeriod     time.Duration
	qps             float32
	burst           int
	matrixConfigMap string
	rebalance       rebalanceOptions
}

// rebalanceOptions are the rebalance advisor's flags (estimator/rebalance).
type rebalanceOptions struct {
	enabled       bool
	dryRun        bool
	interval      time.Duration
	moveCost      time.Duration
	minRounds     int
	cooldown      time.Duration
	maxMoves      int
	noiseFloor    float64
	quantile      string
	minSamples    int64
	schedulerName string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "flowplace-estimator: %v\n", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

func newCommand() *cobra.Command {
	o := options{}
	cmd := &cobra.Command{
		Use:   "flowplace-estimator",
		Short: "Turn flowplace agents' OTLP metrics into ClusterLatency and WorkloadTraffic objects",
		Long: `flowplace-estimator is an OTLP gRPC receiver (the standard MetricsService) for
the flowplace agents' metrics. It aggregates RTT histograms per cluster pair and
traffic rates per (workload, peer, cluster pair) over an exponentially decaying
window, and publishes them as flowplace.io/v1alpha1 ClusterLatency and
WorkloadTraffic objects in the Karmada API server, writing only on a meaningful
change or to extend validUntil.

Replicas elect a leader on a Lease. Only the leader listens for OTLP and
publishes; /readyz is 200 only there, so a Service routes agents to it. A new
leader resumes from the published objects. /healthz, /readyz and /metrics are
served on --health-address.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the Karmada API server (default: in-cluster config)")
	f.StringVar(&o.context, "context", "", "kubeconfig context")
	f.StringVar(&o.otlpAddress, "otlp-address", ":4317", "OTLP gRPC listen address")
	f.StringVar(&o.tls.CertFile, "otlp-cert-file", "", "TLS certificate for the OTLP listener (empty: plaintext)")
	f.StringVar(&o.tls.KeyFile, "otlp-key-file", "", "TLS key for the OTLP listener")
	f.StringVar(&o.tls.ClientCAFile, "otlp-client-ca-file", "", "require client certificates signed by this CA (mTLS); each may report only the cluster its URI SAN urn:flowplace:cluster:<UID> names")
	f.BoolVar(&o.tls.AllowUnboundClients, "otlp-allow-unbound-clients", false, "with mTLS, also receive client certificates that name no cluster, about any cluster (a relay such as an OpenTelemetry Collector)")
	f.IntVar(&o.maxMessageBytes, "otlp-max-message-bytes", 16<<20, fmt.Sprintf("largest export request accepted (1024..%d; up to 64 are decoded at once)", estimator.MaxMessageBytesLimit))
	f.StringVar(&o.healthAddress, "health-address", ":8080", "address serving /healthz, /readyz and /metrics")
	f.DurationVar(&o.window, "window", 5*time.Minute, "time constant of the decaying window")
	f.DurationVar(&o.publishInterval, "publish-interval", 15*time.Second, "how often aggregates are compared with the published objects")
	f.DurationVar(&o.validFor, "valid-for", 5*time.Minute, "validity of a published object (validUntil = write time + this)")
	f.Float64Var(&o.relativeChange, "relative-change", 0.1, "relative change of a value that is worth a write")
	f.IntVar(&o.maxSeries, "max-series", 2_000_000, "input series tracked at most; points of new series beyond it are rejected")
	f.IntVar(&o.maxFlows, "max-flows", 500_000, "(workload, peer, cluster pair) aggregates at most")
	f.IntVar(&o.metricsSeries, "metrics-max-series", telemetry.ModelSeriesLimit, "series per metric at most (the model's RTT has 3 per cluster pair); beyond it series fold into one marked otel.metric.overflow")
	f.IntVar(&o.modelPairs, "metrics-workload-pairs", telemetry.ModelWorkloadPairs, "workload pairs exported as metrics, heaviest first (the rest in one overflow series)")
	f.DurationVar(&o.seriesTTL, "series-ttl", 10*time.Minute, "forget input series not reported for this long; older points are refused")
	f.DurationVar(&o.maxClockSkew, "max-clock-skew", aggregate.DefaultMaxClockSkew, "refuse points stamped further than this ahead of the estimator's clock")
	f.StringVar(&o.matrixConfigMap, "matrix-configmap", "", "namespace/name of a ConfigMap in which the latency matrix is also kept, for the agents' routing (the chart propagates it to the members with the agent); empty: none")
	r := &o.rebalance
	f.BoolVar(&r.enabled, "rebalance", false, "run the rebalance advisor on the leader: re-plan running workloads and, when a move has paid off, ask Karmada to re-place them (WorkloadRebalancer)")
	f.BoolVar(&r.dryRun, "rebalance-dry-run", true, "only record the advice (an Event RebalanceAdvised on the ResourceBinding and a metric); false creates WorkloadRebalancers")
	f.DurationVar(&r.interval, "rebalance-interval", 5*time.Minute, "time between rebalance rounds")
	f.DurationVar(&r.moveCost, "rebalance-move-cost", 10*time.Minute, "cost of moving a workload, as this long of its own current network cost: a move is advised once its accumulated saving reaches it (ski rental)")
	f.IntVar(&r.minRounds, "rebalance-min-rounds", 3, "rounds the same advice must hold before it is acted on")
	f.DurationVar(&r.cooldown, "rebalance-cooldown", time.Hour, "no second move of a workload within this (also the WorkloadRebalancers' ttlSecondsAfterFinished)")
	f.IntVar(&r.maxMoves, "rebalance-max-moves", 5, "workloads asked to move per round at most, highest saving first")
	f.Float64Var(&r.noiseFloor, "rebalance-noise-floor", 1024, "absolute floor of the noise band, bytes/s x ms, under the band derived from --relative-change and the RTT histogram's resolution")
	f.StringVar(&r.quantile, "rebalance-rtt-quantile", "p50", "RTT quantile the plan prices links with (min, p50, p90, p99): the scheduler's TrafficLocality quantile")
	f.Int64Var(&r.minSamples, "rebalance-min-samples", 10, "RTT pairs with fewer samples count as unmeasured (the scheduler's model.minSamples)")
	f.StringVar(&r.schedulerName, "rebalance-scheduler-name", "flowplace-scheduler", "only workloads placed by this scheduler are moved (a WorkloadRebalancer re-places with the binding's own scheduler); empty: any")
	f.StringVar(&o.leaseNamespace, "lease-namespace", "karmada-system", "namespace of the leader election Lease")
	f.StringVar(&o.leaseName, "lease-name", "flowplace-estimator", "name of the leader election Lease")
	f.StringVar(&o.identity, "identity", os.Getenv("POD_NAME"), "this replica's identity in the Lease (default $POD_NAME or host_pid)")
	f.DurationVar(&o.leaseDuration, "lease-duration", 15*time.Second, "leader election lease duration")
	f.DurationVar(&o.renewDeadline, "renew-deadline", 10*time.Second, "leader election renew deadline")
	f.DurationVar(&o.retryPeriod, "retry-period", 2*time.Second, "leader election retry period")
	f.Float32Var(&o.qps, "kube-api-qps", 20, "API server requests per second")
	f.IntVar(&o.burst, "kube-api-burst", 40, "API server request burst")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	f.AddGoFlagSet(klogFlags)
	return cmd
}

// validate checks every flag before anything starts; each error names its
// flag. Comparisons are written so that NaN fails them.
func (o *options) validate() error {
	if o.matrixConfigMap != "" {
		if ns, name, ok := strings.Cut(o.matrixConfigMap, "/"); !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return fmt.Errorf("--matrix-configmap %q: want namespace/name", o.matrixConfigMap)
		}
	}
	for _, a := range []struct{ name, addr string }{{"--otlp-address", o.otlpAddress}, {"--health-address", o.healthAddress}} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			return fmt.Errorf("%s %q: %w", a.name, a.addr, err)
		}
	}
	between := func(name string, d, lo, hi time.Duration) error {
		if d < lo || d > hi {
			return fmt.Errorf("%s %s: must be between %s and %s", name, d, lo, hi)
		}
		return nil
	}
	for _, c := range []struct {
		name      string
		d, lo, hi time.Duration
	}{
		{"--window", o.window, time.Second, 24 * time.Hour},
		{"--publish-interval", o.publishInterval, 100 * time.Millisecond, time.Hour},
		{"--valid-for", o.validFor, time.Second, 24 * time.Hour},
		{"--series-ttl", o.seriesTTL, time.Second, 24 * time.Hour},
		{"--max-clock-skew", o.maxClockSkew, time.Second, time.Hour},
		{"--lease-duration", o.leaseDuration, time.Second, time.Hour},
		{"--renew-deadline", o.renewDeadline, 100 * time.Millisecond, time.Hour},
		{"--retry-period", o.retryPeriod, 10 * time.Millisecond, time.Hour},
	} {
		if err := between(c.name, c.d, c.lo, c.hi); err != nil {
			return err
		}
	}
	switch {
	case o.validFor < 2*o.publishInterval:
		return fmt.Errorf("--valid-for %s: must be at least twice --publish-interval (%s), or objects go stale between writes", o.validFor, o.publishInterval)
	case !(o.relativeChange > 0 && o.relativeChange < 1):
		return fmt.Errorf("--relative-change %g: must be in (0, 1)", o.relativeChange)
	case o.maxSeries < 1:
		return fmt.Errorf("--max-series %d: must be positive", o.maxSeries)
	case o.maxFlows < 1:
		return fmt.Errorf("--max-flows %d: must be positive", o.maxFlows)
	case o.metricsSeries < 1:
		return fmt.Errorf("--metrics-max-series %d: must be positive", o.metricsSeries)
	case o.modelPairs < 1:
		return fmt.Errorf("--metrics-workload-pairs %d: must be positive", o.modelPairs)
	case o.maxMessageBytes < 1024 || o.maxMessageBytes > estimator.MaxMessageBytesLimit:
		return fmt.Errorf("--otlp-max-message-bytes %d: must be between 1024 and %d", o.maxMessageBytes, estimator.MaxMessageBytesLimit)
	case !(o.qps > 0) || math.IsInf(float64(o.qps), 0):
		return fmt.Errorf("--kube-api-qps %g: must be a positive number", o.qps)
	case o.burst < 1:
		return fmt.Errorf("--kube-api-burst %d: must be at least 1", o.burst)
	case o.leaseDuration <= o.renewDeadline:
		return fmt.Errorf("--lease-duration %s: must be longer than --renew-deadline %s", o.leaseDuration, o.renewDeadline)
	case o.renewDeadline <= o.retryPeriod:
		return fmt.Errorf("--renew-deadline %s: must be longer than --retry-period %s", o.renewDeadline, o.retryPeriod)
	}
	if errs := validation.IsDNS1123Label(o.leaseNamespace); len(errs) > 0 {
		return fmt.Errorf("--lease-namespace %q: %s", o.leaseNamespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(o.leaseName); len(errs) > 0 {
		return fmt.Errorf("--lease-name %q: %s", o.leaseName, strings.Join(errs, "; "))
	}
	if o.rebalance.enabled {
		r := o.rebalance
		switch {
		case r.interval < time.Second || r.interval > 24*time.Hour:
			return fmt.Errorf("--rebalance-interval %s: must be between 1s and 24h", r.interval)
		case r.moveCost < 0 || r.moveCost > 30*24*time.Hour:
			return fmt.Errorf("--rebalance-move-cost %s: must be between 0 and 720h", r.moveCost)
		case r.minRounds < 1:
			return fmt.Errorf("--rebalance-min-rounds %d: must be at least 1", r.minRounds)
		case r.cooldown < r.interval || r.cooldown > 30*24*time.Hour:
			return fmt.Errorf("--rebalance-cooldown %s: must be between --rebalance-interval (%s) and 720h", r.cooldown, r.interval)
		case r.maxMoves < 1:
			return fmt.Errorf("--rebalance-max-moves %d: must be at least 1", r.maxMoves)
		case !(r.noiseFloor >= 0) || math.IsInf(r.noiseFloor, 0):
			return fmt.Errorf("--rebalance-noise-floor %g: must be a non-negative number", r.noiseFloor)
		case r.minSamples < 1:
			return fmt.Errorf("--rebalance-min-samples %d: must be at least 1", r.minSamples)
		}
		if _, err := o.rebalanceConfig(); err != nil {
			return fmt.Errorf("--rebalance-rtt-quantile %q: %w", r.quantile, err)
		}
	}
	if err := o.tls.Validate(); err != nil {
		return fmt.Errorf("--otlp-cert-file/--otlp-key-file/--otlp-client-ca-file/--otlp-allow-unbound-clients: %w", err)
	}
	return nil
}

// rebalanceConfig is the advisor's configuration (nil when disabled).
func (o *options) rebalanceConfig() (*rebalance.Config, error) {
	if !o.rebalance.enabled {
		return nil, nil
	}
	r := o.rebalance
	c := &rebalance.Config{Interval: r.interval, DryRun: r.dryRun, MoveCost: r.moveCost, MinRounds: r.minRounds,
		Cooldown: r.cooldown, MaxMoves: r.maxMoves, NoiseFloor: r.noiseFloor, Quantile: r.quantile,
		MinSamples: r.minSamples, SchedulerName: r.schedulerName,
		// The published values' own resolution: a smaller change is never
		// written.
		NoiseRelative: o.relativeChange}
	if r.moveCost == 0 {
		// 0 in Config means the default; a zero move cost is 1 ns.
		c.MoveCost = time.Nanosecond
	}
	if r.noiseFloor == 0 {
		c.NoiseFloor = math.SmallestNonzeroFloat64
	}
	return c, c.Validate()
}

func restConfig(o *options) (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	if o.kubeconfig == "" {
		cfg, err = rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("no --kubeconfig and not in a cluster: %w", err)
		}
	} else {
		cfg, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			&clientcmd.ClientConfigLoadingRules{ExplicitPath: o.kubeconfig},
			&clientcmd.ConfigOverrides{CurrentContext: o.context}).ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("kubeconfig %s: %w", o.kubeconfig, err)
		}
	}
	cfg.QPS, cfg.Burst = o.qps, o.burst
	return cfg, nil
}

func run(ctx context.Context, o *options) error {
	if err := o.validate(); err != nil {
		return err
	}
	rc, err := restConfig(o)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	prov, err := telemetry.NewProvider(ctx, telemetry.Config{
		Resource:         []attribute.KeyValue{attribute.String("service.name", "flowplace-estimator"), attribute.String("host.name", host)},
		Prometheus:       true,
		CardinalityLimit: o.metricsSeries,
	})
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	defer func() { _ = prov.Shutdown(context.Background()) }()
	rb, err := o.rebalanceConfig()
	if err != nil {
		return err
	}
	e, err := estimator.New(estimator.Config{
		Rebalance: rb,
		REST:      rc,
		Aggregator: aggregate.AggregatorConfig{
			Window: o.window, MaxSeries: o.maxSeries, MaxFlows: o.maxFlows, SeriesTTL: o.seriesTTL, MaxClockSkew: o.maxClockSkew,
		},
		Publish:            estimator.PublishPolicy{ValidFor: o.validFor, RelativeChange: o.relativeChange},
		PublishInterval:    o.publishInterval,
		OTLPAddress:        o.otlpAddress,
		TLS:                o.tls,
		MaxMessageBytes:    o.maxMessageBytes,
		HealthAddress:      o.healthAddress,
		MetricsHandler:     prov.PrometheusHandler(),
		Meter:              prov.MeterProvider.Meter(estimator.ScopeName),
		ModelWorkloadPairs: o.modelPairs,
		LeaseNamespace:     o.leaseNamespace,
		LeaseName:          o.leaseName,
		MatrixConfigMap:    matrixAt(o.matrixConfigMap),
		Identity:           o.identity,
		LeaseDuration:      o.leaseDuration,
		RenewDeadline:      o.renewDeadline,
		RetryPeriod:        o.retryPeriod,
	})
	if err != nil {
		return err
	}
	return e.Run(ctx)
}

func matrixAt(s string) types.NamespacedName {
	ns, name, _ := strings.Cut(s, "/")
	return types.NamespacedName{Namespace: ns, Name: name}
}
