// Package attribution says what the addresses in a flow are: which workload
// owns a local socket, which service a dialed address belongs to, and which
// workload and cluster run at a remote address. Resolvers answer from
// in-memory state only (a topology file, or informer caches), so that
// attributing a flow never waits on the network.
package attribution

import "net/netip"

// Cluster identifies a cluster the way Karmada does: UID is the member's
// kube-system namespace UID (Cluster.spec.id), Name the Karmada cluster name.
// Either may be empty when unknown.
type Cluster struct {
	UID  string
	Name string
}

// Workload is the owner of a set of pods: Deployment, StatefulSet,
// DaemonSet, Job, CronJob, or a bare Pod.
type Workload struct {
	Namespace string
	Kind      string
	Name      string
}

// Service is a service clients address by name or address.
type Service struct {
	Namespace string
	Name      string
}

// Endpoint is what runs at an address.
type Endpoint struct {
	Cluster  Cluster
	Workload Workload
	Service  Service // the service this endpoint backs, if any
}

// Resolver answers attribution questions from memory.
type Resolver interface {
	// Self is the cluster the agent runs in.
	Self() Cluster
	// Local returns the workload owning a local socket bound to addr in
	// cgroup cgroupID (for host-network pods the address is the node's).
	Local(addr netip.Addr, cgroupID uint64) (Workload, bool)
	// Service returns the service reached at a dialed address and port: a
	// service VIP, or an endpoint address of a service.
	Service(dialed netip.AddrPort) (Service, bool)
	// Endpoint returns what runs at a remote address.
	Endpoint(addr netip.AddrPort) (Endpoint, bool)
	// Generation changes whenever answers may have changed, so callers
	// can cache answers until it does.
	Generation() uint64
	// TranslatedServices lists service addresses that are translated
	// outside the socket (kube-proxy ClusterIPs): their real backends are
	// found in conntrack.
	TranslatedServices() []netip.AddrPort
}
