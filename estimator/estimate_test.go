package estimator

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/world/controlplane"
)

// estFleet is the topology of TestPublishesEstimates: eight clusters on a
// plane (µs), with what was measured between them.
var estFleet = struct {
	x, y, h [8]float64
}{
	x: [8]float64{0, 30_000, 60_000, 10_000, 45_000, 70_000, 20_000, 35_000},
	y: [8]float64{0, 5_000, 0, 40_000, 35_000, 45_000, 70_000, 20_000},
	h: [8]float64{300, 200, 400, 250, 350, 300, 200, 250},
}

func estTruth(a, b int) float64 {
	f := &estFleet
	return math.Hypot(f.x[a]-f.x[b], f.y[a]-f.y[b]) + f.h[a] + f.h[b]
}

func estUID(i int) string  { return fmt.Sprintf("0b9d4c52-0000-4000-8000-0000000000e%d", i) }
func estName(i int) string { return fmt.Sprintf("c%d", i) }

// estSnapshot measures, from the lower-numbered cluster only (so c5 never
// dials anyone, and each pair is measured in one direction): every pair of
// c0..c5 but c0-c1 and c2-c4; c0..c3 -> c7 (c7 only ever dialed); c6 ->
// c0 and c1 (two peers: under-constrained). c0 -> c2 is measured both
// ways.
func estSnapshot(now time.Time) (*aggregate.Snapshot, map[[2]int]bool) {
	measured := map[[2]int]bool{}
	for a := 0; a < 6; a++ {
		for b := a + 1; b < 6; b++ {
			if (a == 0 && b == 1) || (a == 2 && b == 4) {
				continue
			}
			measured[[2]int{a, b}] = true
		}
	}
	for a := range 4 {
		measured[[2]int{a, 7}] = true
	}
	measured[[2]int{6, 0}], measured[[2]int{6, 1}] = true, true
	measured[[2]int{2, 0}] = true
	s := &aggregate.Snapshot{Now: now, WindowSeconds: 300, Latency: map[string]map[string]aggregate.PairStat{}}
	for p := range measured {
		rtt := estTruth(p[0], p[1]) / 1e6
		src := estUID(p[0])
		if s.Latency[src] == nil {
			s.Latency[src] = map[string]aggregate.PairStat{}
		}
		s.Latency[src][estUID(p[1])] = aggregate.PairStat{Min: 0.9 * rtt, P50: rtt, P90: 1.2 * rtt, P99: 1.5 * rtt, Mean: rtt,
			Samples: 100, LastSeen: now.Add(-10 * time.Second)}
	}
	return s, measured
}

// TestPublishesEstimates publishes a matrix with holes to a real API
// server: the pairs measured in neither direction are published as
// estimated (sampleCount 0, an expected error, within three errors of the
// truth) in both rows, the schema accepts them, measured entries are
// exactly the measurements, a pair measured one way gets no estimate the
// other way, an under-constrained cluster gets none, a cluster that only
// others dialed gets a row of estimates, a second round writes nothing,
// and a new leader resumes the measurements only.
func TestPublishesEstimates(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{filepath.Join("..", "api", "crds")}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dc := cp.Host.Dynamic
	for i := range 8 {
		c := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": estName(i)},
			"spec":     map[string]any{"id": estUID(i), "syncMode": "Push"},
		}}
		if _, err := dc.Resource(ClusterGVR).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := newResolver(dc, 0)
	if err != nil {
		t.Fatal(err)
	}
	res.start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), res.synced()...) {
		t.Fatal("informers did not sync")
	}
	poll(t, 30*time.Second, "clusters in the cache", func() (bool, error) { return len(res.clusters.GetStore().List()) == 8, nil })

	now := time.Now().Truncate(time.Second)
	snap, measured := estSnapshot(now)
	p := newPublisher(dc, res, PublishPolicy{ValidFor: 5 * time.Minute}, "flowplace-test", noopMetrics())
	n, err := p.publish(ctx, snap)
	if err != nil {
		t.Fatalf("publish: %v (the schema refused an entry?)", err)
	}
	if n != 8 {
		t.Errorf("wrote %d objects, want 8 (a row per cluster, c7's of estimates only)", n)
	}

	wantEstimated := map[[2]int]bool{}
	for _, pr := range [][2]int{{0, 1}, {2, 4}, {4, 7}, {5, 7}} {
		wantEstimated[pr], wantEstimated[[2]int{pr[1], pr[0]}] = true, true
	}
	gotEstimated := map[[2]int]bool{}
	for src := range 8 {
		u, err := dc.Resource(v1.ClusterLatencyResource).Get(ctx, estName(src), metav1.GetOptions{})
		if err != nil {
			t.Fatalf("row %s: %v", estName(src), err)
		}
		var cl v1.ClusterLatency
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cl); err != nil {
			t.Fatal(err)
		}
		for _, pl := range cl.Status.Peers {
			var dst int
			if _, err := fmt.Sscanf(pl.Cluster, "c%d", &dst); err != nil {
				t.Fatal(err)
			}
			pr := [2]int{src, dst}
			truth := estTruth(src, dst)
			if !pl.Estimated {
				if !measured[pr] {
					t.Errorf("%s -> %s: measured entry for a pair not measured that way: %+v", estName(src), pl.Cluster, pl)
				}
				if pl.P50Microseconds != micros(truth/1e6) || pl.P99Microseconds != micros(1.5*truth/1e6) || pl.SampleCount != 100 || pl.ExpectedErrorMicroseconds != 0 {
					t.Errorf("%s -> %s: measured entry changed: %+v", estName(src), pl.Cluster, pl)
				}
				continue
			}
			gotEstimated[pr] = true
			e := pl.ExpectedErrorMicroseconds
			if pl.SampleCount != 0 || e < 1 || pl.P90Microseconds != pl.P50Microseconds || pl.P99Microseconds != pl.P50Microseconds ||
				pl.MinMicroseconds != max(pl.P50Microseconds-e, 0) || !pl.LastSampleTime.Time.Equal(now.Add(-10*time.Second)) {
				t.Errorf("%s -> %s: estimated entry malformed: %+v", estName(src), pl.Cluster, pl)
			}
			if d := math.Abs(float64(pl.P50Microseconds) - truth); d > 3*float64(e) {
				t.Errorf("%s -> %s: estimate %d ± %d µs, truth %.0f", estName(src), pl.Cluster, pl.P50Microseconds, e, truth)
			}
			t.Logf("%s -> %s: estimate %d ± %d µs, truth %.0f", estName(src), pl.Cluster, pl.P50Microseconds, e, truth)
		}
		if src == 7 && cl.Status.SampleCount != 0 {
			t.Errorf("c7's row counts %d samples, want 0 (estimates only)", cl.Status.SampleCount)
		}
	}
	if !mapsEqual(gotEstimated, wantEstimated) {
		t.Errorf("estimated entries %v, want %v", keys(gotEstimated), keys(wantEstimated))
	}
	if got := p.Stats().EstimatedPairs; got != int64(len(wantEstimated)) {
		t.Errorf("EstimatedPairs %d, want %d", got, len(wantEstimated))
	}

	// The same snapshot again: the estimates are the same, nothing to write.
	if n, err := p.publish(ctx, snap); err != nil || n != 0 {
		t.Errorf("second round wrote %d objects (%v), want none", n, err)
	}

	// A new leader resumes the measured entries only: restored as
	// histograms, estimates would turn into measurements.
	poll(t, 30*time.Second, "published rows in the cache", func() (bool, error) {
		return len(res.latencies.GetStore().List()) == 8, nil
	})
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{Now: func() time.Time { return now }})
	if l, _ := p.resume(agg, now); l != 8 {
		t.Errorf("resumed %d rows, want 8", l)
	}
	restored := 0
	for src, peers := range agg.Snapshot().Latency {
		for dst := range peers {
			var a, b int
			fmt.Sscanf(src[len(src)-1:], "%d", &a)
			fmt.Sscanf(dst[len(dst)-1:], "%d", &b)
			if !measured[[2]int{a, b}] {
				t.Errorf("resume restored %s -> %s, which was estimated", estName(a), estName(b))
			}
			restored++
		}
	}
	if restored != len(measured) {
		t.Errorf("resume restored %d pairs, want the %d measured", restored, len(measured))
	}

	// Estimates can be turned off.
	off := newPublisher(dc, res, PublishPolicy{ValidFor: 5 * time.Minute, NoEstimates: true}, "flowplace-test", noopMetrics())
	for _, d := range off.build(snap) {
		cl, ok := d.obj.(*v1.ClusterLatency)
		if !ok {
			continue
		}
		if cl.Name == "c7" {
			t.Errorf("with NoEstimates c7 has a row: %+v", cl.Status.Peers)
		}
		for _, pl := range cl.Status.Peers {
			if pl.Estimated {
				t.Errorf("with NoEstimates %s -> %s is estimated", cl.Name, pl.Cluster)
			}
		}
	}
}

func mapsEqual(a, b map[[2]int]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

func keys(m map[[2]int]bool) [][2]int {
	var out [][2]int
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b [2]int) int {
		if a[0] != b[0] {
			return a[0] - b[0]
		}
		return a[1] - b[1]
	})
	return out
}

// TestFillerRefitsOnlyWhenMediansMove: the fit is reused while every
// median stays within refitRelative of the last fit's, and redone when one
// moves further or a pair appears; both directions of each estimate come
// out, and self pairs and empty medians never reach the fit.
func TestFillerRefitsOnlyWhenMediansMove(t *testing.T) {
	now := time.Now()
	snap, _ := estSnapshot(now)
	lat := snap.Latency
	lat[estUID(3)][estUID(3)] = aggregate.PairStat{P50: 0.0001, Samples: 10, LastSeen: now} // intra-cluster
	lat[estUID(6)][estUID(5)] = aggregate.PairStat{P50: 0, Samples: 1, LastSeen: now}       // no median
	var f rttFiller
	first := f.fill(lat)
	if len(first) != 8 {
		t.Fatalf("%d estimated entries, want 8: %+v", len(first), first)
	}
	for _, m := range f.input {
		if m.A == m.B || !(m.RTT > 0) {
			t.Errorf("fit input %+v", m)
		}
	}
	fitted := &f.input[0]
	scale := func(k float64) {
		for _, peers := range lat {
			for dst, st := range peers {
				st.P50 *= k
				peers[dst] = st
			}
		}
	}
	scale(1.005)
	if again := f.fill(lat); &f.input[0] != fitted || !slices.Equal(again, first) {
		t.Error("refitted (or changed) for medians that moved 0.5%")
	}
	scale(1.01)
	if again := f.fill(lat); &f.input[0] == fitted || again[0].rtt <= first[0].rtt {
		t.Errorf("not refitted after medians moved 1.5%%: %+v", again[0])
	}
}
