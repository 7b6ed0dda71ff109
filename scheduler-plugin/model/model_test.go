package model_test

import (
	"slices"
	"testing"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/model/modeltest"
)

var (
	t0    = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	fresh = t0.Add(time.Minute)
)

func TestBindingName(t *testing.T) {
	for _, tc := range []struct{ kind, name, want string }{
		{"Deployment", "Frontend", "frontend-deployment"},
		{"ClusterRole", "system:controller", "system.controller-clusterrole"},
	} {
		if got := model.BindingName(tc.kind, tc.name); got != tc.want {
			t.Errorf("BindingName(%s, %s) = %s, want %s", tc.kind, tc.name, got, tc.want)
		}
	}
}

func TestBuild(t *testing.T) {
	web := model.KeyFor("ns", "Deployment", "web")
	db := model.KeyFor("ns", "StatefulSet", "db")
	cm := model.KeyFor("ns", "ConfigMap", "settings")
	s := model.Build(model.Inputs{
		Clusters: []model.ClusterInfo{{Name: "b", Region: "r2"}, {Name: "a", Region: "r1"}},
		Latency: []model.LatencyRow{{Source: "a", ValidUntil: fresh, Peers: []model.PairLatency{
			{Cluster: "a", MinUs: 100, P50Us: 200, P90Us: 300, P99Us: 400, Samples: 20},
			{Cluster: "b", MinUs: 9000, P50Us: 10000, P90Us: 11000, P99Us: 15000, Samples: 20},
			{Cluster: "x", MinUs: 1, P50Us: 2, P90Us: 3, P99Us: 4, Samples: 5},      // too few samples
			{Cluster: "y", MinUs: 1, P50Us: 20, P90Us: 10, P99Us: 40, Samples: 500}, // quantiles out of order
		}}},
		Bindings: []model.BindingInput{
			{Workload: db, Clusters: []model.ClusterReplicas{{Name: "a", Replicas: 1}, {Name: "b", Replicas: 3}, {Name: "c", Replicas: 0}},
				Annotations: map[string]string{model.BudgetAnnotation: "40ms"}},
			{Workload: cm, Clusters: []model.ClusterReplicas{{Name: "a"}, {Name: "b"}}},
			{Workload: web, Annotations: map[string]string{model.BudgetAnnotation: "90ms"}},
		},
		TemplateAnnotations: map[model.Key]map[string]string{
			web: {model.BudgetAnnotation: "15ms"},
			db:  {"other": "x"},
		},
		Traffic: []model.TrafficInput{{
			Workload: web, ValidUntil: fresh,
			Peers: []model.PeerInput{
				modeltest.Peer(db, 1000, "a", "a"),
				{Service: "ns/cache", BytesPerSecond: 300, Pairs: []model.PairRate{{From: "a", To: "a", BytesPerSecond: 100}, {From: "a", To: "c", BytesPerSecond: 200}}},
				{Service: "ns/idle", BytesPerSecond: 0},
				{Service: "ns/elsewhere", BytesPerSecond: 50},
			},
			Clients: []model.ClientInput{{Cluster: "b", BytesPerSecond: 10}, {Cluster: "b", BytesPerSecond: 5}, {Cluster: "z", BytesPerSecond: 1}},
		}},
	}, model.BuildOptions{MinSamples: 10})

	var names []string
	for _, c := range s.Clusters() {
		names = append(names, c.Name)
	}
	// Karmada clusters sorted first, then others in order of appearance.
	if want := []string{"a", "b", "x", "y", "c", "z"}; !slices.Equal(names, want) {
		t.Errorf("clusters %v, want %v", names, want)
	}
	if s.Cluster(0).Region != "r1" {
		t.Errorf("cluster info lost: %+v", s.Cluster(0))
	}
	idx := func(n string) int32 { i, _ := s.ClusterIndex(n); return i }
	now := t0.UnixNano()
	if v, ok := s.RTT(model.QuantileP90, idx("a"), idx("b"), now); !ok || v != 11000 {
		t.Errorf("RTT a->b p90 = %d %v", v, ok)
	}
	if v, ok := s.RTT(model.QuantileP50, idx("b"), idx("a"), now); !ok || v != 10000 {
		t.Errorf("RTT b->a falls back to a's row: %d %v", v, ok)
	}
	if v, ok := s.RTT(model.QuantileMin, idx("a"), idx("a"), now); !ok || v != 100 {
		t.Errorf("intra-cluster RTT measured: %d %v", v, ok)
	}
	if v, ok := s.RTT(model.QuantileP50, idx("b"), idx("b"), now); !ok || v != 0 {
		t.Errorf("intra-cluster RTT unmeasured is 0: %d %v", v, ok)
	}
	for _, c := range []string{"x", "y"} {
		if _, ok := s.RTT(model.QuantileP50, idx("a"), idx(c), now); ok {
			t.Errorf("a->%s should be unmeasured", c)
		}
	}
	if _, ok := s.RTT(model.QuantileP50, idx("a"), idx("b"), fresh.UnixNano()); ok {
		t.Errorf("a->b at validUntil should be stale")
	}

	wdb := s.Workload(db)
	if want := []model.Share{{Cluster: idx("a"), Fraction: 0.25}, {Cluster: idx("b"), Fraction: 0.75}}; !slices.Equal(wdb.Placement, want) {
		t.Errorf("db placement %v, want %v", wdb.Placement, want)
	}
	if wdb.Budget != 40*time.Millisecond {
		t.Errorf("db budget from binding: %v", wdb.Budget)
	}
	if p := s.Workload(cm).Placement; len(p) != 2 || p[0].Fraction != 0.5 {
		t.Errorf("replica-less binding placement %v", p)
	}
	w := s.Workload(web)
	if w.Budget != 15*time.Millisecond {
		t.Errorf("template annotation wins: %v", w.Budget)
	}
	tr := w.Traffic
	if len(tr.Peers) != 3 || tr.PeerBytesPerSecond != 1350 {
		t.Fatalf("peers %+v total %v", tr.Peers, tr.PeerBytesPerSecond)
	}
	if e := tr.Peers[0]; e.Source != model.PlacementBinding || e.Name != "ns/db-statefulset" || len(e.Dist) != 2 {
		t.Errorf("peer with binding: %+v", e)
	}
	if e := tr.Peers[1]; e.Source != model.PlacementObserved || !slices.Equal(e.Dist, []model.Share{{Cluster: idx("a"), Fraction: 1.0 / 3}, {Cluster: idx("c"), Fraction: 2.0 / 3}}) {
		t.Errorf("service peer: %+v", e)
	}
	if e := tr.Peers[2]; e.Source != model.PlacementUnknown || len(e.Dist) != 0 {
		t.Errorf("peer without pairs: %+v", e)
	}
	if want := []model.ClientEdge{{Cluster: idx("b"), BytesPerSecond: 15}, {Cluster: idx("z"), BytesPerSecond: 1}}; !slices.Equal(tr.Clients, want) || tr.ClientBytesPerSecond != 16 {
		t.Errorf("clients %v total %v", tr.Clients, tr.ClientBytesPerSecond)
	}
	if !tr.Fresh(now) || tr.Fresh(fresh.UnixNano()) {
		t.Errorf("freshness wrong")
	}
}

func TestBadBudgetAnnotation(t *testing.T) {
	k := model.KeyFor("ns", "Deployment", "web")
	for _, v := range []string{"fast", "-5ms", "0s"} {
		s := model.Build(model.Inputs{TemplateAnnotations: map[model.Key]map[string]string{k: {model.BudgetAnnotation: v}}}, model.BuildOptions{})
		if w := s.Workload(k); w.Budget != 0 || w.BudgetError == "" {
			t.Errorf("%q: %+v", v, w)
		}
	}
}

func TestNilSnapshot(t *testing.T) {
	var s *model.Snapshot
	if s.Workload(model.Key{}) != nil || s.NumClusters() != 0 || s.Clusters() != nil || s.NumWorkloads() != 0 {
		t.Error("nil snapshot should be empty")
	}
	if _, ok := s.ClusterIndex("a"); ok {
		t.Error("nil snapshot has no clusters")
	}
	for _, q := range []string{"min", "p50", "p90", "p99"} {
		if v, ok := model.ParseQuantile(q); !ok || v.String() != q {
			t.Errorf("quantile %s", q)
		}
	}
	if _, ok := model.ParseQuantile("p95"); ok {
		t.Error("p95 accepted")
	}
}

// RTTFrom(a).To(b) must agree with RTT(a, b) for every pair, including
// stale rows, unmeasured pairs and the diagonal.
func TestRTTViewMatchesRTT(t *testing.T) {
	rows := modeltest.AWSLatency(fresh)
	rows[1].ValidUntil = t0.Add(-time.Second) // us-west-2's row is stale
	rows[2].Peers = rows[2].Peers[:2]         // eu-west-1 measured only two peers
	rows = rows[:4]                           // ap-northeast-1 has no row
	s := model.Build(model.Inputs{Clusters: modeltest.AWSClusters(), Latency: rows}, model.BuildOptions{MinSamples: 10})
	now := t0.UnixNano()
	for q := range []model.Quantile{model.QuantileMin, model.QuantileP50, model.QuantileP90, model.QuantileP99} {
		for a := int32(0); a < int32(s.NumClusters()); a++ {
			v := s.RTTFrom(model.Quantile(q), a, now)
			for b := int32(0); b < int32(s.NumClusters()); b++ {
				got, gotOK := v.To(b)
				want, wantOK := s.RTT(model.Quantile(q), a, b, now)
				if got != want || gotOK != wantOK {
					t.Errorf("q%d %s->%s: view %d %v, RTT %d %v", q, s.ClusterName(a), s.ClusterName(b), got, gotOK, want, wantOK)
				}
			}
		}
	}
	// ap-northeast-1 -> us-west-2: neither row is usable.
	apne1, _ := s.ClusterIndex(modeltest.ClusterName("ap-northeast-1"))
	usw2, _ := s.ClusterIndex(modeltest.ClusterName("us-west-2"))
	if _, ok := s.RTT(model.QuantileP50, apne1, usw2, now); ok {
		t.Error("pair with no fresh row reported as measured")
	}
}

// TestEstimatesOnlyWhereNothingIsMeasured: the estimator's estimated
// entries are used where no fresh row measured the pair in either
// direction, never over a measurement; RTTBound adds their error; the
// view agrees with the snapshot; malformed estimates are dropped.
func TestEstimatesOnlyWhereNothingIsMeasured(t *testing.T) {
	est := func(dst string, us, errUs int64) model.PairLatency {
		return model.PairLatency{Cluster: dst, MinUs: max(us-errUs, 0), P50Us: us, P90Us: us, P99Us: us, Estimated: true, ErrorUs: errUs}
	}
	meas := func(dst string, us int64) model.PairLatency {
		return model.PairLatency{Cluster: dst, MinUs: us * 9 / 10, P50Us: us, P90Us: us * 11 / 10, P99Us: us * 13 / 10, Samples: 100}
	}
	rows := []model.LatencyRow{
		{Source: "a", ValidUntil: fresh, Peers: []model.PairLatency{
			meas("b", 10_000),
			est("c", 30_000, 3_000), // nothing measured a-c: the estimate
			est("d", 5_000, 500),    // d measured a (below): the measurement
			est("e", 7_000, 700),    // e's row is stale, a's fresh: the estimate
			est("a", 1, 1),          // an estimate to itself: dropped
			{Cluster: "f", MinUs: 1, P50Us: 2, P90Us: 2, P99Us: 2, Samples: 3, Estimated: true, ErrorUs: 1}, // samples: dropped
			{Cluster: "g", MinUs: 9, P50Us: 2, P90Us: 2, P99Us: 2, Estimated: true, ErrorUs: 1},             // min > p50: dropped
			{Cluster: "h", MinUs: 1, P50Us: 2, P90Us: 2, P99Us: 2, Estimated: true, ErrorUs: -1},            // negative error: dropped
		}},
		{Source: "b", ValidUntil: fresh, Peers: []model.PairLatency{
			est("a", 99_000, 1_000), // a measured b: the measurement, both ways
		}},
		{Source: "c", ValidUntil: fresh},
		{Source: "d", ValidUntil: fresh, Peers: []model.PairLatency{meas("a", 40_000)}},
		{Source: "e", ValidUntil: t0.Add(-time.Second), Peers: []model.PairLatency{meas("a", 1_000), est("b", 8_000, 800)}},
	}
	s := model.Build(model.Inputs{Latency: rows}, model.BuildOptions{MinSamples: 10})
	if !s.HasEstimates() {
		t.Fatal("no estimates loaded")
	}
	idx := func(n string) int32 { i, _ := s.ClusterIndex(n); return i }
	now := t0.UnixNano()
	for _, tc := range []struct {
		a, b      string
		q         model.Quantile
		want      int32 // RTT
		bound     int32 // RTTBound
		estimated bool
		ok        bool
	}{
		{a: "a", b: "b", q: model.QuantileP50, want: 10_000, bound: 10_000, ok: true},
		{a: "b", b: "a", q: model.QuantileP50, want: 10_000, bound: 10_000, ok: true},
		{a: "a", b: "c", q: model.QuantileP50, want: 30_000, bound: 33_000, estimated: true, ok: true},
		{a: "c", b: "a", q: model.QuantileP90, want: 30_000, bound: 33_000, estimated: true, ok: true},
		{a: "a", b: "c", q: model.QuantileMin, want: 27_000, bound: 30_000, estimated: true, ok: true},
		{a: "a", b: "d", q: model.QuantileP50, want: 40_000, bound: 40_000, ok: true},
		{a: "d", b: "a", q: model.QuantileP50, want: 40_000, bound: 40_000, ok: true},
		{a: "a", b: "e", q: model.QuantileP50, want: 7_000, bound: 7_700, estimated: true, ok: true},
		{a: "e", b: "b", q: model.QuantileP50}, // only in e's stale row
		{a: "a", b: "a", q: model.QuantileP50, want: 0, bound: 0, ok: true},
		{a: "a", b: "f", q: model.QuantileP50},
		{a: "a", b: "g", q: model.QuantileP50},
		{a: "a", b: "h", q: model.QuantileP50},
	} {
		a, b := idx(tc.a), idx(tc.b)
		got, ok := s.RTT(tc.q, a, b, now)
		bound, estimated, bok := s.RTTBound(tc.q, a, b, now)
		v := s.RTTFrom(tc.q, a, now)
		vgot, vok := v.To(b)
		vbound, vest, vbok := v.Bound(b)
		if got != tc.want || ok != tc.ok || bound != tc.bound || estimated != tc.estimated || bok != tc.ok {
			t.Errorf("%s->%s %s: RTT %d %v, bound %d estimated %v %v; want %d, %d, %v, %v", tc.a, tc.b, tc.q, got, ok, bound, estimated, bok, tc.want, tc.bound, tc.estimated, tc.ok)
		}
		if vgot != got || vok != ok || vbound != bound || vest != estimated || vbok != bok {
			t.Errorf("%s->%s %s: view %d %v, bound %d %v %v disagrees with the snapshot", tc.a, tc.b, tc.q, vgot, vok, vbound, vest, vbok)
		}
		e, eok := s.EstimatedError(a, b, now)
		if eok != tc.estimated || (eok && e != bound-got) {
			t.Errorf("%s->%s: EstimatedError %d %v", tc.a, tc.b, e, eok)
		}
	}
	// Without estimates nothing is allocated for them.
	plain := model.Build(model.Inputs{Latency: modeltest.AWSLatency(fresh)}, model.BuildOptions{})
	if plain.HasEstimates() {
		t.Error("estimates without estimated entries")
	}
}

func TestBuildCapacityPlan(t *testing.T) {
	api := model.KeyFor("ns", "Deployment", "api")
	db := model.KeyFor("ns", "StatefulSet", "db")
	batch := model.KeyFor("ns", "Deployment", "batch")
	old := model.KeyFor("ns", "Deployment", "old")
	cache := model.KeyFor("ns", "Deployment", "cache")
	in := model.Inputs{
		Clusters: []model.ClusterInfo{{Name: "a"}, {Name: "b"}},
		Latency:  modeltest.LatencyRows([]string{"a", "b"}, [][]float64{{0, 10}, {10, 0}}, fresh),
		Bindings: []model.BindingInput{
			modeltest.Binding(api, map[string]int32{"a": 2}),
			{Workload: db, DemandMilliCPU: 1000},
			{Workload: batch, DemandMilliCPU: 500},
			{Workload: cache, DemandMilliCPU: 500, Clusters: []model.ClusterReplicas{{Name: "b", Replicas: 1}}},
		},
		Traffic: []model.TrafficInput{
			{Workload: api, ValidUntil: fresh, Peers: []model.PeerInput{{Workload: &db, BytesPerSecond: 1e6}}},
			// db's clients in a are api's calls (already an edge); the
			// 1.5 MB/s from b are external and outweigh api's 1 MB/s.
			{Workload: db, ValidUntil: fresh, Clients: []model.ClientInput{{Cluster: "a", BytesPerSecond: 1e6}, {Cluster: "b", BytesPerSecond: 1.5e6}}},
			{Workload: batch, ValidUntil: fresh, Clients: []model.ClientInput{{Cluster: "a", BytesPerSecond: 1e3}}},
			{Workload: old, ValidUntil: t0.Add(-time.Second), Clients: []model.ClientInput{{Cluster: "b", BytesPerSecond: 1e9}}},
		},
		AvailableMilliCPU: map[string]float64{"a": 8000, "b": 1000},
	}
	build := func(plan bool) *model.Snapshot {
		return model.Build(in, model.BuildOptions{MinSamples: 10, Plan: plan, Now: func() time.Time { return t0 }})
	}
	s := build(true)
	a, _ := s.ClusterIndex("a")
	b, _ := s.ClusterIndex("b")
	if !s.HasPlan() {
		t.Fatal("no plan made")
	}
	for k, want := range map[model.Key]int32{db: b, batch: a, api: -1, old: -1} {
		if got := s.Workload(k).Planned; got != want {
			t.Errorf("%s planned in %d, want %d", k, got, want)
		}
	}
	e := s.Workload(api).Traffic.Peers[0]
	if e.Source != model.PlacementPlanned || !slices.Equal(e.Dist, []model.Share{{Cluster: b, Fraction: 1}}) || e.Workload != db {
		t.Errorf("api -> db edge: %+v", e)
	}
	if got := s.Slack(b); got != 0 {
		t.Errorf("slack of b = %v, want 0", got)
	}
	// Only api (a) -> db (b) crosses: 1 MB/s x 10 ms.
	if got := s.PlanCost(); got != 1e7 {
		t.Errorf("plan cost %v, want 1e7", got)
	}
	// db's regret for a: 1.5 MB/s x 10 ms - 1 MB/s x 10 ms = 5e6 for 1000
	// milli-CPU; batch's 500 in b would push all of it out (workloads
	// move whole).
	if got := s.DisplacementCost(s.Workload(batch), b); got != 5e6 {
		t.Errorf("DisplacementCost(batch, b) = %v, want 5e6", got)
	}
	if got := s.DisplacementCost(s.Workload(batch), a); got != 0 {
		t.Errorf("DisplacementCost(batch, a) = %v, want 0 (room left)", got)
	}
	if got := s.DisplacementCost(s.Workload(cache), b); got != 0 {
		t.Errorf("DisplacementCost(cache, where it runs) = %v, want 0 (its request is already allocated)", got)
	}
	if got := s.DisplacementCost(s.Workload(db), b); got != 0 {
		t.Errorf("DisplacementCost(db, its planned cluster) = %v", got)
	}

	// Observed placements: a peer whose binding waits to be scheduled is
	// planned anew; one Karmada does not place stays where it was seen.
	legacy := model.KeyFor("ns", "Deployment", "legacy")
	in.Traffic[0].Peers = []model.PeerInput{modeltest.Peer(db, 1e6, "a", "a"), modeltest.Peer(legacy, 1e3, "a", "a")}
	s = build(true)
	if e := s.Workload(api).Traffic.Peers[0]; e.Source != model.PlacementPlanned || e.Dist[0].Cluster != b {
		t.Errorf("waiting db observed in a: %+v, want planned in b", e)
	}
	if e := s.Workload(api).Traffic.Peers[1]; e.Source != model.PlacementObserved || e.Dist[0].Cluster != a {
		t.Errorf("unbound legacy observed in a: %+v", e)
	}

	s = build(false)
	if s.HasPlan() || s.Workload(db).Planned != -1 || s.Workload(api).Traffic.Peers[0].Source != model.PlacementObserved ||
		s.DisplacementCost(s.Workload(batch), b) != 0 {
		t.Errorf("without Plan the snapshot has a plan")
	}
}
