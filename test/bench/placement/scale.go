package main

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/plan"
)

// fleetProblem is the plan at fleet scale: generated applications side by
// side until there are workloads workloads, on clusters clusters spread
// over the region pool (several clusters per region, 1 ms apart), with
// 1.25x the fleet's CPU and memory demand, heterogeneous by cluster.
func fleetProblem(workloads, clusters int, rm rttModel) plan.Problem {
	p := plan.Problem{Clusters: clusters, RTTMs: make([]float64, clusters*clusters), Free: make([]plan.Resources, clusters)}
	region := func(c int) cloudRegion { return regionPool[c%len(regionPool)] }
	for a := range clusters {
		for b := range clusters {
			switch {
			case a == b:
			case region(a) == region(b):
				p.RTTMs[a*clusters+b] = 1
			default:
				p.RTTMs[a*clusters+b] = rm.between(region(a), region(b))
			}
		}
	}
	var demand plan.Resources
	for app := uint64(1); len(p.Nodes) < workloads; app++ {
		in, _ := generate(app, rm)
		offset := len(p.Nodes)
		// The application's clusters land on fleet clusters by a stride,
		// so applications share clusters and compete for them.
		home := func(k int) int { return (k*7 + int(app)*13) % clusters }
		for _, s := range in.services {
			if len(p.Nodes) == workloads {
				break
			}
			d := plan.Resources{float64(s.cpu) * 1000, s.memGiB * gib}
			demand[plan.CPU] += d[plan.CPU]
			demand[plan.Memory] += d[plan.Memory]
			p.Nodes = append(p.Nodes, plan.Node{Demand: d})
		}
		for _, e := range sortedKeys(in.clientBytes) {
			if u := offset + e[1]; u < len(p.Nodes) {
				p.Nodes[u].External = append(p.Nodes[u].External, plan.Load{Cluster: home(e[0]), BytesPerSecond: in.clientBytes[e]})
			}
		}
		for _, e := range sortedKeys(in.edges) {
			if a, b := offset+e[0], offset+e[1]; a < len(p.Nodes) && b < len(p.Nodes) {
				p.Edges = append(p.Edges, plan.Edge{A: a, B: b, BytesPerSecond: in.edges[e]})
			}
		}
	}
	rng := rand.New(rand.NewPCG(uint64(workloads), uint64(clusters)))
	weights := make([]float64, clusters)
	var total float64
	for c := range weights {
		weights[c] = 0.5 + rng.Float64()
		total += weights[c]
	}
	for c := range p.Free {
		for r := range p.Free[c] {
			p.Free[c][r] = 1.25 * demand[r] * weights[c] / total
		}
	}
	return p
}

// scaleResult is the plan's time and memory at fleet scale against a
// baseline measured in the same run: one pass over the problem's edges
// pricing every cluster (what any plan must at least read).
type scaleResult struct {
	workloads, clusters, edges int
	planTime, baseline         time.Duration
	allocBytes, heapBytes      uint64
}

// baselineSink keeps the baseline's loop from being optimised away.
var baselineSink float64

func measureScale(workloads, clusters int) scaleResult {
	rm := fitRTTModel()
	p := fleetProblem(workloads, clusters, rm)
	r := scaleResult{workloads: workloads, clusters: clusters, edges: len(p.Edges)}
	// Baseline: each edge priced at every cluster once.
	start := time.Now()
	var sum float64
	for _, e := range p.Edges {
		for c := range clusters {
			sum += e.BytesPerSecond * p.RTTMs[c]
		}
	}
	r.baseline = time.Since(start)
	baselineSink = sum
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start = time.Now()
	plan.Solve(p)
	r.planTime = time.Since(start)
	runtime.ReadMemStats(&after)
	r.allocBytes = after.TotalAlloc - before.TotalAlloc
	r.heapBytes = after.HeapAlloc
	return r
}

func (r scaleResult) print() {
	fmt.Printf("plan at fleet scale: %d workloads, %d clusters, %d edges: %s (%.1fx one pass pricing every edge at every cluster, %s); allocated %.1f MiB, live heap after %.1f MiB; %d CPUs, %s\n",
		r.workloads, r.clusters, r.edges, r.planTime.Round(time.Millisecond), float64(r.planTime)/float64(max(r.baseline, 1)), r.baseline.Round(time.Microsecond),
		float64(r.allocBytes)/(1<<20), float64(r.heapBytes)/(1<<20), runtime.NumCPU(), runtime.Version())
}
