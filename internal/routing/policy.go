// Package routing decides, for every multi-cluster service that opts in,
// which backends a connect from this cluster goes to: tier 0 is the ready
// endpoints of the local cluster, then the other clusters' ready endpoints
// in order of measured RTT from here. It reads the member's Services and
// EndpointSlices (local ones, Karmada-dispatched ones and MCS derived-<svc>
// ones), the agent's own RTT measurements and the fleet's ClusterLatency
// matrix, and programs the tables into the kernel through package redirect.
//
// Anti-flap: a cluster's place in the order changes only when another is
// better by more than the noise margin (max(1 ms, 10%)) for the service's
// hold time (hysteresis) — a slower sample never reorders at once, unlike
// Cilium's and Consul's hard switches. Endpoints appearing or disappearing,
// and passive ejections, take effect at the next sync: they are facts, not
// noise.
package routing

import (
	"fmt"
	"strconv"
	"time"
)

// Annotations that opt a Service (or the ServiceImport or Karmada
// MultiClusterService of the same name) into routing, with its knobs.
const (
	// AnnotationRouting: "nearest" routes each connect to the nearest
	// cluster with healthy endpoints. Absent (or "none"): not touched.
	AnnotationRouting = "flowplace.io/routing"
	// AnnotationMinLocalEndpoints: the local cluster's tier serves alone
	// only while it has at least this many ready endpoints; below that,
	// the nearest other cluster's endpoints join it, so that the first
	// pod to turn ready does not take all of a cluster's traffic
	// (cilium#46633). Default 1.
	AnnotationMinLocalEndpoints = "flowplace.io/routing-min-local-endpoints"
	// AnnotationHysteresis: how long a better order of the other clusters
	// must hold before connects follow it. Default 30s.
	AnnotationHysteresis = "flowplace.io/routing-hysteresis"

	ModeNearest = "nearest"
	ModeNone    = "none"
)

// Policy is a service's routing configuration.
type Policy struct {
	MinLocalEndpoints int
	Hold              time.Duration
}

// DefaultPolicy applies where an annotation is absent.
var DefaultPolicy = Policy{MinLocalEndpoints: 1, Hold: 30 * time.Second}

// ParsePolicy reads a policy from annotations. enabled is false when the
// object does not opt in; err names the bad annotation and value.
func ParsePolicy(ann map[string]string) (p Policy, enabled bool, err error) {
	p = DefaultPolicy
	switch mode, ok := ann[AnnotationRouting]; {
	case !ok || mode == ModeNone:
		return p, false, nil
	case mode != ModeNearest:
		return p, false, fmt.Errorf("annotation %s=%q: want %q or %q", AnnotationRouting, mode, ModeNearest, ModeNone)
	}
	if v, ok := ann[AnnotationMinLocalEndpoints]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return p, false, fmt.Errorf("annotation %s=%q: want an integer in [1, 10000]", AnnotationMinLocalEndpoints, v)
		}
		p.MinLocalEndpoints = n
	}
	if v, ok := ann[AnnotationHysteresis]; ok {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Hour {
			return p, false, fmt.Errorf("annotation %s=%q: want a duration in [0s, 1h]", AnnotationHysteresis, v)
		}
		p.Hold = d
	}
	return p, true, nil
}
