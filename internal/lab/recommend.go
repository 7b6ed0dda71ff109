package lab

import (
	"time"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/internal/lab/demo"
	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/events"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
)

// Scored is one workload's scores per cluster, with the reason of each.
type Scored struct {
	Scores  map[string]int64
	Reasons map[string]string
}

// Recommend places the app's services one by one, in rollout order, the way
// flowplace's custom karmada-scheduler would: LatencyBudget filters, then
// TrafficLocality scores, over the model the estimator's measurements make
// (snap), with each service seeing where the ones placed before it now run
// and where the others still run (before). It returns the placement and the
// scores each service was placed with.
//
// clusterOf names the cluster of a UID in snap. decisions, when not nil,
// records each attempt as the scheduler's decision metrics.
func Recommend(app *demo.App, snap *aggregate.Snapshot, clusters []string, capacity Capacity, before map[string]string, clusterOf func(uid string) string,
	decisions *events.Recorder) (map[string]string, map[string]Scored, error) {
	cfg := config.Default()
	now := snap.Now
	valid := now.Add(time.Minute)
	key := func(name string) model.Key { return model.KeyFor(app.Namespace, "Deployment", name) }

	var infos []model.ClusterInfo
	for _, c := range clusters {
		infos = append(infos, model.ClusterInfo{Name: c})
	}
	var rows []model.LatencyRow
	for src, peers := range snap.Latency {
		row := model.LatencyRow{Source: clusterOf(src), ValidUntil: valid}
		for dst, st := range peers {
			row.Peers = append(row.Peers, model.PairLatency{Cluster: clusterOf(dst),
				MinUs: int64(st.Min * 1e6), P50Us: int64(st.P50 * 1e6), P90Us: int64(st.P90 * 1e6), P99Us: int64(st.P99 * 1e6),
				Samples: int64(st.Samples)})
		}
		rows = append(rows, row)
	}
	g := graphOf(app, snap, clusterOf)
	scored := map[string]Scored{}
	place, err := PlaceInOrder(app, clusters, capacity, func(svc string, cands []string, placed map[string]string) map[string]int64 {
		in := model.Inputs{Clusters: infos, Latency: rows}
		// A peer already re-placed runs where it was just put; the others
		// still run where they were.
		where := func(s string) (string, bool) {
			if c, ok := placed[s]; ok {
				return c, true
			}
			c, ok := before[s]
			return c, ok
		}
		for s := range before {
			if c, ok := where(s); ok && s != svc {
				in.Bindings = append(in.Bindings, model.BindingInput{Workload: key(s), Clusters: []model.ClusterReplicas{{Name: c, Replicas: 1}}})
			}
		}
		t := model.TrafficInput{Workload: key(svc), ValidUntil: valid, Samples: 1000}
		for e, b := range g.edges {
			switch {
			case e[0] == svc && e[1] != "":
				k := key(e[1])
				t.Peers = append(t.Peers, model.PeerInput{Workload: &k, BytesPerSecond: b})
			case e[1] == svc:
				if c, ok := where(e[0]); ok {
					t.Clients = append(t.Clients, model.ClientInput{Cluster: c, BytesPerSecond: b})
				}
			}
		}
		// The entry's callers are the clients in every region: they are no
		// workload's peers, only the entry's own server side sees them.
		if svc == app.Entry {
			for c, b := range g.clients {
				t.Clients = append(t.Clients, model.ClientInput{Cluster: c, BytesPerSecond: b})
			}
		}
		in.Traffic = []model.TrafficInput{t}
		var h model.Holder
		h.Store(model.Build(in, model.BuildOptions{MinSamples: cfg.Model.MinSamples, Plan: cfg.Model.CapacityPlan, Now: func() time.Time { return now }}))
		clock := func() time.Time { return now }
		filter := latencybudget.New(&h, cfg.LatencyBudget, clock)
		score := trafficlocality.New(&h, cfg.TrafficLocality, clock)
		var fit []string
		for _, c := range cands {
			if v := filter.Filter(key(svc), c); v.Fit {
				fit = append(fit, c)
			} else {
				decisions.Excluded(key(svc), c, v)
			}
		}
		allExcluded := len(fit) == 0
		if allExcluded {
			fit = cands // Karmada would not schedule it; the lab keeps it running
		}
		raw := make([]int64, len(fit))
		for i, c := range fit {
			r := score.Score(key(svc), c)
			if !allExcluded { // Karmada scores no cluster it filtered out
				decisions.Scored(key(svc), c, r)
			}
			raw[i] = r.Raw
		}
		if decisions != nil {
			decisions.Flush(true)
		}
		score.Normalize(raw)
		out := Scored{Scores: map[string]int64{}, Reasons: map[string]string{}}
		for i, c := range fit {
			out.Scores[c] = raw[i]
			out.Reasons[c] = score.Explain(key(svc), c)
		}
		scored[svc] = out
		return out.Scores
	})
	return place, scored, err
}
