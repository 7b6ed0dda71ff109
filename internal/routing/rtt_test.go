package routing

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/internal/loghist"
)

func row(name string, validUntil time.Time, peers ...flowplacev1alpha1.PeerLatency) *flowplacev1alpha1.ClusterLatency {
	cl := &flowplacev1alpha1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: name}}
	cl.Status.ValidUntil = metav1.NewTime(validUntil)
	cl.Status.Peers = peers
	return cl
}

func TestMatrixRTTPrecedence(t *testing.T) {
	now := time.Unix(5000, 0)
	fresh, stale := now.Add(time.Minute), now.Add(-time.Second)
	measured := func(c string, us, n int64) flowplacev1alpha1.PeerLatency {
		return flowplacev1alpha1.PeerLatency{Cluster: c, P50Microseconds: us, SampleCount: n, Estimated: n == 0}
	}
	cases := []struct {
		name string
		rows []*flowplacev1alpha1.ClusterLatency
		want RTT
	}{
		{"measured from here", []*flowplacev1alpha1.ClusterLatency{row("me", fresh, measured("b", 20000, 50))}, RTT{20 * time.Millisecond, Matrix}},
		{"measured towards here when not from here",
			[]*flowplacev1alpha1.ClusterLatency{row("me", fresh), row("b", fresh, measured("me", 21000, 10))}, RTT{21 * time.Millisecond, Matrix}},
		{"measured beats an estimate in the other direction",
			[]*flowplacev1alpha1.ClusterLatency{row("me", fresh, measured("b", 30000, 0)), row("b", fresh, measured("me", 22000, 5))}, RTT{22 * time.Millisecond, Matrix}},
		{"estimate only where nothing is measured",
			[]*flowplacev1alpha1.ClusterLatency{row("me", fresh, measured("b", 30000, 0))}, RTT{30 * time.Millisecond, Estimated}},
		{"stale rows count as missing", []*flowplacev1alpha1.ClusterLatency{row("me", stale, measured("b", 20000, 50))}, RTT{}},
		{"nothing", nil, RTT{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rows := map[string]*flowplacev1alpha1.ClusterLatency{}
			for _, r := range c.rows {
				rows[r.Name] = r
			}
			if got := matrixRTT(rows, "me", "b", now); got != c.want {
				t.Errorf("matrixRTT = %+v, want %+v", got, c.want)
			}
		})
	}
}

func TestPeerRTTWindow(t *testing.T) {
	p := NewPeerRTT()
	now := time.Unix(100000, 0)
	p.nowFunc = func() time.Time { return now }
	var h loghist.Histogram
	for range DefaultMinSamples - 1 {
		h.Add(20000)
	}
	p.Observe("b", &h)
	if _, ok := p.RTT("b"); ok {
		t.Fatalf("an RTT from %d samples, want none below %d", DefaultMinSamples-1, DefaultMinSamples)
	}
	var one loghist.Histogram
	one.Add(20000)
	p.Observe("b", &one)
	d, ok := p.RTT("b")
	// The median of identical samples is within the histogram's resolution.
	if res := loghist.Resolution(20000); !ok || absDiff(d, 20*time.Millisecond) > time.Duration(res*float64(time.Microsecond)) {
		t.Fatalf("RTT = %s, %v; want 20ms within %.0f us", d, ok, res)
	}
	// A minute later the samples have left the window.
	now = now.Add(time.Minute)
	if _, ok := p.RTT("b"); ok {
		t.Error("samples older than the window still count")
	}
}

func absDiff(a, b time.Duration) time.Duration {
	if a > b {
		return a - b
	}
	return b - a
}
