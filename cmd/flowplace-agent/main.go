// Command flowplace-agent runs on every member-cluster node: it attaches the
// eBPF probes, attributes flows to workloads, services and clusters, and
// exports them as OpenTelemetry metrics over OTLP and Prometheus.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/otel/attribute"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/internal/agent"
	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/cgroups"
	"github.com/flowplace/flowplace/internal/conntrack"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/internal/routing"
	"github.com/flowplace/flowplace/telemetry"
)

type options struct {
	cgroup        string
	maxFlows      uint32
	pollInterval  time.Duration
	topologyFile  string
	kubeconfig    string
	clusterName   string
	conntrackNS   string
	syncTimeout   time.Duration
	noConntrack   bool
	adoptExisting bool
	nodeName      string
	listenAddress string
	prometheus    bool
	maxSeries     int
	otlp          telemetry.OTLPConfig
	otlpHeaders   []string

	routing         bool
	routingPinDir   string
	routingInterval time.Duration
	routingHealth   redirect.Health
	routingMatrix   string
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newCommand().ExecuteContext(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "flowplace-agent: %v\n", err)
		os.Exit(1)
	}
}

func newCommand() *cobra.Command {
	o := options{}
	cmd := &cobra.Command{
		Use:   "flowplace-agent",
		Short: "Measure TCP latency and traffic per workload with eBPF and export it with OpenTelemetry",
		Long: `flowplace-agent attaches eBPF probes to the node's cgroup v2 root, attributes
every TCP flow to workloads, services and clusters, and exports RTT, bytes,
connections and retransmits as OpenTelemetry metrics over OTLP gRPC and on a
Prometheus endpoint. /healthz and /readyz are served on --listen-address.
Connections already open when it starts are adopted at start and measured
from then on (--adopt-existing).

With --topology-file it runs standalone: addresses are attributed from the file
(for the lab and hosts outside Kubernetes).`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.cgroup, "cgroup", "", "cgroup v2 directory to observe (default: the cgroup v2 root); \"pods\": the cgroup holding this node's pods, found from the agent's own pod cgroup")
	f.Uint32Var(&o.maxFlows, "max-flows", probe.DefaultMaxFlows, "size of the kernel flow table")
	f.DurationVar(&o.pollInterval, "poll-interval", 2*time.Second, "how often the kernel flow table is read")
	f.StringVar(&o.topologyFile, "topology-file", "", "standalone mode: attribute addresses from this AgentTopology file instead of the Kubernetes API")
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the member cluster (default: in-cluster config)")
	f.StringVar(&o.clusterName, "cluster-name", os.Getenv("CLUSTER_NAME"), "this member's name in Karmada (k8s.cluster.name); optional, the kube-system UID identifies it")
	f.StringVar(&o.conntrackNS, "conntrack-netns", "", "network namespace whose conntrack table holds the service translations (default: the agent's own)")
	f.BoolVar(&o.noConntrack, "no-conntrack", false, "do not resolve translated service addresses through conntrack")
	f.BoolVar(&o.adoptExisting, "adopt-existing", true, "at start, also measure the connections that were already open (found in the network namespaces of the observed cgroup's processes: needs the host PID namespace); false leaves them unmeasured until they reconnect")
	f.DurationVar(&o.syncTimeout, "sync-timeout", time.Minute, "how long to wait for the member cluster's pods, services and endpoint slices to load")
	f.StringVar(&o.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (k8s.node.name); default $NODE_NAME or the hostname")
	f.StringVar(&o.listenAddress, "listen-address", ":9464", "address serving /metrics, /healthz and /readyz")
	f.BoolVar(&o.prometheus, "prometheus", true, "serve Prometheus metrics on /metrics")
	f.IntVar(&o.maxSeries, "max-series", telemetry.DefaultMaxSeries, "metric series limit; beyond it updates go to an overflow series")
	f.StringVar(&o.otlp.Endpoint, "otlp-endpoint", "", "OTLP gRPC receiver host:port (the flowplace estimator or a collector); empty disables OTLP")
	f.BoolVar(&o.otlp.Insecure, "otlp-insecure", false, "send OTLP without TLS")
	f.StringVar(&o.otlp.CAFile, "otlp-ca-file", "", "CA bundle that verifies the OTLP receiver")
	f.StringVar(&o.otlp.CertFile, "otlp-cert-file", "", "client certificate for mTLS")
	f.StringVar(&o.otlp.KeyFile, "otlp-key-file", "", "client key for mTLS")
	f.StringVar(&o.otlp.ServerName, "otlp-server-name", "", "name expected in the receiver's certificate")
	f.StringArrayVar(&o.otlpHeaders, "otlp-header", nil, "header sent with each export, key=value (repeatable)")
	f.DurationVar(&o.otlp.Interval, "export-interval", 10*time.Second, "OTLP export interval")
	f.DurationVar(&o.otlp.Timeout, "export-timeout", 10*time.Second, "OTLP export timeout")
	f.BoolVar(&o.routing, "routing", true, "route connects to services annotated "+routing.AnnotationRouting+"="+routing.ModeNearest+" to the nearest healthy cluster (socket-level, in the kernel); false removes what an earlier agent pinned")
	f.StringVar(&o.routingPinDir, "routing-pin-dir", "/sys/fs/bpf/flowplace/routing", "bpffs directory where routing pins its maps and links, so routing outlives agent restarts")
	f.DurationVar(&o.routingInterval, "routing-sync-interval", time.Second, "how often routing re-reads passive health and RTT (API changes apply at once)")
	f.StringVar(&o.routingMatrix, "routing-matrix-configmap", "", "namespace/name of the ConfigMap holding the fleet's latency matrix (the estimator publishes it, Karmada propagates it); empty: order clusters by this agent's own measurements only")
	f.Uint32Var(&o.routingHealth.FailThreshold, "routing-fail-threshold", redirect.DefaultHealth.FailThreshold, "consecutive failed connects that eject a backend")
	f.DurationVar(&o.routingHealth.BaseEjection, "routing-base-ejection", redirect.DefaultHealth.BaseEjection, "first ejection of a backend; doubled per further ejection")
	f.DurationVar(&o.routingHealth.MaxEjection, "routing-max-ejection", redirect.DefaultHealth.MaxEjection, "longest ejection")
	klogFlags := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(klogFlags)
	f.AddGoFlagSet(klogFlags)
	return cmd
}

func (o *options) validate() error {
	if o.pollInterval < 100*time.Millisecond {
		return fmt.Errorf("--poll-interval %s: must be at least 100ms", o.pollInterval)
	}
	if o.maxSeries < 1 {
		return fmt.Errorf("--max-series %d: must be positive", o.maxSeries)
	}
	if o.topologyFile != "" && o.kubeconfig != "" {
		return errors.New("--topology-file and --kubeconfig exclude each other")
	}
	if o.routing && o.topologyFile == "" {
		if o.routingInterval < 100*time.Millisecond {
			return fmt.Errorf("--routing-sync-interval %s: must be at least 100ms", o.routingInterval)
		}
		if o.routingPinDir == "" {
			return errors.New("--routing-pin-dir: must not be empty with --routing")
		}
		if err := o.routingHealth.Validate(); err != nil {
			return err
		}
		if o.routingMatrix != "" {
			if _, ok := namespacedName(o.routingMatrix); !ok {
				return fmt.Errorf("--routing-matrix-configmap %q: want namespace/name", o.routingMatrix)
			}
		}
	}
	if _, _, err := net.SplitHostPort(o.listenAddress); err != nil {
		return fmt.Errorf("--listen-address %q: %w", o.listenAddress, err)
	}
	o.otlp.Headers = map[string]string{}
	for _, h := range o.otlpHeaders {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return fmt.Errorf("--otlp-header %q: want key=value", h)
		}
		o.otlp.Headers[k] = v
	}
	cfg := telemetry.Config{OTLP: o.otlp}
	return cfg.Validate()
}

func run(ctx context.Context, o *options) error {
	if err := o.validate(); err != nil {
		return err
	}
	log := klog.FromContext(ctx)
	if o.nodeName == "" {
		o.nodeName, _ = os.Hostname()
	}
	resolver, mem, err := newResolver(ctx, o)
	if err != nil {
		return err
	}
	self := resolver.Self()
	res := []attribute.KeyValue{telemetry.AttrNodeName.String(o.nodeName), telemetry.AttrClusterName.String(self.Name)}
	if self.UID != "" {
		res = append(res, telemetry.AttrClusterUID.String(self.UID))
	}

	// Everything that can fail on bad input is checked before the kernel is
	// touched.
	if err := probe.CheckKernel(); err != nil {
		return err
	}
	if o.adoptExisting {
		missing, err := probe.MissingCapabilities(true)
		if err != nil {
			return err
		}
		if len(missing) > 0 {
			return fmt.Errorf("%w: %s", probe.ErrNotPermitted, strings.Join(missing, "; "))
		}
	}
	ln, err := net.Listen("tcp", o.listenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.listenAddress, err)
	}
	defer ln.Close()

	provider, err := telemetry.NewProvider(ctx, telemetry.Config{Resource: res, OTLP: o.otlp, Prometheus: o.prometheus, MaxSeries: o.maxSeries})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := provider.Shutdown(sctx); err != nil {
			log.Error(err, "Flushing telemetry at shutdown")
		}
	}()
	rec, err := telemetry.NewRecorder(provider.Meter(), o.maxSeries)
	if err != nil {
		return err
	}

	cg := o.cgroup
	if cg == "" || cg == probe.PodsCgroupValue {
		mnt, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
		if err != nil {
			return err
		}
		cg = mnt
		if o.cgroup == probe.PodsCgroupValue {
			if cg, err = probe.PodsCgroup(mnt); err != nil {
				return err
			}
		}
	}
	if k, ok := resolver.(*attribution.Kubernetes); ok {
		// Host-network pods share the node's address; their cgroup (the
		// probes record its ID) tells them apart.
		if root, err := probe.FindCgroup2(); err == nil && root != "" {
			k.SetCgroupResolver(cgroups.NewResolver(root).PodUID)
		}
	}
	// Routing first: the probes share its map of routed sockets.
	var dp *redirect.Datapath
	switch {
	case !o.routing:
		if err := removeRouting(log, o.routingPinDir); err != nil {
			return err
		}
	case mem == nil:
		log.Info("Routing needs the Kubernetes API; standalone agents only measure")
	case self.Name == "":
		log.Info("Routing needs this cluster's name (--cluster-name or $CLUSTER_NAME); measuring only")
	default:
		dp = openRouting(log, o, cg)
	}
	popts := probe.Options{Cgroup: cg, MaxFlows: o.maxFlows}
	if dp != nil {
		popts.RoutedSockets = dp.RoutedSockets()
	}
	p, err := probe.Load(popts)
	if err != nil {
		if dp != nil {
			dp.Close()
		}
		return err
	}
	// Detach before anything else goes away.
	defer func() {
		if err := p.Close(); err != nil {
			log.Error(err, "Detaching probes")
		}
	}()
	log.Info("Probes attached", "cgroup", cg, "maxFlows", o.maxFlows, "cluster", self.Name, "node", o.nodeName)

	var nat agent.NATTable
	if !o.noConntrack {
		t, err := conntrack.Open(o.conntrackNS)
		if err != nil {
			return err
		}
		defer t.Close()
		nat = t
	}
	cfg := agent.Config{Source: p, NAT: nat, Resolver: resolver, Recorder: rec, Meter: provider.Meter(), PollInterval: o.pollInterval}
	if o.adoptExisting {
		cfg.Adopter = p
	}
	if dp != nil {
		rt, err := startRouting(ctx, log, o, mem, self.Name, dp)
		if err != nil {
			dp.Close()
			return err
		}
		defer rt.stop(log, o, mem.client)
		if err := rt.controller.RegisterMetrics(provider.Meter()); err != nil {
			return err
		}
		cfg.RTTObserver = rt.peerRTT
	}
	ag, err := agent.New(cfg)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ag.Ready() {
			http.Error(w, "no flow table read yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if h := provider.PrometheusHandler(); h != nil {
		mux.Handle("/metrics", h)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "HTTP server stopped")
		}
	}()
	defer srv.Close()

	err = ag.Run(ctx)
	log.Info("Shutting down: detaching probes")
	return err
}

// newResolver attributes from a topology file (standalone) or from informers
// on the member cluster; the member's clients are returned for routing.
func newResolver(ctx context.Context, o *options) (attribution.Resolver, *member, error) {
	if o.topologyFile != "" {
		r, err := attribution.LoadTopologyFile(o.topologyFile)
		return r, nil, err
	}
	var (
		cfg *rest.Config
		err error
	)
	if o.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client config (give --kubeconfig or --topology-file outside a cluster): %w", err)
	}
	cfg.UserAgent = "flowplace-agent"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	// The informers live as long as the agent; routing shares them.
	m := &member{config: cfg, client: client, factory: informers.NewSharedInformerFactory(client, 30*time.Minute)}
	r, err := attribution.NewKubernetesFromFactory(ctx, client, m.factory, o.clusterName, o.nodeName, o.syncTimeout)
	if err != nil {
		return nil, nil, fmt.Errorf("member cluster %s: %w", cfg.Host, err)
	}
	return r, m, nil
}
