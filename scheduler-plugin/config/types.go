// Package config is the flowplace scheduler's profile configuration file: a
// KubeSchedulerConfiguration-style document with profiles, plugins
// enabled/disabled per extension point and pluginConfig[{name, args}],
// reusing k8s.io/kube-scheduler/config/v1's Plugins and PluginConfig types,
// plus versioned, defaulted and validated arguments for flowplace's plugins.
//
// Karmada's plugin factories take no arguments, so the plugins read this
// file themselves (see Load); every error names the offending field.
package config

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
)

const (
	// GroupName is the API group of this configuration file's kinds.
	GroupName = "scheduler.flowplace.io"
	// Version is the only served version.
	Version = "v1alpha1"
	// APIVersion is GroupName/Version.
	APIVersion = GroupName + "/" + Version
	// Kind of the top-level document.
	Kind = "SchedulerConfiguration"

	// Plugin names, as Karmada registers them (also the args kinds minus
	// the "Args" suffix).
	LatencyBudgetName   = "LatencyBudget"
	TrafficLocalityName = "TrafficLocality"
)

// SchedulerConfiguration is the document read from the file.
type SchedulerConfiguration struct {
	metav1.TypeMeta `json:",inline"`

	// ClientConnection says how the plugins reach the Karmada API server for
	// their informers. An empty kubeconfig means $KUBECONFIG, then
	// in-cluster configuration.
	ClientConnection componentbaseconfigv1alpha1.ClientConnectionConfiguration `json:"clientConnection,omitempty"`

	// Model tunes how the plugins read the estimator's objects.
	Model ModelConfiguration `json:"model,omitempty"`

	// RecordEvents writes one Event per scheduling attempt on the
	// ResourceBinding (reason FlowplacePlacement) with the clusters the
	// LatencyBudget filter excluded and why, and each cluster's expected
	// cost from TrafficLocality. Default true.
	RecordEvents *bool `json:"recordEvents,omitempty"`

	// Profiles are per scheduler name; the scheduler uses the one whose
	// schedulerName equals its --scheduler-name (or the only one).
	Profiles []Profile `json:"profiles"`
}

// ModelConfiguration is shared by both plugins (they read one model).
type ModelConfiguration struct {
	// MinSamples: cluster pairs with fewer RTT samples are treated as
	// unmeasured. Default 10.
	MinSamples *int64 `json:"minSamples,omitempty"`
	// WorkloadResources are the resource templates whose annotations are
	// watched for flowplace.io/latency-budget (metadata only). Default:
	// apps/v1 Deployments and StatefulSets.
	WorkloadResources []WorkloadResource `json:"workloadResources,omitempty"`
	// RebuildInterval bounds how often the in-memory model is rebuilt after
	// API changes (events in between are coalesced). Default 1s.
	RebuildInterval *metav1.Duration `json:"rebuildInterval,omitempty"`
	// CapacityPlan plans, at each rebuild, where workloads that are not
	// placed yet would best run given every cluster's free CPU (Cluster
	// status.resourceSummary) and every workload's CPU request
	// (ResourceBinding replicas x replicaRequirements). TrafficLocality
	// then counts traffic to unplaced peers at their planned cluster and
	// charges a workload for capacity the plan gave to heavier traffic.
	// Default true.
	CapacityPlan *bool `json:"capacityPlan,omitempty"`
}

// WorkloadResource names a resource template type ("" group is core). Kind
// is needed because bindings are named "<name>-<kind>" and metadata-only
// watches do not return the kind.
type WorkloadResource struct {
	Group    string `json:"group"`
	Version  string `json:"version"`
	Resource string `json:"resource"`
	Kind     string `json:"kind"`
}

// Profile is one scheduler profile.
type Profile struct {
	// SchedulerName matches karmada-scheduler's --scheduler-name and the
	// PropagationPolicy's spec.schedulerName.
	SchedulerName string `json:"schedulerName"`
	// Plugins enables or disables flowplace's plugins. Only the filter,
	// score and multiPoint sets are meaningful to Karmada; both plugins are
	// enabled unless disabled here (Karmada's --plugins flag can also
	// disable them).
	Plugins *schedconfigv1.Plugins `json:"plugins,omitempty"`
	// PluginConfig carries LatencyBudgetArgs and TrafficLocalityArgs.
	PluginConfig []schedconfigv1.PluginConfig `json:"pluginConfig,omitempty"`
}

// LatencyBudgetArgs configure the LatencyBudget filter.
type LatencyBudgetArgs struct {
	metav1.TypeMeta `json:",inline"`

	// DefaultBudget applies to workloads without the
	// flowplace.io/latency-budget annotation; 0 means no budget (the filter
	// passes them). Default 0.
	DefaultBudget *metav1.Duration `json:"defaultBudget,omitempty"`
	// Strict makes missing or stale data exclude the cluster instead of
	// passing it ("fail closed"). Default false.
	Strict *bool `json:"strict,omitempty"`
	// RTTQuantile compared with the budget: min, p50, p90 or p99. Default p90.
	RTTQuantile *string `json:"rttQuantile,omitempty"`
	// RequiredPeerTrafficPercent: a peer (or client cluster) carrying at
	// least this share of the workload's peer (client) traffic must be
	// within budget. 0 makes every peer required. Default 10.
	RequiredPeerTrafficPercent *int32 `json:"requiredPeerTrafficPercent,omitempty"`
}

// TrafficLocalityArgs configure the TrafficLocality score.
type TrafficLocalityArgs struct {
	metav1.TypeMeta `json:",inline"`

	// RTTQuantile used for the expected cost: min, p50, p90 or p99.
	// Default p50 (the cost is an expectation).
	RTTQuantile *string `json:"rttQuantile,omitempty"`
	// CostFloor, in bytes/s x ms, is the expected cost below which
	// differences do not matter: score = 100 * (min + floor) / (cost +
	// floor). Default 1000000 (1 MB/s across 1 ms, or 10 kB/s across
	// 100 ms, halves the score of the worse cluster).
	CostFloor *int64 `json:"costFloor,omitempty"`
	// Egress adds a per-byte price between providers/regions.
	Egress *EgressConfiguration `json:"egress,omitempty"`
}

// EgressConfiguration prices bytes that leave a region or provider.
type EgressConfiguration struct {
	// MillisecondsPerCostUnit converts a price into the score's unit: a
	// price of 1 per GiB weighs as much as this many milliseconds of RTT on
	// every byte. Required (> 0) when rules are given.
	MillisecondsPerCostUnit float64 `json:"millisecondsPerCostUnit"`
	// Rules are matched in order against (source cluster, destination
	// cluster) provider and region; the first match gives the price; empty
	// fields match anything; no match costs 0. Traffic inside one cluster
	// is never priced.
	Rules []EgressRule `json:"rules,omitempty"`
}

// EgressRule is one price.
type EgressRule struct {
	FromProvider string `json:"fromProvider,omitempty"`
	FromRegion   string `json:"fromRegion,omitempty"`
	ToProvider   string `json:"toProvider,omitempty"`
	ToRegion     string `json:"toRegion,omitempty"`
	// SameRegion restricts the rule to pairs in the same region (true) or
	// different regions (false); unset matches both.
	SameRegion *bool `json:"sameRegion,omitempty"`
	// CostPerGiB is the price (any currency, consistently).
	CostPerGiB float64 `json:"costPerGiB"`
}
