package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/internal/redirect"
	"github.com/flowplace/flowplace/internal/routing"
)

// member is the agent's connection to its member cluster.
type member struct {
	config  *rest.Config
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
}

// router is routing as the agent runs it.
type router struct {
	datapath   *redirect.Datapath
	controller *routing.Controller
	peerRTT    *routing.PeerRTT
	stopEvents func()
}

// openRouting loads the routing datapath before the probes are attached,
// so the probes can share its map of routed sockets. A node where routing
// cannot run (another socket LB, no bpffs) keeps measuring: the refusal is
// logged, and nothing is routed.
func openRouting(log klog.Logger, o *options, cgroup string) *redirect.Datapath {
	d, err := redirect.Open(log, redirect.Options{Cgroup: cgroup, PinDir: o.routingPinDir, Health: o.routingHealth})
	if err != nil {
		log.Error(err, "Routing refused on this node; measuring only")
		return nil
	}
	return d
}

// startRouting runs the routing controller on the member's caches.
func startRouting(ctx context.Context, log klog.Logger, o *options, m *member, self string, d *redirect.Datapath) (*router, error) {
	r := &router{datapath: d, peerRTT: routing.NewPeerRTT()}
	disc, err := discovery.NewDiscoveryClientForConfig(m.config)
	if err != nil {
		return nil, fmt.Errorf("routing: discovery client: %w", err)
	}
	meta, err := metadata.NewForConfig(m.config)
	if err != nil {
		return nil, fmt.Errorf("routing: metadata client: %w", err)
	}
	matrix, _ := namespacedName(o.routingMatrix) // checked by validate
	b := record.NewBroadcaster(record.WithContext(ctx))
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: m.client.CoreV1().Events("")})
	r.stopEvents = b.Shutdown
	events := b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "flowplace-agent", Host: o.nodeName})
	c, err := routing.New(log, routing.Config{
		Self: self, Datapath: d, Factory: m.factory,
		Discovery: disc, Metadata: meta, Client: m.client, Matrix: matrix,
		PeerRTT: r.peerRTT, Events: events, Interval: o.routingInterval,
	})
	if err != nil {
		return nil, err
	}
	r.controller = c
	m.factory.Start(ctx.Done())
	sctx, cancel := context.WithTimeout(ctx, o.syncTimeout)
	defer cancel()
	for typ, ok := range m.factory.WaitForCacheSync(sctx.Done()) {
		if !ok {
			return nil, fmt.Errorf("routing: informer cache for %v did not sync", typ)
		}
	}
	go func() {
		if err := c.Run(ctx); err != nil {
			log.Error(err, "Routing stopped")
		}
	}()
	return r, nil
}

// stop releases routing at agent exit. Pinned routing stays (the next agent
// adopts it) unless the agent's DaemonSet is being deleted: then this is
// an uninstall, and routing is removed with it.
func (r *router) stop(log klog.Logger, o *options, client kubernetes.Interface) {
	if r.stopEvents != nil {
		r.stopEvents()
	}
	if r.datapath != nil {
		if err := r.datapath.Close(); err != nil {
			log.Error(err, "Releasing the routing datapath")
		}
	}
	uninstall, why := uninstalling(client)
	if !uninstall {
		log.Info("Routing stays pinned for the next agent", "reason", why)
		return
	}
	if err := redirect.Remove(o.routingPinDir); err != nil {
		log.Error(err, "Removing routing at uninstall")
		return
	}
	log.Info("Routing removed: the agent's DaemonSet is being deleted", "reason", why)
}

// uninstalling reports whether the DaemonSet that owns this agent's pod
// is gone or being deleted (POD_NAMESPACE and POD_NAME from the downward
// API). When that cannot be told, it says no: routing then stays pinned,
// which a later agent with --routing=false removes.
func uninstalling(client kubernetes.Interface) (bool, string) {
	ns, name := os.Getenv("POD_NAMESPACE"), os.Getenv("POD_NAME")
	if client == nil || ns == "" || name == "" {
		return false, "not a pod (POD_NAMESPACE/POD_NAME unset)"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Sprintf("read own pod: %v", err)
	}
	owner := metav1.GetControllerOf(pod)
	if owner == nil || owner.Kind != "DaemonSet" {
		return false, "pod has no DaemonSet owner"
	}
	ds, err := client.AppsV1().DaemonSets(ns).Get(ctx, owner.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return true, "DaemonSet " + owner.Name + " deleted"
	case err != nil:
		return false, fmt.Sprintf("read DaemonSet %s: %v", owner.Name, err)
	case ds.DeletionTimestamp != nil:
		return true, "DaemonSet " + owner.Name + " being deleted"
	case ds.UID != owner.UID:
		return true, "DaemonSet " + owner.Name + " replaced"
	}
	return false, "DaemonSet " + owner.Name + " still exists (restart or rolling update)"
}

// removeRouting is --routing=false: whatever an earlier agent pinned goes.
func removeRouting(log klog.Logger, pinDir string) error {
	if _, err := os.Stat(pinDir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := redirect.Remove(pinDir); err != nil {
		return err
	}
	log.Info("Routing disabled: removed the routing an earlier agent pinned", "pinDir", pinDir)
	return nil
}

// namespacedName parses namespace/name; ok is false for anything else.
func namespacedName(s string) (types.NamespacedName, bool) {
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: ns, Name: name}, true
}
