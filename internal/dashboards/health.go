package dashboards

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

func health() *dashboard.DashboardBuilder {
	return base("flowplace-health", "flowplace / Health",
		"Is the pipeline whole: agents reporting and exporting, kernel tables within bounds, the estimator ingesting, leading, publishing fresh data.").
		WithRow(row("Agents")).
		WithPanel(statPanel(panel{
			title: "Agents reporting", w: 8, h: 6,
			desc: "Nodes whose agent exports, by cluster.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}",
				expr: `count by (k8s_cluster_name) (flowplace_datapath_flows{k8s_cluster_name=~"$cluster"})`}},
		})).
		WithPanel(timeSeries(panel{
			title: "OTLP exports", unit: "ops", w: 16, h: 6,
			desc: "Export requests from the agents by outcome; error is after the exporter's retries.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}} {{flowplace_export_outcome}}",
				expr: `sum by (k8s_cluster_name, flowplace_export_outcome) (rate(flowplace_agent_otlp_exports_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Kernel flow table use", w: 8, h: 8,
			desc: "Entries in the probes' flow table per node.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}/{{k8s_node_name}}",
				expr: `max by (k8s_cluster_name, k8s_node_name) (flowplace_datapath_flows{k8s_cluster_name=~"$cluster"})`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Kernel flow table evictions", unit: "ops", w: 8, h: 8,
			desc: "Entries the LRU evicted: the table is too small for the node's connections.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}/{{k8s_node_name}}",
				expr: `sum by (k8s_cluster_name, k8s_node_name) (rate(flowplace_datapath_flows_evicted_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Series overflow", unit: "ops", w: 8, h: 8,
			desc: "Flow updates folded into the overflow series because an agent reached its series limit.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}/{{k8s_node_name}}",
				expr: `sum by (k8s_cluster_name, k8s_node_name) (rate(flowplace_agent_series_overflow_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithRow(row("Estimator")).
		WithPanel(timeSeries(panel{
			title: "Data points ingested and rejected", unit: "ops", w: 12, h: 8,
			desc: "OTLP data points accepted, and rejected by reason (e.g. foreign_cluster: a member reporting about another).",
			queries: []query{
				{ref: "A", legend: "ingested", expr: `sum(rate(flowplace_estimator_points_ingested_total[$__rate_interval]))`},
				{ref: "B", legend: "rejected: {{flowplace_reject_reason}}", expr: `sum by (flowplace_reject_reason) (rate(flowplace_estimator_points_rejected_total[$__rate_interval]))`},
			},
		})).
		WithPanel(statPanel(panel{
			title: "Leader", w: 6, h: 8,
			desc:    "Estimator replicas holding the lease (exactly one should).",
			queries: []query{{ref: "A", expr: `sum(flowplace_estimator_leader_ratio)`}},
		})).
		WithPanel(statPanel(panel{
			title: "Stale objects", w: 6, h: 8,
			desc: "Published objects whose validUntil passed: the plugins treat them as missing.",
			queries: []query{{ref: "A", legend: "{{flowplace_object_kind}}",
				expr: `sum by (flowplace_object_kind) (flowplace_estimator_objects_published{flowplace_object_state="stale"})`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Publication writes", unit: "ops", w: 12, h: 8,
			desc: "Writes of ClusterLatency and WorkloadTraffic by operation and outcome.",
			queries: []query{{ref: "A", legend: "{{flowplace_object_kind}} {{flowplace_write_operation}} {{flowplace_write_outcome}}",
				expr: `sum by (flowplace_object_kind, flowplace_write_operation, flowplace_write_outcome) (rate(flowplace_estimator_objects_written_total[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Data age by cluster", unit: "s", w: 12, h: 8,
			desc: "Time since a cluster's agents last reported an RTT sample: rising means they stopped.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}",
				expr: `max by (k8s_cluster_name) (flowplace_estimator_data_age_seconds{k8s_cluster_name=~"$cluster"})`}},
		}))
}
