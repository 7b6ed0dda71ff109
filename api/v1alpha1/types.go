package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Units and bounds shared by both kinds. Numbers are integers with the unit in
// the field name: CRD schemas have no fixed-point type, and floats compare
// and round differently across languages and JSON decoders.
const (
	// MaxRTTMicroseconds bounds every RTT field (60 s). Larger smoothed RTTs
	// mean a broken path, not a distance, and the estimator clamps to it.
	MaxRTTMicroseconds = 60_000_000
	// MaxPeerClusters bounds ClusterLatency status.peers.
	MaxPeerClusters = 1000
	// MaxPeers bounds WorkloadTraffic status.peers; the estimator keeps the
	// peers with the most traffic.
	MaxPeers = 256
	// MaxClusterPairs bounds the cluster pairs per peer and the client
	// entries of a WorkloadTraffic.
	MaxClusterPairs = 1024
)

// ClusterLatency is the measured TCP round-trip time from one source cluster
// to each peer cluster, as seen by the flowplace agents in the source
// cluster's nodes. It is cluster-scoped and named after the source cluster's
// Karmada Cluster object.
//
// +genclient
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cl,categories=flowplace
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Cluster-ID",type=string,JSONPath=`.spec.clusterID`
// +kubebuilder:printcolumn:name="Samples",type=integer,JSONPath=`.status.sampleCount`
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.lastUpdateTime`
// +kubebuilder:printcolumn:name="Valid-Until",type=string,JSONPath=`.status.validUntil`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ClusterLatency struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec ClusterLatencySpec `json:"spec"`
	// +optional
	Status ClusterLatencyStatus `json:"status,omitempty"`
}

// ClusterLatencySpec identifies the source cluster.
type ClusterLatencySpec struct {
	// ClusterID is the source cluster's Karmada Cluster spec.id (the UID of
	// the member's kube-system namespace), which the agents report as
	// k8s.cluster.uid. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.clusterID is immutable"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	ClusterID string `json:"clusterID"`
}

// ClusterLatencyStatus is the latency matrix row of the source cluster.
type ClusterLatencyStatus struct {
	Freshness `json:",inline"`

	// Peers holds one entry per destination cluster with RTT samples in the
	// window, including the source cluster itself (intra-cluster RTT).
	// +optional
	// +listType=map
	// +listMapKey=cluster
	// +kubebuilder:validation:MaxItems=1000
	Peers []PeerLatency `json:"peers,omitempty"`
}

// Freshness says how much data an object rests on and how long it may be
// trusted. Readers treat an object whose validUntil has passed as missing.
type Freshness struct {
	// ValidUntil is when this data becomes stale. The estimator extends it
	// while it keeps receiving data, so a stopped estimator or silent agents
	// make the object stale rather than wrong.
	// +required
	ValidUntil metav1.Time `json:"validUntil"`
	// LastUpdateTime is when the estimator last computed these values.
	// +required
	LastUpdateTime metav1.Time `json:"lastUpdateTime"`
	// WindowSeconds is the time constant of the estimator's exponentially
	// decaying window: samples that old weigh 1/e of fresh ones.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=86400
	WindowSeconds int32 `json:"windowSeconds"`
	// SampleCount is the number of RTT samples (decayed, rounded down) in the
	// window over all entries.
	// +required
	// +kubebuilder:validation:Minimum=0
	SampleCount int64 `json:"sampleCount"`
}

// PeerLatency is the RTT distribution from the source cluster to one
// destination cluster: the merged histogram of every connection from any node
// of the source to any endpoint in the destination, client side.
//
// An entry with estimated: true was not measured in either direction: the
// estimator derived it from network coordinates fitted to the measured pairs
// (package estimator/coordinates), with an expected error. Its sampleCount is
// 0, p50 = p90 = p99 = the estimate and min = max(0, estimate - expected
// error). Readers use an estimate only where nothing measured exists, either
// direction included.
//
// +kubebuilder:validation:XValidation:rule="self.minMicroseconds <= self.p50Microseconds && self.p50Microseconds <= self.p90Microseconds && self.p90Microseconds <= self.p99Microseconds",message="RTT quantiles must satisfy min <= p50 <= p90 <= p99"
// +kubebuilder:validation:XValidation:rule="(has(self.estimated) && self.estimated) == (self.sampleCount == 0)",message="sampleCount must be 0 on an estimated entry and at least 1 on a measured one"
// +kubebuilder:validation:XValidation:rule="(has(self.estimated) && self.estimated) == has(self.expectedErrorMicroseconds)",message="expectedErrorMicroseconds is set on estimated entries and only on them"
type PeerLatency struct {
	// Cluster is the destination's Karmada cluster name.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Cluster string `json:"cluster"`
	// MinMicroseconds is the lowest RTT observed in the window (lower bound
	// of its histogram bucket).
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=60000000
	MinMicroseconds int64 `json:"minMicroseconds"`
	// P50Microseconds is the median RTT.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=60000000
	P50Microseconds int64 `json:"p50Microseconds"`
	// P90Microseconds is the 90th percentile RTT.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=60000000
	P90Microseconds int64 `json:"p90Microseconds"`
	// P99Microseconds is the 99th percentile RTT.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=60000000
	P99Microseconds int64 `json:"p99Microseconds"`
	// SampleCount is the number of RTT samples behind these quantiles
	// (decayed, rounded down; at least 1), and 0 on an estimated entry.
	// +required
	// +kubebuilder:validation:Minimum=0
	SampleCount int64 `json:"sampleCount"`
	// LastSampleTime is when an agent last reported a sample for this pair;
	// on an estimated entry, the newest sample of a measured pair of either
	// endpoint.
	// +required
	LastSampleTime metav1.Time `json:"lastSampleTime"`
	// Estimated marks an entry that no agent measured (in either direction):
	// its quantiles are the estimator's estimate from network coordinates.
	// +optional
	Estimated bool `json:"estimated,omitempty"`
	// ExpectedErrorMicroseconds is the standard error of an estimated
	// entry's RTT: what a measurement of the pair is expected to differ from
	// the estimate by (one standard deviation, at least the quantile
	// resolution of a measured entry). Set on estimated entries only.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=60000000
	ExpectedErrorMicroseconds int64 `json:"expectedErrorMicroseconds,omitempty"`
}

// +kubebuilder:object:root=true

// ClusterLatencyList is a list of ClusterLatency.
type ClusterLatencyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ClusterLatency `json:"items"`
}

// WorkloadTraffic is the traffic of one workload (a Karmada resource
// template): to the workloads and services it calls, and from the clusters
// its clients run in, broken down by cluster pair. It lives in the workload's
// namespace and is named like Karmada's ResourceBinding for the workload,
// "<name>-<kind>" in lower case.
//
// +genclient
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=wt,categories=flowplace
// +kubebuilder:subresource:status
// +kubebuilder:validation:XValidation:rule="self.metadata.name == self.spec.workload.name.lowerAscii() + '-' + self.spec.workload.kind.lowerAscii()",message="metadata.name must be <workload name>-<workload kind> in lower case, like the workload's ResourceBinding"
// +kubebuilder:printcolumn:name="Kind",type=string,JSONPath=`.spec.workload.kind`
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.spec.workload.name`
// +kubebuilder:printcolumn:name="Samples",type=integer,JSONPath=`.status.sampleCount`
// +kubebuilder:printcolumn:name="Updated",type=date,JSONPath=`.status.lastUpdateTime`
// +kubebuilder:printcolumn:name="Valid-Until",type=string,JSONPath=`.status.validUntil`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type WorkloadTraffic struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec WorkloadTrafficSpec `json:"spec"`
	// +optional
	Status WorkloadTrafficStatus `json:"status,omitempty"`
}

// WorkloadTrafficSpec names the workload.
type WorkloadTrafficSpec struct {
	// Workload is the resource template, as in the ResourceBinding's
	// spec.resource; its namespace is the object's namespace. Immutable.
	// +required
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="spec.workload is immutable"
	Workload WorkloadReference `json:"workload"`
}

// WorkloadReference names a resource template in the object's namespace.
type WorkloadReference struct {
	// APIVersion of the resource template, e.g. apps/v1.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=317
	APIVersion string `json:"apiVersion"`
	// Kind of the resource template, e.g. Deployment.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9]*$`
	Kind string `json:"kind"`
	// Name of the resource template.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// WorkloadTrafficStatus is the workload's row of the traffic graph.
type WorkloadTrafficStatus struct {
	Freshness `json:",inline"`

	// Peers are what this workload calls (it is the client), most bytes
	// first; at most 256 are kept.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Peers []PeerTraffic `json:"peers,omitempty"`
	// Clients are the clusters whose clients call this workload (it is the
	// server), by client cluster and the cluster of the replica that served.
	// +optional
	// +listType=map
	// +listMapKey=clientCluster
	// +listMapKey=servingCluster
	// +kubebuilder:validation:MaxItems=1024
	Clients []ClientTraffic `json:"clients,omitempty"`
}

// PeerTraffic is the traffic from this workload to one peer: a workload, a
// service, or a workload reached through a service.
//
// +kubebuilder:validation:XValidation:rule="has(self.workload) || has(self.service)",message="a peer names a workload, a service or both"
type PeerTraffic struct {
	// Workload is the peer workload (the owner of the pods that answered),
	// when the agents could attribute it.
	// +optional
	Workload *PeerWorkloadReference `json:"workload,omitempty"`
	// Service is the service this workload dialed, when it dialed one.
	// +optional
	Service *ServiceReference `json:"service,omitempty"`
	// BytesPerSecond is the sum over Clusters.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000000000000
	BytesPerSecond int64 `json:"bytesPerSecond"`
	// Clusters breaks the traffic down by (cluster of this workload's
	// replica, cluster of the peer's replica).
	// +required
	// +listType=map
	// +listMapKey=sourceCluster
	// +listMapKey=destinationCluster
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1024
	Clusters []ClusterPairTraffic `json:"clusters"`
}

// PeerWorkloadReference names a workload in any namespace. The API version
// is set when the estimator found the peer's ResourceBinding.
type PeerWorkloadReference struct {
	// +optional
	// +kubebuilder:validation:MaxLength=317
	APIVersion string `json:"apiVersion,omitempty"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[A-Za-z][A-Za-z0-9]*$`
	Kind string `json:"kind"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// ServiceReference names a Service.
type ServiceReference struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`
}

// TrafficRates are the rates of one cluster pair over the window.
type TrafficRates struct {
	// BytesPerSecond is payload bytes in both directions.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10000000000000
	BytesPerSecond int64 `json:"bytesPerSecond"`
	// MilliConnectionsPerSecond is new connections per 1000 s (1000 = one
	// connection per second).
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000000
	MilliConnectionsPerSecond int64 `json:"milliConnectionsPerSecond"`
	// RTTP50Microseconds is the median RTT of these connections; 0 when
	// SampleCount is 0.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=60000000
	RTTP50Microseconds int64 `json:"rttP50Microseconds,omitempty"`
	// SampleCount is the number of RTT samples behind RTTP50Microseconds
	// (decayed, rounded down).
	// +required
	// +kubebuilder:validation:Minimum=0
	SampleCount int64 `json:"sampleCount"`
}

// ClusterPairTraffic is traffic between a replica of this workload in
// SourceCluster and a replica of the peer in DestinationCluster.
type ClusterPairTraffic struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	SourceCluster string `json:"sourceCluster"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	DestinationCluster string `json:"destinationCluster"`

	TrafficRates `json:",inline"`
}

// ClientTraffic is traffic from clients in ClientCluster served by this
// workload's replicas in ServingCluster, measured on the server side.
type ClientTraffic struct {
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ClientCluster string `json:"clientCluster"`
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	ServingCluster string `json:"servingCluster"`

	TrafficRates `json:",inline"`
}

// +kubebuilder:object:root=true

// WorkloadTrafficList is a list of WorkloadTraffic.
type WorkloadTrafficList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadTraffic `json:"items"`
}
