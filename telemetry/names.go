// Package telemetry holds flowplace's OpenTelemetry metrics: every metric
// name, unit and attribute key (this file), the meter provider with its OTLP
// and Prometheus exporters, and the Recorder that turns attributed flow
// deltas into measurements.
package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// ScopeName is the instrumentation scope of the agent's metrics.
const ScopeName = "github.com/flowplace/flowplace/agent"

// Metric names and units. Names follow OTel conventions (dot-separated,
// unit not in the name); Prometheus renders them as e.g.
// flowplace_tcp_bytes_total and flowplace_tcp_rtt_seconds.
const (
	// MetricRTT: smoothed TCP RTT samples, seconds (exponential histogram).
	MetricRTT = "flowplace.tcp.rtt"
	// MetricBytes: payload bytes, by network.io.direction.
	MetricBytes = "flowplace.tcp.bytes"
	// MetricConnections: connections established.
	MetricConnections = "flowplace.tcp.connections"
	// MetricConnectionsActive: connections open now.
	MetricConnectionsActive = "flowplace.tcp.connections.active"
	// MetricRetransmits: retransmitted segments.
	MetricRetransmits = "flowplace.tcp.retransmits"
	// MetricSeriesOverflow: flow updates folded into the overflow series
	// because the series limit was reached.
	MetricSeriesOverflow = "flowplace.agent.series.overflow"
	// MetricDatapathEvictions: kernel flow-table entries evicted (LRU).
	MetricDatapathEvictions = "flowplace.datapath.flows.evicted"
	// MetricDatapathFlows: kernel flow-table entries in use.
	MetricDatapathFlows = "flowplace.datapath.flows"

	// MetricRoutingConnections: connects that routing sent to a backend,
	// by service, tier (AttrRoutingTier: "0" is the local cluster, then
	// the others by RTT; "fallback" when every backend was ejected) and
	// destination cluster (AttrPeerClusterName). Bounded by routed
	// services x clusters x (8 tiers + fallback).
	MetricRoutingConnections = "flowplace.routing.connections"
	// MetricRoutingConnectFailures: routed connects that failed (SYN
	// unanswered for one retransmission timeout, reset, abandoned), same
	// attributes: what ejects a backend.
	MetricRoutingConnectFailures = "flowplace.routing.connect.failures"
	// MetricRoutingEjections: backends ejected by passive health, by
	// destination cluster.
	MetricRoutingEjections = "flowplace.routing.ejections"
	// MetricRoutingFallbacks: connects made while every backend of the
	// service was ejected (routed to any backend rather than nowhere), by
	// service.
	MetricRoutingFallbacks = "flowplace.routing.fallbacks"
	// MetricRoutingServices: services routed now.
	MetricRoutingServices = "flowplace.routing.services"

	// MetricRebalanceAdvice: the estimator's rebalance advisor's verdicts
	// on planned moves, one per workload, by AttrRebalanceOutcome
	// (dry_run, requested, below_noise, cooldown, cap, group_over_cap,
	// capacity, not_member, error). Bounded by the outcomes.
	MetricRebalanceAdvice = "flowplace.estimator.rebalance.advice"
	// MetricRebalanceSkipped: running workloads the advisor could not
	// consider for a move, per round, by AttrRebalanceReason (no_resource,
	// unknown_cluster, no_traffic, divided, other_scheduler, unbound).
	MetricRebalanceSkipped = "flowplace.estimator.rebalance.skipped"
	// MetricRebalancePending: workloads whose advice is accumulating
	// saving (ski rental) after the last round.
	MetricRebalancePending = "flowplace.estimator.rebalance.pending"
	// MetricRebalanceSaving: expected saving rate of the moves advised
	// (dry run) or requested, bytes/s x ms.
	MetricRebalanceSaving = "flowplace.estimator.rebalance.saving"

	UnitSeconds     = "s"
	UnitBytes       = "By"
	UnitConnections = "{connection}"
	UnitSegments    = "{segment}"
	UnitUpdates     = "{update}"
	UnitFlows       = "{flow}"
	UnitEjections   = "{ejection}"
	UnitServices    = "{service}"
	UnitWorkloads   = "{workload}"
	UnitByteMs      = "{By/s.ms}"
)

// Resource attributes: who reports. Karmada's Cluster.spec.id is the member's
// kube-system namespace UID, which is what k8s.cluster.uid carries.
var (
	AttrClusterUID  = semconv.K8SClusterUIDKey
	AttrClusterName = semconv.K8SClusterNameKey
	AttrNodeName    = semconv.K8SNodeNameKey
)

// Data point attributes. "Local" is the workload whose socket the probe saw;
// "peer" is the other end; "service" is the address the traffic was sent to
// (for a client, the service it dialed; for a server, the service it serves).
var (
	AttrRole             = attribute.Key("flowplace.connection.role") // client | server
	AttrNamespace        = semconv.K8SNamespaceNameKey                // local workload's namespace
	AttrWorkloadKind     = attribute.Key("flowplace.workload.kind")
	AttrWorkloadName     = attribute.Key("flowplace.workload.name")
	AttrServiceNamespace = attribute.Key("flowplace.service.namespace")
	AttrServiceName      = attribute.Key("flowplace.service.name")
	AttrServerPort       = semconv.ServerPortKey
	AttrPeerClusterUID   = attribute.Key("flowplace.peer.cluster.uid")
	AttrPeerClusterName  = attribute.Key("flowplace.peer.cluster.name")
	AttrPeerNamespace    = attribute.Key("flowplace.peer.namespace")
	AttrPeerWorkloadKind = attribute.Key("flowplace.peer.workload.kind")
	AttrPeerWorkloadName = attribute.Key("flowplace.peer.workload.name")
	AttrDirection        = semconv.NetworkIODirectionKey // transmit | receive
	// AttrRoutingTier is the tier a routed connect was served from.
	AttrRoutingTier = attribute.Key("flowplace.routing.tier")
	// AttrRebalanceOutcome and AttrRebalanceReason qualify the rebalance
	// advisor's metrics.
	AttrRebalanceOutcome = attribute.Key("flowplace.rebalance.outcome")
	AttrRebalanceReason  = attribute.Key("flowplace.rebalance.reason")
	// AttrOverflow marks the series that absorbs updates beyond the
	// series limit (the OTel SDK's own convention).
	AttrOverflow = attribute.Key("otel.metric.overflow")
)

// Roles and directions as attribute values.
const (
	RoleClient = "client"
	RoleServer = "server"
)

var (
	directionTransmit = AttrDirection.String("transmit")
	directionReceive  = AttrDirection.String("receive")
)
