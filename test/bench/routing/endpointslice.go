package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/klog/v2"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/internal/latencymatrix"
	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/internal/routing"
	"github.com/flowplace/flowplace/test/bench/benchenv"
	"github.com/flowplace/flowplace/world/controlplane"
)

// measureEndpointSliceFailover: routing's controller (the agent's) against
// a real API server; a service's local endpoint dies and its EndpointSlice
// turns it not ready, as the kubelet's readiness probe would; the time
// from that update to a new connect answered by the next cluster's
// endpoint. Passive detection is off (the largest failure threshold), so
// only the update moves traffic.
func measureEndpointSliceFailover(o options, routed *benchenv.Cgroup) (*failover, error) {
	fmt.Printf("\n== failover after an EndpointSlice update: %d backend deaths through routing's controller and a real API server\n", o.kills)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Config{Members: []string{"m1"}})
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	defer cp.Stop()
	cs := cp.Members["m1"].Client

	if err := routed.Enter(); err != nil {
		return nil, err
	}
	// EndpointSlices refuse loopback addresses: one from TEST-NET-2 on lo.
	host := netip.AddrFrom4([4]byte{198, 51, 100, byte(os.Getpid()%200 + 20)})
	if out, err := exec.Command("ip", "addr", "add", host.String()+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("add %s to lo: %v: %s", host, err, out)
	}
	defer exec.Command("ip", "addr", "del", host.String()+"/32", "dev", "lo").Run()
	next, err := listen(host.String()+":0", 'B')
	if err != nil {
		return nil, err
	}
	defer next.kill()

	health := redirect.DefaultHealth
	health.FailThreshold = 1000
	d, err := openDatapath(routed.Dir, health)
	if err != nil {
		return nil, err
	}
	defer d.close()

	const ns = "shop"
	for _, n := range []string{ns, "flowplace-system"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
	}
	svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart", Annotations: map[string]string{routing.AnnotationRouting: "nearest"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "web", Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}
	target := netip.AddrPortFrom(netip.MustParseAddr(svc.Spec.ClusterIP), 80).String()
	cl := flowplacev1alpha1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: "m1"}}
	cl.Status.ValidUntil = metav1.NewTime(time.Now().Add(24 * time.Hour))
	cl.Status.Peers = []flowplacev1alpha1.PeerLatency{{Cluster: "east", P50Microseconds: 20000, SampleCount: 100}}
	b, err := latencymatrix.Encode([]flowplacev1alpha1.ClusterLatency{cl})
	if err != nil {
		return nil, err
	}
	if _, err := cs.CoreV1().ConfigMaps("flowplace-system").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "flowplace-cluster-latency", Namespace: "flowplace-system"},
		Data:       map[string]string{latencymatrix.DataKey: string(b)},
	}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if _, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice("cart-east", "east", next.addr, true), metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	local, err := cs.DiscoveryV1().EndpointSlices(ns).Create(ctx, endpointSlice("cart-local", "", next.addr, false), metav1.CreateOptions{})
	if err != nil {
		return nil, err
	}

	factory := informers.NewSharedInformerFactory(cs, 0)
	c, err := routing.New(klog.Background(), routing.Config{
		Self: "m1", Datapath: d.route, Factory: factory, Client: cs,
		Matrix:   types.NamespacedName{Namespace: "flowplace-system", Name: "flowplace-cluster-latency"},
		Interval: time.Second, // the agent's default
	})
	if err != nil {
		return nil, err
	}
	runCtx, stopRun := context.WithCancel(ctx)
	factory.Start(runCtx.Done())
	factory.WaitForCacheSync(runCtx.Done())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		c.Run(runCtx)
	}()
	// The controller stops before the datapath closes (defers run last
	// first).
	defer func() {
		stopRun()
		<-ran
		factory.Shutdown()
	}()

	setLocal := func(addr netip.AddrPort, ready bool) error {
		s := endpointSlice(local.Name, "", addr, ready)
		s.ResourceVersion = local.ResourceVersion
		var err error
		local, err = cs.DiscoveryV1().EndpointSlices(ns).Update(ctx, s, metav1.UpdateOptions{})
		return err
	}
	f := &failover{}
	for range o.kills {
		first, err := listen(host.String()+":0", 'A')
		if err != nil {
			return nil, err
		}
		if err := setLocal(first.addr, true); err != nil {
			first.kill()
			return nil, err
		}
		if err := waitAnswer(target, 'A', 10*time.Second); err != nil {
			first.kill()
			return nil, fmt.Errorf("before the death: %w", err)
		}
		var updateErr error
		ms, before, after, err := observe(target, o.interval, 200*time.Millisecond, 'B', func() time.Time {
			first.kill()
			at := time.Now()
			updateErr = setLocal(first.addr, false)
			return at
		})
		if updateErr != nil {
			return nil, updateErr
		}
		if err != nil {
			return nil, err
		}
		f.times, f.failed = append(f.times, ms), append(f.failed, before)
		f.failedAfter += after
	}
	f.report("EndpointSlice update")
	return f, nil
}

// waitAnswer polls target until id answers it.
func waitAnswer(target string, id byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var got byte
	var err error
	for time.Now().Before(deadline) {
		if got, err = cycle(target, time.Second); err == nil && got == id {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s answered by %q (%v) after %s, want %q", target, got, err, timeout, id)
}

func endpointSlice(name, cluster string, be netip.AddrPort, ready bool) *discoveryv1.EndpointSlice {
	port, pname := int32(be.Port()), "web"
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: "cart"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{be.Addr().String()}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &pname, Port: &port}},
	}
	if cluster != "" {
		es.Annotations = map[string]string{"endpointslice.karmada.io/provision-cluster": cluster}
	}
	return es
}
