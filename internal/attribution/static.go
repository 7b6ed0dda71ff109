package attribution

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

// TopologyFile describes clusters, services and workloads by address, for
// the lab and for hosts outside Kubernetes (the agent's standalone mode).
//
//	apiVersion: flowplace.io/v1alpha1
//	kind: AgentTopology
//	cluster: us-east-1           # the agent's own cluster
//	clusters:
//	- {name: us-east-1, uid: 7d0c..., cidrs: [10.77.1.0/24]}
//	services:
//	- {namespace: shop, name: cart, addresses: ["10.77.2.10:8080"]}
//	workloads:
//	- {namespace: shop, name: cart, kind: Deployment, addresses: [10.77.2.10]}
type TopologyFile struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Cluster    string             `json:"cluster"`
	Clusters   []TopologyCluster  `json:"clusters"`
	Services   []TopologyService  `json:"services,omitempty"`
	Workloads  []TopologyWorkload `json:"workloads,omitempty"`
}

type TopologyCluster struct {
	Name  string   `json:"name"`
	UID   string   `json:"uid,omitempty"`
	CIDRs []string `json:"cidrs"`
}

type TopologyService struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Addresses []string `json:"addresses"` // ip:port clients dial (VIPs or endpoints)
	// Translated says the addresses are virtual and translated by DNAT
	// (kube-proxy style) on the way out; the agent then asks conntrack
	// which backend each connection reached.
	Translated bool `json:"translated,omitempty"`
}

type TopologyWorkload struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Cluster   string   `json:"cluster,omitempty"` // default: the cluster whose CIDR holds the address
	Service   string   `json:"service,omitempty"` // the service (same namespace) it backs
	Addresses []string `json:"addresses"`         // IPs or CIDRs
}

const (
	TopologyAPIVersion = "flowplace.io/v1alpha1"
	TopologyKind       = "AgentTopology"
)

var workloadKinds = []string{"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}

// Static resolves from a validated topology file. It never changes.
type Static struct {
	self       Cluster
	clusters   []prefixed[Cluster]
	services   map[netip.AddrPort]Service
	translated []netip.AddrPort
	workloads  []prefixed[Endpoint]
}

type prefixed[T any] struct {
	prefix netip.Prefix
	value  T
}

// LoadTopologyFile reads and validates a topology file.
func LoadTopologyFile(path string) (*Static, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("topology file: %w", err)
	}
	var tf TopologyFile
	if err := yaml.UnmarshalStrict(b, &tf); err != nil {
		return nil, fmt.Errorf("topology file %s: %w", path, err)
	}
	s, err := NewStatic(&tf)
	if err != nil {
		return nil, fmt.Errorf("topology file %s: %w", path, err)
	}
	return s, nil
}

// NewStatic validates tf and builds a resolver from it. Errors name the
// offending field.
func NewStatic(tf *TopologyFile) (*Static, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if tf.APIVersion != TopologyAPIVersion {
		fail("apiVersion", "%q, want %q", tf.APIVersion, TopologyAPIVersion)
	}
	if tf.Kind != TopologyKind {
		fail("kind", "%q, want %q", tf.Kind, TopologyKind)
	}
	s := &Static{services: map[netip.AddrPort]Service{}}
	names := map[string]Cluster{}
	if len(tf.Clusters) == 0 {
		fail("clusters", "at least one cluster is required")
	}
	for i, c := range tf.Clusters {
		f := fmt.Sprintf("clusters[%d]", i)
		if c.Name == "" {
			fail(f+".name", "required")
			continue
		}
		if _, dup := names[c.Name]; dup {
			fail(f+".name", "duplicate cluster %q", c.Name)
		}
		ref := Cluster{UID: c.UID, Name: c.Name}
		names[c.Name] = ref
		for j, cidr := range c.CIDRs {
			p, err := netip.ParsePrefix(cidr)
			if err != nil {
				fail(fmt.Sprintf("%s.cidrs[%d]", f, j), "%q is not a CIDR", cidr)
				continue
			}
			s.clusters = append(s.clusters, prefixed[Cluster]{p.Masked(), ref})
		}
	}
	self, ok := names[tf.Cluster]
	if !ok {
		fail("cluster", "%q is not one of clusters[].name", tf.Cluster)
	}
	s.self = self

	svcNames := map[Service]bool{}
	for i, sv := range tf.Services {
		f := fmt.Sprintf("services[%d]", i)
		if sv.Name == "" || sv.Namespace == "" {
			fail(f, "name and namespace are required")
			continue
		}
		ref := Service{Namespace: sv.Namespace, Name: sv.Name}
		svcNames[ref] = true
		if len(sv.Addresses) == 0 {
			fail(f+".addresses", "at least one ip:port is required")
		}
		for j, a := range sv.Addresses {
			ap, err := netip.ParseAddrPort(a)
			if err != nil {
				fail(fmt.Sprintf("%s.addresses[%d]", f, j), "%q is not ip:port", a)
				continue
			}
			if prev, dup := s.services[ap]; dup && prev != ref {
				fail(fmt.Sprintf("%s.addresses[%d]", f, j), "%s already belongs to service %s/%s", a, prev.Namespace, prev.Name)
			}
			s.services[ap] = ref
			if sv.Translated {
				if !ap.Addr().Is4() {
					fail(fmt.Sprintf("%s.addresses[%d]", f, j), "translated addresses must be IPv4")
				}
				s.translated = append(s.translated, ap)
			}
		}
	}
	for i, w := range tf.Workloads {
		f := fmt.Sprintf("workloads[%d]", i)
		if w.Name == "" || w.Namespace == "" {
			fail(f, "name and namespace are required")
			continue
		}
		if !slices.Contains(workloadKinds, w.Kind) {
			fail(f+".kind", "%q, want one of %s", w.Kind, strings.Join(workloadKinds, ", "))
		}
		ep := Endpoint{Workload: Workload{Namespace: w.Namespace, Kind: w.Kind, Name: w.Name}}
		if w.Service != "" {
			ep.Service = Service{Namespace: w.Namespace, Name: w.Service}
			if !svcNames[ep.Service] {
				fail(f+".service", "%q is not declared in services[] of namespace %s", w.Service, w.Namespace)
			}
		}
		if w.Cluster != "" {
			c, ok := names[w.Cluster]
			if !ok {
				fail(f+".cluster", "%q is not one of clusters[].name", w.Cluster)
			}
			ep.Cluster = c
		}
		if len(w.Addresses) == 0 {
			fail(f+".addresses", "at least one IP or CIDR is required")
		}
		for j, a := range w.Addresses {
			p, err := parseAddrOrPrefix(a)
			if err != nil {
				fail(fmt.Sprintf("%s.addresses[%d]", f, j), "%q is not an IP or CIDR", a)
				continue
			}
			e := ep
			if e.Cluster == (Cluster{}) {
				e.Cluster, _ = lookupPrefix(s.clusters, p.Addr())
			}
			s.workloads = append(s.workloads, prefixed[Endpoint]{p, e})
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// Longest prefix first, so the first match is the most specific.
	byLen := func(a, b int) int { return b - a }
	slices.SortStableFunc(s.clusters, func(a, b prefixed[Cluster]) int { return byLen(a.prefix.Bits(), b.prefix.Bits()) })
	slices.SortStableFunc(s.workloads, func(a, b prefixed[Endpoint]) int { return byLen(a.prefix.Bits(), b.prefix.Bits()) })
	return s, nil
}

func parseAddrOrPrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func lookupPrefix[T any](list []prefixed[T], a netip.Addr) (T, bool) {
	for _, p := range list {
		if p.prefix.Contains(a) {
			return p.value, true
		}
	}
	var zero T
	return zero, false
}

func (s *Static) Self() Cluster                        { return s.self }
func (s *Static) TranslatedServices() []netip.AddrPort { return slices.Clone(s.translated) }
func (s *Static) Generation() uint64                   { return 1 }

func (s *Static) Local(addr netip.Addr, _ uint64) (Workload, bool) {
	ep, ok := lookupPrefix(s.workloads, addr)
	return ep.Workload, ok
}

func (s *Static) Service(dialed netip.AddrPort) (Service, bool) {
	if sv, ok := s.services[dialed]; ok {
		return sv, true
	}
	if ep, ok := lookupPrefix(s.workloads, dialed.Addr()); ok && ep.Service.Name != "" {
		return ep.Service, true
	}
	return Service{}, false
}

func (s *Static) Endpoint(addr netip.AddrPort) (Endpoint, bool) {
	if ep, ok := lookupPrefix(s.workloads, addr.Addr()); ok {
		return ep, true
	}
	if c, ok := lookupPrefix(s.clusters, addr.Addr()); ok {
		return Endpoint{Cluster: c}, true
	}
	return Endpoint{}, false
}
