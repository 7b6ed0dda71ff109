package routing_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2/ktesting"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/internal/latencymatrix"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/internal/routing"
	"github.com/flowplace/flowplace/world/controlplane"
)

// backendAddr is a host address for the test's backends: EndpointSlices
// refuse loopback addresses, so one from TEST-NET-2 goes on lo for the
// test.
func backendAddr(t *testing.T) netip.Addr {
	t.Helper()
	a := netip.AddrFrom4([4]byte{198, 51, 100, byte(os.Getpid()%200 + 20)})
	if out, err := exec.Command("ip", "addr", "add", a.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("add %s to lo: %v: %s", a, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "addr", "del", a.String()+"/32", "dev", "lo").Run() })
	return a
}

// backend is a server on addr that greets every connection with its name.
func backend(t *testing.T, addr netip.Addr, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp4", addr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte(name + "\n"))
				buf := make([]byte, 64)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func greet(c net.Conn) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 32)
	n, err := c.Read(buf)
	_ = c.SetReadDeadline(time.Time{})
	return strings.TrimSpace(string(buf[:n])), err
}

func dial(addr netip.AddrPort) (string, net.Conn, error) {
	c, err := net.DialTimeout("tcp4", addr.String(), 3*time.Second)
	if err != nil {
		return "", nil, err
	}
	name, err := greet(c)
	if err != nil {
		c.Close()
		return "", nil, err
	}
	return name, c, nil
}

// eventually polls cond every 50 ms for up to 20 s (the controller syncs
// every 100 ms; API watches deliver in milliseconds here).
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, s := cond()
		if ok {
			return
		}
		last = s
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still %s", what, last)
}

func routedTo(addr netip.AddrPort, want string) func() (bool, string) {
	return func() (bool, string) {
		name, c, err := dial(addr)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return name == want, "routed to " + name
	}
}

func slice(name, svc, cluster string, be netip.AddrPort, ready bool) *discoveryv1.EndpointSlice {
	port, pname := int32(be.Port()), "web"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Namespace: "shop", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{be.Addr().String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port}},
	}
	if cluster != "" {
		es.Annotations = map[string]string{"endpointslice.karmada.io/provision-cluster": cluster}
	}
	return es
}

func matrix(t *testing.T, validUntil time.Time, rtt map[string]int64) *corev1.ConfigMap {
	t.Helper()
	cl := flowplacev1alpha1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: "m1"}}
	cl.Status.ValidUntil = metav1.NewTime(validUntil)
	for peer, us := range rtt {
		cl.Status.Peers = append(cl.Status.Peers, flowplacev1alpha1.PeerLatency{Cluster: peer, P50Microseconds: us, SampleCount: 100})
	}
	b, err := latencymatrix.Encode([]flowplacev1alpha1.ClusterLatency{cl})
	if err != nil {
		t.Fatal(err)
	}
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "flowplace-cluster-latency", Namespace: "flowplace-system"},
		Data: map[string]string{latencymatrix.DataKey: string(b)}}
}

// The controller against a real API server, routing real connects in the
// real kernel: a client in a cluster with no local endpoints goes to the
// nearest cluster by the fleet matrix; to the next when that one's
// endpoints turn not ready (and its open connections are closed); back when
// they are ready again; and to another cluster after an RTT change only
// once the change has held for the hysteresis.
func TestControllerRoutesByMatrixReadinessAndHysteresis(t *testing.T) {
	cg := probetest.Cgroup(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp := controlplane.StartForTest(t, controlplane.Config{Members: []string{"m1"}})
	m1 := cp.Members["m1"]
	cs := m1.Client
	log := ktesting.NewLogger(t, ktesting.NewConfig())
	d, err := redirect.Open(log, redirect.Options{Cgroup: cg})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	host := backendAddr(t)
	east, west, mars := backend(t, host, "east"), backend(t, host, "west"), backend(t, host, "mars")
	for _, ns := range []string{"shop", "flowplace-system"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	const hold = 2 * time.Second
	mkSvc := func(name string, ann map[string]string) netip.AddrPort {
		t.Helper()
		s, err := cs.CoreV1().Services("shop").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: ann},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return netip.AddrPortFrom(netip.MustParseAddr(s.Spec.ClusterIP), 80)
	}
	cart := mkSvc("cart", map[string]string{routing.AnnotationRouting: "nearest", routing.AnnotationHysteresis: hold.String()})
	plain := mkSvc("plain", nil)
	broken := mkSvc("broken", map[string]string{routing.AnnotationRouting: "closest"})
	empty := mkSvc("empty", map[string]string{routing.AnnotationRouting: "nearest"})
	for _, es := range []*discoveryv1.EndpointSlice{
		slice("cart-east", "cart", "east", east, true), slice("cart-west", "cart", "west", west, true),
		slice("plain-east", "plain", "east", east, true), slice("broken-east", "broken", "east", east, true),
	} {
		if _, err := cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, es, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cs.CoreV1().ConfigMaps("flowplace-system").Create(ctx, matrix(t, time.Now().Add(time.Hour), map[string]int64{"east": 20000, "west": 40000}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	factory := informers.NewSharedInformerFactory(cs, 0)
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	defer b.Shutdown()
	disc := discovery.NewDiscoveryClientForConfigOrDie(m1.RESTConfig)
	c, err := routing.New(log, routing.Config{
		Self: "m1", Datapath: d, Factory: factory, Discovery: disc, Metadata: metadata.NewForConfigOrDie(m1.RESTConfig),
		Client: cs, Matrix: types.NamespacedName{Namespace: "flowplace-system", Name: "flowplace-cluster-latency"},
		Events: b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "flowplace-agent"}), Interval: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	go c.Run(ctx)

	// Nearest by the matrix: east (20 ms) before west (40 ms).
	eventually(t, "routed to the nearest cluster", routedTo(cart, "east"))
	if tb := d.Tables(); len(tb) != 1 || len(tb[cart]) != 3 || len(tb[cart][0]) != 0 {
		t.Errorf("tables %v: want only cart's, with an empty local tier and two remote ones", tb)
	}
	_, held, err := dial(cart) // a long-lived connection to east
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	// East's endpoints turn not ready: west serves, and the connection
	// held to east is closed so its client reconnects.
	setReady := func(name string, ready bool) {
		t.Helper()
		es, err := cs.DiscoveryV1().EndpointSlices("shop").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		es.Endpoints[0].Conditions.Ready = &ready
		if _, err := cs.DiscoveryV1().EndpointSlices("shop").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setReady("cart-east", false)
	eventually(t, "routed to the next cluster", routedTo(cart, "west"))
	_ = held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 8)); err == nil || strings.Contains(err.Error(), "timeout") {
		t.Errorf("connection to the backend that left was not closed: read = %v", err)
	}
	// Ready again: east is back at once (readiness is a fact, not noise).
	setReady("cart-east", true)
	eventually(t, "back to the nearest cluster", routedTo(cart, "east"))

	// East becomes slower than west: connects follow only after the hold.
	cm := matrix(t, time.Now().Add(time.Hour), map[string]int64{"east": 60000, "west": 40000})
	changed := time.Now()
	if _, err := cs.CoreV1().ConfigMaps("flowplace-system").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "routed to the now nearer cluster", routedTo(cart, "west"))
	if took := time.Since(changed); took < hold {
		t.Errorf("order changed %s after the RTT change, before the %s hysteresis", took, hold)
	}

	// A slice naming a cluster nobody measured: used, last, and said so.
	if _, err := cs.DiscoveryV1().EndpointSlices("shop").Create(ctx, slice("cart-mars", "cart", "mars", mars, true), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unknown cluster's endpoints in the last tier", func() (bool, string) {
		tiers := d.Tables()[cart]
		last := tiers[len(tiers)-1]
		return len(tiers) == 4 && len(last) == 1 && last[0].Addr == mars, fmt.Sprint(tiers)
	})

	// Bad input is reported on the Service and changes nobody's routing.
	wantEvent := func(svc, reason string) {
		t.Helper()
		eventually(t, "event "+reason+" on "+svc, func() (bool, string) {
			evs, err := cs.CoreV1().Events("shop").List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err.Error()
			}
			var seen []string
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == svc && e.Reason == reason && e.Type == corev1.EventTypeWarning {
					return true, ""
				}
				seen = append(seen, e.InvolvedObject.Name+":"+e.Reason)
			}
			return false, fmt.Sprint(seen)
		})
	}
	wantEvent("broken", "InvalidRoutingPolicy")
	wantEvent("empty", "NoEndpoints")
	wantEvent("cart", "UnknownCluster")
	tb := d.Tables()
	for _, vip := range []netip.AddrPort{plain, broken, empty} {
		if _, ok := tb[vip]; ok {
			t.Errorf("%s is routed: only annotated, valid services with endpoints are", vip)
		}
	}
	if ok, s := routedTo(cart, "west")(); !ok {
		t.Errorf("cart after bad input elsewhere: %s, want west", s)
	}
}
