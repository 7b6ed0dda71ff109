// Package aggregate turns OTLP export requests into decayed aggregates: RTT
// histograms per (source, destination) cluster and traffic rates per
// (workload, peer, cluster pair). It has no Kubernetes or gRPC dependency, so
// that it can be fuzzed and benchmarked on its own; the estimator package
// serves it over gRPC and publishes its snapshots.
package aggregate

// The agents' metric and attribute names, as in telemetry/names.go. They are
// repeated here, rather than imported, because the telemetry package pulls
// in the OTel SDK and its exporters, which would make this package heavy to
// fuzz; estimator's TestNamesMatchTelemetry keeps the two in step.
const (
	MetricRTT         = "flowplace.tcp.rtt"
	MetricBytes       = "flowplace.tcp.bytes"
	MetricConnections = "flowplace.tcp.connections"
	UnitBytes         = "By"

	AttrClusterUID       = "k8s.cluster.uid"
	AttrRole             = "flowplace.connection.role"
	AttrNamespace        = "k8s.namespace.name"
	AttrWorkloadKind     = "flowplace.workload.kind"
	AttrWorkloadName     = "flowplace.workload.name"
	AttrServiceNamespace = "flowplace.service.namespace"
	AttrServiceName      = "flowplace.service.name"
	AttrPeerClusterUID   = "flowplace.peer.cluster.uid"
	AttrPeerClusterName  = "flowplace.peer.cluster.name"
	AttrPeerNamespace    = "flowplace.peer.namespace"
	AttrPeerWorkloadKind = "flowplace.peer.workload.kind"
	AttrPeerWorkloadName = "flowplace.peer.workload.name"
	AttrDirection        = "network.io.direction"

	RoleClient = "client"
	RoleServer = "server"
)
