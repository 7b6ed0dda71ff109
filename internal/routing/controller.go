package routing

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/internal/latencymatrix"
	"github.com/flowplace/flowplace/internal/redirect"
)

// Karmada and MCS conventions for endpoints of other clusters (as package
// attribution reads them).
const (
	provisionClusterAnnotation = "endpointslice.karmada.io/provision-cluster"
	derivedServicePrefix       = "derived-"
)

// Objects whose annotations opt a service in besides the Service itself.
var (
	ServiceImportGVR       = schema.GroupVersionResource{Group: "multicluster.x-k8s.io", Version: "v1alpha1", Resource: "serviceimports"}
	MultiClusterServiceGVR = schema.GroupVersionResource{Group: "networking.karmada.io", Version: "v1alpha1", Resource: "multiclusterservices"}
)

// Datapath is the kernel side, as routing uses it (redirect.Datapath).
type Datapath interface {
	Apply([]redirect.Service) (int, error)
	Health() (map[netip.AddrPort]redirect.BackendHealth, error)
	CloseRouted([]redirect.Route) (int, error)
	Stats() ([]redirect.Stat, error)
}

// Config configures a Controller.
type Config struct {
	// Self is this member's cluster name in Karmada, as EndpointSlices'
	// provision-cluster and ClusterLatency objects name clusters.
	Self     string
	Datapath Datapath
	// Factory is the agent's informer factory (shared with attribution, so
	// Services and EndpointSlices are cached once).
	Factory informers.SharedInformerFactory
	// Discovery and Metadata read the optional APIs' annotations
	// (ServiceImport, MultiClusterService); nil leaves them out.
	Discovery discovery.DiscoveryInterface
	Metadata  metadata.Interface
	// Client and Matrix locate the fleet's latency matrix: the ConfigMap
	// the estimator publishes and Karmada propagates
	// (package latencymatrix). A zero Matrix leaves routing to this
	// agent's own measurements.
	Client kubernetes.Interface
	Matrix types.NamespacedName
	// PeerRTT is the agent's own RTT to other clusters; may be nil.
	PeerRTT *PeerRTT
	// Events records warnings about bad routing input on the Service; may
	// be nil.
	Events record.EventRecorder
	// Interval between syncs (health and hysteresis move without API
	// events). Default 1s.
	Interval time.Duration
}

// Controller keeps the kernel's routing tables in line with the cluster.
type Controller struct {
	cfg      Config
	log      klog.Logger
	services listersv1.ServiceLister
	slices   discoverylisters.EndpointSliceLister
	imports  cache.GenericLister // nil when the API is absent
	mcs      cache.GenericLister
	wake     chan struct{}

	rowsMu sync.RWMutex
	rows   map[string]*flowplacev1alpha1.ClusterLatency

	mu         sync.Mutex
	orders     map[string]*orderer
	programmed map[netip.AddrPort]map[netip.AddrPort]bool
	vipService map[netip.AddrPort]ServiceRef
	clusters   map[string]uint16
	clusterOf  []string
	warned     map[string]string
	last       SyncResult
	// Ejections so far by destination cluster, accumulated from the
	// kernel's per-backend counts (which go when a backend does).
	backendCluster map[netip.AddrPort]string
	seenEjections  map[netip.AddrPort]uint32
	ejections      map[string]int64
}

// ServiceRef names a Service.
type ServiceRef struct{ Namespace, Name string }

// SyncResult says what one sync did.
type SyncResult struct {
	Services  int // services routed
	Addresses int // service addresses with tables
	Changed   int // tables written or removed
	Closed    int // connections to departed backends closed
	Skipped   map[ServiceRef]string
	Orders    map[ServiceRef][]string
}

// New registers the informers it needs on cfg.Factory (and on its own
// factories for the optional APIs); Start them before Run.
func New(log klog.Logger, cfg Config) (*Controller, error) {
	switch {
	case cfg.Self == "":
		return nil, errors.New("routing: this cluster's name is unknown (give the agent --cluster-name)")
	case cfg.Datapath == nil:
		return nil, errors.New("routing: no datapath")
	case cfg.Factory == nil:
		return nil, errors.New("routing: no informer factory")
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	c := &Controller{
		cfg: cfg, log: log.WithName("routing"),
		wake:       make(chan struct{}, 1),
		rows:       map[string]*flowplacev1alpha1.ClusterLatency{},
		orders:     map[string]*orderer{},
		programmed: map[netip.AddrPort]map[netip.AddrPort]bool{},
		vipService: map[netip.AddrPort]ServiceRef{},
		clusters:   map[string]uint16{},
		warned:     map[string]string{},

		backendCluster: map[netip.AddrPort]string{},
		seenEjections:  map[netip.AddrPort]uint32{},
		ejections:      map[string]int64{},
	}
	kick := c.kickHandler()
	svcInf := cfg.Factory.Core().V1().Services()
	sliceInf := cfg.Factory.Discovery().V1().EndpointSlices()
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), sliceInf.Informer()} {
		if _, err := inf.AddEventHandler(kick); err != nil {
			return nil, fmt.Errorf("routing: register informer handler: %w", err)
		}
	}
	c.services, c.slices = svcInf.Lister(), sliceInf.Lister()
	c.intern(cfg.Self) // index 0: this cluster
	return c, nil
}

// optional starts informers for the APIs that exist in this member.
func (c *Controller) optional(ctx context.Context) error {
	has := func(gvr schema.GroupVersionResource) bool {
		if c.cfg.Discovery == nil {
			return false
		}
		rl, err := c.cfg.Discovery.ServerResourcesForGroupVersion(gvr.GroupVersion().String())
		if err != nil {
			return false
		}
		for _, r := range rl.APIResources {
			if r.Name == gvr.Resource {
				return true
			}
		}
		return false
	}
	var syncs []cache.InformerSynced
	kick := c.kickHandler()
	if c.cfg.Metadata != nil {
		mf := metadatainformer.NewSharedInformerFactory(c.cfg.Metadata, 30*time.Minute)
		for _, o := range []struct {
			gvr schema.GroupVersionResource
			dst *cache.GenericLister
		}{{ServiceImportGVR, &c.imports}, {MultiClusterServiceGVR, &c.mcs}} {
			if !has(o.gvr) {
				c.log.Info("API not served in this member; its annotations are not read", "resource", o.gvr.String())
				continue
			}
			inf := mf.ForResource(o.gvr)
			if _, err := inf.Informer().AddEventHandler(kick); err != nil {
				return err
			}
			*o.dst = inf.Lister()
			syncs = append(syncs, inf.Informer().HasSynced)
		}
		mf.Start(ctx.Done())
	}
	if c.cfg.Client != nil && c.cfg.Matrix.Name != "" {
		// One named ConfigMap: the agent may read no other.
		f := informers.NewSharedInformerFactoryWithOptions(c.cfg.Client, 30*time.Minute, informers.WithNamespace(c.cfg.Matrix.Namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) {
				o.FieldSelector = fields.OneTermEqualSelector("metadata.name", c.cfg.Matrix.Name).String()
			}))
		inf := f.Core().V1().ConfigMaps().Informer()
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    c.setMatrix,
			UpdateFunc: func(_, o any) { c.setMatrix(o) },
			DeleteFunc: func(any) { c.setRows(nil) },
		}); err != nil {
			return err
		}
		syncs = append(syncs, inf.HasSynced)
		f.Start(ctx.Done())
	} else {
		c.log.Info("No latency matrix configured: routing orders clusters by this agent's own measurements only")
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return errors.New("routing: optional API caches did not sync")
	}
	return nil
}

func (c *Controller) setMatrix(o any) {
	cm, ok := o.(*corev1.ConfigMap)
	if !ok {
		return
	}
	rows, err := latencymatrix.Decode([]byte(cm.Data[latencymatrix.DataKey]))
	if err != nil {
		// Keep what was read before: a bad publication changes nothing.
		c.log.Error(err, "Ignoring unreadable latency matrix", "configMap", klog.KObj(cm))
		return
	}
	c.setRows(rows)
}

func (c *Controller) setRows(rows map[string]*flowplacev1alpha1.ClusterLatency) {
	if rows == nil {
		rows = map[string]*flowplacev1alpha1.ClusterLatency{}
	}
	c.rowsMu.Lock()
	c.rows = rows
	c.rowsMu.Unlock()
	c.kick()
}

// kickHandler wakes a sync on any change of the objects it watches.
func (c *Controller) kickHandler() cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.kick() },
		UpdateFunc: func(any, any) { c.kick() },
		DeleteFunc: func(any) { c.kick() },
	}
}

func (c *Controller) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Run syncs on every change and every Interval until ctx ends. The
// informers of cfg.Factory must have been started and synced.
func (c *Controller) Run(ctx context.Context) error {
	if err := c.optional(ctx); err != nil {
		return err
	}
	t := time.NewTicker(c.cfg.Interval)
	defer t.Stop()
	for {
		if _, err := c.Sync(time.Now()); err != nil {
			c.log.Error(err, "Routing sync failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-c.wake:
		}
	}
}

// Last returns what the latest sync did.
func (c *Controller) Last() SyncResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// Sync computes every routed service's tables and programs them.
func (c *Controller) Sync(now time.Time) (SyncResult, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	res := SyncResult{Skipped: map[ServiceRef]string{}, Orders: map[ServiceRef][]string{}}
	health, err := c.cfg.Datapath.Health()
	if err != nil {
		return res, err
	}
	ejected := func(a netip.AddrPort) bool { h, ok := health[a]; return ok && h.Ejected(now) }
	for a, h := range health {
		if seen := c.seenEjections[a]; h.Ejections > seen {
			cl, ok := c.backendCluster[a]
			if !ok {
				cl = "unknown"
			}
			c.ejections[cl] += int64(h.Ejections - seen)
			c.log.Info("Backend ejected by passive health", "backend", a, "cluster", cl, "ejections", h.Ejections, "until", h.EjectedUntil.Round(time.Millisecond))
		}
		c.seenEjections[a] = h.Ejections
	}
	for a := range c.seenEjections {
		if _, ok := health[a]; !ok {
			delete(c.seenEjections, a)
		}
	}
	svcs, err := c.services.List(labels.Everything())
	if err != nil {
		return res, fmt.Errorf("routing: list services: %w", err)
	}
	slices.SortFunc(svcs, func(a, b *corev1.Service) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	var (
		want      []redirect.Service
		departed  []redirect.Route
		newProg   = map[netip.AddrPort]map[netip.AddrPort]bool{}
		newVIPs   = map[netip.AddrPort]ServiceRef{}
		newOwner  = map[netip.AddrPort]string{}
		liveOrder = map[string]bool{}
	)
	for _, s := range svcs {
		ref := ServiceRef{s.Namespace, s.Name}
		key := s.Namespace + "/" + s.Name
		policy, enabled, err := c.policy(s)
		if err != nil {
			c.warn(s, "InvalidRoutingPolicy", err.Error())
			res.Skipped[ref] = err.Error()
			continue
		}
		if !enabled {
			c.resolved(s)
			continue
		}
		view, problems := c.view(s, policy, now)
		if len(view.IPs) == 0 {
			msg := "service has no cluster IP (headless or ExternalName): nothing to route"
			c.warn(s, "NotRoutable", msg)
			res.Skipped[ref] = msg
			continue
		}
		clusters := Clusters(&view, c.cfg.Self)
		rtt := map[string]RTT{}
		for _, cl := range clusters {
			rtt[cl] = c.rtt(cl, now)
		}
		o := c.orders[key]
		if o == nil {
			o = &orderer{}
			c.orders[key] = o
		}
		liveOrder[key] = true
		order := o.next(clusters, rtt, now, policy.Hold)
		res.Orders[ref] = order
		tables := Build(&view, c.cfg.Self, order, ejected)
		if len(tables) == 0 {
			msg := "no ready endpoint in any cluster: connects are left to kube-proxy"
			c.warn(s, "NoEndpoints", msg)
			res.Skipped[ref] = msg
			continue
		}
		if len(problems) > 0 {
			c.warn(s, "UnknownCluster", strings.Join(problems, "; "))
		} else {
			c.resolved(s)
		}
		res.Services++
		for _, t := range tables {
			rs := redirect.Service{Addr: t.VIP}
			in := map[netip.AddrPort]bool{}
			for _, tier := range t.Tiers {
				var bs []redirect.Backend
				for _, b := range tier {
					bs = append(bs, redirect.Backend{Addr: b.Addr, Cluster: c.intern(b.Cluster)})
					in[b.Addr] = true
					newOwner[b.Addr] = b.Cluster
				}
				rs.Tiers = append(rs.Tiers, bs)
			}
			want = append(want, rs)
			newProg[t.VIP], newVIPs[t.VIP] = in, ref
			for b := range c.programmed[t.VIP] {
				// A backend that left its service (not one merely ejected):
				// its open connections go, so clients reconnect elsewhere.
				if !in[b] && !ejected(b) {
					departed = append(departed, redirect.Route{Service: t.VIP, Backend: b})
				}
			}
		}
		res.Addresses += len(tables)
	}
	for k := range c.orders {
		if !liveOrder[k] {
			delete(c.orders, k)
		}
	}
	n, err := c.cfg.Datapath.Apply(want)
	res.Changed = n
	if err != nil {
		return res, err
	}
	c.programmed, c.vipService, c.backendCluster = newProg, newVIPs, newOwner
	if len(departed) > 0 {
		closed, err := c.cfg.Datapath.CloseRouted(departed)
		res.Closed = closed
		if err != nil {
			c.log.Error(err, "Closing connections to departed backends", "pairs", len(departed))
		} else {
			c.log.V(2).Info("Closed connections to departed backends", "pairs", len(departed), "closed", closed)
		}
	}
	if res.Changed > 0 {
		c.log.V(2).Info("Routing tables synced", "services", res.Services, "addresses", res.Addresses, "changed", res.Changed)
	}
	c.last = res
	return res, nil
}

// policy reads the Service's own annotations, else (for an MCS consumer
// service derived-<svc>) its ServiceImport's, else the Karmada
// MultiClusterService of the same name.
func (c *Controller) policy(s *corev1.Service) (Policy, bool, error) {
	if _, ok := s.Annotations[AnnotationRouting]; ok {
		return ParsePolicy(s.Annotations)
	}
	base := strings.TrimPrefix(s.Name, derivedServicePrefix)
	for _, src := range []struct {
		lister cache.GenericLister
		name   string
		what   string
	}{
		{c.imports, base, "ServiceImport"},
		{c.mcs, base, "MultiClusterService"},
	} {
		if src.lister == nil || (src.what == "ServiceImport" && base == s.Name) {
			continue
		}
		o, err := src.lister.ByNamespace(s.Namespace).Get(src.name)
		if err != nil {
			if !apierrors.IsNotFound(err) {
				return Policy{}, false, fmt.Errorf("read %s %s/%s: %w", src.what, s.Namespace, src.name, err)
			}
			continue
		}
		type annotated interface{ GetAnnotations() map[string]string }
		a, ok := o.(annotated)
		if !ok {
			continue
		}
		if _, ok := a.GetAnnotations()[AnnotationRouting]; ok {
			p, enabled, err := ParsePolicy(a.GetAnnotations())
			if err != nil {
				return p, false, fmt.Errorf("%s %s/%s: %w", src.what, s.Namespace, src.name, err)
			}
			return p, enabled, nil
		}
	}
	return DefaultPolicy, false, nil
}

// view collects the Service's addresses and EndpointSlices. problems
// names slices of clusters routing knows nothing of (no RTT): they are
// still used, last.
func (c *Controller) view(s *corev1.Service, p Policy, now time.Time) (ServiceView, []string) {
	v := ServiceView{Namespace: s.Namespace, Name: s.Name, Policy: p}
	if s.Spec.Type != corev1.ServiceTypeExternalName {
		for _, ip := range s.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				v.IPs = append(v.IPs, a)
			}
		}
	}
	for _, sp := range s.Spec.Ports {
		if sp.Protocol == corev1.ProtocolTCP || sp.Protocol == "" {
			v.Ports = append(v.Ports, Port{Name: sp.Name, Port: uint16(sp.Port)})
		}
	}
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: s.Name})
	eps, _ := c.slices.EndpointSlices(s.Namespace).List(sel)
	slices.SortFunc(eps, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	var problems []string
	for _, es := range eps {
		if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		cluster := c.cfg.Self
		if pc := es.Annotations[provisionClusterAnnotation]; pc != "" {
			cluster = pc
		} else if pc := es.Labels[provisionClusterAnnotation]; pc != "" {
			cluster = pc
		}
		if cluster != c.cfg.Self && c.rtt(cluster, now).Source == Unknown {
			problems = append(problems, fmt.Sprintf("EndpointSlice %s names cluster %q, to which no RTT is known (not measured, not in the ClusterLatency matrix): its endpoints are tried last", es.Name, cluster))
		}
		sl := Slice{Name: es.Name, Cluster: cluster, IPv6: es.AddressType == discoveryv1.AddressTypeIPv6}
		for _, pt := range es.Ports {
			if pt.Port == nil || (pt.Protocol != nil && *pt.Protocol != corev1.ProtocolTCP) {
				continue
			}
			name := ""
			if pt.Name != nil {
				name = *pt.Name
			}
			sl.Ports = append(sl.Ports, Port{Name: name, Port: uint16(*pt.Port)})
		}
		for _, e := range es.Endpoints {
			ready := e.Conditions.Ready == nil || *e.Conditions.Ready
			serving := e.Conditions.Serving == nil || *e.Conditions.Serving
			term := e.Conditions.Terminating != nil && *e.Conditions.Terminating
			for _, ip := range e.Addresses {
				if a, err := netip.ParseAddr(ip); err == nil {
					sl.Endpoints = append(sl.Endpoints, Endpoint{Addr: a, Ready: ready, Serving: serving, Terminating: term})
				}
			}
		}
		v.Slices = append(v.Slices, sl)
	}
	return v, problems
}

// rtt is the best RTT known from this cluster to cluster.
func (c *Controller) rtt(cluster string, now time.Time) RTT {
	if c.cfg.PeerRTT != nil {
		if d, ok := c.cfg.PeerRTT.RTT(cluster); ok {
			return RTT{Value: d, Source: Measured}
		}
	}
	c.rowsMu.RLock()
	defer c.rowsMu.RUnlock()
	return matrixRTT(c.rows, c.cfg.Self, cluster, now)
}

func (c *Controller) intern(cluster string) uint16 {
	if i, ok := c.clusters[cluster]; ok {
		return i
	}
	if len(c.clusterOf) >= 1<<16-1 {
		return 1<<16 - 1 // beyond 65535 clusters: counted together
	}
	i := uint16(len(c.clusterOf))
	c.clusters[cluster] = i
	c.clusterOf = append(c.clusterOf, cluster)
	return i
}

// warn logs and records an Event once per distinct problem of a service.
func (c *Controller) warn(s *corev1.Service, reason, msg string) {
	key := s.Namespace + "/" + s.Name
	if c.warned[key] == reason+msg {
		return
	}
	c.warned[key] = reason + msg
	c.log.Info("Service not routed as asked", "service", klog.KObj(s), "reason", reason, "detail", msg)
	if c.cfg.Events != nil {
		c.cfg.Events.Event(s, corev1.EventTypeWarning, reason, msg)
	}
}

func (c *Controller) resolved(s *corev1.Service) {
	delete(c.warned, s.Namespace+"/"+s.Name)
}
