package dashboards

import "github.com/grafana/grafana-foundation-sdk/go/dashboard"

func routing() *dashboard.DashboardBuilder {
	return base("flowplace-routing", "flowplace / Routing",
		"Connections the agents' socket-level routing sent to each tier and cluster, and the passive health that ejects backends.").
		WithPanel(timeSeries(panel{
			title: "Routed connections by service and tier", unit: "cps", w: 12, h: 9,
			desc: "Tier 0 is the local cluster, then the others by RTT; fallback when every backend was ejected.",
			queries: []query{{ref: "A", legend: "{{flowplace_service_namespace}}/{{flowplace_service_name}} tier {{flowplace_routing_tier}}",
				expr: `sum by (flowplace_service_namespace, flowplace_service_name, flowplace_routing_tier) (rate(flowplace_routing_connections_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Routed connections by destination cluster", unit: "cps", w: 12, h: 9,
			desc: "Where the routed connects went, from the selected clusters.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}} → {{flowplace_peer_cluster_name}}",
				expr: `sum by (k8s_cluster_name, flowplace_peer_cluster_name) (rate(flowplace_routing_connections_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Failed routed connects", unit: "cps", w: 12, h: 8,
			desc: "Unanswered SYN, reset or abandoned: what ejects a backend.",
			queries: []query{{ref: "A", legend: "{{flowplace_service_name}} → {{flowplace_peer_cluster_name}}",
				expr: `sum by (flowplace_service_name, flowplace_peer_cluster_name) (rate(flowplace_routing_connect_failures_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Ejections", unit: "ops", w: 12, h: 8,
			desc: "Backends ejected by passive health per second, by destination cluster.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}} → {{flowplace_peer_cluster_name}}",
				expr: `sum by (k8s_cluster_name, flowplace_peer_cluster_name) (rate(flowplace_routing_ejections_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(timeSeries(panel{
			title: "Failovers to any backend", unit: "cps", w: 12, h: 8,
			desc: "Connects made while every backend of the service was ejected.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}: {{flowplace_service_name}}",
				expr: `sum by (k8s_cluster_name, flowplace_service_name) (rate(flowplace_routing_fallbacks_total{k8s_cluster_name=~"$cluster"}[$__rate_interval]))`}},
		})).
		WithPanel(statPanel(panel{
			title: "Services routed", w: 12, h: 8,
			desc: "Multi-cluster services each cluster's agents route now.",
			queries: []query{{ref: "A", legend: "{{k8s_cluster_name}}",
				expr: `sum by (k8s_cluster_name) (flowplace_routing_services{k8s_cluster_name=~"$cluster"})`}},
		}))
}
