package estimator

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	flowplacev1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/internal/latencymatrix"
)

// matrixPublisher keeps the latency matrix the ClusterLatency objects hold
// in a ConfigMap as well (package latencymatrix), for the agents' routing:
// Karmada propagates the ConfigMap's data to the members, where the
// objects themselves would arrive without their status.
type matrixPublisher struct {
	kube    kubernetes.Interface
	at      types.NamespacedName
	manager string
	last    []byte // what was last written, to skip unchanged rounds
}

// rows reads the published ClusterLatency objects from the cache, as
// readers see them.
func (r *resolver) latencyRows() []flowplacev1.ClusterLatency {
	var rows []flowplacev1.ClusterLatency
	for _, o := range r.latencies.GetIndexer().List() {
		u, ok := o.(*unstructured.Unstructured)
		if !ok {
			continue
		}
		var cl flowplacev1.ClusterLatency
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &cl); err != nil {
			klog.ErrorS(err, "Leaving an unreadable ClusterLatency out of the matrix", "name", u.GetName())
			continue
		}
		rows = append(rows, cl)
	}
	slices.SortFunc(rows, func(a, b flowplacev1.ClusterLatency) int { return strings.Compare(a.Name, b.Name) })
	return rows
}

// publish writes the matrix when it changed. The ConfigMap carries the
// chart's part-of label, so the addon's status finds it; the agent
// namespace it lives in is deleted with the agents.
func (m *matrixPublisher) publish(ctx context.Context, rows []flowplacev1.ClusterLatency) (bool, error) {
	b, err := latencymatrix.Encode(rows)
	if err != nil {
		return false, err
	}
	if bytes.Equal(b, m.last) {
		return false, nil
	}
	cms := m.kube.CoreV1().ConfigMaps(m.at.Namespace)
	cur, err := cms.Get(ctx, m.at.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: m.at.Name, Namespace: m.at.Namespace,
				Labels: map[string]string{"app.kubernetes.io/part-of": "flowplace", "app.kubernetes.io/component": "estimator"}},
			Data: map[string]string{latencymatrix.DataKey: string(b)},
		}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{FieldManager: m.manager}); err != nil {
			return false, fmt.Errorf("create latency matrix ConfigMap %s: %w", m.at, err)
		}
	case err != nil:
		return false, fmt.Errorf("read latency matrix ConfigMap %s: %w", m.at, err)
	default:
		if cur.Data[latencymatrix.DataKey] == string(b) {
			m.last = b
			return false, nil
		}
		cur = cur.DeepCopy()
		if cur.Data == nil {
			cur.Data = map[string]string{}
		}
		cur.Data[latencymatrix.DataKey] = string(b)
		if _, err := cms.Update(ctx, cur, metav1.UpdateOptions{FieldManager: m.manager}); err != nil {
			return false, fmt.Errorf("update latency matrix ConfigMap %s: %w", m.at, err)
		}
	}
	m.last = b
	return true, nil
}
