package main

import (
	"context"

	"fmt"
	"github.com/flowplace/flowplace/scheduler-plugin/plan"
	"os"
	"os/exec"
	"slices"
	"time"
)

// sweepResult is what the generated sweep measured.
type sweepResult struct {
	instances  int
	gaps       []float64 // flowplace cost / reference, every instance x order
	noPlanGaps []float64
	planGaps   []float64 // plan.Solve alone, nothing placed
	// provenGaps are gaps to proven optima (exhaustive, or CBC's proven);
	// on the other instances the reference is CBC's lower bound and the
	// gap an upper bound; boundIncumbent is CBC's best placement found
	// there over flowplace's best of the three orders.
	provenGaps     []float64
	boundIncumbent []float64
	bytesRatios    []float64 // flowplace cross-cluster bytes / default's
	latRatios      []float64
	methods        map[string]int
	worst          string
	worseNoPlan    int
	overCapacity   int
	// skipped: instances Karmada's default order cannot place at all;
	// unschedulable: flowplace left a binding without a cluster with room.
	skipped             int
	unschedulable       []string
	noPlanUnschedulable int
}

// sweep runs count generated instances through the default placement and
// flowplace's in the three arrival orders, and measures each against its
// reference.
func sweep(ctx context.Context, count int) (sweepResult, error) {
	if _, err := exec.LookPath("cbc"); err != nil {
		return sweepResult{}, fmt.Errorf("the reference of instances too large to search exhaustively is CBC's: install it (Debian: apt-get install coinor-cbc): %w", err)
	}
	rm := fitRTTModel()
	fmt.Printf("generated instances: RTT = %.2f x great-circle fibre RTT (AWS pairs %.2f-%.2f); Azure check, model vs published within-continent ranges: %s (published: North America 5-72, Europe 3-28, Asia 4-134 ms)\n",
		rm.inflation, rm.minRatio, rm.maxRatio, rm.azureCheck())
	dir, err := os.MkdirTemp("", "placement-cbc-")
	if err != nil {
		return sweepResult{}, err
	}
	defer os.RemoveAll(dir)
	r := sweepResult{methods: map[string]int{}}
	worstGap := 0.0
	start := time.Now()
	for seed := *firstSeed; len(r.gaps) < 3*count; seed++ {
		in, spec := generate(seed, rm)
		if in.firstFitDecreasing() == nil {
			continue // capacity draw cannot hold the application
		}
		def, err := in.place(defaultPolicy)
		if err != nil {
			// Karmada's own order leaves a binding unschedulable: capacity
			// too tight for an online placement; not an instance to
			// measure quality on.
			r.skipped++
			continue
		}
		o := in.objective()
		var fps [][]int
		for _, order := range []arrivalOrder{callersFirst, calleesFirst, randomOrder} {
			in.arrival, in.arrivalSeed = order, seed
			budgetFallbacks = 0
			fp, err := in.place(flowplacePolicyWith(true))
			if err != nil {
				r.unschedulable = append(r.unschedulable, fmt.Sprintf("%s, %s: %v", spec, order, err))
				break
			}
			if !o.fits(fp) {
				r.overCapacity++
			}
			fps = append(fps, fp)
		}
		if len(fps) < 3 {
			continue
		}
		in.arrival = callersFirst
		noPlan, err := in.place(flowplacePolicyWith(false))
		if err != nil {
			r.noPlanUnschedulable++
			noPlan = nil
		}
		best := fps[0]
		for _, fp := range fps[1:] {
			if o.cost(fp) < o.cost(best) {
				best = fp
			}
		}
		placed := time.Now()
		ref, err := in.solveReference(ctx, dir, best)
		if err != nil {
			return r, fmt.Errorf("%s: reference: %w", spec, err)
		}
		r.methods[ref.method]++
		if ref.method == "cbc-bound" {
			r.boundIncumbent = append(r.boundIncumbent, o.cost(ref.place)/o.cost(best))
		}
		if *verbose {
			fmt.Printf("%s: reference %s in %s\n", spec, ref.method, time.Since(placed).Round(time.Millisecond))
		}
		if pa := in.planAlone(); o.fits(pa) {
			r.planGaps = append(r.planGaps, o.cost(pa)/ref.cost)
			if *verbose && o.cost(pa)/ref.cost > 1.05 {
				fmt.Printf("plan alone %.3f on %s\n", o.cost(pa)/ref.cost, spec)
			}
		} else if *verbose {
			fmt.Printf("plan alone over capacity on %s\n", spec)
		}
		r.instances++
		dBytes, dLat, _ := in.evaluate(def)
		for i, fp := range fps {
			fBytes, fLat, fCost := in.evaluate(fp)
			gap := fCost / ref.cost
			r.gaps = append(r.gaps, gap)
			if ref.method != "cbc-bound" {
				r.provenGaps = append(r.provenGaps, gap)
			}
			if dBytes > 0 {
				r.bytesRatios = append(r.bytesRatios, fBytes/dBytes)
			}
			r.latRatios = append(r.latRatios, fLat/dLat)
			if gap > worstGap {
				worstGap = gap
				r.worst = fmt.Sprintf("%s, %s: gap %.3f (%s)", spec, arrivalOrder(i), gap, ref.method)
			}
		}
		if noPlan != nil {
			_, _, nCost := in.evaluate(noPlan)
			r.noPlanGaps = append(r.noPlanGaps, nCost/ref.cost)
			if _, _, c := in.evaluate(fps[0]); c > nCost*(1+1e-9) {
				r.worseNoPlan++
			}
		}
	}
	fmt.Printf("generated: %d instances in %s (references: %v)\n", r.instances, time.Since(start).Round(time.Second), r.methods)
	return r, nil
}

func quantile(v []float64, q float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (r sweepResult) print() {
	fmt.Printf("generated gap to the reference over %d instances x 3 orders: median %.3f p95 %.3f worst %.3f; without the plan (callers first) median %.3f p95 %.3f worst %.3f\n",
		r.instances, quantile(r.gaps, 0.5), quantile(r.gaps, 0.95), quantile(r.gaps, 1), quantile(r.noPlanGaps, 0.5), quantile(r.noPlanGaps, 0.95), quantile(r.noPlanGaps, 1))
	fmt.Printf("generated vs Karmada's default: cross-cluster bytes ratio median %.3f, mean latency ratio median %.3f; worse than without the plan: %d; over capacity: %d\n",
		quantile(r.bytesRatios, 0.5), quantile(r.latRatios, 0.5), r.worseNoPlan, r.overCapacity)
	fmt.Printf("plan alone (nothing placed, no scheduler): median %.3f p95 %.3f worst %.3f over %d\n", quantile(r.planGaps, 0.5), quantile(r.planGaps, 0.95), quantile(r.planGaps, 1), len(r.planGaps))
	fmt.Printf("gap to proven optima (%d instances x 3 orders): median %.3f p95 %.3f worst %.3f; on the %d instances CBC proved neither MIP in %s each the reference is the higher of its lower bounds (the gap an upper bound), and CBC's best placement found costs %.3f-%.3f x flowplace's\n",
		len(r.provenGaps)/3, quantile(r.provenGaps, 0.5), quantile(r.provenGaps, 0.95), quantile(r.provenGaps, 1),
		len(r.boundIncumbent), *cbcTimeLimit, quantile(r.boundIncumbent, 0), quantile(r.boundIncumbent, 1))
	fmt.Printf("worst: %s\n", r.worst)
	fmt.Printf("skipped (Karmada's default cannot place them): %d; flowplace unschedulable: %d; without the plan unschedulable: %d\n", r.skipped, len(r.unschedulable), r.noPlanUnschedulable)
	for _, u := range r.unschedulable {
		fmt.Printf("  unschedulable: %s\n", u)
	}
}

// planAlone is plan.Solve on the whole instance with nothing placed: the
// plan's own quality, before the scheduler places bindings one at a time.
func (in *instance) planAlone() []int { return plan.Solve(in.planProblem()).Cluster }

// planProblem is the whole instance as a plan.Problem, nothing placed.
func (in *instance) planProblem() plan.Problem {
	k := len(in.regions)
	p := plan.Problem{Clusters: k, RTTMs: make([]float64, k*k), Free: make([]plan.Resources, k)}
	if in.egressMs != nil {
		p.EgressMs = make([]float64, k*k)
	}
	for a := range k {
		for b := range k {
			p.RTTMs[a*k+b] = in.rtt[a][b]
			if in.egressMs != nil {
				p.EgressMs[a*k+b] = in.egressMs[a][b]
			}
		}
		p.Free[a] = plan.Resources{float64(in.capacity[a]) * 1000, plan.Unconstrained}
		if in.memCapacity != nil {
			p.Free[a][plan.Memory] = in.memCapacity[a] * gib
		}
	}
	for _, s := range in.services {
		p.Nodes = append(p.Nodes, plan.Node{Demand: plan.Resources{float64(s.cpu) * 1000, s.memGiB * gib}})
	}
	for _, e := range sortedKeys(in.clientBytes) {
		p.Nodes[e[1]].External = append(p.Nodes[e[1]].External, plan.Load{Cluster: e[0], BytesPerSecond: in.clientBytes[e]})
	}
	for _, e := range sortedKeys(in.edges) {
		p.Edges = append(p.Edges, plan.Edge{A: e[0], B: e[1], BytesPerSecond: in.edges[e]})
	}
	return p
}
