package attribution

import (
	"context"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowplace/flowplace/world/controlplane"
)

// Against a real API server: pods on this node by IP, host-network pods by
// cgroup, services by ClusterIP, remote endpoints by Karmada's
// provision-cluster annotation, MCS derived services by their real name; and
// answers follow changes.
func TestKubernetesResolverOnAPIServer(t *testing.T) {
	ctx := context.Background()
	cp := controlplane.StartForTest(t, controlplane.Config{Members: []string{"m1"}})
	cs := cp.Members["m1"].Client
	yes := true
	mkPod := func(name, node, ip string, host bool, owner metav1.OwnerReference) *corev1.Pod {
		t.Helper()
		p, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{owner}},
			Spec:       corev1.PodSpec{NodeName: node, HostNetwork: host, Containers: []corev1.Container{{Name: "c", Image: "x"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p.Status = corev1.PodStatus{PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if p, err = cs.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ds := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ingress", UID: "u1", Controller: &yes}
	sts := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "u2", Controller: &yes}
	ingress := mkPod("ingress-x", "n1", "192.168.5.10", true, ds)
	mkPod("db-0", "n1", "10.244.1.7", false, sts)
	mkPod("db-1", "n2", "10.244.2.9", false, sts)
	svc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "derived-db"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 5432}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port := int32(5432)
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "m2-db", Labels: map[string]string{discoveryv1.LabelServiceName: "db"}, Annotations: map[string]string{ProvisionClusterAnnotation: "m2"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.245.0.3"}}},
		Ports:       []discoveryv1.EndpointPort{{Port: &port}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	ictx, stopInformers := context.WithCancel(ctx)
	t.Cleanup(stopInformers) // before the API servers stop
	k, err := NewKubernetes(ictx, cs, "m1", "n1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := cp.Members["m1"].KubeSystemUID(ctx)
	if k.Self() != (Cluster{UID: uid, Name: "m1"}) {
		t.Errorf("self %+v, want kube-system UID %s", k.Self(), uid)
	}
	k.SetCgroupResolver(func(id uint64) string {
		if id == 4242 {
			return string(ingress.UID)
		}
		return ""
	})
	node := netip.MustParseAddr("192.168.5.10")
	if w, ok := k.Local(node, 4242); !ok || w != (Workload{"default", "DaemonSet", "ingress"}) {
		t.Errorf("host-network pod by cgroup: %+v %v", w, ok)
	}
	if _, ok := k.Local(node, 1); ok {
		t.Error("another cgroup on the node address was attributed to the ingress pod")
	}
	if w, ok := k.Local(netip.MustParseAddr("10.244.1.7"), 0); !ok || w.Name != "db" || w.Kind != "StatefulSet" {
		t.Errorf("local pod: %+v %v", w, ok)
	}
	if _, ok := k.Local(netip.MustParseAddr("10.244.2.9"), 0); ok {
		t.Error("a pod of another node counted as local")
	}
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 5432)
	if s, ok := k.Service(vip); !ok || s != (Service{"default", "db"}) {
		t.Errorf("MCS derived service by ClusterIP: %+v %v", s, ok)
	}
	if got := k.TranslatedServices(); len(got) != 2 { // kubernetes + derived-db
		t.Errorf("translated services %v", got)
	}
	if e, ok := k.Endpoint(netip.MustParseAddrPort("10.245.0.3:5432")); !ok || e.Cluster.Name != "m2" || e.Service.Name != "db" {
		t.Errorf("remote endpoint: %+v %v", e, ok)
	}
	if e, ok := k.Endpoint(netip.MustParseAddrPort("10.244.2.9:5432")); !ok || e.Cluster.UID != uid || e.Workload.Name != "db" {
		t.Errorf("pod on another node: %+v %v", e, ok)
	}

	// A deleted pod stops resolving, and the generation moves.
	gen := k.Generation()
	if err := cs.CoreV1().Pods("default").Delete(ctx, "db-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := k.Local(netip.MustParseAddr("10.244.1.7"), 0); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deleted pod still resolves")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if k.Generation() == gen {
		t.Error("generation did not change")
	}
}
