package coordinates

import "math"

// Dense linear algebra for the fit: small symmetric matrices (at most a few
// hundred rows), row-major in a flat slice. Written out rather than imported
// because the root module keeps its dependencies few, and these are the
// textbook algorithms (Golub and Van Loan, Matrix Computations, 4th ed.:
// Cholesky 4.2, cyclic Jacobi 8.5).

// cholesky factors the symmetric positive definite n x n matrix a in place
// into its lower triangle L (a = L L^T); the strict upper triangle is left
// as it was. It reports false when a is not positive definite.
func cholesky(a []float64, n int) bool {
	for j := 0; j < n; j++ {
		rj := a[j*n : j*n+j+1]
		d := rj[j] - dot(rj[:j], rj[:j])
		if !(d > 0) {
			return false
		}
		d = math.Sqrt(d)
		rj[j] = d
		for i := j + 1; i < n; i++ {
			ri := a[i*n : i*n+j+1]
			ri[j] = (ri[j] - dot(ri[:j], rj[:j])) / d
		}
	}
	return true
}

// dot is the inner product of a and b[:len(a)], with four accumulators
// (the factorisation's inner loop; the order of the sums is fixed, so
// results stay bit-identical from run to run).
func dot(a, b []float64) float64 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// cholSolve solves L L^T x = b in place (b becomes x) with L from cholesky.
func cholSolve(l []float64, n int, b []float64) {
	for i := 0; i < n; i++ {
		b[i] = (b[i] - dot(l[i*n:i*n+i], b)) / l[i*n+i]
	}
	for i := n - 1; i >= 0; i-- {
		s := b[i]
		for k := i + 1; k < n; k++ {
			s -= l[k*n+i] * b[k]
		}
		b[i] = s / l[i*n+i]
	}
}

// symEigen returns the eigenvalues of the symmetric n x n matrix a and the
// eigenvectors as the columns of v, by cyclic Jacobi rotations (a is
// destroyed). Jacobi is slower than QR but simple, accurate for small
// eigenvalues and deterministic; it is used on the n x n MDS matrix only.
func symEigen(a []float64, n int) (vals []float64, v []float64) {
	v = make([]float64, n*n)
	for i := 0; i < n; i++ {
		v[i*n+i] = 1
	}
	for sweep := 0; sweep < 100; sweep++ {
		var off, diag float64
		for i := 0; i < n; i++ {
			diag += a[i*n+i] * a[i*n+i]
			for j := i + 1; j < n; j++ {
				off += a[i*n+j] * a[i*n+j]
			}
		}
		if off <= 1e-30*diag || off == 0 {
			break
		}
		for p := 0; p < n; p++ {
			for q := p + 1; q < n; q++ {
				apq := a[p*n+q]
				if apq == 0 {
					continue
				}
				theta := (a[q*n+q] - a[p*n+p]) / (2 * apq)
				t := 1 / (math.Abs(theta) + math.Sqrt(theta*theta+1))
				if theta < 0 {
					t = -t
				}
				c := 1 / math.Sqrt(t*t+1)
				s := t * c
				for k := 0; k < n; k++ {
					akp, akq := a[k*n+p], a[k*n+q]
					a[k*n+p], a[k*n+q] = c*akp-s*akq, s*akp+c*akq
				}
				for k := 0; k < n; k++ {
					apk, aqk := a[p*n+k], a[q*n+k]
					a[p*n+k], a[q*n+k] = c*apk-s*aqk, s*apk+c*aqk
				}
				for k := 0; k < n; k++ {
					vkp, vkq := v[k*n+p], v[k*n+q]
					v[k*n+p], v[k*n+q] = c*vkp-s*vkq, s*vkp+c*vkq
				}
			}
		}
	}
	vals = make([]float64, n)
	for i := range vals {
		vals[i] = a[i*n+i]
	}
	return vals, v
}
