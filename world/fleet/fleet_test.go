package fleet

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/flowplace/flowplace/internal/images"
)

// rolloutTimeout bounds a workload's rollout: ~7.4 s measured on an idle
// 2-core machine for a 3-replica Deployment and two DaemonSets.
const rolloutTimeout = 2 * time.Minute

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatalf("pod IP %q: %v", s, err)
	}
	return a
}

func busyboxRef(t *testing.T) string {
	t.Helper()
	for _, img := range ImagesForTest(t, images.Busybox) {
		return img.Ref
	}
	t.Fatal("no busybox image")
	return ""
}

func container(ref, name string, args ...string) corev1.Container {
	return corev1.Container{
		Name: name, Image: ref, ImagePullPolicy: corev1.PullNever,
		Command: []string{"/bin/busybox"}, Args: args,
	}
}

// waitPods waits until n pods match selector and all are Running and
// Ready, and returns them.
func waitPods(t *testing.T, c kubernetes.Interface, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rolloutTimeout)
	defer cancel()
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		pods = l.Items
		ready := 0
		var states []string
		for _, p := range pods {
			ok := p.Status.Phase == corev1.PodRunning
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status != corev1.ConditionTrue {
					ok = false
				}
			}
			if ok {
				ready++
			}
			states = append(states, fmt.Sprintf("%s on %q: %s %s", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason))
		}
		last = strings.Join(states, "; ")
		return len(pods) == n && ready == n, nil
	})
	if err != nil {
		t.Fatalf("pods %s in %s: want %d Running and Ready: %v; last: %s", selector, ns, n, err, last)
	}
	return pods
}

// kubectl runs the fleet's kubectl against a member, as a user would.
func kubectl(t *testing.T, f *Fleet, member string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, f.ControlPlane.Binaries.Kubectl, append([]string{"--kubeconfig", f.Member(member).Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// TestClusterWithTwoNodes: a Deployment rolls out across both nodes, a
// DaemonSet runs one pod on each, a ClusterIP Service answers a pod on the
// other node, and kubectl logs and exec work through the API server.
func TestClusterWithTwoNodes(t *testing.T) {
	f := StartForTest(t, Config{Clusters: []string{"member1"}, NodesPerCluster: 2, AddrBase: 81})
	c := f.Member("member1").Client
	ref := busyboxRef(t)
	ctx := context.Background()
	ns := "default"

	// Two replicas that may not share a node.
	labels := map[string]string{"app": "web"}
	replicas := int32(2)
	web := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
							TopologyKey:   "kubernetes.io/hostname",
						}},
					}},
					Containers: []corev1.Container{container(ref, "web", "sh", "-c",
						`mkdir -p /www && hostname > /www/index.html && echo "serving as $(hostname)" && exec httpd -f -v -p 8080 -h /www`)},
				},
			},
		},
	}
	if _, err := c.AppsV1().Deployments(ns).Create(ctx, web, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dsLabels := map[string]string{"app": "every-node"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "every-node"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: dsLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: dsLabels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{container(ref, "sleep", "sleep", "3600")}},
			},
		},
	}
	if _, err := c.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	webPods := waitPods(t, c, ns, "app=web", 2)
	if webPods[0].Spec.NodeName == webPods[1].Spec.NodeName {
		t.Errorf("both web replicas on %s", webPods[0].Spec.NodeName)
	}
	dsPods := waitPods(t, c, ns, "app=every-node", 2)
	onNode := map[string]string{} // node -> DaemonSet pod
	for _, p := range dsPods {
		onNode[p.Spec.NodeName] = p.Name
	}
	for _, n := range f.Nodes["member1"] {
		if onNode[n.Name] == "" {
			t.Errorf("no DaemonSet pod on node %s: %v", n.Name, onNode)
		}
	}
	for _, p := range append(webPods, dsPods...) {
		var node = f.Nodes["member1"][0]
		if p.Spec.NodeName == f.Nodes["member1"][1].Name {
			node = f.Nodes["member1"][1]
		}
		if !node.Net.PodCIDR.Contains(mustAddr(t, p.Status.PodIP)) {
			t.Errorf("pod %s on %s has IP %s outside the node's pod subnet %s", p.Name, p.Spec.NodeName, p.Status.PodIP, node.Net.PodCIDR)
		}
	}

	// A Service for the web replica on the second node only, called from
	// the first node through kube-proxy's translation.
	far := webPods[0]
	if far.Spec.NodeName != f.Nodes["member1"][1].Name {
		far = webPods[1]
	}
	svc, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"statefulset.kubernetes.io/pod-name": far.Name},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The selector needs a label only the far pod has.
	far.Labels["statefulset.kubernetes.io/pod-name"] = far.Name
	if _, err := c.CoreV1().Pods(ns).Update(ctx, &far, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	caller := onNode[f.Nodes["member1"][0].Name]
	var got string
	// kube-proxy programs the Service within its sync period; until then
	// the connection is refused.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		out, err := exec.CommandContext(ctx, f.ControlPlane.Binaries.Kubectl, "--kubeconfig", f.Member("member1").Kubeconfig,
			"exec", caller, "--", "wget", "-q", "-O", "-", fmt.Sprintf("http://%s/", svc.Spec.ClusterIP)).CombinedOutput()
		got = strings.TrimSpace(string(out))
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("kubectl exec %s -- wget http://%s/: %v; last output %q", caller, svc.Spec.ClusterIP, err, got)
	}
	if got != far.Name {
		t.Errorf("the Service answered %q from node %s, want the pod %s on %s", got, f.Nodes["member1"][0].Name, far.Name, far.Spec.NodeName)
	}
	logs := kubectl(t, f, "member1", "logs", far.Name)
	if !strings.Contains(logs, "serving as "+far.Name) {
		t.Errorf("kubectl logs %s = %q, want the container's first line", far.Name, logs)
	}
}
