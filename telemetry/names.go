// Package telemetry holds flowplace's OpenTelemetry metrics: every metric
// name, unit and attribute key of every component (this file: the agents',
// the estimator's and the scheduler plugins'; the dashboards in
// charts/flowplace/dashboards query these and a test fails when one is
// renamed without them), the meter provider with its OTLP and Prometheus
// exporters, and the Recorder that turns attributed flow deltas into
// measurements.
package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
)

// Instrumentation scopes, one per component.
const (
	// ScopeName is the agent's.
	ScopeName = "github.com/flowplace/flowplace/agent"
	// ScopeEstimator is the estimator's (its own health and the model it
	// publishes).
	ScopeEstimator = "github.com/flowplace/flowplace/estimator"
	// ScopeScheduler is the scheduler plugins'.
	ScopeScheduler = "github.com/flowplace/flowplace/scheduler-plugin"
)

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
	// MetricOTLPExports: OTLP export requests by AttrExportOutcome.
	MetricOTLPExports = "flowplace.agent.otlp.exports"
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

	// The estimator's health.
	MetricPointsIngested     = "flowplace.estimator.points.ingested"
	MetricPointsRejected     = "flowplace.estimator.points.rejected"
	MetricPointsUnattributed = "flowplace.estimator.points.unattributed"
	MetricRequestsMalformed  = "flowplace.estimator.requests.malformed"
	MetricRequestsUnbound    = "flowplace.estimator.requests.unbound"
	MetricSeriesActive       = "flowplace.estimator.series.active"
	MetricFlowsActive        = "flowplace.estimator.flows.active"
	MetricObjectsWritten     = "flowplace.estimator.objects.written"
	MetricWriteDuration      = "flowplace.estimator.write.duration"
	MetricLeader             = "flowplace.estimator.leader"

	// The model the estimator's leader published in its last round (only
	// the leader exports these, so a fleet has one copy). Series bounds:
	// clusters^2 x 3 for RTT, clusters^2 for cluster traffic, clusters for
	// data age, and ModelWorkloadPairs (+1 overflow series) for workload
	// traffic.
	//
	// MetricClusterRTT: RTT from k8s.cluster.name (source) to
	// AttrPeerClusterName, by AttrRTTQuantile (0.5, 0.9, 0.99) and
	// AttrRTTEstimated (true: from network coordinates, not measured):
	// ClusterLatency status.peers.
	MetricClusterRTT = "flowplace.estimator.cluster.rtt"
	// MetricClusterTraffic: bytes/s from workloads in k8s.cluster.name to
	// the peers they call in AttrPeerClusterName, summed over workloads
	// (the callers' view, so each connection counts once); AttrCrossCluster
	// tells the pairs of two clusters apart (PromQL cannot compare labels).
	MetricClusterTraffic = "flowplace.estimator.cluster.traffic"
	// MetricWorkloadTraffic: bytes/s from one workload (k8s.namespace.name,
	// AttrWorkloadKind, AttrWorkloadName) to one peer (AttrPeer* workload,
	// AttrService* service), over all cluster pairs; the
	// ModelWorkloadPairs heaviest pairs, the rest summed in one series
	// marked AttrOverflow.
	MetricWorkloadTraffic = "flowplace.estimator.workload.traffic"
	// MetricWorkloadCrossClusterTraffic: the part of MetricWorkloadTraffic
	// between different clusters, same series.
	MetricWorkloadCrossClusterTraffic = "flowplace.estimator.workload.cross_cluster_traffic"
	// MetricDataAge: seconds since an agent of k8s.cluster.name last
	// reported an RTT sample (its ClusterLatency's newest lastSampleTime).
	MetricDataAge = "flowplace.estimator.data.age"
	// MetricObjectsPublished: ClusterLatency and WorkloadTraffic objects
	// in the API, by AttrObjectKind and AttrObjectState (fresh, stale:
	// validUntil passed, which the plugins treat as missing).
	MetricObjectsPublished = "flowplace.estimator.objects.published"

	// The scheduler plugins' decisions, counted once per scheduling
	// attempt of a binding (not per Filter or Score call, which keeps the
	// plugins' hot path free of metric updates).
	//
	// MetricSchedulerAttempts: attempts by AttrSchedulerOutcome (costed:
	// TrafficLocality priced at least one cluster; neutral: it had no data
	// for any; excluded: LatencyBudget excluded every cluster it saw).
	MetricSchedulerAttempts = "flowplace.scheduler.attempts"
	// MetricSchedulerExclusions: clusters LatencyBudget excluded, by
	// k8s.cluster.name and AttrSchedulerReason.
	MetricSchedulerExclusions = "flowplace.scheduler.exclusions"
	// MetricSchedulerNeutral: clusters TrafficLocality scored neutral (no
	// data to judge), by AttrSchedulerReason.
	MetricSchedulerNeutral = "flowplace.scheduler.neutral"
	// MetricSchedulerPreferred: attempts by the cluster TrafficLocality
	// ranked first (lowest expected cost), k8s.cluster.name. Karmada
	// picks among the top clusters with its other plugins too.
	MetricSchedulerPreferred = "flowplace.scheduler.preferred"
	// MetricSchedulerCostSpread: highest over lowest expected cost among
	// the clusters priced in one attempt: how much the choice mattered.
	MetricSchedulerCostSpread = "flowplace.scheduler.cost.spread"

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
	UnitBytesPerSec = "By/s"
	UnitObjects     = "{object}"
	UnitExports     = "{export}"
	UnitAttempts    = "{attempt}"
	UnitClusters    = "{cluster}"
	UnitRatio       = "1"
)

// ModelSeriesLimit is the estimator's default limit of series per
// instrument: the model of 100 fully meshed clusters (3 x 100^2 RTT series,
// the largest instrument) and its workload pairs, with room. Beyond it the
// SDK folds series into one marked AttrOverflow.
const ModelSeriesLimit = 50_000

// ModelWorkloadPairs is the default bound on the workload pairs the
// estimator exports (MetricWorkloadTraffic), heaviest first. 1,000 pairs
// cover the pairs that carry most bytes in any application the placement
// benchmark generates, at two series each; the published WorkloadTraffic
// objects keep every pair.
const ModelWorkloadPairs = 1000

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
	// The estimator's model metrics.
	AttrRTTQuantile  = attribute.Key("flowplace.rtt.quantile")
	AttrRTTEstimated = attribute.Key("flowplace.rtt.estimated")
	AttrCrossCluster = attribute.Key("flowplace.cross_cluster")
	AttrObjectKind   = attribute.Key("flowplace.object.kind")
	AttrObjectState  = attribute.Key("flowplace.object.state")
	// The estimator's health metrics.
	AttrRejectReason   = attribute.Key("flowplace.reject.reason")
	AttrWriteOperation = attribute.Key("flowplace.write.operation") // create | update_status
	AttrWriteOutcome   = attribute.Key("flowplace.write.outcome")   // ok | conflict | error
	// AttrExportOutcome: ok or error.
	AttrExportOutcome = attribute.Key("flowplace.export.outcome")
	// The scheduler plugins' decisions.
	AttrSchedulerOutcome = attribute.Key("flowplace.scheduler.outcome")
	AttrSchedulerReason  = attribute.Key("flowplace.scheduler.reason")
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
