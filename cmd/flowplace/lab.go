package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowplace/flowplace/internal/lab"
	"github.com/flowplace/flowplace/internal/lab/ui"
)

type labOptions struct {
	duration time.Duration
	clusters int
	profile  string
	scale    float64
	output   string
	uiPort   int
	rate     float64
	withAPI  bool
	kube     bool
	routing  time.Duration
	metrics  string
}

func newLabCommand() *cobra.Command {
	o := labOptions{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the whole flowplace loop on this machine and show placement getting better",
		Long: `flowplace lab builds clusters named after cloud regions as network namespaces,
far apart by published inter-region RTTs (scaled by --scale), runs a 7-service
shop as real processes with client load from every region, and runs
flowplace on it: one eBPF agent per cluster, the estimator's aggregation, and
the scheduler plugins' Filter + Score.

It first measures the shop placed the way Karmada places it without flowplace
(cluster spread constraint maxGroups: 1, equal scores, finite capacity), then
re-places it where the rebalance advisor's plan puts it (the whole measured
traffic graph at once), measures again, and reports both, with the plan's
gap to the exhaustive optimum of the measured graph. Then (routing phase,
--routing-duration) it runs every service in every cluster and measures
the shop with connects balanced over all clusters' endpoints, as kube-proxy
balances a multi-cluster service, then with flowplace's routing (local cluster first, then by measured RTT), and
kills one cluster's instance of a service to measure how long until new
connections succeed again. Everything is torn down at the end, on Ctrl-C, and by the next run if
one was killed. Needs root and a kernel with BTF.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runLab(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.duration, "duration", 40*time.Second, "measured time, split between the two placements")
	f.DurationVar(&o.routing, "routing-duration", 20*time.Second, "measured time of the routing phase, split between kube-proxy-style balancing and flowplace's routing (0: no routing phase; not with --kubernetes)")
	f.IntVar(&o.clusters, "clusters", 3, fmt.Sprintf("clusters of the default profile (2 to %d)", lab.MaxClusters))
	f.StringVar(&o.profile, "profile", "", "LabProfile YAML with clusters and RTTs (replaces the default profile)")
	f.Float64Var(&o.scale, "scale", 0.1, "scale of the default profile's published RTTs (0 to 1]")
	f.StringVarP(&o.output, "output", "o", "table", "report format: table or json")
	f.IntVar(&o.uiPort, "ui-port", 0, "serve the live dashboard on 127.0.0.1:PORT (0: off)")
	f.StringVar(&o.metrics, "metrics-address", "", "serve every component's Prometheus metrics on HOST:PORT/metrics, for the Grafana dashboards in charts/flowplace/dashboards (empty: off)")
	f.Float64Var(&o.rate, "rate", 5, "entry requests per second from each cluster")
	f.BoolVar(&o.kube, "kubernetes", false, "run the shop as Deployments and Services in real member clusters (API server, controller manager, scheduler and a kubelet node each, images built here) with the agent as a DaemonSet; run it in the repository")
	f.BoolVar(&o.withAPI, "with-apiserver", false, "run the real estimator publishing into a real Karmada host API server (built from Go modules on first use, ~9 min)")
	return cmd
}

func (o *labOptions) resolve(ctx context.Context) (*lab.Profile, error) {
	switch {
	case o.output != "table" && o.output != "json":
		return nil, fmt.Errorf("lab: --output %q: must be table or json", o.output)
	case o.uiPort < 0 || o.uiPort > 65535:
		return nil, fmt.Errorf("lab: --ui-port %d: not a port", o.uiPort)
	case o.metrics != "" && !validHostPort(o.metrics):
		return nil, fmt.Errorf("lab: --metrics-address %q: want HOST:PORT", o.metrics)
	case o.rate <= 0 || o.rate > 100:
		return nil, fmt.Errorf("lab: --rate %g: want (0, 100] requests per second", o.rate)
	}
	if o.profile != "" {
		return lab.LoadProfile(ctx, o.profile)
	}
	p, err := lab.DefaultProfile(o.clusters, o.scale)
	if err != nil {
		return nil, fmt.Errorf("lab: --clusters/--scale: %w", err)
	}
	return p, nil
}

func runLab(ctx context.Context, stdout, stderr io.Writer, o labOptions) error {
	prof, err := o.resolve(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("lab: interrupted while reading the profile; nothing was changed")
		}
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("lab: own executable: %w", err)
	}
	opts := lab.RunOptions{Profile: prof, Duration: o.duration, RatePerCluster: o.rate, Executable: exe, Progress: stderr, WithAPIServer: o.withAPI, Kubernetes: o.kube, RoutingDuration: o.routing}
	if o.kube {
		opts.RoutingDuration = 0 // test/e2e covers routing on kubelet clusters
	}
	// Everything that can be wrong with the input or the machine is found
	// before the machine is changed.
	if err := lab.Preflight(&opts); err != nil {
		return err
	}
	if o.metrics != "" {
		tel, err := lab.NewTelemetry(ctx)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", o.metrics)
		if err != nil {
			return fmt.Errorf("lab: --metrics-address: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", tel.Handler())
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		opts.Telemetry = tel
		fmt.Fprintf(stderr, "lab: metrics on http://%s/metrics\n", ln.Addr())
	}
	if o.uiPort != 0 {
		var mu sync.Mutex
		current := ui.State{Phase: "starting", Updated: time.Now(), Clusters: prof.ClusterNames()}
		opts.OnState = func(s ui.State) {
			mu.Lock()
			current = s
			mu.Unlock()
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", o.uiPort))
		if err != nil {
			return fmt.Errorf("lab: dashboard: %w", err)
		}
		srv := &http.Server{Handler: ui.Handler(func() ui.State {
			mu.Lock()
			defer mu.Unlock()
			return current
		}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		fmt.Fprintf(stderr, "lab: dashboard on http://%s/\n", ln.Addr())
	}
	// Say at once that the signal was seen: teardown takes a few seconds.
	stopNote := context.AfterFunc(ctx, func() {
		fmt.Fprintln(stderr, "lab: interrupted; tearing down (a second signal quits at once, leaving the cleanup to the next run)")
	})
	defer stopNote()
	rep, err := lab.Run(ctx, opts)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			return errors.New("lab: interrupted; everything was torn down")
		}
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printReport(stdout, rep)
	return nil
}

func printReport(out io.Writer, r *lab.Report) {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER RTT, measured mean (injected), ms")
	fmt.Fprintf(tw, "from \\ to\t%s\t\n", strings.Join(r.Clusters, "\t"))
	for _, a := range r.Clusters {
		row := []string{a}
		for _, b := range r.Clusters {
			cell := "0"
			for _, c := range r.RTT {
				if c.From == a && c.To == b {
					if c.MeasuredMs > 0 {
						cell = fmt.Sprintf("%.1f (%.1f)", c.MeasuredMs, c.InjectedMs)
					} else {
						cell = fmt.Sprintf("- (%.1f)", c.InjectedMs)
					}
				}
			}
			row = append(row, cell)
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	fmt.Fprintf(tw, "largest error vs injected: %.2f ms\n\n", r.MeasuredRTTMaxErrorMs)

	fmt.Fprintln(tw, "TOP SERVICE TRAFFIC (starting placement)")
	fmt.Fprintln(tw, "from\tto\tclusters\tKiB/s\t")
	for i, e := range r.Traffic {
		if i == 8 {
			break
		}
		fmt.Fprintf(tw, "%s\t%s\t%s -> %s\t%.0f\t\n", e.From, e.To, e.FromCluster, e.ToCluster, e.BytesPerSecond/1024)
	}
	fmt.Fprintln(tw)

	fmt.Fprintln(tw, "PLACEMENT (flowplace: the rebalance advisor's plan; scores 0-100 from TrafficLocality, the others where the plan puts them)")
	fmt.Fprintf(tw, "workload\tKarmada default\tflowplace\toptimum\t%s\t\n", strings.Join(r.Clusters, "\t"))
	for _, p := range r.Placement {
		opt := "-"
		if r.Rebalance != nil {
			opt = r.Rebalance.Optimal[p.Workload]
		}
		row := []string{p.Workload, r.Before.Placement[p.Workload], p.Recommended, opt}
		for _, c := range r.Clusters {
			if s, ok := p.Scores[c]; ok {
				row = append(row, fmt.Sprint(s))
			} else {
				row = append(row, "-")
			}
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(row, "\t"))
	}
	if rb := r.Rebalance; rb != nil {
		fmt.Fprintf(tw, "network cost of the measured graph (B/s x ms): Karmada default %.4g, flowplace %.4g, optimum %.4g: optimal_gap %.3f\n",
			rb.CostBefore, rb.CostPlanned, rb.CostOptimal, r.OptimalGap)
	}
	if ad := r.Advisor; ad != nil {
		fmt.Fprintf(tw, "rebalance advisor (API server): %d rounds, %d WorkloadRebalancers, moves %v\n", ad.Rounds, ad.WorkloadRebalancers, ad.Moves)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "MEASURED\tKarmada default\tflowplace\tafter/before\t")
	fmt.Fprintf(tw, "cross-cluster KiB/s\t%.0f\t%.0f\t%.3f\t\n", r.Before.CrossClusterBytesPerSecond/1024, r.After.CrossClusterBytesPerSecond/1024, r.CrossClusterBytesRatio)
	fmt.Fprintf(tw, "client mean ms\t%.1f\t%.1f\t%.3f\t\n", r.Before.MeanMs, r.After.MeanMs, r.MeanLatencyRatio)
	fmt.Fprintf(tw, "client p50 ms\t%.1f\t%.1f\t\t\n", r.Before.P50Ms, r.After.P50Ms)
	fmt.Fprintf(tw, "client p99 ms\t%.1f\t%.1f\t\t\n", r.Before.P99Ms, r.After.P99Ms)
	if rr := r.Routing; rr != nil {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "ROUTING (every service in every cluster)\tkube-proxy-style\tflowplace\tflowplace/kube-proxy\t")
		fmt.Fprintf(tw, "cross-cluster KiB/s\t%.0f\t%.0f\t%.3f\t\n", rr.KubeProxy.CrossClusterBytesPerSecond/1024, rr.Flowplace.CrossClusterBytesPerSecond/1024, rr.CrossClusterBytesRatio)
		fmt.Fprintf(tw, "client mean ms\t%.1f\t%.1f\t%.3f\t\n", rr.KubeProxy.MeanMs, rr.Flowplace.MeanMs, rr.LatencyRatio)
		fmt.Fprintf(tw, "client p99 ms\t%.1f\t%.1f\t\t\n", rr.KubeProxy.P99Ms, rr.Flowplace.P99Ms)
		for _, c := range r.Clusters {
			fmt.Fprintf(tw, "order from %s\t%s, then %s\t\t\t\n", c, c, strings.Join(rr.Order[c], ", "))
		}
		fmt.Fprintf(tw, "failover (%s killed in %s)\t%.0f ms\t%d connects failed, %d after\t\t\n",
			rr.Killed, rr.KilledIn, rr.FailoverMs, rr.FailedConnects, rr.FailedAfterFailover)
	}
	tw.Flush()
	if r.Published != nil {
		fmt.Fprintf(out, "\nestimator objects in the API server: %d ClusterLatency, %d WorkloadTraffic\n",
			r.Published.ClusterLatencies, r.Published.WorkloadTraffics)
	}
	if len(r.Placement) > 0 {
		fmt.Fprintln(out, "\nwhy (flowplace's choice for each workload):")
		for _, p := range r.Placement {
			fmt.Fprintf(out, "  %s\n", p.Reasons[p.Recommended])
		}
	}
}

func validHostPort(hp string) bool {
	_, port, err := net.SplitHostPort(hp)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(port)
	return err == nil && n >= 0 && n <= 65535
}
