package e2e

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/test/otlptest"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/wan"
)

// forwardIntoNetns makes a host-side TCP address reachable at the same
// address inside a cluster's network namespace (its loopback is its own), so
// that processes there can use the member API server's kubeconfig as is.
func forwardIntoNetns(t *testing.T, c *wan.Cluster, hostAddr string) {
	t.Helper()
	ln, err := c.Listen("tcp4", hostAddr)
	if err != nil {
		t.Fatalf("forward %s into %s: %v", hostAddr, c.Name, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := net.Dial("tcp4", hostAddr)
				if err != nil {
					return
				}
				defer out.Close()
				go io.Copy(out, in)
				io.Copy(in, out)
			}()
		}
	}()
}

func ptr[T any](v T) *T { return &v }

// memberObjects creates what a member cluster would hold for the shop
// application: the frontend pod on this node, a local cart pod, the cart
// Service, its local EndpointSlice and the slice Karmada's MultiClusterService
// dispatch copies in from the other cluster.
func memberObjects(t *testing.T, ctx context.Context, cs kubernetes.Interface, node string, nodeIP, frontendIP, cartLocal, cartRemote netip.Addr, remote string) *corev1.Service {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
	must(err)
	_, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: node},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: nodeIP.String()}}},
	}, metav1.CreateOptions{})
	must(err)
	pod := func(name, rs, hash string, ip netip.Addr) {
		p, err := cs.CoreV1().Pods("shop").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": strings.Split(rs, "-")[0], "pod-template-hash": hash},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, UID: types.UID("00000000-0000-0000-0000-00000000000" + hash[:1]), Controller: ptr(true)}}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "example/app"}}},
		}, metav1.CreateOptions{})
		must(err)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
		_, err = cs.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{})
		must(err)
	}
	pod("frontend-6f7d9c-x2k4p", "frontend-6f7d9c", "6f7d9c", frontendIP)
	pod("cart-5b8c4d-q9w7e", "cart-5b8c4d", "5b8c4d", cartLocal)
	svc, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cart"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{})
	must(err)
	slice := func(name string, ip netip.Addr, annotations map[string]string, target *corev1.ObjectReference) {
		_, err := cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations,
				Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip.String()}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}, TargetRef: target}},
			Ports:       []discoveryv1.EndpointPort{{Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP), Name: ptr("")}},
		}, metav1.CreateOptions{})
		must(err)
	}
	slice("cart-local", cartLocal, nil, &corev1.ObjectReference{Kind: "Pod", Namespace: "shop", Name: "cart-5b8c4d-q9w7e"})
	slice(remote+"-cart-remote", cartRemote, map[string]string{attribution.ProvisionClusterAnnotation: remote}, nil)
	return svc
}

// TestAgentKubernetesAttribution is the agent end to end in Kubernetes mode:
// member API servers describe the shop application whose processes really
// run in two network namespaces 20 ms apart; the real kube-proxy programs the
// cart Service's DNAT in m1, spreading the frontend's connections over the
// local backend and the one in m2. The agent, with informers on m1's API
// server and conntrack for the translation, must export each connection's
// bytes and RTT under the right source workload, service and destination
// cluster, over OTLP and on /metrics.
func TestAgentKubernetesAttribution(t *testing.T) {
	probetest.RequireKernel(t)
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Fatal("iptables is not installed (.ci/run installs it); kube-proxy needs it")
	}
	ctx := context.Background()
	cp := controlplane.StartForTest(t, controlplane.Config{Members: []string{"m1", "m2"}})
	const remoteRTT = 20 * time.Millisecond
	// QuickACK: kernel RTT samples are the path's RTT (world/wan/precision.go).
	topo := wan.NewForTestConfig(t, wan.Config{Clusters: []string{"m1", "m2"}, ExtraRTT: map[wan.Pair]time.Duration{{A: "m1", B: "m2"}: remoteRTT}, QuickACK: true})
	m1, _ := topo.Cluster("m1")
	m2, _ := topo.Cluster("m2")
	frontendIP, _ := m1.AllocAddr()
	cartM1, _ := m1.AllocAddr()
	cartM2, err := m2.AllocAddr()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]chan [2]int{"m1": make(chan [2]int, 64), "m2": make(chan [2]int, 64)}
	for name, ip := range map[string]netip.Addr{"m1": cartM1, "m2": cartM2} {
		c, _ := topo.Cluster(name)
		ln, err := c.Listen("tcp4", netip.AddrPortFrom(ip, 8080).String())
		if err != nil {
			t.Fatal(err)
		}
		serve(t, ln, 100, 4000, served[name])
	}

	member1 := cp.Members["m1"]
	svc := memberObjects(t, ctx, member1.Client, "node-m1", m1.NodeAddr, frontendIP, cartM1, cartM2, "m2")
	memberObjects(t, ctx, cp.Members["m2"].Client, "node-m2", m2.NodeAddr, netip.MustParseAddr("10.77.2.250"), cartM2, cartM1, "m1")
	vip := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80)
	m1UID, err := member1.KubeSystemUID(ctx)
	if err != nil {
		t.Fatal(err)
	}

	u, _ := url.Parse(member1.URL)
	forwardIntoNetns(t, m1, u.Host)
	// A node's default route: connect() needs one to the service range
	// before kube-proxy's OUTPUT rules translate it.
	if out, err := m1.Command(ctx, "ip", "route", "add", member1.ServiceCIDR, "dev", wan.TunName).CombinedOutput(); err != nil {
		t.Fatalf("route to the service range: %v: %s", err, out)
	}
	pctx, stopProxy := context.WithCancel(ctx)
	var proxyLog bytes.Buffer
	proxy := m1.Command(pctx, cp.Binaries.KubeProxy, "--kubeconfig", member1.Kubeconfig, "--hostname-override", "node-m1",
		"--proxy-mode", "iptables", "--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0",
		"--conntrack-tcp-timeout-close-wait", "0", "--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256",
		"--cluster-cidr", "10.77.0.0/16")
	proxy.Stdout, proxy.Stderr = &proxyLog, &proxyLog
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	proxyDone := make(chan error, 1)
	go func() { proxyDone <- proxy.Wait() }()
	t.Cleanup(func() {
		stopProxy()
		<-proxyDone
		m1.Command(ctx, "iptables", "-t", "nat", "-F").Run()
		if t.Failed() {
			t.Logf("kube-proxy log:\n%s", proxyLog.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, _ := m1.Command(ctx, "iptables-save", "-t", "nat").CombinedOutput()
		if strings.Contains(string(out), vip.Addr().String()) && strings.Count(string(out), "-j DNAT") >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-proxy did not program %s:\n%s", vip, out)
		}
		select {
		case err := <-proxyDone:
			proxyDone <- err
			t.Fatalf("kube-proxy exited: %v", err)
		case <-time.After(200 * time.Millisecond):
		}
	}

	recv := otlptest.Start(t)
	cg := probetest.Cgroup(t)
	listen := freePort(t)
	var agentLog bytes.Buffer
	agent := exec.Command(buildBinary(t, "./cmd/flowplace-agent"), "--kubeconfig", member1.Kubeconfig,
		"--node-name", "node-m1", "--cluster-name", "m1", "--cgroup", cg, "--conntrack-netns", "/run/netns/"+m1.NetNS,
		"--otlp-endpoint", recv.Addr, "--otlp-insecure", "--export-interval", "500ms", "--poll-interval", "200ms",
		"--listen-address", listen, "-v", "5")
	agent.Stdout, agent.Stderr = &agentLog, &agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Process.Kill()
		agent.Wait()
		if t.Failed() {
			t.Logf("agent log:\n%s", agentLog.String())
		}
	})
	waitReady(t, "http://"+listen+"/readyz")

	l := &agentLab{a: m1, frontendIP: frontendIP}
	const n = 16
	l.talk(t, vip, n)
	want, conns := map[string]moved{}, map[string]int{}
	for got := 0; got < n; {
		select {
		case s := <-served["m1"]:
			m := want["m1"]
			want["m1"] = moved{m.sent + s[0], m.received + s[1]}
			conns["m1"]++
		case s := <-served["m2"]:
			m := want["m2"]
			want["m2"] = moved{m.sent + s[0], m.received + s[1]}
			conns["m2"]++
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d connections finished at the backends", got, n)
		}
		got++
	}
	t.Logf("kube-proxy spread %d connections: %v", n, conns)

	peer := map[string]map[string]string{
		"m1": {string(telemetry.AttrPeerClusterUID): m1UID, string(telemetry.AttrPeerClusterName): "m1", string(telemetry.AttrPeerWorkloadName): "cart", string(telemetry.AttrPeerWorkloadKind): "Deployment"},
		"m2": {string(telemetry.AttrPeerClusterName): "m2"},
	}
	series := func(cluster, dir string) map[string]string {
		m := map[string]string{
			string(telemetry.AttrRole): telemetry.RoleClient, string(telemetry.AttrWorkloadName): "frontend",
			string(telemetry.AttrWorkloadKind): "Deployment", string(telemetry.AttrNamespace): "shop",
			string(telemetry.AttrServiceName): "cart", string(telemetry.AttrServiceNamespace): "shop",
			string(telemetry.AttrServerPort): "80",
		}
		for k, v := range peer[cluster] {
			m[k] = v
		}
		if dir != "" {
			m[string(telemetry.AttrDirection)] = dir
		}
		return m
	}
	sumInt := func(pts []otlptest.Point) int64 {
		var n int64
		for _, p := range pts {
			n += p.Int
		}
		return n
	}
	deadline = time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for c, m := range want {
			if sumInt(otlptest.Match(recv.Latest(telemetry.MetricBytes), series(c, "transmit"))) != int64(m.sent) {
				ok = false
			}
		}
		if ok {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	fams := scrape(t, "http://"+listen+"/metrics")
	for c, m := range want {
		t.Run("to-"+c, func(t *testing.T) {
			if got := sumInt(otlptest.Match(recv.Latest(telemetry.MetricBytes), series(c, "transmit"))); got != int64(m.sent) {
				t.Errorf("bytes transmit %d, want %d", got, m.sent)
			}
			if got := sumInt(otlptest.Match(recv.Latest(telemetry.MetricBytes), series(c, "receive"))); got != int64(m.received) {
				t.Errorf("bytes receive %d, want %d", got, m.received)
				for _, p := range recv.Latest(telemetry.MetricBytes) {
					t.Logf("%v = %d", p.Attrs, p.Int)
				}
			}
			if got := sumInt(otlptest.Match(recv.Latest(telemetry.MetricConnections), series(c, ""))); got != int64(conns[c]) {
				t.Errorf("connections %d, want %d", got, conns[c])
			}
			rtt := otlptest.Match(recv.Latest(telemetry.MetricRTT), series(c, ""))
			if len(rtt) != 1 || rtt[0].Count == 0 {
				t.Fatalf("RTT series %+v", rtt)
			}
			var wantRTT time.Duration
			if c == "m2" {
				wantRTT = remoteRTT
			}
			// Exact OTLP sum, so the mean has the hub's bound.
			if mean, hi := rtt[0].Sum/float64(rtt[0].Count), wantRTT+wan.MeanTolerance(int(rtt[0].Count)); mean < wantRTT.Seconds()-1e-6 || mean > hi.Seconds() {
				t.Errorf("mean RTT %.6fs over %d samples, want within [%s, %s]", mean, rtt[0].Count, wantRTT, hi)
			}
			if res := rtt[0].Resource; res["k8s.cluster.uid"] != m1UID || res["k8s.node.name"] != "node-m1" {
				t.Errorf("resource %v does not name the reporting cluster %s", res, m1UID)
			}
			labels := map[string]string{"k8s_cluster_uid": m1UID}
			for k, v := range series(c, "transmit") {
				labels[strings.ReplaceAll(k, ".", "_")] = v
			}
			if got := promValue(t, fams, "flowplace_tcp_bytes_total", labels); got != float64(m.sent) {
				t.Errorf("Prometheus bytes transmit %v, want %d", got, m.sent)
			}
		})
	}
	if c := conns["m1"] + conns["m2"]; c != n {
		t.Errorf("%d connections reached a backend, want %d", c, n)
	}
}
