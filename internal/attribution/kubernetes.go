package attribution

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Karmada and MCS conventions for endpoints of other clusters.
const (
	// ProvisionClusterAnnotation names the cluster an EndpointSlice was
	// copied from (Karmada MultiClusterService dispatch).
	ProvisionClusterAnnotation = "endpointslice.karmada.io/provision-cluster"
	// DerivedServicePrefix prefixes the Service that MCS ServiceImport
	// consumers use: derived-<svc>.
	DerivedServicePrefix = "derived-"
)

// Kubernetes resolves from informer caches of one member cluster.
type Kubernetes struct {
	self     Cluster
	nodeName string
	gen      atomic.Uint64

	mu        sync.RWMutex
	localPods map[netip.Addr]Workload // pods on this node, by pod IP
	pods      map[netip.Addr]Endpoint // every pod in the cluster, by IP
	vips      map[netip.AddrPort]Service
	endpoints map[netip.Addr]Endpoint // from EndpointSlices, incl. other clusters'
	slices    map[string][]netip.Addr // slice key -> addresses it added
	svcVIPs   map[string][]netip.AddrPort
	podIPs    map[string][]netip.Addr
	hostPods  map[string]Workload // host-network pods on this node, by pod UID
	podUIDs   map[string]string   // pod key -> UID, for host-network pods

	// podOfCgroup finds the pod UID of a socket's cgroup: host-network
	// pods share the node's address, so their cgroup tells them apart.
	podOfCgroup func(cgroupID uint64) string
}

// SetCgroupResolver attributes sockets of host-network pods by their cgroup
// (e.g. cgroups.Resolver.PodUID).
func (k *Kubernetes) SetCgroupResolver(podUID func(cgroupID uint64) string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.podOfCgroup = podUID
}

// NewKubernetes starts informers on a member cluster, which run until ctx
// ends, and waits up to syncTimeout for their caches to fill. clusterName is
// this member's name in Karmada (optional); its UID is the kube-system
// namespace UID.
func NewKubernetes(ctx context.Context, client kubernetes.Interface, clusterName, nodeName string, syncTimeout time.Duration) (*Kubernetes, error) {
	return NewKubernetesFromFactory(ctx, client, informers.NewSharedInformerFactory(client, 30*time.Minute), clusterName, nodeName, syncTimeout)
}

// NewKubernetesFromFactory is NewKubernetes on a given informer factory, so
// that other parts of the agent (routing) share its caches of Services and
// EndpointSlices. It starts the factory.
func NewKubernetesFromFactory(ctx context.Context, client kubernetes.Interface, f informers.SharedInformerFactory, clusterName, nodeName string, syncTimeout time.Duration) (*Kubernetes, error) {
	sctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	ns, err := client.CoreV1().Namespaces().Get(sctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read cluster identity (kube-system namespace UID): %w", err)
	}
	// Fail fast, naming the permission, rather than wait for informers
	// that can never sync.
	limit := metav1.ListOptions{Limit: 1}
	for _, check := range []struct {
		what string
		list func() error
	}{
		{"pods", func() error { _, err := client.CoreV1().Pods("").List(sctx, limit); return err }},
		{"services", func() error { _, err := client.CoreV1().Services("").List(sctx, limit); return err }},
		{"endpointslices.discovery.k8s.io", func() error {
			_, err := client.DiscoveryV1().EndpointSlices("").List(sctx, limit)
			return err
		}},
	} {
		if err := check.list(); err != nil {
			return nil, fmt.Errorf("list %s in all namespaces (the agent needs get, list and watch on them): %w", check.what, err)
		}
	}
	k := &Kubernetes{
		self:      Cluster{UID: string(ns.UID), Name: clusterName},
		nodeName:  nodeName,
		localPods: map[netip.Addr]Workload{},
		pods:      map[netip.Addr]Endpoint{},
		vips:      map[netip.AddrPort]Service{},
		endpoints: map[netip.Addr]Endpoint{},
		slices:    map[string][]netip.Addr{},
		svcVIPs:   map[string][]netip.AddrPort{},
		podIPs:    map[string][]netip.Addr{},
		hostPods:  map[string]Workload{},
		podUIDs:   map[string]string{},
	}
	podInf := f.Core().V1().Pods().Informer()
	// Keep only what attribution needs: a node's agent caches every pod of
	// the cluster.
	if err := podInf.SetTransform(slimPod); err != nil {
		return nil, fmt.Errorf("pod informer: %w", err)
	}
	handlers := []struct {
		inf cache.SharedIndexInformer
		set func(any)
		del func(any)
	}{
		{podInf, k.setPod, k.deletePod},
		{f.Core().V1().Services().Informer(), k.setService, k.deleteService},
		{f.Discovery().V1().EndpointSlices().Informer(), k.setSlice, k.deleteSlice},
	}
	for _, h := range handlers {
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { h.set(o); k.gen.Add(1) },
			UpdateFunc: func(_, o any) { h.set(o); k.gen.Add(1) },
			DeleteFunc: func(o any) { h.del(o); k.gen.Add(1) },
		}); err != nil {
			return nil, fmt.Errorf("register informer handler: %w", err)
		}
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(sctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("informer cache for %v did not sync (missing list/watch permission?)", typ)
		}
	}
	return k, nil
}

func slimPod(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			OwnerReferences: p.OwnerReferences,
			Labels:          map[string]string{"pod-template-hash": p.Labels["pod-template-hash"]},
		},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{PodIPs: p.Status.PodIPs, PodIP: p.Status.PodIP},
	}, nil
}

// WorkloadOf returns the workload owning a pod: the controller owner,
// following ReplicaSet -> Deployment and Job -> CronJob by Kubernetes'
// naming rules (so no ReplicaSet or Job informer is needed).
func WorkloadOf(p *corev1.Pod) Workload {
	w := Workload{Namespace: p.Namespace, Kind: "Pod", Name: p.Name}
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return w
	}
	w.Kind, w.Name = ref.Kind, ref.Name
	switch ref.Kind {
	case "ReplicaSet":
		if h := p.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(ref.Name, "-"+h) {
			w.Kind, w.Name = "Deployment", strings.TrimSuffix(ref.Name, "-"+h)
		}
	case "Job":
		// CronJob jobs are named <cronjob>-<scheduled minutes>.
		if i := strings.LastIndexByte(ref.Name, '-'); i > 0 && isDigits(ref.Name[i+1:]) && len(ref.Name)-i-1 >= 8 {
			w.Kind, w.Name = "CronJob", ref.Name[:i]
		}
	}
	return w
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

func podAddrs(p *corev1.Pod) []netip.Addr {
	var out []netip.Addr
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out = append(out, a)
		}
	}
	if len(out) == 0 && p.Status.PodIP != "" {
		if a, err := netip.ParseAddr(p.Status.PodIP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func objKey(o any) string {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		return d.Key
	}
	key, _ := cache.MetaNamespaceKeyFunc(o)
	return key
}

func unwrap[T any](o any) (T, bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	t, ok := o.(T)
	return t, ok
}

func (k *Kubernetes) setPod(o any) {
	p, ok := unwrap[*corev1.Pod](o)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removePodLocked(objKey(p))
	if p.Spec.HostNetwork {
		// Its address is the node's, shared by every host-network pod:
		// only its cgroup identifies it.
		if p.Spec.NodeName == k.nodeName {
			k.hostPods[string(p.UID)] = WorkloadOf(p)
			k.podUIDs[objKey(p)] = string(p.UID)
		}
		return
	}
	w := WorkloadOf(p)
	addrs := podAddrs(p)
	for _, a := range addrs {
		k.pods[a] = Endpoint{Cluster: k.self, Workload: w}
		if p.Spec.NodeName == k.nodeName {
			k.localPods[a] = w
		}
	}
	k.podIPs[objKey(p)] = addrs
}

func (k *Kubernetes) removePodLocked(key string) {
	for _, a := range k.podIPs[key] {
		delete(k.pods, a)
		delete(k.localPods, a)
	}
	delete(k.podIPs, key)
	if uid, ok := k.podUIDs[key]; ok {
		delete(k.hostPods, uid)
		delete(k.podUIDs, key)
	}
}

func (k *Kubernetes) deletePod(o any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removePodLocked(objKey(o))
}

func (k *Kubernetes) setService(o any) {
	s, ok := unwrap[*corev1.Service](o)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key := objKey(s)
	k.removeServiceLocked(key)
	ref := serviceRef(s.Namespace, s.Name)
	var vips []netip.AddrPort
	for _, ip := range s.Spec.ClusterIPs {
		a, err := netip.ParseAddr(ip)
		if err != nil {
			continue // "None" for headless services
		}
		for _, port := range s.Spec.Ports {
			ap := netip.AddrPortFrom(a, uint16(port.Port))
			k.vips[ap] = ref
			vips = append(vips, ap)
		}
	}
	k.svcVIPs[key] = vips
}

func (k *Kubernetes) removeServiceLocked(key string) {
	for _, ap := range k.svcVIPs[key] {
		delete(k.vips, ap)
	}
	delete(k.svcVIPs, key)
}

func (k *Kubernetes) deleteService(o any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeServiceLocked(objKey(o))
}

// serviceRef maps MCS consumer services (derived-<svc>) to the service
// users know.
func serviceRef(ns, name string) Service {
	return Service{Namespace: ns, Name: strings.TrimPrefix(name, DerivedServicePrefix)}
}

func (k *Kubernetes) setSlice(o any) {
	es, ok := unwrap[*discoveryv1.EndpointSlice](o)
	if !ok {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	key := objKey(es)
	k.removeSliceLocked(key)
	svcName := es.Labels[discoveryv1.LabelServiceName]
	if svcName == "" {
		return
	}
	cluster := k.self
	if provider := es.Annotations[ProvisionClusterAnnotation]; provider != "" {
		cluster = Cluster{Name: provider}
	} else if provider := es.Labels[ProvisionClusterAnnotation]; provider != "" {
		cluster = Cluster{Name: provider}
	}
	svc := serviceRef(es.Namespace, svcName)
	var added []netip.Addr
	for _, ep := range es.Endpoints {
		for _, ip := range ep.Addresses {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				continue
			}
			e := Endpoint{Cluster: cluster, Service: svc}
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && cluster == k.self {
				if pe, ok := k.pods[a]; ok {
					e.Workload = pe.Workload
				}
			}
			k.endpoints[a] = e
			added = append(added, a)
		}
	}
	k.slices[key] = added
}

func (k *Kubernetes) removeSliceLocked(key string) {
	for _, a := range k.slices[key] {
		delete(k.endpoints, a)
	}
	delete(k.slices, key)
}

func (k *Kubernetes) deleteSlice(o any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeSliceLocked(objKey(o))
}

func (k *Kubernetes) Self() Cluster { return k.self }

// TranslatedServices are every ClusterIP:port: kube-proxy translates them.
func (k *Kubernetes) TranslatedServices() []netip.AddrPort {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]netip.AddrPort, 0, len(k.vips))
	for ap := range k.vips {
		if ap.Addr().Is4() {
			out = append(out, ap)
		}
	}
	return out
}
func (k *Kubernetes) Generation() uint64 { return k.gen.Load() }

func (k *Kubernetes) Local(addr netip.Addr, cgroupID uint64) (Workload, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if w, ok := k.localPods[addr]; ok {
		return w, true
	}
	if k.podOfCgroup != nil && cgroupID != 0 && len(k.hostPods) > 0 {
		if w, ok := k.hostPods[k.podOfCgroup(cgroupID)]; ok {
			return w, true
		}
	}
	return Workload{}, false
}

func (k *Kubernetes) Service(dialed netip.AddrPort) (Service, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if s, ok := k.vips[dialed]; ok {
		return s, true
	}
	if e, ok := k.endpoints[dialed.Addr()]; ok {
		return e.Service, true
	}
	return Service{}, false
}

func (k *Kubernetes) Endpoint(addr netip.AddrPort) (Endpoint, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	e, eok := k.endpoints[addr.Addr()]
	p, pok := k.pods[addr.Addr()]
	switch {
	case eok && pok:
		e.Workload = p.Workload // the pod informer knows the owner best
		return e, true
	case eok:
		return e, true
	case pok:
		return p, true
	}
	return Endpoint{}, false
}
