package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
)

// The generator of placement instances. Every distribution is drawn from a
// fixed seed, so instance i is the same on every machine and run.
//
// Sources:
//   - Call-graph shape: Luo et al., "Characterizing Microservice
//     Dependency and Performance: Alibaba Trace Analysis" (SoCC 2021) and
//     its TPDS 2022 extension: call graphs are trees with heavy-tailed
//     fan-out and hot-spot services; stateful services (databases,
//     memcached) appear only as call targets.
//   - Fan-out per depth and the chance of calling further: the Erms
//     generator's data from the same group (Luo et al., ASPLOS 2023
//     artifact, graphGenerator/depthDistribution.csv): at the entry 22% one
//     child, 48% two, 18% three, 95% at most 10, a tail beyond; the chance
//     that a node calls further falls from about 0.90 at the entry to 0.22
//     five levels down; memcached dominates leaf calls.
//   - Roles: Winchester et al., arXiv 2504.13141 (67,760 services): 13%
//     entry, 48% middle, 39% leaf services; middle services are the
//     heaviest.
//   - Request mix: heavy-tailed (Zipf-like) shares of request types, as in
//     DeathStarBench's wrk2 mixes and the Alibaba traces' per-service call
//     rates; message sizes log-normal (heavy-tailed), larger from stores.
//   - Capacity: the fleet has 1.05-1.5x the application's demand in CPU and
//     in memory, unevenly split between clusters (log-normal weights), the
//     tight regime that forces splits (placement-facts.md).
//   - RTT: rttModel (fitted to published AWS inter-region pings, checked
//     against Azure's published ranges), clusters drawn from the regions of
//     three clouds (regionPool), 3 to 20 clusters.
//   - Clients enter in 1 to 4 regions; the ratio of client bytes to
//     service-to-service bytes is swept log-uniformly over 0.1-10, the
//     range that decides between co-locating everything and following the
//     users.
//   - Egress: providers' list prices (fleet.go), weighed at 0, 100 or 500
//     ms of RTT per $/GiB.

// genSpec is what one generated instance was drawn with (for reports).
type genSpec struct {
	seed          uint64
	services      int
	clusters      int
	clientRatio   float64
	cpuSlack      float64
	memSlack      float64
	msPerCostUnit float64
}

func (g genSpec) String() string {
	return fmt.Sprintf("seed %d: %d services, %d clusters, client/internal %.2f, slack cpu %.2f mem %.2f, egress %g ms per $/GiB",
		g.seed, g.services, g.clusters, g.clientRatio, g.cpuSlack, g.memSlack, g.msPerCostUnit)
}

// fanOut draws a number of children at depth d.
func fanOut(rng *rand.Rand, d int) int {
	u := rng.Float64()
	if d == 0 {
		switch {
		case u < 0.22:
			return 1
		case u < 0.70:
			return 2
		case u < 0.88:
			return 3
		case u < 0.95:
			return 4 + rng.IntN(7) // 4-10
		default:
			return 11 + rng.IntN(10) // the tail, bounded by the app's size
		}
	}
	// Deeper, fan-out shrinks towards one child (the trace's per-depth
	// rows): the entry row's shape with half of the 2-3 mass moved to 1.
	switch {
	case u < 0.55:
		return 1
	case u < 0.79:
		return 2
	case u < 0.88:
		return 3
	case u < 0.97:
		return 4 + rng.IntN(7)
	default:
		return 11 + rng.IntN(10)
	}
}

// callsFurther is the chance that a node at depth d calls anything.
var callsFurther = []float64{0.90, 0.75, 0.60, 0.45, 0.32, 0.22, 0.10}

const maxDepth = 6

type role uint8

const (
	roleEntry role = iota
	roleMiddle
	roleLeaf
	roleCache
	roleDB
)

// generate draws instance seed.
func generate(seed uint64, rm rttModel) (*instance, genSpec) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	spec := genSpec{seed: seed, services: 8 + rng.IntN(25), clusters: 3 + rng.IntN(18)}

	// Services by role.
	n := spec.services
	nEntry := max(1, int(math.Round(0.13*float64(n))))
	nLeaf := max(2, int(math.Round(0.39*float64(n))))
	nMiddle := max(1, n-nEntry-nLeaf)
	n = nEntry + nMiddle + nLeaf
	spec.services = n
	roles := make([]role, 0, n)
	for range nEntry {
		roles = append(roles, roleEntry)
	}
	for range nMiddle {
		roles = append(roles, roleMiddle)
	}
	for i := range nLeaf {
		// Half of the leaves are stores (DeathStarBench: half its services
		// are stateful), caches more often than databases.
		switch {
		case i%2 == 1:
			roles = append(roles, roleLeaf)
		case rng.Float64() < 0.6:
			roles = append(roles, roleCache)
		default:
			roles = append(roles, roleDB)
		}
	}
	var svcs []service
	for i, r := range roles {
		name := fmt.Sprintf("%s-%d", [...]string{"entry", "svc", "leaf", "cache", "db"}[r], i)
		cores := logNormal(rng, 2, 0.8)
		if r == roleMiddle {
			cores *= 1.5
		}
		mem := logNormal(rng, 1, 0.7)
		proc := logNormal(rng, 0.5, 0.8)
		switch r {
		case roleCache:
			mem, proc = logNormal(rng, 8, 0.6), 0.1
		case roleDB:
			mem, proc = logNormal(rng, 16, 0.6), logNormal(rng, 2, 0.5)
		}
		svcs = append(svcs, service{name: name, cpu: int(min(max(math.Round(cores), 1), 16)), memGiB: math.Round(min(mem, 64)*10) / 10, procMs: proc})
	}
	byRole := func(rs ...role) []int {
		var out []int
		for i, r := range roles {
			if slices.Contains(rs, r) {
				out = append(out, i)
			}
		}
		return out
	}
	entries, middles, leaves := byRole(roleEntry), byRole(roleMiddle), byRole(roleLeaf)
	caches, dbs := byRole(roleCache), byRole(roleDB)
	uses := make([]float64, n)
	// pick chooses from pool by preferential attachment (hot spots),
	// avoiding the caller's ancestors.
	pick := func(pool []int, avoid []int) int {
		var total float64
		for _, i := range pool {
			if !slices.Contains(avoid, i) {
				total += 1 + 2*uses[i]
			}
		}
		if total == 0 {
			return -1
		}
		u := rng.Float64() * total
		for _, i := range pool {
			if slices.Contains(avoid, i) {
				continue
			}
			if u -= 1 + 2*uses[i]; u <= 0 {
				uses[i]++
				return i
			}
		}
		return -1
	}
	var grow func(svc int, d int, path []int) call
	grow = func(svc int, d int, path []int) call {
		c := call{svc: svcs[svc].name, bytes: logNormal(rng, 2*kB, 1.2)}
		if roles[svc] == roleCache || roles[svc] == roleDB {
			c.bytes = logNormal(rng, 4*kB, 1.0)
			return c
		}
		if d >= maxDepth || rng.Float64() > callsFurther[min(d, len(callsFurther)-1)] {
			return c
		}
		c.parallel = rng.Float64() < 0.3
		path = append(path, svc)
		k := fanOut(rng, d)
		for range k {
			var child int
			u := rng.Float64()
			switch {
			case u < 0.35 && len(caches) > 0:
				// A cache, and on a miss its database.
				child = pick(caches, path)
			case u < 0.5 && len(dbs) > 0:
				child = pick(dbs, path)
			case u < 0.65:
				child = pick(leaves, path)
			default:
				child = pick(middles, path)
			}
			if child < 0 {
				continue
			}
			ch := grow(child, d+1, path)
			if roles[child] == roleCache && len(dbs) > 0 {
				if db := pick(dbs, path); db >= 0 {
					miss := grow(db, d+1, path)
					miss.prob = 0.05 + 0.25*rng.Float64()
					c.children = append(c.children, miss)
				}
			}
			c.children = append(c.children, ch)
		}
		return c
	}
	var reqs []request
	nTypes := 2 + rng.IntN(5)
	var shareSum float64
	for t := range nTypes {
		root := entries[t%len(entries)]
		share := 1 / math.Pow(float64(t+1), 1.1)
		shareSum += share
		reqs = append(reqs, request{name: fmt.Sprintf("req-%d", t), share: share, root: grow(root, 0, nil)})
	}
	for i := range reqs {
		reqs[i].share /= shareSum
	}
	// A service no request reaches still runs (and needs capacity); give it
	// a light call from an entry so the graph is connected as apps are.
	reached := map[string]bool{}
	var mark func(c call)
	mark = func(c call) {
		reached[c.svc] = true
		for _, ch := range c.children {
			mark(ch)
		}
	}
	for _, r := range reqs {
		mark(r.root)
	}
	for i, s := range svcs {
		if !reached[s.name] {
			j := rng.IntN(len(reqs))
			reqs[j].root.children = append(reqs[j].root.children, call{svc: s.name, bytes: logNormal(rng, 0.5*kB, 0.5), prob: 0.05})
			_ = i
		}
	}

	// Clusters.
	perm := rng.Perm(len(regionPool))[:spec.clusters]
	sort.Ints(perm)
	regs := make([]cloudRegion, spec.clusters)
	for i, p := range perm {
		regs[i] = regionPool[p]
	}
	in := &instance{services: svcs, requests: reqs, svcIndex: map[string]int{},
		edges: map[[2]int]float64{}, clientBytes: map[[2]int]float64{}}
	for i, s := range svcs {
		in.svcIndex[s.name] = i
	}
	for i, r := range regs {
		in.regions = append(in.regions, r.name)
		in.providers = append(in.providers, r.provider)
		row := make([]float64, len(regs))
		for j, r2 := range regs {
			row[j] = rm.between(r, r2)
			if i != j {
				// Per-pair variation around the model: paths differ.
				row[j] = max(1, row[j]*math.Exp(0.15*rng.NormFloat64()))
			}
		}
		in.rtt = append(in.rtt, row)
	}
	// Symmetric within the draw: one path both ways.
	for i := range in.rtt {
		for j := range i {
			v := (in.rtt[i][j] + in.rtt[j][i]) / 2
			in.rtt[i][j], in.rtt[j][i] = v, v
		}
	}
	// Clients in 1 to 4 regions.
	in.clients = make([]float64, len(regs))
	nClient := 1 + rng.IntN(min(4, len(regs)))
	var csum float64
	for _, k := range rng.Perm(len(regs))[:nClient] {
		w := rng.ExpFloat64()
		in.clients[k] = w
		csum += w
	}
	for k := range in.clients {
		in.clients[k] /= csum
	}
	const rps = 2000
	for _, rq := range reqs {
		rate := rps * rq.share
		root := in.svcIndex[rq.root.svc]
		for k := range regs {
			if in.clients[k] > 0 {
				in.clientBytes[[2]int{k, root}] += rate * in.clients[k] * rq.root.bytes
			}
		}
		in.addEdges(rq.root, rate)
	}
	var internal, client float64
	for _, b := range in.edges {
		internal += b
	}
	for _, b := range in.clientBytes {
		client += b
	}
	spec.clientRatio = math.Exp(math.Log(0.1) + rng.Float64()*math.Log(100))
	if client > 0 && internal > 0 {
		scale := spec.clientRatio * internal / client
		for k := range in.clientBytes {
			in.clientBytes[k] *= scale
		}
		in.clientScale = scale
	}

	// Capacity.
	spec.cpuSlack, spec.memSlack = 1.05+0.45*rng.Float64(), 1.05+0.45*rng.Float64()
	for attempt := 0; ; attempt++ {
		in.capacity, in.memCapacity = drawCapacity(rng, in, spec.cpuSlack, spec.memSlack)
		if in.firstFitDecreasing() != nil || attempt == 100 {
			break
		}
	}

	spec.msPerCostUnit = []float64{0, 100, 500}[rng.IntN(3)]
	in.cfg = benchConfig()
	if spec.msPerCostUnit > 0 {
		in.cfg.TrafficLocality.Egress = config.EgressConfiguration{MillisecondsPerCostUnit: spec.msPerCostUnit, Rules: egressRules()}
		in.cfg.Model.PlanEgress = in.cfg.TrafficLocality.Egress
	}
	in.setEgress()
	return in, spec
}

// drawCapacity splits slack x demand between the clusters with
// log-normal weights, in whole cores and tenths of GiB.
func drawCapacity(rng *rand.Rand, in *instance, cpuSlack, memSlack float64) ([]int, []float64) {
	var cpu, mem float64
	for _, s := range in.services {
		cpu += float64(s.cpu)
		mem += s.memGiB
	}
	k := len(in.regions)
	w := make([]float64, k)
	var sum float64
	for i := range w {
		w[i] = math.Exp(0.6 * rng.NormFloat64())
		sum += w[i]
	}
	var bigCPU int
	var bigMem float64
	for _, s := range in.services {
		bigCPU, bigMem = max(bigCPU, s.cpu), max(bigMem, s.memGiB)
	}
	caps := make([]int, k)
	mems := make([]float64, k)
	for i := range w {
		// A cluster holds at least the largest service: real clusters are
		// not smaller than one of an application's services (with many
		// clusters this raises the fleet's slack above the draw).
		caps[i] = max(int(math.Ceil(cpuSlack*cpu*w[i]/sum)), bigCPU)
		mems[i] = max(math.Ceil(memSlack*mem*w[i]/sum*10)/10, bigMem)
	}
	return caps, mems
}

// firstFitDecreasing returns a placement that fits, or nil: the check that
// a drawn capacity can hold the application at all.
func (in *instance) firstFitDecreasing() []int {
	order := make([]int, len(in.services))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return in.services[order[a]].cpu > in.services[order[b]].cpu })
	free := slices.Clone(in.capacity)
	mem := slices.Clone(in.memCapacity)
	place := make([]int, len(in.services))
	for _, s := range order {
		c := -1
		for k := range free {
			if free[k] >= in.services[s].cpu && in.fitsMem(mem, k, s) {
				c = k
				break
			}
		}
		if c < 0 {
			return nil
		}
		free[c] -= in.services[s].cpu
		if mem != nil {
			mem[c] -= in.services[s].memGiB
		}
		place[s] = c
	}
	return place
}

func (in *instance) fitsMem(mem []float64, k, s int) bool {
	return mem == nil || mem[k] >= in.services[s].memGiB-1e-9
}

func logNormal(rng *rand.Rand, median, sigma float64) float64 {
	return median * math.Exp(sigma*rng.NormFloat64())
}
