package dashboards

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

func placement() *dashboard.DashboardBuilder {
	return base("flowplace-placement", "flowplace / Placement",
		"What flowplace's scheduler plugins decided for each scheduling attempt, and what the rebalance advisor asked Karmada to move.").
		WithRow(row("Scheduling decisions")).
		WithPanel(timeSeries(panel{
			title: "Scheduling attempts by outcome", unit: "ops", w: 12, h: 8,
			desc: "costed: TrafficLocality priced clusters from measured traffic and RTT; neutral: no data for any cluster; excluded: LatencyBudget excluded every cluster.",
			queries: []query{{ref: "A", legend: "{{flowplace_scheduler_outcome}}",
				expr: `sum by (flowplace_scheduler_outcome) (rate(flowplace_scheduler_attempts_total[$__rate_interval]))`}},
		})).
		WithPanel(barGauge(panel{
			title: "Preferred cluster", w: 12, h: 8,
			desc: "Attempts in the time range by the cluster TrafficLocality ranked first.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}",
				expr: `sum by (k8s_cluster_name) (increase(flowplace_scheduler_preferred_total{k8s_cluster_name=~"$cluster"}[$__range]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Clusters excluded by LatencyBudget", unit: "ops", w: 12, h: 8,
			desc: "By cluster and reason: a peer or the clients beyond the budget, or data missing in a strict profile.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}: {{flowplace_scheduler_reason}}",
				expr: `sum by (k8s_cluster_name, flowplace_scheduler_reason) (rate(flowplace_scheduler_exclusions_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Neutral verdicts by reason", unit: "ops", w: 12, h: 8,
			desc: "Clusters TrafficLocality could not price: no WorkloadTraffic yet, stale data, an unmeasured cluster pair.",
			queries: []query{{ref: "A", legend: "{{flowplace_scheduler_reason}}",
				expr: `sum by (flowplace_scheduler_reason) (rate(flowplace_scheduler_neutral_total[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Cost spread between clusters", w: 24, h: 8,
			desc: "Highest over lowest expected cost among the clusters priced in an attempt: 1 means the choice did not matter.",
			queries: []query{
				{ref: "A", legend: "p50", expr: `histogram_quantile(0.5, sum by (le) (rate(flowplace_scheduler_cost_spread_bucket[$__rate_interval])))`},
				{ref: "B", legend: "p90", expr: `histogram_quantile(0.9, sum by (le) (rate(flowplace_scheduler_cost_spread_bucket[$__rate_interval])))`},
			},
		})).
		WithRow(row("Re-placement of running workloads")).
		WithPanel(barGauge(panel{
			title: "Rebalance advice by outcome", w: 12, h: 8,
			desc: "requested: a WorkloadRebalancer was created; dry_run: only advised; below_noise, cooldown, cap: held back.",
			queries: []query{{ref: "A", legend: "{{flowplace_rebalance_outcome}}",
				expr: `sum by (flowplace_rebalance_outcome) (increase(flowplace_estimator_rebalance_advice_total[$__range]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Moves accumulating saving", w: 12, h: 8,
			desc: "Workloads whose planned move is paying off its cost (ski rental) but has not yet.",
			queries: []query{{ref: "A", legend: "pending",
				expr: `sum(flowplace_estimator_rebalance_pending)`}},
		})).
		WithPanel(statPanel(panel{
			title: "Expected saving of the moves advised in the range", unit: "short", w: 12, h: 8,
			desc: "Network cost rate (bytes/s x ms) the moves advised or requested in the time range are expected to save, summed.",
			queries: []query{{ref: "A",
				expr: `sum(increase(flowplace_estimator_rebalance_saving_sum[$__range]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Workloads the advisor skipped", w: 12, h: 8,
			desc: "Running workloads it could not consider, by reason (no resource requests, unknown cluster, divided replicas, ...).",
			queries: []query{{ref: "A", legend: "{{flowplace_rebalance_reason}}",
				expr: `sum by (flowplace_rebalance_reason) (rate(flowplace_estimator_rebalance_skipped_total[$__rate_interval]))`}},
		}))
}
