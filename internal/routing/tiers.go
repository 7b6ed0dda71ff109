package routing

import (
	"net/netip"
	"slices"
)

// Endpoint is one address of an EndpointSlice, with its conditions.
type Endpoint struct {
	Addr netip.Addr
	// Ready, Serving and Terminating are the EndpointSlice conditions; an
	// unset ready or serving condition counts as true, as the API says.
	Ready, Serving, Terminating bool
}

// Port is a named TCP port of a Service or an EndpointSlice.
type Port struct {
	Name string
	Port uint16
}

// Slice is what routing needs of one EndpointSlice.
type Slice struct {
	Name string
	// Cluster provides the endpoints: this cluster for local slices, the
	// provision-cluster of slices Karmada dispatched.
	Cluster   string
	IPv6      bool
	Ports     []Port // TCP only
	Endpoints []Endpoint
}

// ServiceView is a routed service and everything its tables come from.
type ServiceView struct {
	Namespace, Name string
	Policy          Policy
	IPs             []netip.Addr // ClusterIPs
	Ports           []Port       // TCP only
	Slices          []Slice
}

// Target is a backend and its cluster.
type Target struct {
	Addr    netip.AddrPort
	Cluster string
}

// Table is the tiers of one service address.
type Table struct {
	VIP   netip.AddrPort
	Tiers [][]Target
}

// maxTiers is redirect.MaxTiers: further clusters share the last tier.
const maxTiers = 8

// Clusters lists the other clusters that have ready endpoints for v.
func Clusters(v *ServiceView, self string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range v.Slices {
		if s.Cluster == self || seen[s.Cluster] {
			continue
		}
		for _, e := range s.Endpoints {
			if e.Ready && !e.Terminating {
				seen[s.Cluster] = true
				out = append(out, s.Cluster)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// Build computes the tables of every address of v: tier 0 is self's ready
// endpoints, then those of the clusters in order. Ejected backends are left
// out unless that leaves none. With fewer than MinLocalEndpoints healthy
// local endpoints (but some), the first other cluster's join tier 0. With
// no ready endpoint anywhere, serving terminating endpoints are used, as
// kube-proxy does. A service address with no endpoint at all gets no
// table.
func Build(v *ServiceView, self string, order []string, ejected func(netip.AddrPort) bool) []Table {
	var out []Table
	for _, ip := range v.IPs {
		for _, sp := range v.Ports {
			t := Table{VIP: netip.AddrPortFrom(ip, sp.Port)}
			ready, spare := targets(v, ip.Is6(), sp.Name)
			tiers := [][]Target{ready[self]}
			for _, c := range order {
				if c != self && len(ready[c]) > 0 {
					tiers = append(tiers, ready[c])
				}
			}
			tiers = withoutEjected(tiers, ejected)
			if n := len(tiers[0]); n > 0 && n < v.Policy.MinLocalEndpoints && len(tiers) > 1 {
				tiers = append([][]Target{append(slices.Clone(tiers[0]), tiers[1]...)}, tiers[2:]...)
			}
			if len(tiers) > maxTiers {
				last := slices.Concat(tiers[maxTiers-1:]...)
				tiers = append(tiers[:maxTiers-1], last)
			}
			if count(tiers) == 0 {
				if len(spare) == 0 {
					continue
				}
				tiers = [][]Target{spare}
			}
			t.Tiers = tiers
			out = append(out, t)
		}
	}
	return out
}

// targets collects the backends of one family and service port by cluster:
// ready ones, and serving terminating ones (spare).
func targets(v *ServiceView, ipv6 bool, portName string) (map[string][]Target, []Target) {
	ready := map[string][]Target{}
	var spare []Target
	seen := map[netip.AddrPort]bool{}
	for _, s := range v.Slices {
		if s.IPv6 != ipv6 {
			continue
		}
		port := uint16(0)
		for _, p := range s.Ports {
			if p.Name == portName {
				port = p.Port
				break
			}
		}
		if port == 0 {
			continue
		}
		for _, e := range s.Endpoints {
			a := netip.AddrPortFrom(e.Addr.Unmap(), port)
			if e.Addr.Unmap().Is6() != ipv6 || seen[a] {
				continue
			}
			switch {
			case e.Ready && !e.Terminating:
				seen[a] = true
				ready[s.Cluster] = append(ready[s.Cluster], Target{Addr: a, Cluster: s.Cluster})
			case e.Serving && e.Terminating:
				seen[a] = true
				spare = append(spare, Target{Addr: a, Cluster: s.Cluster})
			}
		}
	}
	for _, ts := range ready {
		slices.SortFunc(ts, func(a, b Target) int { return a.Addr.Compare(b.Addr) })
	}
	slices.SortFunc(spare, func(a, b Target) int { return a.Addr.Compare(b.Addr) })
	return ready, spare
}

func withoutEjected(tiers [][]Target, ejected func(netip.AddrPort) bool) [][]Target {
	if ejected == nil {
		return tiers
	}
	out := make([][]Target, len(tiers))
	for i, t := range tiers {
		for _, b := range t {
			if !ejected(b.Addr) {
				out[i] = append(out[i], b)
			}
		}
	}
	if count(out) == 0 {
		return tiers // everything ejected: the kernel's fallback uses all
	}
	return out
}

func count(tiers [][]Target) int {
	n := 0
	for _, t := range tiers {
		n += len(t)
	}
	return n
}
