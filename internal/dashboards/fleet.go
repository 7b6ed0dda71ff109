package dashboards

import (
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// NamespaceVar selects the workloads' namespaces on Fleet network.
const NamespaceVar = "namespace"

// workloadEdges is one row per (workload, peer workload) with traffic:
// source and target are "namespace/name", id joins them; what the Node
// Graph's edges frame needs.
const workloadEdges = `label_join(
  label_join(
    label_join(
      sum by (k8s_namespace_name, flowplace_workload_name, flowplace_peer_namespace, flowplace_peer_workload_name) (
        flowplace_estimator_workload_traffic_bytes_per_second{k8s_namespace_name=~"$namespace", flowplace_peer_workload_name!=""}
      ),
      "source", "/", "k8s_namespace_name", "flowplace_workload_name"),
    "target", "/", "flowplace_peer_namespace", "flowplace_peer_workload_name"),
  "id", ">", "source", "target")`

// workloadNodes is one row per workload at either end of an edge (callers
// with what they send, callees only called with 0), titled by name and
// subtitled by namespace: the nodes frame.
const workloadNodes = `label_replace(
  label_replace(
    sum by (id) (
      label_join(flowplace_estimator_workload_traffic_bytes_per_second{k8s_namespace_name=~"$namespace", flowplace_peer_workload_name!=""},
        "id", "/", "k8s_namespace_name", "flowplace_workload_name")
    )
    or
    0 * sum by (id) (
      label_join(flowplace_estimator_workload_traffic_bytes_per_second{k8s_namespace_name=~"$namespace", flowplace_peer_workload_name!=""},
        "id", "/", "flowplace_peer_namespace", "flowplace_peer_workload_name")
    ),
    "title", "$1", "id", ".*/(.*)"),
  "subtitle", "$1", "id", "(.*)/.*")`

func fleetNetwork() *dashboard.DashboardBuilder {
	return base("flowplace-fleet-network", "flowplace / Fleet network",
		"What the estimator measured and published: RTT between member clusters, traffic between them, and the workload traffic graph placement works from.").
		WithVariable(labelVariable(NamespaceVar, "Namespace", "flowplace_estimator_workload_traffic_bytes_per_second", "k8s_namespace_name")).
		WithVariable(dashboard.NewCustomVariableBuilder("quantile").
			Label("RTT quantile").
			Values(dashboard.StringOrMap{String: ptr("0.5,0.9,0.99")}).
			Current(dashboard.VariableOption{Text: dashboard.StringOrArrayOfString{String: ptr("0.9")}, Value: dashboard.StringOrArrayOfString{String: ptr("0.9")}})).
		WithRow(row("Latency")).
		WithPanel(tablePanel(panel{
			title: "Cluster-to-cluster RTT (p$quantile)", unit: "s", w: 16, h: 9,
			desc: "ClusterLatency as published: rows are source clusters, columns destinations. Estimated (unmeasured) pairs come from network coordinates.",
			queries: []query{{ref: "A", table: true,
				expr: `max by (k8s_cluster_name, flowplace_peer_cluster_name) (flowplace_estimator_cluster_rtt_seconds{k8s_cluster_name=~"$cluster", flowplace_rtt_quantile="$quantile"})`}},
			transforms: []dashboard.DataTransformerConfig{{Id: "groupingToMatrix", Options: map[string]any{
				"rowField": "k8s_cluster_name", "columnField": "flowplace_peer_cluster_name", "valueField": "Value",
			}}},
		})).
		WithPanel(statPanel(panel{
			title: "Estimated cluster pairs (each direction)", w: 8, h: 9,
			desc: "Source-destination cluster pairs no agent measured in either direction, whose RTT is the estimator's estimate (A to B and B to A count twice).",
			queries: []query{{ref: "A",
				expr: `count(flowplace_estimator_cluster_rtt_seconds{flowplace_rtt_estimated="true", flowplace_rtt_quantile="0.5"}) or vector(0)`}},
		})).
		WithRow(row("Traffic between clusters")).
		WithPanel(timeSeries(panel{
			title: "Cross-cluster traffic by cluster pair", unit: "Bps", w: 16, h: 9,
			desc: "Bytes/s from workloads in one cluster to the peers they call in another, as published in WorkloadTraffic (decaying window).",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}} → {{flowplace_peer_cluster_name}}",
				expr: `sum by (k8s_cluster_name, flowplace_peer_cluster_name) (flowplace_estimator_cluster_traffic_bytes_per_second{flowplace_cross_cluster="true", k8s_cluster_name=~"$cluster"})`}},
		})).
		WithPanel(statPanel(panel{
			title: "Share of traffic crossing clusters", unit: "percentunit", w: 8, h: 9,
			desc: "What placement brings down: cross-cluster bytes over all bytes between workloads.",
			queries: []query{{ref: "A",
				expr: `sum(flowplace_estimator_cluster_traffic_bytes_per_second{flowplace_cross_cluster="true"}) / sum(flowplace_estimator_cluster_traffic_bytes_per_second)`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Bytes by cluster pair, live from the agents", unit: "Bps", w: 24, h: 8,
			desc: "The agents' counters (client side, so each connection counts once), before the estimator's window.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}} → {{flowplace_peer_cluster_name}}",
				expr: `sum by (k8s_cluster_name, flowplace_peer_cluster_name) (rate(flowplace_tcp_bytes_total{flowplace_connection_role="client", k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithRow(row("Workloads")).
		WithPanel(tablePanel(panel{
			title: "Top workload pairs crossing clusters", unit: "Bps", w: 24, h: 9,
			desc: "The heaviest cross-cluster workload pairs: the first candidates for moving together.",
			queries: []query{{ref: "A", table: true,
				expr: `topk(10, flowplace_estimator_workload_cross_cluster_traffic_bytes_per_second{k8s_namespace_name=~"$namespace", otel_metric_overflow!="true"} > 0)`}},
			transforms: []dashboard.DataTransformerConfig{organize(scopeColumns, map[string]string{
				"k8s_namespace_name": "namespace", "flowplace_workload_kind": "kind", "flowplace_workload_name": "workload",
				"flowplace_peer_namespace": "peer namespace", "flowplace_peer_workload_kind": "peer kind",
				"flowplace_peer_workload_name": "peer", "flowplace_service_namespace": "service namespace",
				"flowplace_service_name": "service", "Value": "cross-cluster bytes/s",
			})},
		})).
		WithPanel(nodeGraph(panel{
			title: "Workload traffic graph", w: 24, h: 14,
			desc: "Workloads and the traffic between them (bytes/s, all clusters). Bounded by the estimator's --metrics-workload-pairs.",
			queries: []query{
				{ref: "edges", table: true, expr: workloadEdges},
				{ref: "nodes", table: true, expr: workloadNodes},
			},
			transforms: []dashboard.DataTransformerConfig{organize(
				append(append([]string{}, scopeColumns...), "k8s_namespace_name", "flowplace_workload_name", "flowplace_peer_namespace", "flowplace_peer_workload_name"),
				map[string]string{"Value #edges": "mainstat", "Value #nodes": "mainstat"})},
		}))
}
