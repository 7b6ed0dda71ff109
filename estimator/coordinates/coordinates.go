// Package coordinates estimates the RTT of cluster pairs that nobody has
// measured yet from network coordinates fitted to the pairs that were.
//
// Passive measurement only sees the pairs whose clusters talk to each other,
// so the matrix has holes until they do. Each cluster gets a point x in a
// d-dimensional Euclidean space (d = 2 by default) and a height h >= 0, and
// the RTT between clusters a and b is predicted as
//
//	|x_a - x_b| + h_a + h_b
//
// This is the model of Vivaldi (F. Dabek, R. Cox, F. Kaashoek, R. Morris,
// "Vivaldi: A Decentralized Network Coordinate System", SIGCOMM 2004): the
// Euclidean part stands for the wide-area core, where distance follows
// geography, and the height (the paper's "height vectors") for the access
// link that every path from a node shares. Serf and Consul use the same model
// (github.com/hashicorp/serf, package coordinate: Vec, Height, and a
// per-node Error), as do their "nearest datacenter" queries.
//
// # A batch fit instead of gossip
//
// Vivaldi and Serf move each node's coordinate a little per RTT sample,
// online, because no node sees the whole matrix. The estimator does see it,
// so it fits all coordinates at once and deterministically: least squares
// over the measured pairs of the relative residual
// (predicted - measured) / measured (Vivaldi's relative error, so that a
// 1 ms error on a 2 ms link counts as much as 100 ms on a 200 ms one),
// minimised by Levenberg-Marquardt with the heights held at h >= 0 by an
// active set. It starts from classical multidimensional scaling (Torgerson)
// of the shortest-path completion of the matrix, with and without start
// heights, and in small fleets from seeded random starts too, and keeps the
// best; each runs to convergence. The same measurements always give the
// same estimates: no unseeded randomness, and every loop runs over sorted
// names.
//
// # Which pairs are filled
//
// A pair is estimated only when the measurements determine it:
//
//  1. Both clusters are in the MinPeers-core of the measured graph: every
//     cluster kept has at least MinPeers (default d+1, as many as a
//     coordinate has unknowns) measured peers that are kept too. A cluster
//     with fewer could sit anywhere on a curve (on a circle, with one
//     peer), so its pairs are left absent, and so are those of clusters
//     that only its measurements held in.
//  2. Both are in the same connected component of that core (nothing ties
//     two components' coordinates together).
//  3. The component has more measured pairs than free parameters: at least
//     2 degrees of freedom left after fitting n*(d+1) parameters minus the
//     d(d+1)/2 of a rigid motion. Otherwise a small fleet is fitted without
//     heights (n*d parameters), and with still too few pairs nothing is
//     filled: a fit that matches every measurement exactly says nothing
//     about the pairs it did not see.
//  4. The pair's prediction is determined by the fit: its leverage
//     g^T (J^T J)^+ g (g the gradient of the prediction, J the Jacobian of
//     the relative residuals), scaled to the median measured RTT, is at
//     most MaxLeverage. A prediction the data leave free (two groups of
//     clusters joined by one measured pair can turn about it) has an
//     unbounded leverage (about 1e6 with the ridge that keeps J^T J
//     invertible) and is left absent.
//  5. In a component of at most 8 clusters, at least one measured pair of
//     either cluster could be predicted when held out (below).
//  6. The expected error is at most MaxRelativeError (half) of the
//     estimate.
//
// Measured pairs are never changed: only pairs measured in neither
// direction are returned.
//
// # Expected error
//
// The error of an estimate is its standard error of prediction from the
// linearised least-squares fit, sigma * sqrt(1 + leverage) * estimate:
// sigma is the RMS relative residual over the component's measured pairs
// corrected for the parameters fitted (RSS / degrees of freedom) and
// widened by the Student t factor for one-sigma coverage with few degrees
// of freedom; the 1 is a new measurement's scatter about the model (how far
// the network is from the model, and measurement noise), the leverage the
// uncertainty of the two coordinates. In a component of at most 8
// clusters the linearisation is optimistic (few constraints per cluster,
// and a real network is not a plane), so the error is at least the RMS
// relative error of leave-one-out refits over the measured pairs of either
// cluster: each such pair is held out, the component is refitted as if it
// had never been measured, and the held-out value is compared with the
// refit's prediction. Either way the error is at least MinRelativeError of
// the estimate (the quantile resolution of a measured entry: an estimate is
// never claimed better than a measurement) and at least 1 µs.
package coordinates

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// Measurement is the measured median RTT between clusters A and B (either
// direction; both directions of a pair are averaged).
type Measurement struct {
	A, B string
	// RTT in microseconds; positive and finite.
	RTT float64
}

// Estimate is a filled pair.
type Estimate struct {
	// A < B.
	A, B string
	// RTT is the estimate and Error its expected error, in microseconds.
	RTT, Error float64
}

// Config tunes the fit. The zero value gives the defaults.
type Config struct {
	// Dimensions of the Euclidean part of a coordinate (default 2, at most
	// 3). Few dimensions need few measurements per cluster (Serf's online
	// Vivaldi uses 8 over many more samples).
	Dimensions int
	// MinPeers is the fewest measured peers a cluster needs (see the
	// package doc, rule 1); default Dimensions+1, at least 2.
	MinPeers int
	// MaxLeverage bounds the leverage of a filled pair (rule 4), scaled to
	// the component's median RTT; default 100: the coordinates then add at
	// most 10 times the residual scale, while an undetermined pair (a
	// rotation the measurements leave free) scores about 1e6.
	MaxLeverage float64
	// MaxClusters bounds a component's size (default 150, a 450-parameter
	// fit): the dense solves cost O((n*(d+1))^3), 0.3 s for 100 clusters.
	// Larger components are not filled.
	MaxClusters int
	// MinRelativeError is the floor of an estimate's error relative to the
	// estimate (default 0.025).
	MinRelativeError float64
	// MaxRelativeError is the largest error, relative to the estimate, of
	// a filled pair (default 0.5): an RTT known only to within more than
	// half of itself is not one to rank clusters by.
	MaxRelativeError float64
}

// Defaults.
const (
	DefaultDimensions       = 2
	MaxDimensions           = 3
	DefaultMaxLeverage      = 10
	DefaultMaxClusters      = 150
	DefaultMinRelativeError = 0.025
	DefaultMaxRelativeError = 0.5
	// minDegreesOfFreedom is rule 3's bound: with one degree of freedom
	// the residual's scale is a guess from a single number.
	minDegreesOfFreedom = 2
)

func (c *Config) defaults() error {
	if c.Dimensions == 0 {
		c.Dimensions = DefaultDimensions
	}
	if c.Dimensions < 1 || c.Dimensions > MaxDimensions {
		return fmt.Errorf("coordinates: %d dimensions, want 1 to %d", c.Dimensions, MaxDimensions)
	}
	if c.MinPeers == 0 {
		c.MinPeers = c.Dimensions + 1
	}
	if c.MinPeers < 2 {
		return fmt.Errorf("coordinates: MinPeers %d, want at least 2", c.MinPeers)
	}
	if c.MaxLeverage == 0 {
		c.MaxLeverage = DefaultMaxLeverage
	}
	if !(c.MaxLeverage > 0) || math.IsInf(c.MaxLeverage, 0) {
		return fmt.Errorf("coordinates: MaxLeverage %g, want a positive number", c.MaxLeverage)
	}
	if c.MaxClusters == 0 {
		c.MaxClusters = DefaultMaxClusters
	}
	if c.MaxClusters < 2 {
		return fmt.Errorf("coordinates: MaxClusters %d, want at least 2", c.MaxClusters)
	}
	if c.MinRelativeError == 0 {
		c.MinRelativeError = DefaultMinRelativeError
	}
	if !(c.MinRelativeError > 0 && c.MinRelativeError < 1) {
		return fmt.Errorf("coordinates: MinRelativeError %g, want (0, 1)", c.MinRelativeError)
	}
	if c.MaxRelativeError == 0 {
		c.MaxRelativeError = DefaultMaxRelativeError
	}
	if !(c.MaxRelativeError >= c.MinRelativeError) || math.IsInf(c.MaxRelativeError, 0) {
		return fmt.Errorf("coordinates: MaxRelativeError %g, want a number of at least MinRelativeError %g", c.MaxRelativeError, c.MinRelativeError)
	}
	return nil
}

// Result is what a fit filled, and why the rest was not.
type Result struct {
	// Estimates, sorted by (A, B).
	Estimates []Estimate
	// Components are the fitted components of the core, largest first.
	Components []Component
	// Unconstrained are the clusters with measurements that are not in
	// the core (rule 1), sorted.
	Unconstrained []string
}

// Component describes the fit of one connected component of the core.
type Component struct {
	Clusters, Pairs int
	// Dimensions and Height are the model fitted (rule 3).
	Dimensions int
	Height     bool
	// DegreesOfFreedom is measured pairs minus free parameters.
	DegreesOfFreedom int
	// RelativeRMS is the RMS of (predicted - measured) / measured over
	// the measured pairs.
	RelativeRMS float64
	Iterations  int
	// Filled pairs, and Undetermined ones (rules 4 to 6).
	Filled, Undetermined int
	// Skipped says why nothing was filled; empty when fitted.
	Skipped string
}

// Fit fits coordinates to ms and estimates every pair that they determine
// and that is not measured. Self pairs (a cluster's intra-cluster RTT) are
// ignored: a cluster is one point here. It fails only on invalid input,
// naming the measurement.
func Fit(ms []Measurement, cfg Config) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	g, err := newGraph(ms)
	if err != nil {
		return nil, err
	}
	res := &Result{}
	core := g.core(cfg.MinPeers)
	for i, name := range g.names {
		if !core[i] && g.degree[i] > 0 {
			res.Unconstrained = append(res.Unconstrained, name)
		}
	}
	for _, comp := range g.components(core) {
		c, est := fitComponent(g, comp, cfg)
		res.Components = append(res.Components, c)
		res.Estimates = append(res.Estimates, est...)
	}
	slices.SortFunc(res.Estimates, func(a, b Estimate) int {
		if c := strings.Compare(a.A, b.A); c != 0 {
			return c
		}
		return strings.Compare(a.B, b.B)
	})
	return res, nil
}

type edge struct {
	i, j int32 // i < j, indexes into graph.names
	m    float64
}

// graph is the measured pairs, symmetrised, over names in sorted order.
type graph struct {
	names  []string
	edges  []edge // sorted by (i, j)
	adj    [][]int32
	degree []int
}

func newGraph(ms []Measurement) (*graph, error) {
	seen := map[string]struct{}{}
	for _, m := range ms {
		if m.A == "" || m.B == "" {
			return nil, errors.New("coordinates: measurement without a cluster name")
		}
		if !(m.RTT > 0) || math.IsInf(m.RTT, 0) {
			return nil, fmt.Errorf("coordinates: measurement %s-%s: RTT %g µs is not a positive finite number", m.A, m.B, m.RTT)
		}
		if m.A == m.B {
			continue
		}
		seen[m.A], seen[m.B] = struct{}{}, struct{}{}
	}
	g := &graph{}
	for n := range seen {
		g.names = append(g.names, n)
	}
	sort.Strings(g.names)
	idx := make(map[string]int32, len(g.names))
	for i, n := range g.names {
		idx[n] = int32(i)
	}
	type acc struct {
		sum float64
		n   int
	}
	pairs := map[[2]int32]acc{}
	for _, m := range ms {
		if m.A == m.B {
			continue
		}
		i, j := idx[m.A], idx[m.B]
		if i > j {
			i, j = j, i
		}
		a := pairs[[2]int32{i, j}]
		a.sum += m.RTT
		a.n++
		pairs[[2]int32{i, j}] = a
	}
	for k, a := range pairs {
		g.edges = append(g.edges, edge{i: k[0], j: k[1], m: a.sum / float64(a.n)})
	}
	slices.SortFunc(g.edges, func(a, b edge) int {
		if a.i != b.i {
			return int(a.i - b.i)
		}
		return int(a.j - b.j)
	})
	g.adj = make([][]int32, len(g.names))
	g.degree = make([]int, len(g.names))
	for _, e := range g.edges {
		g.adj[e.i] = append(g.adj[e.i], e.j)
		g.adj[e.j] = append(g.adj[e.j], e.i)
		g.degree[e.i]++
		g.degree[e.j]++
	}
	return g, nil
}

// core is the k-core: clusters are removed while one has fewer than k
// peers left (rule 1).
func (g *graph) core(k int) []bool {
	in := make([]bool, len(g.names))
	deg := slices.Clone(g.degree)
	var queue []int32
	for i := range in {
		in[i] = true
		if deg[i] < k {
			in[i] = false
			queue = append(queue, int32(i))
		}
	}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, u := range g.adj[v] {
			if !in[u] {
				continue
			}
			deg[u]--
			if deg[u] < k {
				in[u] = false
				queue = append(queue, u)
			}
		}
	}
	return in
}

// components are the connected components of the clusters in core, each
// sorted, largest first (ties: by first name).
func (g *graph) components(core []bool) [][]int32 {
	seen := make([]bool, len(g.names))
	var out [][]int32
	for s := range g.names {
		if !core[s] || seen[s] {
			continue
		}
		comp := []int32{int32(s)}
		seen[s] = true
		for q := 0; q < len(comp); q++ {
			for _, u := range g.adj[comp[q]] {
				if core[u] && !seen[u] {
					seen[u] = true
					comp = append(comp, u)
				}
			}
		}
		slices.Sort(comp)
		out = append(out, comp)
	}
	slices.SortStableFunc(out, func(a, b []int32) int { return len(b) - len(a) })
	return out
}

// fitComponent fits one component and estimates its unmeasured pairs.
func fitComponent(g *graph, comp []int32, cfg Config) (Component, []Estimate) {
	n := len(comp)
	local := make(map[int32]int, n)
	for k, v := range comp {
		local[v] = k
	}
	var edges []edge
	measured := map[[2]int]bool{}
	for _, e := range g.edges {
		a, okA := local[e.i]
		b, okB := local[e.j]
		if okA && okB {
			edges = append(edges, edge{i: int32(a), j: int32(b), m: e.m})
			measured[[2]int{a, b}] = true
		}
	}
	c := Component{Clusters: n, Pairs: len(edges)}
	if len(edges) == n*(n-1)/2 {
		c.Skipped = "every pair is measured"
		return c, nil
	}
	if n > cfg.MaxClusters {
		c.Skipped = fmt.Sprintf("%d clusters, more than the %d fitted together", n, cfg.MaxClusters)
		return c, nil
	}
	m, skipped := fitModel(n, edges, cfg, true)
	if m == nil {
		c.Skipped = skipped
		return c, nil
	}
	c.Dimensions, c.Height = cfg.Dimensions, m.f.height
	c.DegreesOfFreedom, c.Iterations = m.dof, m.iters
	c.RelativeRMS = math.Sqrt(m.rss / float64(len(edges)))
	var cv [][]float64
	if n <= cvMaxClusters {
		cv = crossValidate(n, edges, cfg)
	}
	var out []Estimate
	for a := 0; a < n; a++ {
		for b := a + 1; b < n; b++ {
			if measured[[2]int{a, b}] {
				continue
			}
			pred, rel, ok := m.estimate(a, b, cfg.MaxLeverage)
			if ok && cv != nil {
				cvRel, cvOK := pairRMS(cv[a], cv[b])
				ok = cvOK
				rel = math.Max(rel, cvRel)
			}
			if !ok || rel > cfg.MaxRelativeError {
				c.Undetermined++
				continue
			}
			e := pred * math.Max(rel, cfg.MinRelativeError)
			out = append(out, Estimate{A: g.names[comp[a]], B: g.names[comp[b]], RTT: pred, Error: math.Max(e, 1)})
			c.Filled++
		}
	}
	return c, out
}

// model is a fitted component.
type model struct {
	f          *fitter
	theta      []float64
	rss        float64
	dof, iters int
	sigma      float64 // relative residual scale, t-corrected
	lev        *leverages
}

// fitModel picks the model (rule 3), fits it and prepares the leverages;
// nil and the reason when the component cannot be fitted.
func fitModel(n int, edges []edge, cfg Config, random bool) (*model, string) {
	d := cfg.Dimensions
	gauge := d * (d + 1) / 2
	var height bool
	switch {
	case len(edges)-(n*(d+1)-gauge) >= minDegreesOfFreedom:
		height = true
	case len(edges)-(n*d-gauge) >= minDegreesOfFreedom:
	default:
		return nil, fmt.Sprintf("%d measured pairs of %d clusters leave fewer than %d degrees of freedom for a %d-dimensional fit",
			len(edges), n, minDegreesOfFreedom, d)
	}
	m := &model{f: newFitter(n, edges, d, height)}
	m.dof = len(edges) - (n*m.f.q - gauge)
	m.theta, m.rss, m.iters = m.f.solve(random)
	lev, ok := m.f.leverage(m.theta)
	if !ok {
		return nil, "the fit's normal matrix is singular"
	}
	m.lev = lev
	nu := float64(m.dof)
	// Student t quantile for 68.3% (one sigma) by its Cornish-Fisher
	// expansion: 1.75 at 1 degree of freedom, 1.31 at 2, 1.11 at 5.
	m.sigma = math.Sqrt(m.rss/nu) * (1 + 0.5/nu + 0.25/(nu*nu))
	return m, ""
}

// estimate is the prediction for a and b and its relative standard error
// of prediction; false when the leverage exceeds maxLeverage (rule 4).
func (m *model) estimate(a, b int, maxLeverage float64) (pred, rel float64, ok bool) {
	pred, l := m.lev.pair(m.theta, a, b)
	// The bound is on the leverage scaled to the component's median RTT
	// rather than to the pair's own: the coordinates' uncertainty is
	// absolute, so a pair of close clusters has a large relative leverage
	// without being any less determined.
	if scaled := l * (pred / m.f.scale) * (pred / m.f.scale); !(scaled <= maxLeverage) || !(pred > 0) {
		return 0, 0, false
	}
	return pred, m.sigma * math.Sqrt(1+l), true
}

// cvMaxClusters bounds the components that are cross-validated: a refit
// per measured pair is cheap for a small fleet and would not be for a
// large one, whose many constraints per cluster make the linearised error
// honest.
const cvMaxClusters = 8

// crossValidate refits the component without each measured pair in turn,
// exactly as a pair measured in neither direction would be estimated (the
// core rule included), and returns for each cluster the relative errors
// of the held-out pairs it is an endpoint of. In a small fleet the
// linearised error misses how far off the model is on a pair it never
// saw (on the published inter-region RTTs of six AWS regions, held-out
// pairs were off by up to 2.5 times it); cross-validation measures that.
func crossValidate(n int, edges []edge, cfg Config) [][]float64 {
	out := make([][]float64, n)
	rest := make([]edge, 0, len(edges)-1)
	deg := make([]int, n)
	for _, held := range edges {
		rest = rest[:0]
		clear(deg)
		for _, e := range edges {
			if e != held {
				rest = append(rest, e)
				deg[e.i]++
				deg[e.j]++
			}
		}
		i, j := int(held.i), int(held.j)
		if deg[i] < cfg.MinPeers || deg[j] < cfg.MinPeers {
			continue
		}
		m, _ := fitModel(n, rest, cfg, true)
		if m == nil {
			continue
		}
		pred, _, ok := m.estimate(i, j, cfg.MaxLeverage)
		if !ok {
			continue
		}
		r := pred/held.m - 1
		out[i] = append(out[i], r)
		out[j] = append(out[j], r)
	}
	return out
}

// pairRMS is the RMS of the held-out errors of either endpoint; false when
// neither has one (nothing validates the pair's clusters).
func pairRMS(a, b []float64) (float64, bool) {
	var s float64
	for _, v := range a {
		s += v * v
	}
	for _, v := range b {
		s += v * v
	}
	k := len(a) + len(b)
	if k == 0 {
		return 0, false
	}
	return math.Sqrt(s / float64(k)), true
}
