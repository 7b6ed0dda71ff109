package estimator

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flowplace/flowplace/internal/latencymatrix"
)

// The matrix ConfigMap carries what the ClusterLatency objects hold, so an
// agent that reads it (Karmada propagates its data, where it would strip
// the objects' status) routes by the same numbers the plugins place by.
func TestMatrixConfigMapMirrorsClusterLatency(t *testing.T) {
	en := setupEnv(t)
	ctx := context.Background()
	en.matrix = types.NamespacedName{Namespace: "flowplace-system", Name: "flowplace-cluster-latency"}
	if _, err := en.cp.Host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flowplace-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r := en.start(t, "replica-1", 3*time.Second)
	defer r.stop(t)
	waitLeader(t, r)
	driveTraffic(t, r.e.OTLPAddr().String(), 2*time.Second, nil)
	cl, _, _ := waitPublished(t, en)

	poll(t, 30*time.Second, "matrix ConfigMap equal to the published ClusterLatency", func() (bool, error) {
		cur, err := getLatency(ctx, en, "member1")
		if err != nil {
			return false, err
		}
		cm, err := en.cp.Host.Client.CoreV1().ConfigMaps("flowplace-system").Get(ctx, "flowplace-cluster-latency", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		rows, err := latencymatrix.Decode([]byte(cm.Data[latencymatrix.DataKey]))
		if err != nil {
			return false, err
		}
		row := rows["member1"]
		if row == nil || len(row.Status.Peers) != len(cur.Status.Peers) || !row.Status.ValidUntil.Equal(&cur.Status.ValidUntil) {
			return false, fmt.Errorf("matrix row %+v, object %+v", row, cur.Status)
		}
		for i, p := range cur.Status.Peers {
			q := row.Status.Peers[i]
			if q.Cluster != p.Cluster || q.P50Microseconds != p.P50Microseconds || q.SampleCount != p.SampleCount || q.Estimated != p.Estimated {
				return false, fmt.Errorf("peer %d: matrix %+v, object %+v", i, q, p)
			}
		}
		if cm.Labels["app.kubernetes.io/part-of"] != "flowplace" {
			return false, fmt.Errorf("labels %v", cm.Labels)
		}
		return true, nil
	})
	if cl.Status.Peers[0].P50Microseconds <= 0 {
		t.Errorf("published p50 %d", cl.Status.Peers[0].P50Microseconds)
	}
}
