// Package ui serves the lab's live dashboard: a cluster latency heatmap, the
// service traffic graph and the placement table with scores and reasons. The
// page is static (embedded) and polls /api/state.
package ui

import (
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"time"
)

// State is everything the dashboard shows.
type State struct {
	Phase     string        `json:"phase"` // what the lab is doing now
	Updated   time.Time     `json:"updated"`
	Clusters  []string      `json:"clusters"`
	RTT       []RTTCell     `json:"rtt"`
	Traffic   []TrafficEdge `json:"traffic"`
	Placement []Placement   `json:"placement"`
	Latency   []Latency     `json:"latency,omitempty"` // client latency per phase
	Routing   *Routing      `json:"routing,omitempty"`
}

// Routing is the routing phase: client latency with kube-proxy-style
// balancing and with flowplace's routing, each cluster's order of the
// others, and the failover of one killed instance.
type Routing struct {
	KubeProxy           Latency             `json:"kube_proxy"`
	Flowplace           Latency             `json:"flowplace"`
	BytesRatio          float64             `json:"cross_cluster_bytes_ratio"`
	Order               map[string][]string `json:"order"`
	Killed              string              `json:"killed"`
	KilledIn            string              `json:"killed_in"`
	FailoverMs          float64             `json:"failover_ms"`
	FailedConnects      int                 `json:"failed_connects"`
	FailedAfterFailover int                 `json:"failed_connects_after_failover"`
}

// RTTCell is one cluster pair: injected vs measured, in milliseconds.
type RTTCell struct {
	From       string  `json:"from"`
	To         string  `json:"to"`
	InjectedMs float64 `json:"injected_ms"`
	MeasuredMs float64 `json:"measured_ms"` // 0: not measured yet
	Samples    int64   `json:"samples"`
}

// TrafficEdge is traffic between two services, where they run now.
type TrafficEdge struct {
	From           string  `json:"from"`
	To             string  `json:"to"`
	FromCluster    string  `json:"from_cluster"`
	ToCluster      string  `json:"to_cluster"`
	BytesPerSecond float64 `json:"bytes_per_second"`
}

// Placement is one workload: where it runs, where flowplace would put it,
// and the score of every cluster with its reason.
type Placement struct {
	Workload    string            `json:"workload"`
	Current     string            `json:"current"`
	Recommended string            `json:"recommended"`
	Scores      map[string]int64  `json:"scores"`
	Reasons     map[string]string `json:"reasons,omitempty"`
}

// Latency is what clients measured in one phase of the lab.
type Latency struct {
	Phase  string  `json:"phase"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
}

//go:embed static
var static embed.FS

// Handler serves the page at / and the state, as current returns it, at
// /api/state.
func Handler(current func() State) http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("/", http.FileServerFS(sub))
	mux.HandleFunc("/api/state", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(current())
	})
	return mux
}
