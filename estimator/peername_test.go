package estimator

import (
	"context"
	"testing"
	"time"

	"github.com/flowplace/flowplace/telemetry"
)

// TestPeerNamedByCluster: an agent that knows its peer's cluster only by
// name (a Karmada-dispatched EndpointSlice names the provider cluster, not
// its UID) still gets its traffic into the published latency matrix: the
// estimator resolves the name through the Cluster objects' spec.id.
func TestPeerNamedByCluster(t *testing.T) {
	en := setupEnv(t)
	r := en.start(t, "a", 10*time.Second)
	waitLeader(t, r)
	byName := webToDB
	byName.Peer = telemetry.Peer{ClusterName: "member2"}
	client := newAgent(t, r.e.OTLPAddr().String(), uidA, "node-a1")
	ctx := context.Background()
	samples := rttSamples(100)
	poll(t, 30*time.Second, "member1's ClusterLatency naming member2", func() (bool, error) {
		client.rec.Record(ctx, byName, telemetry.Delta{Opened: tickConns, Closed: tickConns, BytesSent: tickSent, BytesReceived: tickReceived, RTT: histOf(samples)})
		client.flush(t)
		cl, err := getLatency(ctx, en, "member1")
		if err != nil {
			return false, nil
		}
		for _, p := range cl.Status.Peers {
			if p.Cluster == "member2" && p.P50Microseconds > 0 {
				return true, nil
			}
		}
		return false, nil
	})
}
