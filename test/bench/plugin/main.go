// Command plugin measures the cost of one TrafficLocality Score call and one
// LatencyBudget Filter call at fleet scale: 100 clusters (20 in each of the
// five AWS regions of modeltest, RTT = the published inter-region RTT plus
// up to 2 ms within a region), a workload with 50 peer workloads placed in
// 1 to 3 clusters each and clients in 5 clusters. Karmada calls Score and
// Filter once per (binding, cluster), so this is the per-cluster cost the
// scheduler pays; the goal is at most 2,000 ns each. Each number is the
// median of 5 runs.
package main

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/model/modeltest"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
)

const (
	numClusters = 100
	numPeers    = 50
	numClients  = 5
	perRegion   = numClusters / 5
	// background workloads make the workload map realistically large.
	numOther = 10_000
)

func main() {
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	valid := now.Add(time.Hour)
	names := make([]string, numClusters)
	region := make([]int, numClusters)
	var clusters []model.ClusterInfo
	for i := range names {
		region[i] = i / perRegion
		names[i] = fmt.Sprintf("%s-%02d", modeltest.AWSRegions[region[i]], i%perRegion)
		clusters = append(clusters, model.ClusterInfo{Name: names[i], Provider: "aws", Region: modeltest.AWSRegions[region[i]]})
	}
	ms := make([][]float64, numClusters)
	for i := range ms {
		ms[i] = make([]float64, numClusters)
		for j := range ms[i] {
			ms[i][j] = modeltest.AWSRTTMs[region[i]][region[j]] + rng.Float64()*2
		}
	}
	in := model.Inputs{Clusters: clusters, Latency: modeltest.LatencyRows(names, ms, valid)}
	w := model.KeyFor("bench", "Deployment", "subject")
	t := model.TrafficInput{Workload: w, ValidUntil: valid, Samples: 1000}
	for p := 0; p < numPeers; p++ {
		k := model.KeyFor("bench", "Deployment", fmt.Sprintf("peer-%d", p))
		replicas := map[string]int32{}
		for r := 0; r < 1+p%3; r++ {
			replicas[names[rng.IntN(numClusters)]] = int32(1 + rng.IntN(3))
		}
		in.Bindings = append(in.Bindings, modeltest.Binding(k, replicas))
		t.Peers = append(t.Peers, model.PeerInput{Workload: &k, BytesPerSecond: float64(1000 + rng.IntN(1_000_000))})
	}
	for c := 0; c < numClients; c++ {
		t.Clients = append(t.Clients, model.ClientInput{Cluster: names[rng.IntN(numClusters)], BytesPerSecond: float64(1000 + rng.IntN(1_000_000))})
	}
	in.Traffic = append(in.Traffic, t)
	for o := 0; o < numOther; o++ {
		k := model.KeyFor("bench", "Deployment", fmt.Sprintf("other-%d", o))
		in.Bindings = append(in.Bindings, modeltest.Binding(k, map[string]int32{names[o%numClusters]: 1}))
	}
	buildStart := time.Now()
	snap := model.Build(in, model.BuildOptions{MinSamples: 10, Plan: config.Default().Model.CapacityPlan})
	buildTime := time.Since(buildStart)
	var h model.Holder
	h.Store(snap)

	cfg := config.Default()
	// A budget no cluster exceeds, so every Filter call checks every
	// required peer and client (the expensive path).
	cfg.LatencyBudget.DefaultBudget = time.Second
	cfg.LatencyBudget.RequiredFraction = 0
	score := trafficlocality.New(&h, cfg.TrafficLocality, nil)
	filter := latencybudget.New(&h, cfg.LatencyBudget, nil)

	// Sanity: real scores and verdicts, not a fast path.
	if r := score.Score(w, names[0]); r.Reason != trafficlocality.ReasonCost {
		panic(fmt.Sprintf("score took the %q path", r.Reason))
	}
	if v := filter.Filter(w, names[0]); !v.Fit || v.Reason != "within latency budget" {
		panic(fmt.Sprintf("filter took the %q path", v.Reason))
	}

	var sink int64
	scoreRes := median(func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			sink += score.Score(w, names[i%numClusters]).Raw
		}
	})
	filterRes := median(func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if filter.Filter(w, names[i%numClusters]).Fit {
				sink++
			}
		}
	})
	normRes := median(func(b *testing.B) {
		raw := make([]int64, numClusters)
		for b.Loop() {
			for i := range raw {
				raw[i] = -int64(i*1000) - 1
			}
			score.Normalize(raw)
		}
	})
	_ = sink
	fmt.Printf("model: %d clusters, %d workloads, %d peers and %d client clusters for the scored workload; snapshot build %s\n",
		snap.NumClusters(), snap.NumWorkloads(), numPeers, numClients, buildTime.Round(time.Millisecond))
	fmt.Printf("Score:     %s %s\n", scoreRes, scoreRes.MemString())
	fmt.Printf("Filter:    %s %s\n", filterRes, filterRes.MemString())
	fmt.Printf("Normalize: %s (all %d clusters, once per binding)\n", normRes, numClusters)
	fmt.Printf("plugin-bench: score_ns=%d filter_ns=%d\n", scoreRes.NsPerOp(), filterRes.NsPerOp())
}

// runs of each benchmark; the median is reported so that one run disturbed
// by other work on the machine does not decide the number.
const runs = 5

func median(f func(b *testing.B)) testing.BenchmarkResult {
	res := make([]testing.BenchmarkResult, runs)
	for i := range res {
		res[i] = testing.Benchmark(f)
	}
	sort.Slice(res, func(i, j int) bool { return res[i].NsPerOp() < res[j].NsPerOp() })
	return res[runs/2]
}
