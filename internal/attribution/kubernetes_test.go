package attribution

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestWorkloadOf(t *testing.T) {
	ctrl := true
	pod := func(kind, name, hash string) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p-1", Labels: map[string]string{}}}
		if kind != "" {
			p.OwnerReferences = []metav1.OwnerReference{{Kind: kind, Name: name, Controller: &ctrl}}
		}
		if hash != "" {
			p.Labels["pod-template-hash"] = hash
		}
		return p
	}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want Workload
	}{
		{"deployment", pod("ReplicaSet", "cart-7d9f8b6c5", "7d9f8b6c5"), Workload{"ns", "Deployment", "cart"}},
		{"bare replicaset", pod("ReplicaSet", "legacy", ""), Workload{"ns", "ReplicaSet", "legacy"}},
		{"statefulset", pod("StatefulSet", "db", ""), Workload{"ns", "StatefulSet", "db"}},
		{"daemonset", pod("DaemonSet", "agent", ""), Workload{"ns", "DaemonSet", "agent"}},
		{"cronjob", pod("Job", "report-28912345", ""), Workload{"ns", "CronJob", "report"}},
		{"job", pod("Job", "migrate", ""), Workload{"ns", "Job", "migrate"}},
		{"bare pod", pod("", "", ""), Workload{"ns", "Pod", "p-1"}},
	} {
		if got := WorkloadOf(tc.pod); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
