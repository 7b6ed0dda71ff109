package agent

import (
	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/telemetry"
)

// seriesKey attributes a kernel flow to the series it is reported under.
func seriesKey(r attribution.Resolver, k probe.FlowKey) telemetry.SeriesKey {
	sk := telemetry.SeriesKey{Role: telemetry.RoleClient, ServerPort: k.Dialed.Port()}
	if k.Role == probe.RoleServer {
		sk.Role = telemetry.RoleServer
	}
	if w, ok := r.Local(k.Local, k.CgroupID); ok {
		sk.Namespace, sk.WorkloadKind, sk.WorkloadName = w.Namespace, w.Kind, w.Name
	}
	if sv, ok := r.Service(k.Dialed); ok {
		sk.ServiceNamespace, sk.ServiceName = sv.Namespace, sv.Name
	}
	if ep, ok := r.Endpoint(k.Peer); ok {
		sk.Peer = telemetry.Peer{
			ClusterUID: ep.Cluster.UID, ClusterName: ep.Cluster.Name,
			Namespace: ep.Workload.Namespace, WorkloadKind: ep.Workload.Kind, WorkloadName: ep.Workload.Name,
		}
		// A client that dialed an endpoint directly (headless service, or a
		// socket-level redirect) still talks to that endpoint's service.
		if sk.ServiceName == "" && ep.Service.Name != "" {
			sk.ServiceNamespace, sk.ServiceName = ep.Service.Namespace, ep.Service.Name
		}
	}
	return sk
}
