package latencybudget

import (
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
				// 1% of the traffic: below the 10% "required" share.
				modeltest.Peer(catalog, 100e3, use1, use1),
			},
		}},
	}
}

func TestFilter(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(*model.Inputs)
		args     func(*config.LatencyBudget)
		workload model.Key
		clusters []string
		now      time.Time
		plan     bool // build the snapshot with a capacity plan
		// fit lists the clusters expected to pass.
		fit []string
		// reason is a substring expected in every verdict's reason (or, for
		// excluded clusters, in theirs when reasonExcluded is set).
		reason         string
		reasonExcluded string
	}{
		{
			// p90 = 1.1 x the published average: Virginia 88.6 ms,
			// Frankfurt 21.5 ms pass; Oregon 150.7 ms and Tokyo 233.6 ms
			// to Ireland do not.
			name: "default budget around the heavy peer", workload: frontend, clusters: all,
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:  []string{use1, euw1, euc1}, reasonExcluded: "to the nearest replica of peer shop/cart-deployment (in member-eu-west-1) exceeds the budget 100ms",
		},
		{
			name: "annotation overrides the default", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.TemplateAnnotations = map[model.Key]map[string]string{frontend: {model.BudgetAnnotation: "30ms"}}
			},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:  []string{euw1, euc1},
		},
		{
			name: "binding annotation used when the template has none", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.Bindings = append(in.Bindings, model.BindingInput{Workload: frontend, Annotations: map[string]string{model.BudgetAnnotation: "30ms"}})
			},
			fit: []string{euw1, euc1},
		},
		{
			name: "invalid annotation falls back to the default", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.TemplateAnnotations = map[model.Key]map[string]string{frontend: {model.BudgetAnnotation: "fast"}}
			},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:  []string{use1, euw1, euc1},
		},
		{
			name: "light peer is not required", workload: frontend, clusters: all,
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:  []string{euw1, euc1}, reason: "",
		},
		{
			name: "every peer required at 0%", workload: frontend, clusters: all,
			args: func(a *config.LatencyBudget) {
				a.DefaultBudget = 100 * time.Millisecond
				a.RequiredFraction = 0
			},
			// Frankfurt is 97.5 ms (p90) from the catalog in Virginia.
			fit: []string{use1, euw1, euc1},
		},
		{
			name: "nearest replica counts", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.Bindings[0] = modeltest.Binding(cart, map[string]int32{euw1: 1, apne1: 1})
			},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:  []string{euw1, euc1, apne1},
		},
		{
			name: "client clusters within budget", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				in.Traffic[0].Peers = nil
				in.Traffic[0].Clients = []model.ClientInput{{Cluster: apne1, BytesPerSecond: 1e6}, {Cluster: euw1, BytesPerSecond: 1e3}}
			},
			args:           func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:            []string{usw2, apne1},
			reasonExcluded: "from client cluster member-ap-northeast-1",
		},
		{
			name: "no budget: everything passes", workload: frontend, clusters: all,
			fit: all, reason: "no latency budget",
		},
		{
			name: "no traffic object fails open", workload: model.KeyFor("shop", "Deployment", "new"), clusters: all,
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:  all, reason: "fail open: no WorkloadTraffic",
		},
		{
			name: "no traffic object, strict", workload: model.KeyFor("shop", "Deployment", "new"), clusters: all,
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond; a.Strict = true },
			fit:  nil, reasonExcluded: "strict: no WorkloadTraffic",
		},
		{
			name: "stale traffic fails open", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) { in.Traffic[0].ValidUntil = stale },
			args:   func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:    all, reason: "fail open: WorkloadTraffic is stale",
		},
		{
			name: "expired by the clock, strict", workload: frontend, clusters: all, now: fresh,
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond; a.Strict = true },
			fit:  nil, reasonExcluded: "strict: WorkloadTraffic is stale",
		},
		{
			name: "stale latency fails open", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				for i := range in.Latency {
					in.Latency[i].ValidUntil = stale
				}
			},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			// Ireland itself needs no WAN RTT (same cluster).
			fit: all,
		},
		{
			name: "stale latency, strict keeps only the peer's own cluster", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				for i := range in.Latency {
					in.Latency[i].ValidUntil = stale
				}
			},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond; a.Strict = true },
			fit:  []string{euw1},
		},
		{
			name: "missing cluster fails open", workload: frontend, clusters: []string{"member-new", euw1, apne1},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:  []string{"member-new", euw1},
		},
		{
			name: "one cluster", workload: frontend, clusters: []string{apne1},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:  nil,
		},
		{
			name: "zero traffic passes", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) { in.Traffic[0].Peers = nil },
			args:   func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond },
			fit:    all, reason: "no required peer is placed yet",
		},
		{
			name: "p99 quantile is stricter", workload: frontend, clusters: all,
			args: func(a *config.LatencyBudget) {
				// Virginia-Ireland: p90 88.6 ms passes 95 ms, p99 104.7 ms does not.
				a.DefaultBudget = 95 * time.Millisecond
				a.Quantile = model.QuantileP99
			},
			fit: []string{euw1, euc1},
		},
		{
			name: "peer waiting to be scheduled: its observed cluster no longer binds", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) { in.Bindings[0] = model.BindingInput{Workload: cart} },
			args:   func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			// Only the light catalog remains placed: nothing is required.
			plan: true, fit: all,
		},
		{
			name: "same without a plan: where the peer was observed binds", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) { in.Bindings[0] = model.BindingInput{Workload: cart} },
			args:   func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:    []string{use1, euw1, euc1},
		},
		{
			// Virginia-Ireland measured nowhere, estimated 80 ms ± 15 ms:
			// the bound 95 ms is what the budget sees.
			name: "an estimate binds with its error added", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				unmeasure(in, use1, euw1)
				unmeasure(in, euw1, use1)
				estimate(in, use1, euw1, 80_000, 15_000)
				estimate(in, euw1, use1, 80_000, 15_000)
			},
			args:           func(a *config.LatencyBudget) { a.DefaultBudget = 90 * time.Millisecond },
			fit:            []string{euw1, euc1},
			reasonExcluded: "exceeds the budget 90ms",
		},
		{
			name: "an estimate within budget with its error passes", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				unmeasure(in, use1, euw1)
				unmeasure(in, euw1, use1)
				estimate(in, use1, euw1, 80_000, 15_000)
			},
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:  []string{use1, euw1, euc1},
		},
		{
			// Virginia's row lacks Ireland and carries a (wrong) 20 ms
			// estimate; Ireland measured Virginia at 80.52 ms (p90 88.6):
			// the measurement wins.
			name: "a measurement in the reverse direction wins over an estimate", workload: frontend, clusters: all,
			mutate: func(in *model.Inputs) {
				unmeasure(in, use1, euw1)
				estimate(in, use1, euw1, 20_000, 1_000)
			},
			args:           func(a *config.LatencyBudget) { a.DefaultBudget = 50 * time.Millisecond },
			fit:            []string{euw1, euc1},
			reasonExcluded: "p90 RTT ",
		},
		{
			name: "a client cluster's estimate binds with its error added", workload: frontend, clusters: []string{usw2, apne1},
			mutate: func(in *model.Inputs) {
				in.Traffic[0].Peers = nil
				in.Traffic[0].Clients = []model.ClientInput{{Cluster: apne1, BytesPerSecond: 1e6}}
				unmeasure(in, apne1, usw2)
				unmeasure(in, usw2, apne1)
				estimate(in, apne1, usw2, 80_000, 30_000)
			},
			args:           func(a *config.LatencyBudget) { a.DefaultBudget = 100 * time.Millisecond },
			fit:            []string{apne1},
			reasonExcluded: "p90 RTT estimate + expected error 110ms from client cluster member-ap-northeast-1",
		},
		{
			name: "disabled", workload: frontend, clusters: all,
			args: func(a *config.LatencyBudget) { a.DefaultBudget = 30 * time.Millisecond; a.Enabled = false },
			fit:  all,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := baseInputs()
			if tc.mutate != nil {
				tc.mutate(&in)
			}
			args := config.Default().LatencyBudget
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
			var fit []string
			for _, c := range tc.clusters {
				v := p.Filter(tc.workload, c)
				if v.Reason == "" {
					t.Errorf("%s: empty reason", c)
				}
				if v.Fit {
					fit = append(fit, c)
					if !strings.Contains(v.Reason, tc.reason) {
						t.Errorf("%s: reason %q lacks %q", c, v.Reason, tc.reason)
					}
				} else if !strings.Contains(v.Reason, tc.reasonExcluded) {
					t.Errorf("%s excluded: reason %q lacks %q", c, v.Reason, tc.reasonExcluded)
				}
			}
			if !slices.Equal(fit, tc.fit) {
				t.Errorf("fit %v, want %v", fit, tc.fit)
			}
		})
	}
}

// unmeasure drops src's measured entry for dst.
func unmeasure(in *model.Inputs, src, dst string) {
	for i := range in.Latency {
		if in.Latency[i].Source == src {
			in.Latency[i].Peers = slices.DeleteFunc(in.Latency[i].Peers, func(p model.PairLatency) bool { return p.Cluster == dst })
		}
	}
}

// estimate adds an estimated entry src -> dst as the estimator writes it.
func estimate(in *model.Inputs, src, dst string, us, errUs int64) {
	for i := range in.Latency {
		if in.Latency[i].Source == src {
			in.Latency[i].Peers = append(in.Latency[i].Peers, model.PairLatency{Cluster: dst,
				MinUs: max(us-errUs, 0), P50Us: us, P90Us: us, P99Us: us, Estimated: true, ErrorUs: errUs})
		}
	}
}

func TestFilterNoSnapshot(t *testing.T) {
	var h model.Holder
	args := config.Default().LatencyBudget
	args.DefaultBudget = time.Millisecond
	if v := New(&h, args, nil).Filter(frontend, euw1); !v.Fit || v.Reason != "fail open: model not loaded yet" {
		t.Errorf("got %+v", v)
	}
	args.Strict = true
	if v := New(&h, args, nil).Filter(frontend, euw1); v.Fit || v.Cause != CauseMissingData {
		t.Errorf("strict without a model: got %+v", v)
	}
}

func TestRejectionReason(t *testing.T) {
	var h model.Holder
	h.Store(model.Build(baseInputs(), model.BuildOptions{MinSamples: 10}))
	args := config.Default().LatencyBudget
	args.DefaultBudget = 100 * time.Millisecond
	v := New(&h, args, func() time.Time { return t0 }).Filter(frontend, apne1)
	want := "p90 RTT 233.64ms from member-ap-northeast-1 to the nearest replica of peer shop/cart-deployment (in member-eu-west-1) exceeds the budget 100ms"
	if v.Fit || v.Reason != want || v.Cause != CausePeerOverBudget {
		t.Errorf("got %+v, want reason %q", v, want)
	}
	in := baseInputs()
	unmeasure(&in, apne1, euw1)
	unmeasure(&in, euw1, apne1)
	estimate(&in, apne1, euw1, 200_000, 12_500)
	h.Store(model.Build(in, model.BuildOptions{MinSamples: 10}))
	v = New(&h, args, func() time.Time { return t0 }).Filter(frontend, apne1)
	want = "p90 RTT estimate + expected error 212.5ms from member-ap-northeast-1 to the nearest replica of peer shop/cart-deployment (in member-eu-west-1) exceeds the budget 100ms"
	if v.Fit || v.Reason != want {
		t.Errorf("estimated: got %+v, want reason %q", v, want)
	}
}
