package trafficlocality

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/model/modeltest"
)

var (
	t0       = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	fresh    = t0.Add(5 * time.Minute)
	stale    = t0.Add(-time.Second)
	frontend = model.KeyFor("shop", "Deployment", "frontend")
	cart     = model.KeyFor("shop", "Deployment", "cart")
	catalog  = model.KeyFor("shop", "Deployment", "catalog")

	use1  = modeltest.ClusterName("us-east-1")
	usw2  = modeltest.ClusterName("us-west-2")
	euw1  = modeltest.ClusterName("eu-west-1")
	euc1  = modeltest.ClusterName("eu-central-1")
	apne1 = modeltest.ClusterName("ap-northeast-1")
	all   = []string{use1, usw2, euw1, euc1, apne1}
)

// rttUs is the P50 the model holds for a pair of the AWS matrix.
func rttUs(from, to string) float64 {
	i, j := slices.Index(all, from), slices.Index(all, to)
	return float64(int64(modeltest.AWSRTTMs[i][j] * 1000))
}

// expected normalizes costs the way the plugin documents it.
func expected(costs []float64, floor float64) []int64 {
	minCost := slices.Min(costs)
	out := make([]int64, len(costs))
	for i, c := range costs {
		out[i] = int64(math.Round(100 * (math.Trunc(minCost) + floor) / (math.Trunc(c) + floor)))
	}
	return out
}

func baseInputs() model.Inputs {
	return model.Inputs{
		Clusters: modeltest.AWSClusters(),
		Latency:  modeltest.AWSLatency(fresh),
		Bindings: []model.BindingInput{
			modeltest.Binding(cart, map[string]int32{euw1: 3}),
			modeltest.Binding(catalog, map[string]int32{use1: 2}),
		},
		Traffic: []model.TrafficInput{{
			Workload: frontend, ValidUntil: fresh, Samples: 5000,
			Peers: []model.PeerInput{
				modeltest.Peer(cart, 10e6, use1, euw1),
				modeltest.Peer(catalog, 100e3, use1, use1),
			},
			Clients: []model.ClientInput{{Cluster: euc1, BytesPerSecond: 1e6}},
		}},
	}
}

func defaultArgs() config.TrafficLocality { return config.Default().TrafficLocality }

// scoreAll runs Score then Normalize over clusters, as Karmada does.
func scoreAll(p *Plugin, k model.Key, clusters []string) ([]int64, []Reason) {
	raw := make([]int64, len(clusters))
	reasons := make([]Reason, len(clusters))
	for i, c := range clusters {
		r := p.Score(k, c)
		raw[i], reasons[i] = r.Raw, r.Reason
	}
	p.Normalize(raw)
	return raw, reasons
}

func neutral(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = NeutralScore
	}
	return out
}

func TestScore(t *testing.T) {
	// Expected costs of frontend per cluster (bytes/s x ms) computed
	// independently of the plugin from the published matrix.
	frontendCost := func(c string) float64 {
		return 10e6*rttUs(c, euw1)/1000 + 100e3*rttUs(c, use1)/1000 + 1e6*rttUs(euc1, c)/1000
	}
	var frontendCosts []float64
	for _, c := range all {
		frontendCosts = append(frontendCosts, frontendCost(c))
	}

	tests := []struct {
		name     string
		mutate   func(*model.Inputs)
		args     func(*config.TrafficLocality)
		workload model.Key
		clusters []string
		now      time.Time
		plan     bool // build the snapshot with a capacity plan
		want     []int64
		reasons  []Reason
		check    func(t *testing.T, scores []int64)
	}{
		{
			name: "heavy peer's cluster scores highest", workload: frontend, clusters: all,
			want: expected(frontendCosts, config.DefaultCostFloor),
			check: func(t *testing.T, s []int64) {
				// eu-west-1 hosts the 10 MB/s peer; eu-central-1 is 19.6 ms
				// away; Tokyo is the worst.
				if s[2] != 100 || !(s[3] > s[0] && s[0] > s[1] && s[1] > s[4]) {
					t.Errorf("ranking: %v", s)
				}
			},
		},
		{
			name: "missing cluster is neutral, others scored", workload: frontend,
			clusters: []string{euw1, "member-new", apne1},
			want:     []int64{100, NeutralScore, expected([]float64{frontendCost(euw1), frontendCost(apne1)}, config.DefaultCostFloor)[1]},
			check: func(t *testing.T, s []int64) {
				if s[1] != NeutralScore {
					t.Errorf("unknown cluster scored %d, want neutral", s[1])
				}
			},
			reasons: []Reason{ReasonCost, ReasonUnknownCluster, ReasonCost},
		},
		{
			name: "stale traffic: every cluster neutral", workload: frontend, clusters: all,
			mutate:  func(in *model.Inputs) { in.Traffic[0].ValidUntil = stale },
			want:    neutral(5),
			reasons: []Reason{ReasonStaleTraffic, ReasonStaleTraffic, ReasonStaleTraffic, ReasonStaleTraffic, ReasonStaleTraffic},
		},
		{
			name: "expired by the clock, not by an event", workload: frontend, clusters: all,
			now: fresh.Add(time.Nanosecond), want: neutral(5),
		},
		{
			name: "stale latency rows: every cluster neutral", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				for i := range in.Latency {
					in.Latency[i].ValidUntil = stale
				}
			},
			want:    neutral(5),
			reasons: []Reason{ReasonMissingRTT, ReasonMissingRTT, ReasonMissingRTT, ReasonMissingRTT, ReasonMissingRTT},
		},
		{
			name: "one stale row is covered by the reverse direction", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) { in.Latency[4].ValidUntil = stale },
			check: func(t *testing.T, s []int64) {
				if s[2] != 100 || s[4] == NeutralScore {
					t.Errorf("scores %v: Tokyo should be scored from the other rows", s)
				}
			},
		},
		{
			name: "pair below minSamples is missing for that cluster only", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				// Tokyo<->Ireland has too few samples in both directions.
				for _, r := range []struct {
					row  int
					peer string
				}{{4, euw1}, {2, apne1}} {
					for j := range in.Latency[r.row].Peers {
						if in.Latency[r.row].Peers[j].Cluster == r.peer {
							in.Latency[r.row].Peers[j].Samples = 3
						}
					}
				}
			},
			check: func(t *testing.T, s []int64) {
				if s[4] != NeutralScore || s[2] != 100 {
					t.Errorf("scores %v: want Tokyo neutral, Ireland 100", s)
				}
			},
		},
		{
			// Tokyo<->Ireland measured nowhere, estimated at the published
			// 212.4 ms: it costs exactly what the measurement did.
			name: "a pair nobody measured costs its estimate", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				replaceWithEstimate(in, 4, euw1, 212_400, 20_000)
				replaceWithEstimate(in, 2, apne1, 212_400, 20_000)
			},
			want: expected(frontendCosts, config.DefaultCostFloor),
		},
		{
			// Tokyo's row has a (wrong) 1 ms estimate for Ireland, but
			// Ireland measured Tokyo: the measurement is used.
			name: "a measurement in the reverse direction wins over an estimate", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) { replaceWithEstimate(in, 4, euw1, 1_000, 100) },
			want:   expected(frontendCosts, config.DefaultCostFloor),
		},
		{
			name: "no traffic object: neutral", workload: model.KeyFor("shop", "Deployment", "unknown"), clusters: all,
			want: neutral(5), reasons: []Reason{ReasonNoTraffic, ReasonNoTraffic, ReasonNoTraffic, ReasonNoTraffic, ReasonNoTraffic},
		},
		{
			name: "zero traffic: neutral", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.Traffic[0].Peers, in.Traffic[0].Clients = nil, nil
			},
			want: neutral(5), reasons: []Reason{ReasonZeroTraffic, ReasonZeroTraffic, ReasonZeroTraffic, ReasonZeroTraffic, ReasonZeroTraffic},
		},
		{
			name: "one cluster gets the top score", workload: frontend, clusters: []string{apne1},
			want: []int64{100},
		},
		{
			name: "ties score equal", workload: frontend, clusters: []string{"a", "b", "c"},
			mutate: func(in *model.Inputs) {
				// b and c are both 10 ms from a, where the only peer runs.
				names := []string{"a", "b", "c"}
				in.Clusters = nil
				in.Latency = modeltest.LatencyRows(names, [][]float64{{0.5, 10, 10}, {10, 0.5, 20}, {10, 20, 0.5}}, fresh)
				in.Bindings = []model.BindingInput{modeltest.Binding(cart, map[string]int32{"a": 1})}
				in.Traffic[0].Peers = []model.PeerInput{modeltest.Peer(cart, 1e6, "b", "a")}
				in.Traffic[0].Clients = nil
			},
			// cost a = 1e6*0.5 ms, b = c = 1e6*10 ms.
			want: expected([]float64{1e6 * 0.5, 1e6 * 10, 1e6 * 10}, config.DefaultCostFloor),
			check: func(t *testing.T, s []int64) {
				if s[1] != s[2] || s[0] != 100 {
					t.Errorf("scores %v", s)
				}
			},
		},
		{
			name: "peer split across clusters weights by replicas", workload: frontend, clusters: []string{use1, apne1},
			mutate: func(in *model.Inputs) {
				in.Bindings[0] = modeltest.Binding(cart, map[string]int32{use1: 1, apne1: 3})
				in.Traffic[0].Peers = in.Traffic[0].Peers[:1]
				in.Traffic[0].Clients = nil
			},
			want: expected([]float64{
				10e6 * (0.25*rttUs(use1, use1) + 0.75*rttUs(use1, apne1)) / 1000,
				10e6 * (0.25*rttUs(apne1, use1) + 0.75*rttUs(apne1, apne1)) / 1000,
			}, config.DefaultCostFloor),
		},
		{
			name: "peer without binding placed where its traffic went", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.Bindings = nil
				in.Traffic[0].Peers = []model.PeerInput{{Service: "shop/payments", BytesPerSecond: 5e6,
					Pairs: []model.PairRate{{From: use1, To: apne1, BytesPerSecond: 5e6}}}}
				in.Traffic[0].Clients = nil
			},
			check: func(t *testing.T, s []int64) {
				if s[4] != 100 || s[1] <= s[0] {
					t.Errorf("scores %v: want Tokyo best, Oregon next", s)
				}
			},
		},
		{
			name: "egress price breaks an RTT tie", workload: frontend, clusters: []string{"b", "c"},
			mutate: func(in *model.Inputs) {
				names := []string{"a", "b", "c"}
				in.Clusters = []model.ClusterInfo{{Name: "a", Provider: "aws", Region: "r1"}, {Name: "b", Provider: "aws", Region: "r2"}, {Name: "c", Provider: "gcp", Region: "r3"}}
				in.Latency = modeltest.LatencyRows(names, [][]float64{{0.5, 10, 10}, {10, 0.5, 20}, {10, 20, 0.5}}, fresh)
				in.Bindings = []model.BindingInput{modeltest.Binding(cart, map[string]int32{"a": 1})}
				in.Traffic[0].Peers = []model.PeerInput{modeltest.Peer(cart, 1e6, "b", "a")}
				in.Traffic[0].Clients = nil
			},
			args: func(a *config.TrafficLocality) {
				a.Egress = config.EgressConfiguration{MillisecondsPerCostUnit: 100, Rules: []config.EgressRule{
					{FromProvider: "gcp", ToProvider: "aws", CostPerGiB: 0.12},
					{CostPerGiB: 0.02},
				}}
			},
			// The edge's bytes flow both ways, so each direction's price
			// counts half. b: 10 ms + 0.02*100 = 12; c: 10 + (0.12 gcp->aws
			// + 0.02 aws->gcp)/2*100 = 17 (ms per byte).
			want: expected([]float64{1e6 * 12, 1e6 * 17}, config.DefaultCostFloor),
		},
		{
			name: "without a plan an unplaced peer is ignored", workload: frontend, clusters: all,
			mutate: unplacedCart,
			// Only catalog (Virginia) and the clients (Frankfurt) count.
			want: expected(costsOf(func(c string) float64 { return 100e3*rttUs(c, use1)/1000 + 1e6*rttUs(euc1, c)/1000 }), config.DefaultCostFloor),
		},
		{
			name: "unplaced peer counts at its planned cluster", workload: frontend, clusters: all, plan: true,
			mutate: unplacedCart,
			// cart serves Tokyo: the plan puts it (and frontend) there.
			want: expected(costsOf(func(c string) float64 {
				return 10e6*rttUs(c, apne1)/1000 + 100e3*rttUs(c, use1)/1000 + 1e6*rttUs(euc1, c)/1000
			}), config.DefaultCostFloor),
		},
		{
			name: "no room without displacing heavier planned traffic", workload: frontend, clusters: all, plan: true,
			mutate: checkoutNeedsFrankfurt,
			check: func(t *testing.T, s []int64) {
				// Frankfurt's only 2 cores go to checkout (100 MB/s of
				// Frankfurt clients); frontend does best next door.
				if s[2] != 100 || s[3] >= 10 {
					t.Errorf("scores %v: want Ireland 100 and Frankfurt priced out", s)
				}
			},
		},
		{
			name: "same inputs without a plan: Frankfurt wins", workload: frontend, clusters: all,
			mutate: checkoutNeedsFrankfurt,
			check: func(t *testing.T, s []int64) {
				if s[3] != 100 {
					t.Errorf("scores %v: want Frankfurt 100", s)
				}
			},
		},
		{
			name: "disabled: neutral", workload: frontend, clusters: all,
			args: func(a *config.TrafficLocality) { a.Enabled = false },
			want: neutral(5),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInputs()
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			args := defaultArgs()
			if tc.args != nil {
				tc.args(&args)
			}
			now := t0
			if !tc.now.IsZero() {
				now = tc.now
			}
			var h model.Holder
			h.Store(model.Build(in, model.BuildOptions{MinSamples: 10, Plan: tc.plan, Now: func() time.Time { return now }}))
			p := New(&h, args, func() time.Time { return now })
			got, reasons := scoreAll(p, tc.workload, tc.clusters)
			for i, s := range got {
				if s < 0 || s > 100 {
					t.Errorf("score %d of %s out of range", s, tc.clusters[i])
				}
			}
			if tc.want != nil && !slices.Equal(got, tc.want) {
				t.Errorf("scores %v, want %v", got, tc.want)
			}
			if tc.reasons != nil && !slices.Equal(reasons, tc.reasons) {
				t.Errorf("reasons %v, want %v", reasons, tc.reasons)
			}
			if tc.check != nil {
				tc.check(t, got)
			}
		})
	}
}

func costsOf(cost func(cluster string) float64) []float64 {
	var out []float64
	for _, c := range all {
		out = append(out, cost(c))
	}
	return out
}

// unplacedCart: cart has a binding but no clusters yet, no observed
// placement, and serves 50 MB/s to clients in Tokyo.
func unplacedCart(in *model.Inputs) {
	in.Bindings = []model.BindingInput{{Workload: cart}, modeltest.Binding(catalog, map[string]int32{use1: 2})}
	in.Traffic[0].Peers[0] = model.PeerInput{Workload: &cart, BytesPerSecond: 10e6}
	in.Traffic = append(in.Traffic, model.TrafficInput{Workload: cart, ValidUntil: fresh, Samples: 5000,
		Clients: []model.ClientInput{{Cluster: apne1, BytesPerSecond: 50e6}}})
}

// checkoutNeedsFrankfurt: frontend (2 cores, clients in Frankfurt, calls
// catalog in Virginia) and checkout (2 cores, 100 MB/s of Frankfurt
// clients) are unplaced; Frankfurt has 2 cores free.
func checkoutNeedsFrankfurt(in *model.Inputs) {
	checkout := model.KeyFor("shop", "Deployment", "checkout")
	in.Traffic[0].Peers = in.Traffic[0].Peers[1:]
	in.Bindings = append(in.Bindings, model.BindingInput{Workload: frontend, DemandMilliCPU: 2000},
		model.BindingInput{Workload: checkout, DemandMilliCPU: 2000})
	in.Traffic = append(in.Traffic, model.TrafficInput{Workload: checkout, ValidUntil: fresh, Samples: 5000,
		Clients: []model.ClientInput{{Cluster: euc1, BytesPerSecond: 100e6}}})
	in.AvailableMilliCPU = map[string]float64{use1: 64000, usw2: 64000, euw1: 64000, euc1: 2000, apne1: 64000}
}

// replaceWithEstimate turns row's measured entry for dst into an estimate
// as the estimator writes it (all quantiles the estimate, no samples).
func replaceWithEstimate(in *model.Inputs, row int, dst string, us, errUs int64) {
	for j, p := range in.Latency[row].Peers {
		if p.Cluster == dst {
			in.Latency[row].Peers[j] = model.PairLatency{Cluster: dst, MinUs: us - errUs, P50Us: us, P90Us: us, P99Us: us, Estimated: true, ErrorUs: errUs}
		}
	}
}

func TestNoSnapshotIsNeutral(t *testing.T) {
	var h model.Holder
	p := New(&h, defaultArgs(), nil)
	got, reasons := scoreAll(p, frontend, all)
	if !slices.Equal(got, neutral(5)) || reasons[0] != ReasonNoSnapshot {
		t.Fatalf("got %v %v", got, reasons)
	}
}

func TestExplain(t *testing.T) {
	var h model.Holder
	h.Store(model.Build(baseInputs(), model.BuildOptions{MinSamples: 10}))
	p := New(&h, defaultArgs(), func() time.Time { return t0 })
	got := p.Explain(frontend, apne1)
	want := "shop/frontend-deployment member-ap-northeast-1: expected cost 2.38e+09 B/s*ms from 2 peers and 1 client clusters; largest: peer shop/cart-deployment (10000000 B/s, mean RTT 212.4 ms)"
	if got != want {
		t.Errorf("Explain:\n got %s\nwant %s", got, want)
	}
	in := baseInputs()
	replaceWithEstimate(&in, 4, euw1, 212_400, 20_000)
	replaceWithEstimate(&in, 2, apne1, 212_400, 20_000)
	h.Store(model.Build(in, model.BuildOptions{MinSamples: 10}))
	if got := p.Explain(frontend, apne1); !strings.HasSuffix(got, "largest: peer shop/cart-deployment (10000000 B/s, mean RTT 212.4 ms, some estimated)") {
		t.Errorf("Explain with an estimated RTT: %s", got)
	}
	in = baseInputs()
	checkoutNeedsFrankfurt(&in)
	h.Store(model.Build(in, model.BuildOptions{MinSamples: 10, Plan: true, Now: func() time.Time { return t0 }}))
	got = p.Explain(frontend, euc1)
	// checkout's next best cluster is Ireland: 100 MB/s x (Frankfurt-Ireland
	// RTT - Frankfurt's own) is what frontend's 2 cores in Frankfurt cost.
	displaced := fmt.Sprintf("capacity: %.3g of it displaces workloads planned for member-eu-central-1 (2000 milli-CPU needed, 0 left by the plan)",
		100e6*(rttUs(euc1, euw1)-rttUs(euc1, euc1))/1000)
	if !strings.Contains(got, displaced) {
		t.Errorf("Explain with a capacity plan: %s", got)
	}
	h.Store(nil)
	if got := p.Explain(frontend, apne1); got != "shop/frontend-deployment member-ap-northeast-1: neutral: model not loaded yet" {
		t.Errorf("Explain without model: %s", got)
	}
}

func TestEgressPrice(t *testing.T) {
	yes := true
	rules := []config.EgressRule{
		{FromProvider: "aws", ToProvider: "aws", SameRegion: &yes, CostPerGiB: 0.01},
		{FromProvider: "aws", ToProvider: "aws", CostPerGiB: 0.02},
		{FromProvider: "aws", CostPerGiB: 0.09},
	}
	a1 := model.ClusterInfo{Provider: "aws", Region: "us-east-1"}
	a1b := model.ClusterInfo{Provider: "aws", Region: "us-east-1"}
	a2 := model.ClusterInfo{Provider: "aws", Region: "eu-west-1"}
	g := model.ClusterInfo{Provider: "gcp", Region: "europe-west1"}
	for _, tc := range []struct {
		from, to model.ClusterInfo
		want     float64
	}{{a1, a1b, 0.01}, {a1, a2, 0.02}, {a1, g, 0.09}, {g, a1, 0}} {
		if got := EgressPrice(rules, tc.from, tc.to); got != tc.want {
			t.Errorf("%v -> %v: %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}
