package telemetry

import (
	"go.opentelemetry.io/otel/attribute"
)

// Peer names the other end of a flow, as far as attribution could tell.
type Peer struct {
	ClusterUID   string
	ClusterName  string
	Namespace    string
	WorkloadKind string
	WorkloadName string
}

// SeriesKey identifies one metric series. It is comparable and small so that
// it can key maps; attribute sets are built from it once, when the series is
// first seen.
type SeriesKey struct {
	Role             string // RoleClient or RoleServer
	Namespace        string // local workload
	WorkloadKind     string
	WorkloadName     string
	ServiceNamespace string
	ServiceName      string
	ServerPort       uint16
	Peer             Peer
}

func (k SeriesKey) attributes() []attribute.KeyValue {
	kv := []attribute.KeyValue{AttrRole.String(k.Role)}
	add := func(key attribute.Key, v string) {
		if v != "" {
			kv = append(kv, key.String(v))
		}
	}
	add(AttrNamespace, k.Namespace)
	add(AttrWorkloadKind, k.WorkloadKind)
	add(AttrWorkloadName, k.WorkloadName)
	add(AttrServiceNamespace, k.ServiceNamespace)
	add(AttrServiceName, k.ServiceName)
	if k.ServerPort != 0 {
		kv = append(kv, AttrServerPort.Int(int(k.ServerPort)))
	}
	add(AttrPeerClusterUID, k.Peer.ClusterUID)
	add(AttrPeerClusterName, k.Peer.ClusterName)
	add(AttrPeerNamespace, k.Peer.Namespace)
	add(AttrPeerWorkloadKind, k.Peer.WorkloadKind)
	add(AttrPeerWorkloadName, k.Peer.WorkloadName)
	return kv
}
