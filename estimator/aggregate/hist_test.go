package aggregate

import (
	"math"
	"testing"
)

func TestHistMean(t *testing.T) {
	var h hist
	if h.mean() != 0 {
		t.Fatal("empty histogram has a mean")
	}
	values := []float64{0.0200, 0.0201, 0.0199, 0.0203, 0.0210, 0.0500}
	var sum float64
	for _, v := range values {
		h.add(bucketOf(v), 1)
		sum += v
	}
	want := sum / float64(len(values))
	if got := h.mean(); math.Abs(got-want)/want > 0.022 {
		t.Errorf("mean %.5f s, exact %.5f s: more than 2.2%% off", got, want)
	}
}
