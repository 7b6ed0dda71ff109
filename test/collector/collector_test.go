// Package collector_test checks the OpenTelemetry Collector path: the real
// agents' OTLP through a real Collector (built from its Go modules, with the
// gateway configuration the chart renders) into the estimator publishes
// the same objects as the agents' OTLP sent straight to the estimator.
package collector_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"sync"
	"testing"
	"time"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/flowplace/flowplace/estimator"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/lab"
	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/internal/lab/labtest"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/test/collectortest"
	"github.com/flowplace/flowplace/test/otlptest"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/wan"
)

// clock is the estimators' shared clock: the replay sets it per request,
// so that both aggregate the same data at the same times.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func TestCollectorPathPublishesTheSameObjects(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	ctx := context.Background()
	dir := t.TempDir()
	bin, err := collectortest.Build(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}

	// What real agents export: the shop spread over three clusters under
	// load, recorded request by request.
	prof, err := lab.DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	app := demo.Shop()
	place := map[string]string{"frontend": "us-east-1", "catalog": "eu-west-1", "cart": "ap-northeast-1",
		"recommend": "eu-west-1", "checkout": "us-east-1", "pricing": "us-east-1", "inventory": "eu-west-1"}
	recv := otlptest.Start(t)
	w, err := lab.NewWorld(ctx, lab.Options{Profile: prof, App: app, Executable: labtest.BuildCLI(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Place(ctx, place); err != nil {
		t.Fatal(err)
	}
	if err := w.StartAgents(ctx, recv.Addr, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Load(ctx, 3*time.Second, map[string]float64{"us-east-1": 10, "eu-west-1": 10, "ap-northeast-1": 10}); err != nil {
		t.Fatal(err)
	}
	if err := w.FlushAgents(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	requests := recv.Recorded()
	if len(requests) < 6 {
		t.Fatalf("recorded %d export requests", len(requests))
	}

	// Two estimators on two Karmada host API servers with the same
	// Clusters and bindings: one fed straight, one through the collector.
	clusters := prof.ClusterNames()
	capacity := lab.Capacity{}
	for _, c := range clusters {
		capacity[c] = len(app.Services)
	}
	var clk clock
	clk.Set(time.Now().Truncate(time.Second))
	start := func(name string) (*estimator.Estimator, *controlplane.ControlPlane) {
		cp, err := lab.StartKarmadaHost(ctx, app, clusters, capacity, place)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		t.Cleanup(func() { cp.Stop() })
		e, err := estimator.New(estimator.Config{REST: cp.Host.RESTConfig, OTLPAddress: "127.0.0.1:0",
			// Published by the test only, once the replay is over.
			PublishInterval: 10 * time.Minute, Publish: estimator.PublishPolicy{ValidFor: 30 * time.Minute},
			Aggregator: aggregate.AggregatorConfig{Window: time.Minute, Now: clk.Now}, Identity: name})
		if err != nil {
			t.Fatal(err)
		}
		ectx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- e.Run(ectx) }()
		t.Cleanup(func() { cancel(); <-done })
		deadline := time.Now().Add(30 * time.Second)
		for e.OTLPAddr() == nil || !e.IsLeader() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: estimator not serving and leading after 30s", name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		return e, cp
	}
	direct, directCP := start("direct")
	relayed, relayedCP := start("relayed")

	ep := collectortest.Endpoints{Estimator: relayed.OTLPAddr().String()}
	for _, a := range []*string{&ep.OTLP, &ep.Metrics, &ep.Health} {
		if *a, err = collectortest.FreeAddr(); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := collectortest.GatewayConfig(ep)
	if err != nil {
		t.Fatal(err)
	}
	col, err := collectortest.Start(ctx, bin, cfg, ep.Health, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer col.Stop()

	client := func(addr string) colmetricpb.MetricsServiceClient {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return colmetricpb.NewMetricsServiceClient(cc)
	}
	toDirect, toCollector := client(direct.OTLPAddr().String()), client(ep.OTLP)

	// Replay: each request at its own time, to both paths; the clock moves
	// on once the relayed estimator has the request too (the collector's
	// batch processor holds it up to its timeout).
	t0 := clk.Now()
	for i, req := range requests {
		clk.Set(t0.Add(time.Duration(i) * 500 * time.Millisecond))
		if _, err := toDirect.Export(ctx, req); err != nil {
			t.Fatalf("request %d straight to the estimator: %v", i, err)
		}
		if _, err := toCollector.Export(ctx, req); err != nil {
			t.Fatalf("request %d to the collector: %v", i, err)
		}
		want := direct.Aggregator().Stats()
		deadline := time.Now().Add(20 * time.Second)
		for {
			got := relayed.Aggregator().Stats()
			if processed(got) == processed(want) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %d: the relayed estimator has %+v, the direct one %+v\ncollector log:\n%s", i, got, want, col.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	ds, rs := direct.Aggregator().Stats(), relayed.Aggregator().Stats()
	if !reflect.DeepEqual(ds, rs) || ds.Ingested == 0 {
		t.Fatalf("aggregates differ: direct %+v, relayed %+v", ds, rs)
	}

	// The gateway's Prometheus export carries the agents' metrics under
	// the names and labels the dashboards query (what a fleet scraping
	// the gateways instead of the agents sees).
	resp, err := http.Get("http://" + ep.Metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"flowplace_tcp_bytes_total", "flowplace_datapath_flows", "flowplace_datapath_flows_evicted_total",
		"flowplace_agent_series_overflow_total", "flowplace_agent_otlp_exports_total"} {
		re := regexp.MustCompile(`(?m)^` + name + `\{[^}]*k8s_cluster_name="us-east-1"`)
		if !re.Match(body) {
			t.Errorf("the collector's Prometheus export has no %s of us-east-1 with k8s_cluster_name", name)
		}
	}

	clk.Set(clk.Now().Add(time.Second))
	if n := direct.PublishOnce(ctx); n == 0 {
		t.Fatal("the direct estimator published nothing")
	}
	relayed.PublishOnce(ctx)
	for _, gvr := range []schema.GroupVersionResource{
		{Group: "flowplace.io", Version: "v1alpha1", Resource: "clusterlatencies"},
		{Group: "flowplace.io", Version: "v1alpha1", Resource: "workloadtraffics"},
	} {
		want := published(t, directCP, gvr)
		got := published(t, relayedCP, gvr)
		if len(want) == 0 {
			t.Errorf("no %s published", gvr.Resource)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s through the collector differ from straight:\n got %v\nwant %v", gvr.Resource, got, want)
		}
		t.Logf("%d %s, identical on both paths", len(want), gvr.Resource)
	}
}

// processed counts every data point the aggregator has looked at.
func processed(st aggregate.Stats) int64 {
	n := st.Ingested + st.IgnoredMetrics
	for _, r := range st.Rejected {
		n += r
	}
	return n
}

// published returns spec and status of every object of gvr, by
// namespace/name: metadata (UIDs, versions, owners) differs between two
// API servers.
func published(t *testing.T, cp *controlplane.ControlPlane, gvr schema.GroupVersionResource) map[string]string {
	t.Helper()
	l, err := cp.Host.Dynamic.Resource(gvr).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, o := range l.Items {
		out[o.GetNamespace()+"/"+o.GetName()] = fmt.Sprint(o.Object["spec"], o.Object["status"])
	}
	return out
}
