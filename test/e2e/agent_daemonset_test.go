package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/internal/manifests"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/test/otlptest"
	"github.com/flowplace/flowplace/world/fleet"
	"github.com/flowplace/flowplace/world/wan"
)

// The echo exchange the frontend pod makes: rounds lines of lineBytes
// (newline included), gap apart, each echoed at once by the cart pod.
const (
	echoRounds = 40
	lineBytes  = 32
	echoGap    = "0.1"
)

func imageRef(t *testing.T, imgs []images.Image, name string) string {
	t.Helper()
	for _, img := range imgs {
		if img.Name == name {
			return img.Ref
		}
	}
	t.Fatalf("no %s image", name)
	return ""
}

func deployment(name, ns, node, image string, args ...string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName: node,
					Containers: []corev1.Container{{
						Name: name, Image: image, ImagePullPolicy: corev1.PullNever,
						Command: []string{"/bin/busybox"}, Args: args,
					}},
				},
			},
		},
	}
}

// runningPod waits for the one Running pod of app and returns it.
func runningPod(t *testing.T, c kubernetes.Interface, ns, app string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				pod = p
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod of %s/%s not Running: %v", ns, app, err)
	}
	return pod
}

// waitAgents waits until the agent DaemonSet's pods are Ready on every node.
func waitAgents(t *testing.T, c kubernetes.Interface, nodes int) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		ds, err := c.AppsV1().DaemonSets(manifests.DefaultNamespace).Get(ctx, manifests.AgentName, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = fmt.Sprintf("desired %d ready %d", ds.Status.DesiredNumberScheduled, ds.Status.NumberReady)
		return int(ds.Status.NumberReady) == nodes && ds.Status.DesiredNumberScheduled == int32(nodes), nil
	})
	if err != nil {
		t.Fatalf("agent DaemonSet not Ready: %v (%s)\n%s", err, last, agentPodsReport(c))
	}
}

// agentPodsReport describes the agent pods and the tail of their logs.
func agentPodsReport(c kubernetes.Interface) string {
	return podsReport(c, manifests.DefaultNamespace, "")
}

// echoCartAcross runs cart (an echo server) in member2 and gives member1 a
// derived Service for it with an EndpointSlice of member2's pod, as
// Karmada's multi-cluster services do; it creates ns in both and returns
// member1's Service.
func echoCartAcross(t *testing.T, m1, m2 kubernetes.Interface, ns, busybox string) *corev1.Service {
	t.Helper()
	ctx := context.Background()
	for _, c := range []kubernetes.Interface{m1, m2} {
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m2.AppsV1().Deployments(ns).Create(ctx, deployment("cart", ns, "", busybox, "nc", "-ll", "-p", "8080", "-e", "cat"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cart := runningPod(t, m2, ns, "cart")
	svcName := attribution.DerivedServicePrefix + "cart"
	svc, err := m1.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: svcName},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "echo", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	port, proto, ready := int32(8080), corev1.ProtocolTCP, true
	if _, err := m1.DiscoveryV1().EndpointSlices(ns).Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "imported-member2-cart",
			Labels:      map[string]string{discoveryv1.LabelServiceName: svcName, discoveryv1.LabelManagedBy: "endpointslice-dispatch-controller.karmada.io"},
			Annotations: map[string]string{attribution.ProvisionClusterAnnotation: "member2"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{cart.Status.PodIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("echo"), Port: &port, Protocol: &proto}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return svc
}

// TestAgentDaemonSet runs the agent as a DaemonSet pod, with its real
// security context and RBAC, on the nodes of two member clusters 20 ms
// apart, and checks what it measures of a frontend in member1 calling a
// cart Service whose endpoints are in member2 (as Karmada's multi-cluster
// services give them: a derived Service with a dispatched EndpointSlice):
// exact bytes, the RTT the WAN injects, attribution to the Deployment and
// the Service. Then it removes one capability and checks that the agent
// says which.
func TestAgentDaemonSet(t *testing.T) {
	const injected = 20 * time.Millisecond
	imgs := fleet.ImagesForTest(t, images.Pause, images.Busybox, images.Agent)
	f := fleet.StartForTest(t, fleet.Config{
		Clusters: []string{"member1", "member2"},
		ExtraRTT: map[wan.Pair]time.Duration{{A: "member1", B: "member2"}: injected},
		QuickACK: true,
		AddrBase: 83,
		Images:   imgs,
	})
	gw, err := f.WAN.ManagementGateway()
	if err != nil {
		t.Fatal(err)
	}
	recv := otlptest.StartOn(t, gw.String())
	ctx := context.Background()
	bb := imageRef(t, imgs, images.Busybox)
	m1, m2 := f.Member("member1").Client, f.Member("member2").Client

	agentOpts := func(cluster string) manifests.AgentOptions {
		return manifests.AgentOptions{
			Image: imageRef(t, imgs, images.Agent), PullPolicy: corev1.PullNever, ClusterName: cluster,
			OTLPEndpoint: recv.Addr, OTLPInsecure: true, ExportInterval: 500 * time.Millisecond, PollInterval: 200 * time.Millisecond,
		}
	}
	for _, cluster := range []string{"member1", "member2"} {
		objs, err := manifests.Agent(agentOpts(cluster))
		if err != nil {
			t.Fatal(err)
		}
		if err := manifests.Apply(ctx, f.Member(cluster).Client, objs); err != nil {
			t.Fatal(err)
		}
	}
	waitAgents(t, m1, 1)
	waitAgents(t, m2, 1)

	ns := "shop"
	svc := echoCartAcross(t, m1, m2, ns, bb)
	// frontend in member1: one connection, echoRounds lines echoGap apart,
	// then it closes: the probes read a connection's final byte counts at
	// its close (the last echo's bytes arrive after its last RTT callback).
	script := fmt.Sprintf(`sleep 2; (for i in $(seq %d); do echo %s; sleep %s; done; sleep 1) | nc %s 80 > /dev/null; sleep 3600`,
		echoRounds, strings.Repeat("x", lineBytes-1), echoGap, svc.Spec.ClusterIP)
	if _, err := m1.AppsV1().Deployments(ns).Create(ctx, deployment("frontend", ns, "", bb, "sh", "-c", script), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	runningPod(t, m1, ns, "frontend")

	client := map[string]string{
		string(telemetry.AttrRole): telemetry.RoleClient, string(telemetry.AttrWorkloadName): "frontend",
		string(telemetry.AttrWorkloadKind): "Deployment", string(telemetry.AttrNamespace): ns,
		string(telemetry.AttrServiceName): "cart", string(telemetry.AttrServiceNamespace): ns,
		string(telemetry.AttrPeerClusterName): "member2",
	}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	sum := func(pts []otlptest.Point) int64 {
		var n int64
		for _, p := range pts {
			n += p.Int
		}
		return n
	}
	want := int64(echoRounds * lineBytes)
	var sent, received int64
	// Every line is echoed within the run; the agent exports every 500 ms.
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		sent = sum(otlptest.Match(recv.Latest(telemetry.MetricBytes), with(client, string(telemetry.AttrDirection), "transmit")))
		received = sum(otlptest.Match(recv.Latest(telemetry.MetricBytes), with(client, string(telemetry.AttrDirection), "receive")))
		return sent == want && received == want, nil
	})
	if err != nil {
		for _, p := range recv.Latest(telemetry.MetricBytes) {
			t.Logf("%v %v = %d", p.Resource, p.Attrs, p.Int)
		}
		t.Fatalf("frontend -> cart bytes: transmit %d, receive %d; want %d each (%d lines of %d bytes)", sent, received, want, echoRounds, lineBytes)
	}
	rtt := otlptest.Match(recv.Latest(telemetry.MetricRTT), client)
	if len(rtt) != 1 || rtt[0].Count == 0 {
		t.Fatalf("RTT series of frontend -> cart: %+v", rtt)
	}
	if res := rtt[0].Resource; res[string(telemetry.AttrClusterName)] != "member1" || res[string(telemetry.AttrNodeName)] != fleet.NodeName("member1", 0) {
		t.Errorf("RTT reported by %v, want member1's node %s", res, fleet.NodeName("member1", 0))
	}
	// The sum is exact, so the mean has the hub's bound (precision.go).
	mean := time.Duration(rtt[0].Sum / float64(rtt[0].Count) * float64(time.Second))
	hi := injected + wan.MeanTolerance(int(rtt[0].Count))
	t.Logf("frontend -> cart over the WAN: %d bytes each way, mean RTT %v over %d samples (injected %v, bound %v)", sent, mean, rtt[0].Count, injected, hi)
	if mean < injected-time.Microsecond || mean > hi {
		t.Errorf("mean RTT %v over %d samples, want within [%v, %v]", mean, rtt[0].Count, injected, hi)
	}

	// Without any one of its capabilities the agent must say which, in the
	// pod's status.
	for _, drop := range []corev1.Capability{"NET_ADMIN", "SYS_ADMIN"} {
		t.Run("without "+string(drop), func(t *testing.T) {
			o := agentOpts("member1")
			o.Capabilities = slices.DeleteFunc(slices.Clone(manifests.AgentCapabilities), func(c corev1.Capability) bool { return c == drop })
			objs, err := manifests.Agent(o)
			if err != nil {
				t.Fatal(err)
			}
			if err := manifests.Apply(ctx, m1, objs); err != nil {
				t.Fatal(err)
			}
			msg := agentFailure(t, m1, o.Capabilities)
			if want := "CAP_" + string(drop) + " is needed"; !strings.Contains(msg, want) {
				t.Errorf("the agent without %s failed with %q: want it to say %q", drop, msg, want)
			}
		})
	}
}

// agentFailure waits for an agent pod with exactly caps to terminate with
// an error, and returns its termination message.
func agentFailure(t *testing.T, c kubernetes.Interface, caps []corev1.Capability) string {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(manifests.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.AgentName})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			if !slices.Equal(p.Spec.Containers[0].SecurityContext.Capabilities.Add, caps) {
				continue // the pod before the update
			}
			for _, cs := range p.Status.ContainerStatuses {
				for _, st := range []corev1.ContainerState{cs.State, cs.LastTerminationState} {
					if st.Terminated != nil && st.Terminated.ExitCode != 0 {
						msg = st.Terminated.Message
						return true, nil
					}
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the agent with capabilities %v did not fail: %v\n%s", caps, err, agentPodsReport(c))
	}
	return msg
}
