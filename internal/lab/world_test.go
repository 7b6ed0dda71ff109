package lab

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/internal/lab/labtest"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/test/otlptest"
	"github.com/flowplace/flowplace/world/wan"
)

// The demo app runs as real processes in the clusters, and clients far from
// the entry service see the WAN's RTT in their request latency.
func TestWorldPlacesAndLoads(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	prof, err := DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	recv := otlptest.Start(t) // stops after the world, which flushes into it
	w, err := NewWorld(ctx, Options{Profile: prof, App: demo.Shop(), Executable: labtest.BuildCLI(t), Progress: os.Stderr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	all := map[string]string{}
	for _, s := range demo.Shop().Services {
		all[s.Name] = "us-east-1"
	}
	all["catalog"] = "eu-west-1"
	if err := w.Place(ctx, all); err != nil {
		t.Fatal(err)
	}
	if err := w.StartAgents(ctx, recv.Addr, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	res, err := w.Load(ctx, 2*time.Second, map[string]float64{"us-east-1": 10, "eu-west-1": 10, "ap-northeast-1": 10})
	if err != nil {
		t.Fatal(err)
	}
	// Every cluster's agent attributes what its own processes did: the
	// frontend in us-east-1 calling the catalog in eu-west-1, and the
	// catalog seeing the frontend (and recommend) as its clients.
	if err := w.FlushAgents(ctx); err != nil {
		t.Fatal(err)
	}
	call := otlptest.Match(recv.Latest(telemetry.MetricBytes), map[string]string{
		"flowplace.connection.role": "client", "flowplace.workload.name": "frontend", "flowplace.service.name": "catalog",
		"flowplace.peer.cluster.name": "eu-west-1", "network.io.direction": "receive"})
	if len(call) != 1 || call[0].Resource["k8s.cluster.name"] != "us-east-1" || call[0].Int < int64(res.Requests["us-east-1"]*2*(24<<10)) {
		t.Errorf("frontend -> catalog as us-east-1's agent reports it: %+v", call)
		t.Logf("%d exports", recv.Requests())
		for _, p := range recv.Latest(telemetry.MetricBytes) {
			t.Logf("%v %v %d", p.Resource["k8s.cluster.name"], p.Attrs, p.Int)
		}
	}
	served := otlptest.Match(recv.Latest(telemetry.MetricBytes), map[string]string{
		"flowplace.connection.role": "server", "flowplace.workload.name": "catalog",
		"flowplace.peer.workload.name": "frontend", "flowplace.peer.cluster.name": "us-east-1"})
	if len(served) == 0 || served[0].Resource["k8s.cluster.name"] != "eu-west-1" {
		t.Errorf("catalog serving frontend as eu-west-1's agent reports it: %+v", served)
	}
	clients := otlptest.Match(recv.Latest(telemetry.MetricConnections), map[string]string{
		"flowplace.connection.role": "server", "flowplace.workload.name": "frontend",
		"flowplace.peer.workload.name": LoadGenerator("ap-northeast-1")})
	if len(clients) != 1 || clients[0].Int == 0 {
		t.Errorf("frontend's clients from ap-northeast-1 not seen: %+v", clients)
	}

	near, far := res.Latencies["us-east-1"], res.Latencies["ap-northeast-1"]
	// 10 requests/s for 2 s is 20 from each; the load generator paces by
	// the clock, so a stall (ms) costs none, and half is a wide margin.
	if len(near) < 10 || len(far) < 10 {
		t.Fatalf("too few requests: %v", res.Requests)
	}
	wan := prof.Injected("us-east-1", "ap-northeast-1")
	if p50 := far[len(far)/2]; p50 < wan {
		t.Errorf("ap-northeast-1 clients' p50 %v is below the %v RTT to the entry", p50, wan)
	}
	if near[len(near)/2] >= far[len(far)/2] {
		t.Errorf("clients next to the entry (p50 %v) are not faster than far ones (p50 %v)", near[len(near)/2], far[len(far)/2])
	}

	// Moving a service changes its address and the callers follow.
	all["catalog"] = "us-east-1"
	before := w.Addrs()["catalog"]
	if err := w.Place(ctx, all); err != nil {
		t.Fatal(err)
	}
	if after := w.Addrs()["catalog"]; after == before {
		t.Errorf("catalog kept %s after moving clusters", after)
	}
	if _, err := w.Load(ctx, time.Second, map[string]float64{"us-east-1": 5}); err != nil {
		t.Fatal(err)
	}
}

func TestNewWorldRejectsBadInput(t *testing.T) {
	if _, err := NewWorld(context.Background(), Options{}); err == nil {
		t.Error("no profile accepted")
	}
	p, _ := DefaultProfile(2, 1)
	bad := &demo.App{Entry: "nope"}
	if _, err := NewWorld(context.Background(), Options{Profile: p, App: bad}); err == nil {
		t.Error("invalid app accepted")
	}
}

// A run killed without cleanup leaves namespaces and cgroups; the next run's
// sweep removes them.
func TestSweepLeftovers(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		t.Fatal(err)
	}
	// What a killed run leaves: a cgroup tree of a run whose namespaces are
	// gone (the topology sweeper is tested with the topology).
	dead := filepath.Join(root, cgroupPrefix+labPrefix+"999999999")
	if err := os.MkdirAll(filepath.Join(dead, "us-east-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := SweepLeftovers(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("leftover cgroup %s still there (%v)", dead, err)
	}
}

// The agents' exports, aggregated the way the estimator does, give the
// injected RTT from each cluster to every cluster it calls (the estimator
// measures a pair from its client side).
func TestCollectorMeasuresInjectedRTT(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	prof, err := DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	col, err := StartCollector(time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(col.Close)
	w, err := NewWorld(ctx, Options{Profile: prof, App: demo.Shop(), Executable: labtest.BuildCLI(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	// Spread the shop so that every cluster calls every other one.
	place := map[string]string{"frontend": "us-east-1", "catalog": "eu-west-1", "cart": "ap-northeast-1",
		"recommend": "eu-west-1", "checkout": "us-east-1", "pricing": "us-east-1", "inventory": "eu-west-1"}
	if err := w.Place(ctx, place); err != nil {
		t.Fatal(err)
	}
	if err := w.StartAgents(ctx, col.Endpoint(), 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Load(ctx, 3*time.Second, map[string]float64{"us-east-1": 10, "eu-west-1": 10, "ap-northeast-1": 10}); err != nil {
		t.Fatal(err)
	}
	if err := w.FlushAgents(ctx); err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]string{{"us-east-1", "eu-west-1"}, {"us-east-1", "ap-northeast-1"}, {"ap-northeast-1", "us-east-1"}, {"ap-northeast-1", "eu-west-1"}} {
		ms, samples := col.MeasuredRTT(pair[0], pair[1])
		injected := prof.Injected(pair[0], pair[1])
		lo, hi := RTTBound(injected, int64(samples))
		if got := time.Duration(ms * float64(time.Millisecond)); samples == 0 || ms != ms || got < lo || got > hi {
			t.Errorf("%s -> %s: measured mean %v over %.0f samples, injected %v: want within [%v, %v]", pair[0], pair[1], got, samples, injected, lo, hi)
		}
	}
}
