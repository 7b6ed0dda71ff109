package coordinates

import (
	"math"
	"math/rand/v2"
	"slices"
)

// fitter holds one component's least-squares problem. Parameters are laid
// out per cluster: d coordinates, then the height when fitted.
type fitter struct {
	n, d, q int
	height  bool
	edges   []edge
	scale   float64 // median measured RTT, for the start
}

func newFitter(n int, edges []edge, d int, height bool) *fitter {
	f := &fitter{n: n, d: d, q: d, height: height, edges: edges}
	if height {
		f.q++
	}
	ms := make([]float64, len(edges))
	for i, e := range edges {
		ms[i] = e.m
	}
	slices.Sort(ms)
	f.scale = ms[len(ms)/2]
	return f
}

// start is an initial parameter vector: classical MDS (Torgerson) of the
// shortest-path completion of the matrix less start heights of frac of
// each cluster's shortest measured RTT. Shortest paths are upper bounds of
// the missing RTTs under the triangle inequality, and MDS puts the points
// where they fit those distances best in d dimensions; a small
// deterministic offset keeps points off a common line (from which no
// gradient could lift them).
func (f *fitter) start(frac float64) []float64 {
	n, d := f.n, f.d
	inf := math.Inf(1)
	dist := make([]float64, n*n)
	for i := range dist {
		dist[i] = inf
	}
	h0 := make([]float64, n)
	for i := range h0 {
		dist[i*n+i] = 0
		h0[i] = inf
	}
	for _, e := range f.edges {
		dist[int(e.i)*n+int(e.j)], dist[int(e.j)*n+int(e.i)] = e.m, e.m
		h0[e.i], h0[e.j] = math.Min(h0[e.i], e.m), math.Min(h0[e.j], e.m)
	}
	for k := 0; k < n; k++ {
		for i := 0; i < n; i++ {
			dik := dist[i*n+k]
			if math.IsInf(dik, 1) {
				continue
			}
			for j := 0; j < n; j++ {
				if v := dik + dist[k*n+j]; v < dist[i*n+j] {
					dist[i*n+j] = v
				}
			}
		}
	}
	for i := range h0 {
		h0[i] *= frac
	}
	// B = -1/2 J D^2 J with J the centring matrix.
	b := make([]float64, n*n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			v := 0.0
			if i != j {
				v = math.Max(dist[i*n+j]-h0[i]-h0[j], 0)
			}
			b[i*n+j] = v * v
		}
	}
	rowMean := make([]float64, n)
	var all float64
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			rowMean[i] += b[i*n+j]
		}
		all += rowMean[i]
		rowMean[i] /= float64(n)
	}
	all /= float64(n * n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			b[i*n+j] = -0.5 * (b[i*n+j] - rowMean[i] - rowMean[j] + all)
		}
	}
	vals, vecs := symEigen(b, n)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case vals[a] > vals[b]:
			return -1
		case vals[a] < vals[b]:
			return 1
		}
		return 0
	})
	theta := make([]float64, n*f.q)
	for a := 0; a < d && a < n; a++ {
		s := math.Sqrt(math.Max(vals[order[a]], 0))
		for i := 0; i < n; i++ {
			theta[i*f.q+a] = vecs[i*n+order[a]] * s
		}
	}
	for i := 0; i < n; i++ {
		for a := 0; a < d; a++ {
			// Golden-ratio sequence: deterministic, spread, never equal.
			theta[i*f.q+a] += 1e-3 * f.scale * (math.Mod(float64(i+1)*0.6180339887+float64(a)*0.4142135624, 1) - 0.5)
		}
		if f.height {
			theta[i*f.q+d] = h0[i]
		}
	}
	return theta
}

// isHeight reports whether parameter k is a height.
func (f *fitter) isHeight(k int) bool { return f.height && k%f.q == f.d }

// predict returns the model's RTT for clusters a and b and, in grad (2q
// entries: a's parameters, then b's), its gradient.
func (f *fitter) predict(theta []float64, a, b int, grad []float64) float64 {
	d, q := f.d, f.q
	xa, xb := theta[a*q:a*q+d], theta[b*q:b*q+d]
	var dist float64
	for k := range d {
		v := xa[k] - xb[k]
		dist += v * v
	}
	dist = math.Sqrt(dist)
	pred := dist
	if grad != nil {
		for k := range d {
			u := 0.0
			if dist > 1e-12*f.scale {
				u = (xa[k] - xb[k]) / dist
			}
			grad[k], grad[q+k] = u, -u
		}
	}
	if f.height {
		pred += theta[a*q+d] + theta[b*q+d]
		if grad != nil {
			grad[d], grad[q+d] = 1, 1
		}
	}
	return pred
}

// rss is the sum of squared relative residuals.
func (f *fitter) rss(theta []float64) float64 {
	var s float64
	for _, e := range f.edges {
		r := f.predict(theta, int(e.i), int(e.j), nil)/e.m - 1
		s += r * r
	}
	return s
}

// normal builds a = J^T J and g = J^T r at theta and returns the RSS.
func (f *fitter) normal(theta, a, g []float64) float64 {
	clear(a)
	clear(g)
	p := f.n * f.q
	q := f.q
	grad := make([]float64, 2*q)
	idx := make([]int, 2*q)
	var s float64
	for _, e := range f.edges {
		i, j := int(e.i), int(e.j)
		r := f.predict(theta, i, j, grad)/e.m - 1
		s += r * r
		for k := range q {
			idx[k], idx[q+k] = i*q+k, j*q+k
		}
		for k := range grad {
			grad[k] /= e.m
		}
		for u, gu := range grad {
			if gu == 0 {
				continue
			}
			row := a[idx[u]*p:]
			for v, gv := range grad {
				row[idx[v]] += gu * gv
			}
			g[idx[u]] += gu * r
		}
	}
	return s
}

// atBound reports the heights held at zero: those that are zero and whose
// gradient pushes them below. They are fixed for a step (an active set),
// so that a step is a Gauss-Newton step of the other parameters rather than
// one cut short by the bound.
func (f *fitter) atBound(theta, g []float64, fixed []bool) {
	for k := range fixed {
		fixed[k] = f.isHeight(k) && theta[k] <= 0 && g[k] >= 0
	}
}

// Levenberg-Marquardt limits: it converges in tens of iterations from the
// MDS start; the bound only matters for a pathological input.
const (
	maxIterations = 300
	relativeTol   = 1e-8
)

// solve minimises the RSS from several starts and keeps the best: MDS with
// no heights, MDS of the matrix less a quarter of each cluster's shortest
// RTT as its height (heights trade off against position, and the two reach
// the usual basins of small and large access delays), and for small fleets
// random starts from a generator seeded by the problem's size. A cluster
// with few peers can settle on the wrong side of them (a flip) where no
// small step helps: in 40 synthetic fleets each of 8 and 10 clusters with
// 20-40% of the pairs missing, the MDS starts alone ended with an RSS over
// 1.2 times that of a fit started from the truth in 7 to 16 cases; with the
// random starts, in 1 of 160 fleets of 8 to 30 clusters. Without random
// (the refits of cross-validation) a missed minimum only makes the
// held-out error, and so the reported one, larger.
func (f *fitter) solve(random bool) (theta []float64, rss float64, iters int) {
	var starts [][]float64
	starts = append(starts, f.start(0))
	if f.height && f.n <= 40 {
		starts = append(starts, f.start(0.25))
	}
	rng := rand.New(rand.NewPCG(uint64(f.n), uint64(len(f.edges))))
	for range extraStarts(f.n) {
		if !random {
			break
		}
		t := make([]float64, f.n*f.q)
		for i := range t {
			if f.isHeight(i) {
				t[i] = rng.Float64() * 0.1 * f.scale
			} else {
				t[i] = (rng.Float64() - 0.5) * 2 * f.scale
			}
		}
		starts = append(starts, t)
	}
	for _, s := range starts {
		t, r, it := f.lm(s)
		iters += it
		if theta == nil || r < rss {
			theta, rss = t, r
		}
	}
	return theta, rss, iters
}

// extraStarts is the number of random starts (seeded by the problem's
// size, so still deterministic) besides the MDS ones: small fleets have
// few constraints per cluster and the most local minima, and cost little
// per start.
func extraStarts(n int) int {
	switch {
	case n <= 16:
		return 8
	case n <= 40:
		return 4
	}
	return 0
}

// lm minimises the RSS by Levenberg-Marquardt with Marquardt's diagonal
// scaling: solve (J^T J + mu diag(J^T J)) delta = -J^T r over the free
// parameters, project the heights onto h >= 0, accept the step when it
// lowers the RSS (mu shrinks) and otherwise raise mu. It stops when an
// accepted step lowers the RSS by less than relativeTol, or no step does.
func (f *fitter) lm(theta []float64) ([]float64, float64, int) {
	p := f.n * f.q
	a := make([]float64, p*p)
	m := make([]float64, p*p)
	g := make([]float64, p)
	step := make([]float64, p)
	next := make([]float64, p)
	diag := make([]float64, p)
	fixed := make([]bool, p)
	rss := f.normal(theta, a, g)
	mu := 1e-3
	iters := 0
	for ; iters < maxIterations; iters++ {
		f.atBound(theta, g, fixed)
		var maxDiag float64
		for i := range p {
			maxDiag = math.Max(maxDiag, a[i*p+i])
		}
		for i := range p {
			// Directions the data do not reach (a rigid motion) get a
			// floor so the system stays definite.
			diag[i] = math.Max(a[i*p+i], 1e-12*maxDiag)
		}
		accepted, done := false, false
		for !accepted && mu < 1e16 {
			copy(m, a)
			for i := range p {
				m[i*p+i] += mu * diag[i]
				step[i] = -g[i]
			}
			for k, fx := range fixed {
				if !fx {
					continue
				}
				for i := range p {
					m[k*p+i], m[i*p+k] = 0, 0
				}
				m[k*p+k], step[k] = 1, 0
			}
			if !cholesky(m, p) {
				mu *= 4
				continue
			}
			cholSolve(m, p, step)
			for i := range p {
				next[i] = theta[i] + step[i]
				if f.isHeight(i) && next[i] < 0 {
					next[i] = 0
				}
			}
			if r := f.rss(next); r < rss {
				accepted = true
				done = rss-r <= relativeTol*rss
				theta, next = next, theta
				rss = f.normal(theta, a, g)
				mu = math.Max(mu/3, 1e-12)
			} else {
				mu *= 2
			}
		}
		if !accepted || done {
			iters++
			break
		}
	}
	return theta, rss, iters
}

// leverages answers g^T (J^T J)^-1 g for the predictions of the fit, from
// the Cholesky factor of J^T J plus a ridge far below its scale (1e-9 of
// its largest diagonal entry): the ridge only makes the rigid motions and
// the parameters no measurement reaches invertible, which a determined
// prediction is orthogonal to, while an undetermined one picks up 1/ridge.
type leverages struct {
	f     *fitter
	l     []float64
	fixed []bool
	cols  map[int][]float64 // columns of the inverse, by parameter
}

func (f *fitter) leverage(theta []float64) (*leverages, bool) {
	p := f.n * f.q
	a := make([]float64, p*p)
	g := make([]float64, p)
	f.normal(theta, a, g)
	// A height held at zero by the bound is not uncertain in the
	// direction the data push it: it is left out, like a constant.
	fixed := make([]bool, p)
	f.atBound(theta, g, fixed)
	var maxDiag float64
	for i := range p {
		maxDiag = math.Max(maxDiag, a[i*p+i])
	}
	for i := range p {
		a[i*p+i] += 1e-9 * maxDiag
	}
	for k, fx := range fixed {
		if fx {
			for i := range p {
				a[k*p+i], a[i*p+k] = 0, 0
			}
			a[k*p+k] = 1
		}
	}
	if !(maxDiag > 0) || !cholesky(a, p) {
		return nil, false
	}
	return &leverages{f: f, l: a, fixed: fixed, cols: map[int][]float64{}}, true
}

func (lv *leverages) col(k int) []float64 {
	if c, ok := lv.cols[k]; ok {
		return c
	}
	p := lv.f.n * lv.f.q
	c := make([]float64, p)
	c[k] = 1
	cholSolve(lv.l, p, c)
	lv.cols[k] = c
	return c
}

// pair returns the prediction for clusters a and b and its leverage.
func (lv *leverages) pair(theta []float64, a, b int) (pred, leverage float64) {
	q := lv.f.q
	grad := make([]float64, 2*q)
	pred = lv.f.predict(theta, a, b, grad)
	if !(pred > 0) {
		return pred, math.Inf(1)
	}
	idx := make([]int, 2*q)
	for k := range q {
		idx[k], idx[q+k] = a*q+k, b*q+k
	}
	for u := range grad {
		if lv.fixed[idx[u]] {
			grad[u] = 0
		}
	}
	for u, gu := range grad {
		if gu == 0 {
			continue
		}
		c := lv.col(idx[u])
		for v, gv := range grad {
			leverage += gu / pred * c[idx[v]] * gv / pred
		}
	}
	return pred, leverage
}
