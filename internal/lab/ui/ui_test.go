package ui

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("FLOWPLACE_REQUIRE_BROWSER") == "1" {
		t.Fatal("no chromium on PATH (.ci/run installs Debian's chromium)")
	}
	t.Skip("skipping: no chromium on PATH (apt-get install chromium)")
	return ""
}

// dumpDOM loads url in headless Chromium, lets the page's timers run for
// budget of virtual time, and returns the resulting DOM.
func dumpDOM(t *testing.T, browser, url string, budget time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
		"--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+t.TempDir(), "--virtual-time-budget="+strconv.FormatInt(budget.Milliseconds(), 10), "--dump-dom", url)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	return string(out)
}

func sample(phase, frontend string) State {
	return State{
		Phase:    phase,
		Updated:  time.Now(),
		Clusters: []string{"us-east-1", "eu-west-1", "ap-northeast-1"},
		RTT: []RTTCell{
			{From: "us-east-1", To: "eu-west-1", InjectedMs: 8.05, MeasuredMs: 8.31, Samples: 120},
			{From: "eu-west-1", To: "us-east-1", InjectedMs: 8.05, MeasuredMs: 8.27, Samples: 97},
		},
		Traffic: []TrafficEdge{{From: "frontend", To: "catalog", FromCluster: frontend, ToCluster: "us-east-1", BytesPerSecond: 51200}},
		Placement: []Placement{
			{Workload: "frontend", Current: frontend, Recommended: "us-east-1",
				Scores: map[string]int64{"us-east-1": 100, "eu-west-1": 40, "ap-northeast-1": 0}, Reasons: map[string]string{"us-east-1": "catalog runs here"}},
			{Workload: "catalog", Current: "us-east-1", Recommended: "us-east-1", Scores: map[string]int64{"us-east-1": 100}},
		},
		Latency: []Latency{{Phase: "before", MeanMs: 42.5, P50Ms: 40.1, P99Ms: 90.3}},
		Routing: &Routing{
			KubeProxy: Latency{Phase: "kube-proxy", MeanMs: 135.9, P50Ms: 130, P99Ms: 207.1},
			Flowplace: Latency{Phase: "flowplace", MeanMs: 13.9, P50Ms: 12, P99Ms: 25.8},
			Order:     map[string][]string{"us-east-1": {"eu-west-1", "ap-northeast-1"}},
			Killed:    "catalog", KilledIn: "us-east-1", FailoverMs: 19, FailedConnects: 3, BytesRatio: 0.02,
		},
	}
}

// The page shows the clusters, services and placement of the lab, and
// follows the lab as its state changes.
func TestDashboardInHeadlessChromium(t *testing.T) {
	browser := chromium(t)
	var calls atomic.Int64
	h := Handler(func() State {
		if calls.Add(1) == 1 {
			return sample("measuring the starting placement", "ap-northeast-1")
		}
		return sample("measuring after re-placement", "us-east-1")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()

	dom := dumpDOM(t, browser, "http://"+ln.Addr().String()+"/", 3*time.Second)
	for _, want := range []string{
		"us-east-1", "eu-west-1", "ap-northeast-1", // heatmap and graph columns
		`data-service="frontend"`, `data-service="catalog"`, // traffic graph nodes
		`data-workload="frontend"`, "8.3", // placement table, measured RTT
		"measuring after re-placement",                                                                   // the page refreshed itself
		`data-routing="flowplace"`, "135.9", "from us-east-1: us-east-1, then eu-west-1, ap-northeast-1", // routing phase
		"after 19 ms; 3 failed, 0 after",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if calls.Load() < 2 {
		t.Errorf("the page fetched the state %d times; it must poll", calls.Load())
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}
