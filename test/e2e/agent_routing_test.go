package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/internal/manifests"
	"github.com/flowplace/flowplace/internal/routing"
	"github.com/flowplace/flowplace/world/fleet"
	"github.com/flowplace/flowplace/world/wan"
)

// TestAgentRoutesOnKubeletClusters runs the agent DaemonSet, routing on, on
// the kubelet nodes of two members 20 ms apart, with kube-proxy. cart runs
// in both; member1 sees member2's pod through a dispatched EndpointSlice,
// as Karmada's multi-cluster services give it. An annotated Service goes
// to the local pod only, then to member2's when the local one is gone; an
// unannotated Service over the same endpoints stays kube-proxy's (both
// answer); a kill -9 of the agent leaves routing in place and the
// restarted agent adopts it; deleting the DaemonSet removes every routing
// program.
func TestAgentRoutesOnKubeletClusters(t *testing.T) {
	imgs := fleet.ImagesForTest(t, images.Pause, images.Busybox, images.Agent)
	f := fleet.StartForTest(t, fleet.Config{
		Clusters: []string{"member1", "member2"},
		ExtraRTT: map[wan.Pair]time.Duration{{A: "member1", B: "member2"}: 20 * time.Millisecond},
		AddrBase: 86,
		Images:   imgs,
	})
	ctx := context.Background()
	bb := imageRef(t, imgs, images.Busybox)
	m1, m2 := f.Member("member1").Client, f.Member("member2").Client
	for _, cluster := range []string{"member1", "member2"} {
		objs, err := manifests.Agent(manifests.AgentOptions{Image: imageRef(t, imgs, images.Agent), PullPolicy: corev1.PullNever, ClusterName: cluster})
		if err != nil {
			t.Fatal(err)
		}
		if err := manifests.Apply(ctx, f.Member(cluster).Client, objs); err != nil {
			t.Fatal(err)
		}
	}
	waitAgents(t, m1, 1)
	waitAgents(t, m2, 1)

	const ns = "shop"
	for _, c := range []kubernetes.Interface{m1, m2} {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// cart answers each connection with its cluster's name.
	for cluster, c := range map[string]kubernetes.Interface{"member1": m1, "member2": m2} {
		if _, err := c.AppsV1().Deployments(ns).Create(ctx, deployment("cart", ns, "", bb, "nc", "-ll", "-p", "8080", "-e", "echo", cluster), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	remote := runningPod(t, m2, ns, "cart")
	runningPod(t, m1, ns, "cart")
	svcIP := map[string]string{}
	for _, name := range []string{"cart", "plain"} {
		var ann map[string]string
		if name == "cart" {
			ann = map[string]string{routing.AnnotationRouting: "nearest"}
		}
		s, err := m1.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cart"},
				Ports: []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svcIP[name] = s.Spec.ClusterIP
		port, proto, ready := int32(8080), corev1.ProtocolTCP, true
		if _, err := m1.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{
				Name:        "imported-member2-" + name,
				Labels:      map[string]string{discoveryv1.LabelServiceName: name, discoveryv1.LabelManagedBy: "endpointslice-dispatch-controller.karmada.io"},
				Annotations: map[string]string{attribution.ProvisionClusterAnnotation: "member2"},
			},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{remote.Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("web"), Port: &port, Protocol: &proto}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The client: one new connection to each Service every 50 ms, logging
	// "<service>:<who answered>" ("fail" when nobody did).
	script := fmt.Sprintf(`while true; do for s in cart:%s plain:%s; do a=$(nc -w 2 ${s#*:} 80 </dev/null); echo "${s%%%%:*}:${a:-fail}"; done; sleep 0.05; done`,
		svcIP["cart"], svcIP["plain"])
	if _, err := m1.AppsV1().Deployments(ns).Create(ctx, deployment("client", ns, "", bb, "sh", "-c", script), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	client := runningPod(t, m1, ns, "client")
	answers := func(svc string) []string {
		t.Helper()
		raw, err := m1.CoreV1().Pods(ns).GetLogs(client.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("client logs: %v", err)
		}
		var out []string
		for _, l := range strings.Split(string(raw), "\n") {
			if who, ok := strings.CutPrefix(l, svc+":"); ok {
				out = append(out, who)
			}
		}
		return out
	}
	// settles waits until svc's last n answers are all want, and returns
	// how many answers there were by then. Under kube-proxy's random choice
	// between two endpoints, 20 in a row from one has probability 2^-19.
	const n = 20
	settles := func(svc, want string) int {
		t.Helper()
		var got []string
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 90*time.Second, true, func(context.Context) (bool, error) {
			got = answers(svc)
			return len(got) >= n && !slices.ContainsFunc(got[len(got)-n:], func(a string) bool { return a != want }), nil
		})
		if err != nil {
			t.Fatalf("%s: last answers %v, want %d in a row from %s\n%s", svc, tail(got, 2*n), n, want, agentPodsReport(m1))
		}
		return len(got)
	}
	// since waits for n more answers of svc after the first from, and
	// returns them.
	since := func(svc string, from int) []string {
		t.Helper()
		var got []string
		err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			got = answers(svc)
			return len(got) >= from+n, nil
		})
		if err != nil {
			t.Fatalf("%s: only %d answers", svc, len(got))
		}
		return got[from:]
	}

	// The local pod only; kube-proxy still balances the plain Service.
	at := settles("cart", "member1")
	plainAt := len(answers("plain"))
	if got := since("cart", at); slices.ContainsFunc(got, func(a string) bool { return a != "member1" }) {
		t.Errorf("routed service answered by %v, want member1 only", got)
	}
	plain := since("plain", plainAt)
	if !slices.Contains(plain, "member1") || !slices.Contains(plain, "member2") || slices.Contains(plain, "fail") {
		t.Errorf("unannotated service answered by %v: want kube-proxy's spread over both clusters, no failure", plain)
	}

	// No local endpoint: the next cluster serves.
	scale(t, m1, ns, "cart", 0)
	settles("cart", "member2")
	scale(t, m1, ns, "cart", 1)
	at = settles("cart", "member1")

	// kill -9 of the agent: connects stay routed (the pinned programs and
	// maps route without it); the restarted container adopts them.
	pid := agentPID(t, "member1")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 agent %d: %v", pid, err)
	}
	restarted := agentRestarted(t, m1)
	if got := since("cart", at); slices.ContainsFunc(got, func(a string) bool { return a != "member1" }) {
		t.Errorf("across the agent's kill -9 and restart the routed service was answered by %v, want member1 only", got)
	}
	logs, err := m1.CoreV1().Pods(manifests.DefaultNamespace).GetLogs(restarted, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logs), "adoptedPinnedState=true") {
		t.Errorf("the restarted agent did not adopt the pinned routing state; its log:\n%s", logs)
	}

	// Uninstall: the agents see their DaemonSet go and remove routing.
	for _, c := range []kubernetes.Interface{m1, m2} {
		if err := c.AppsV1().DaemonSets(manifests.DefaultNamespace).Delete(ctx, manifests.AgentName, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return len(routingPrograms(t)) == 0, nil
	})
	if err != nil {
		t.Fatalf("routing programs still loaded after the agents' DaemonSets were deleted: %v", routingPrograms(t))
	}
	at = len(answers("cart"))
	if got := since("cart", at); !slices.Contains(got, "member2") {
		t.Errorf("after uninstall the annotated service was answered by %v: want kube-proxy's spread again", got)
	}
}

func tail(v []string, n int) []string {
	if len(v) > n {
		return v[len(v)-n:]
	}
	return v
}

func scale(t *testing.T, c kubernetes.Interface, ns, name string, replicas int32) {
	t.Helper()
	ctx := context.Background()
	s, err := c.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Replicas = replicas
	if _, err := c.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// agentPID finds the agent process of cluster's node on this machine (the
// nodes share its kernel).
func agentPID(t *testing.T, cluster string) int {
	t.Helper()
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if len(args) > 0 && filepath.Base(args[0]) == "flowplace-agent" && slices.Contains(args, "--cluster-name="+cluster) {
			pid, _ := strconv.Atoi(filepath.Base(d))
			return pid
		}
	}
	t.Fatalf("no flowplace-agent process of %s", cluster)
	return 0
}

// agentRestarted waits for the agent pod's container to have restarted
// and be ready again, and returns the pod's name.
func agentRestarted(t *testing.T, c kubernetes.Interface) string {
	t.Helper()
	var name string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(manifests.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.AgentName})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.RestartCount > 0 && cs.Ready {
					name = p.Name
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the agent did not restart: %v\n%s", err, agentPodsReport(c))
	}
	return name
}

// routingPrograms lists the loaded BPF programs of flowplace's routing
// (names are cut to 15 bytes: flowplace_route...).
func routingPrograms(t *testing.T) []string {
	t.Helper()
	var out []string
	for id, err := ebpf.ProgramGetNextID(0); err == nil; id, err = ebpf.ProgramGetNextID(id) {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "flowplace_rout") {
			out = append(out, fmt.Sprintf("%d:%s", id, info.Name))
		}
		p.Close()
	}
	return out
}
