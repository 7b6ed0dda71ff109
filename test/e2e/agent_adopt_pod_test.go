package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/internal/manifests"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/test/otlptest"
	"github.com/flowplace/flowplace/world/fleet"
	"github.com/flowplace/flowplace/world/wan"
)

// The exchanges of TestAgentPodAdoptsExistingConnections: a client sends
// linesBefore lines, says "primed" on stderr, waits for /tmp/go, then sends
// linesAfter lines, echoGap apart, and closes.
const (
	linesBefore = 10
	linesAfter  = 40
)

// TestAgentPodAdoptsExistingConnections: a frontend in member1 opens a
// connection to a cart Service whose endpoints are in member2 (20 ms away)
// before any agent runs, and uses it before and after the agent DaemonSet
// starts. The agent pod must say it adopted a connection, and report for
// it exactly the bytes sent after it attached, and the injected RTT. Then,
// with a second connection open (one the first agent pod saw open and
// carry bytes), the agent pod is deleted: its replacement must adopt that
// connection and count only the bytes after its own start.
func TestAgentPodAdoptsExistingConnections(t *testing.T) {
	const injected = 20 * time.Millisecond
	imgs := fleet.ImagesForTest(t, images.Pause, images.Busybox, images.Agent)
	f := fleet.StartForTest(t, fleet.Config{
		Clusters: []string{"member1", "member2"},
		ExtraRTT: map[wan.Pair]time.Duration{{A: "member1", B: "member2"}: injected},
		QuickACK: true,
		AddrBase: 84,
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

	ns := "shop"
	svc := echoCartAcross(t, m1, m2, ns, bb)
	// One connection per client, opened at once. The last echo arrives
	// within the second before the close, which is when the probes read the
	// final byte counts.
	line := strings.Repeat("x", lineBytes-1)
	script := fmt.Sprintf(`sleep 2; (for i in $(seq %d); do echo %s; sleep %s; done; echo primed >&2; `+
		`until [ -f /tmp/go ]; do sleep 0.2; done; for i in $(seq %d); do echo %s; sleep %s; done; sleep 1) | nc %s 80 > /dev/null; `+
		`echo "closed: nc exit $?" >&2; sleep 3600`,
		linesBefore, line, echoGap, linesAfter, line, echoGap, svc.Spec.ClusterIP)
	if _, err := m1.AppsV1().Deployments(ns).Create(ctx, deployment("frontend", ns, "", bb, "sh", "-c", script), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	frontend := runningPod(t, m1, ns, "frontend")
	waitLog(t, m1, ns, frontend.Name, "primed")

	// Only now the agents, which find the frontend's connection open.
	for _, cluster := range []string{"member1", "member2"} {
		objs, err := manifests.Agent(manifests.AgentOptions{
			Image: imageRef(t, imgs, images.Agent), PullPolicy: corev1.PullNever, ClusterName: cluster,
			OTLPEndpoint: recv.Addr, OTLPInsecure: true, ExportInterval: 500 * time.Millisecond, PollInterval: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := manifests.Apply(ctx, f.Member(cluster).Client, objs); err != nil {
			t.Fatal(err)
		}
	}
	waitAgents(t, m1, 1)
	waitAgents(t, m2, 1)
	agent1 := agentPod(t, m1, "")
	touchGo(t, f, "member1", ns, frontend.Name)

	client := func(workload string) map[string]string {
		return map[string]string{
			string(telemetry.AttrRole): telemetry.RoleClient, string(telemetry.AttrWorkloadName): workload,
			string(telemetry.AttrWorkloadKind): "Deployment", string(telemetry.AttrNamespace): ns,
			string(telemetry.AttrServiceName): "cart", string(telemetry.AttrServiceNamespace): ns,
			string(telemetry.AttrPeerClusterName): "member2",
		}
	}
	t.Run("adopted at start", func(t *testing.T) {
		assertAdopted(t, m1, agent1.Name)
		assertAfterAttach(t, recv, client("frontend"), injected, true)
	})

	// The second connection opens under the running agent pod and carries
	// linesBefore lines; then that pod is replaced.
	if _, err := m1.AppsV1().Deployments(ns).Create(ctx, deployment("basket", ns, "", bb, "sh", "-c", script), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	basket := runningPod(t, m1, ns, "basket")
	waitLog(t, m1, ns, basket.Name, "primed")
	if err := m1.CoreV1().Pods(agent1.Namespace).Delete(ctx, agent1.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The old pod's final export is sent before it is gone; from then on
	// the member1 node's newest export is the replacement's.
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := m1.CoreV1().Pods(agent1.Namespace).Get(ctx, agent1.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("agent pod %s not gone: %v\n%s", agent1.Name, err, agentPodsReport(m1))
	}
	agent2 := agentPod(t, m1, agent1.Name)
	touchGo(t, f, "member1", ns, basket.Name)
	t.Run("adopted by the replacement pod", func(t *testing.T) {
		assertAdopted(t, m1, agent2.Name)
		// The first pod saw this connection established, and its last
		// export of established connections is still the node's newest.
		assertAfterAttach(t, recv, client("basket"), injected, false)
	})
}

// waitLog waits until the logs of pod contain s.
func waitLog(t *testing.T, c kubernetes.Interface, ns, pod, s string) {
	t.Helper()
	var logs []byte
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var err error
		logs, err = c.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(ctx)
		return err == nil && strings.Contains(string(logs), s), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s did not log %q: %v; logs:\n%s", ns, pod, s, err, logs)
	}
}

// agentPod waits for a Ready agent pod other than not and returns it.
func agentPod(t *testing.T, c kubernetes.Interface, not string) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(manifests.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.AgentName})
		if err != nil {
			return false, err
		}
		for _, p := range l.Items {
			if p.Name == not || p.DeletionTimestamp != nil {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					pod = p
					return true, nil
				}
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no Ready agent pod (other than %q): %v\n%s", not, err, agentPodsReport(c))
	}
	return pod
}

// touchGo lets a client pod's second batch of lines go, with kubectl exec.
func touchGo(t *testing.T, f *fleet.Fleet, member, ns, pod string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, f.ControlPlane.Binaries.Kubectl, "--kubeconfig", f.Member(member).Kubeconfig,
		"-n", ns, "exec", pod, "--", "touch", "/tmp/go").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl exec %s -- touch /tmp/go: %v\n%s", pod, err, out)
	}
}

var adoptedRE = regexp.MustCompile(`"Adopted connections open before the agent started"[^\n]* adopted=(\d+)[^\n]*`)

// assertAdopted checks that the agent pod's log says it adopted at least
// one connection at start.
func assertAdopted(t *testing.T, c kubernetes.Interface, pod string) {
	t.Helper()
	logs, err := c.CoreV1().Pods(manifests.DefaultNamespace).GetLogs(pod, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("logs of agent pod %s: %v", pod, err)
	}
	m := adoptedRE.FindSubmatch(logs)
	if m == nil {
		t.Fatalf("agent pod %s did not log that it adopted connections; logs:\n%s", pod, logs)
	}
	n, _ := strconv.Atoi(string(m[1]))
	t.Logf("agent pod %s: %s", pod, m[0])
	if n < 1 {
		t.Errorf("agent pod %s adopted %d connections at start, want at least the client's", pod, n)
	}
}

// assertAfterAttach checks what the member1 agent exported for the client
// series of an adopted connection once it closed: exactly the linesAfter
// lines each way, a mean RTT within the hub's bound of the injected one,
// and, if noneOpened, no connection established (it was adopted).
func assertAfterAttach(t *testing.T, recv *otlptest.Receiver, client map[string]string, injected time.Duration, noneOpened bool) {
	t.Helper()
	with := func(k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range client {
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
	m1 := func(pts []otlptest.Point) []otlptest.Point {
		var out []otlptest.Point
		for _, p := range pts {
			if p.Resource[string(telemetry.AttrClusterName)] == "member1" {
				out = append(out, p)
			}
		}
		return out
	}
	want := int64(linesAfter * lineBytes)
	var sent, received int64
	// The client closes about linesAfter*echoGap+1 s after its go; the
	// agent exports every 500 ms.
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		bytes := m1(recv.Latest(telemetry.MetricBytes))
		sent = sum(otlptest.Match(bytes, with(string(telemetry.AttrDirection), "transmit")))
		received = sum(otlptest.Match(bytes, with(string(telemetry.AttrDirection), "receive")))
		return sent == want && received == want, nil
	})
	if err != nil {
		for _, p := range recv.Latest(telemetry.MetricBytes) {
			t.Logf("%v %v = %d", p.Resource, p.Attrs, p.Int)
		}
		t.Fatalf("%s -> cart bytes: transmit %d, receive %d; want %d each (the %d lines of %d bytes after the agent attached, not the %d before)",
			client[string(telemetry.AttrWorkloadName)], sent, received, want, linesAfter, lineBytes, linesBefore)
	}
	if n := sum(otlptest.Match(m1(recv.Latest(telemetry.MetricConnections)), client)); noneOpened && n != 0 {
		t.Errorf("%d connections established reported for %s -> cart, want 0: its connection was adopted", n, client[string(telemetry.AttrWorkloadName)])
	}
	rtt := otlptest.Match(m1(recv.Latest(telemetry.MetricRTT)), client)
	if len(rtt) != 1 || rtt[0].Count == 0 {
		t.Fatalf("RTT series of %s -> cart: %+v", client[string(telemetry.AttrWorkloadName)], rtt)
	}
	mean := time.Duration(rtt[0].Sum / float64(rtt[0].Count) * float64(time.Second))
	hi := injected + wan.MeanTolerance(int(rtt[0].Count))
	t.Logf("%s -> cart, adopted: %d bytes each way, mean RTT %v over %d samples (injected %v, bound %v)",
		client[string(telemetry.AttrWorkloadName)], sent, mean, rtt[0].Count, injected, hi)
	if mean < injected-time.Microsecond || mean > hi {
		t.Errorf("mean RTT %v over %d samples, want within [%v, %v]", mean, rtt[0].Count, injected, hi)
	}
}
