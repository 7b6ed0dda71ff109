package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/internal/manifests"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/fleet"
	"github.com/flowplace/flowplace/world/nodes"
	"github.com/flowplace/flowplace/world/wan"
)

// KubeWorld is the lab on real member clusters (flowplace lab
// --kubernetes): each cluster an API server, controller manager, scheduler
// and a kubelet node in its region of the WAN; the shop's services as
// Deployments behind Services, reached across clusters the way Karmada's
// multi-cluster services give them (a selector-less Service with an
// EndpointSlice of the serving cluster's pods, annotated with its name);
// the agents as the agent DaemonSet; the clients as a Job per cluster.
// Placing a service moves its Deployment from one member to another as
// Karmada does when it reschedules: the old one is deleted, the new one
// created, and every other member's EndpointSlice follows.
type KubeWorld struct {
	opts  Options
	fleet *fleet.Fleet
	imgs  map[string]images.Image
	gw    netip.Addr
	names []string
	uid   map[string]string // cluster -> kube-system UID
	name  map[string]string // UID -> cluster
	// clusterIP[cluster][service]: every service has a Service in every
	// cluster, so callers' addresses never change when a callee moves.
	clusterIP map[string]map[string]string
	placement map[string]string
}

// importedSlice names the EndpointSlice that brings a service's endpoints
// from the cluster serving it.
func importedSlice(svc string) string { return "imported-" + svc }

// NewKubeWorld builds the images and the member clusters.
func NewKubeWorld(ctx context.Context, opts Options) (_ *KubeWorld, err error) {
	if opts.Profile == nil || opts.App == nil {
		return nil, errors.New("lab: profile and app are required")
	}
	w := &KubeWorld{opts: opts, imgs: map[string]images.Image{}, uid: map[string]string{}, name: map[string]string{},
		clusterIP: map[string]map[string]string{}, placement: map[string]string{}, names: opts.Profile.ClusterNames()}
	defer func() {
		if err != nil {
			w.Close()
		}
	}()
	src, err := images.FindSourceDir(".")
	if err != nil {
		return nil, fmt.Errorf("lab --kubernetes builds its images from flowplace's source: run it in the repository: %w", err)
	}
	w.progress("[1/6] building images (pause, flowplace-agent, flowplace) from %s", src)
	imgs, err := images.Build(ctx, images.Options{SourceDir: src, Logf: w.logf}, images.Pause, images.Agent, images.CLI)
	if err != nil {
		return nil, fmt.Errorf("lab: images: %w", err)
	}
	for _, img := range imgs {
		w.imgs[img.Name] = img
	}
	rtt := map[wan.Pair]time.Duration{}
	for i, a := range w.names {
		for _, b := range w.names[i+1:] {
			rtt[wan.Pair{A: a, B: b}] = opts.Profile.Injected(a, b)
		}
	}
	w.progress("[1/6] starting %d member clusters with a kubelet node each behind the WAN hub", len(w.names))
	// Immediate ACKs, as in the in-process lab (see NewWorld).
	if w.fleet, err = fleet.Start(ctx, fleet.Config{Clusters: w.names, ExtraRTT: rtt, QuickACK: true, Images: imgs, Logf: w.logf}); err != nil {
		return nil, fmt.Errorf("lab: member clusters: %w", err)
	}
	if w.gw, err = w.fleet.WAN.ManagementGateway(); err != nil {
		return nil, err
	}
	for _, c := range w.names {
		m := w.fleet.Member(c)
		uid, err := m.KubeSystemUID(ctx)
		if err != nil {
			return nil, err
		}
		w.uid[c], w.name[uid] = uid, c
		if _, err := m.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opts.App.Namespace}}, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: namespace in %s: %w", c, err)
		}
		w.clusterIP[c] = map[string]string{}
		for _, s := range opts.App.Services {
			svc, err := m.Client.CoreV1().Services(opts.App.Namespace).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: s.Name},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: ServicePort, TargetPort: intstr.FromInt32(ServicePort)}}},
			}, metav1.CreateOptions{})
			if err != nil {
				return nil, fmt.Errorf("lab: Service %s in %s: %w", s.Name, c, err)
			}
			w.clusterIP[c][s.Name] = svc.Spec.ClusterIP
		}
	}
	return w, nil
}

func (w *KubeWorld) progress(format string, args ...any) {
	if w.opts.Progress != nil {
		fmt.Fprintf(w.opts.Progress, "lab: "+format+"\n", args...)
	}
}

func (w *KubeWorld) logf(format string, args ...any) { w.progress(format, args...) }

// ClusterNames are the member clusters.
func (w *KubeWorld) ClusterNames() []string { return slices.Clone(w.names) }

// ClusterUID is a member's kube-system UID, as its agents report it.
func (w *KubeWorld) ClusterUID(name string) string { return w.uid[name] }

// ClusterOf is the member whose UID is uid.
func (w *KubeWorld) ClusterOf(uid string) string { return w.name[uid] }

// PeerClusterUID resolves a member by name, as the estimator does through
// Karmada's Cluster objects.
func (w *KubeWorld) PeerClusterUID(name string) (string, bool) {
	uid, ok := w.uid[name]
	return uid, ok
}

// CollectorHost is where agent pods reach the lab's collector.
func (w *KubeWorld) CollectorHost() string { return w.gw.String() }

// Fleet is the member clusters.
func (w *KubeWorld) Fleet() *fleet.Fleet { return w.fleet }

// Placement returns where each service runs now.
func (w *KubeWorld) Placement() map[string]string {
	out := make(map[string]string, len(w.placement))
	for k, v := range w.placement {
		out[k] = v
	}
	return out
}

func (w *KubeWorld) client(cluster string) kubernetes.Interface {
	return w.fleet.Member(cluster).Client
}

func (w *KubeWorld) deployment(svc, cluster string) *appsv1.Deployment {
	args := []string{"lab-service", "--name", svc, "--listen", fmt.Sprintf("0.0.0.0:%d", ServicePort)}
	var peers []string
	for _, s := range w.opts.App.Services {
		peers = append(peers, fmt.Sprintf("%s=%s:%d", s.Name, w.clusterIP[cluster][s.Name], ServicePort))
	}
	sort.Strings(peers)
	for _, p := range peers {
		args = append(args, "--peer", p)
	}
	labels := map[string]string{"app": svc}
	one := int32(1)
	grace := int64(2)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: svc, Namespace: w.opts.App.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &grace,
					Containers: []corev1.Container{{
						Name: svc, Image: w.imgs[images.CLI].Ref, ImagePullPolicy: corev1.PullNever, Args: args,
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: ServicePort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(ServicePort)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// Place moves every service whose cluster changes: its Deployment is
// deleted where it ran and created in its new cluster, and once its pod is
// ready, every cluster's Service of it points there (a selector at home,
// an imported EndpointSlice elsewhere). It returns when every cluster's
// kube-proxy routes every service to its new pod.
func (w *KubeWorld) Place(ctx context.Context, placement map[string]string) error {
	for _, s := range w.opts.App.Services {
		c, ok := placement[s.Name]
		if !ok {
			return fmt.Errorf("lab: no cluster for service %s", s.Name)
		}
		if !slices.Contains(w.names, c) {
			return fmt.Errorf("lab: service %s placed in unknown cluster %s", s.Name, c)
		}
	}
	ns := w.opts.App.Namespace
	var moved []string
	for _, s := range w.opts.App.Services {
		to, from := placement[s.Name], w.placement[s.Name]
		if from == to {
			continue
		}
		moved = append(moved, s.Name)
		if from != "" {
			bg := metav1.DeletePropagationBackground
			if err := w.client(from).AppsV1().Deployments(ns).Delete(ctx, s.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("lab: deleting %s in %s: %w", s.Name, from, err)
			}
		}
		if _, err := w.client(to).AppsV1().Deployments(ns).Create(ctx, w.deployment(s.Name, to), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("lab: creating %s in %s: %w", s.Name, to, err)
		}
		w.placement[s.Name] = to
	}
	if len(moved) == 0 {
		return nil
	}
	w.progress("moving %s", strings.Join(moved, ", "))
	podIPs := map[string][]string{}
	for _, s := range w.opts.App.Services {
		ips, err := w.readyPodIPs(ctx, s.Name, placement[s.Name])
		if err != nil {
			return err
		}
		podIPs[s.Name] = ips
	}
	for _, s := range w.opts.App.Services {
		for _, c := range w.names {
			if err := w.pointService(ctx, c, s.Name, placement[s.Name], podIPs[s.Name]); err != nil {
				return err
			}
		}
	}
	return w.waitRouted(ctx, podIPs)
}

// readyPodIPs waits until the service's pods in cluster are exactly one
// Ready pod (the old one of a moved Deployment is gone) and returns its IPs.
func (w *KubeWorld) readyPodIPs(ctx context.Context, svc, cluster string) ([]string, error) {
	var ips []string
	var last string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := w.client(cluster).CoreV1().Pods(w.opts.App.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + svc})
		if err != nil {
			return false, err
		}
		ips = ips[:0]
		var states []string
		for _, p := range l.Items {
			ready := p.DeletionTimestamp == nil && p.Status.PodIP != ""
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue {
					ready = false
				}
			}
			if ready {
				ips = append(ips, p.Status.PodIP)
			}
			states = append(states, fmt.Sprintf("%s %s", p.Name, p.Status.Phase))
		}
		last = strings.Join(states, ", ")
		return len(ips) == 1 && len(l.Items) == 1, nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: %s not running in %s: %w (pods: %s)", svc, cluster, err, last)
	}
	return slices.Clone(ips), nil
}

// pointService makes cluster's Service svc lead to the pods serving it in
// home: its own selector there, elsewhere no selector and an EndpointSlice
// of home's pods, annotated with home as Karmada's dispatched slices are.
func (w *KubeWorld) pointService(ctx context.Context, cluster, svc, home string, ips []string) error {
	ns := w.opts.App.Namespace
	c := w.client(cluster)
	cur, err := c.CoreV1().Services(ns).Get(ctx, svc, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("lab: Service %s in %s: %w", svc, cluster, err)
	}
	var selector map[string]string
	if cluster == home {
		selector = map[string]string{"app": svc}
	}
	if !maps.Equal(cur.Spec.Selector, selector) {
		cur.Spec.Selector = selector
		if _, err := c.CoreV1().Services(ns).Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("lab: Service %s in %s: %w", svc, cluster, err)
		}
	}
	eps := c.DiscoveryV1().EndpointSlices(ns)
	if cluster == home {
		if err := eps.Delete(ctx, importedSlice(svc), metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("lab: EndpointSlice of %s in %s: %w", svc, cluster, err)
		}
		return nil
	}
	port, proto, ready := int32(ServicePort), corev1.ProtocolTCP, true
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: importedSlice(svc),
			Labels: map[string]string{discoveryv1.LabelServiceName: svc,
				discoveryv1.LabelManagedBy: "endpointslice-dispatch-controller.karmada.io"},
			Annotations: map[string]string{attribution.ProvisionClusterAnnotation: home},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptrTo("http"), Port: &port, Protocol: &proto}},
	}
	for _, ip := range ips {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	old, err := eps.Get(ctx, es.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = eps.Create(ctx, es, metav1.CreateOptions{})
	case err == nil:
		old.Endpoints, old.Ports, old.Annotations = es.Endpoints, es.Ports, es.Annotations
		_, err = eps.Update(ctx, old, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("lab: EndpointSlice of %s in %s: %w", svc, cluster, err)
	}
	return nil
}

func ptrTo[T any](v T) *T { return &v }

// waitRouted waits until every cluster's kube-proxy translates every
// service to exactly its current pod: what a client sees next.
func (w *KubeWorld) waitRouted(ctx context.Context, podIPs map[string][]string) error {
	for _, c := range w.names {
		node := w.fleet.Nodes[c][0]
		var missing []string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			out, err := exec.CommandContext(ctx, "nsenter", "--net="+node.Net.NetNSPath(), "iptables-save", "-t", "nat").Output()
			if err != nil {
				return false, nil
			}
			missing = missing[:0]
			rules := string(out)
			for svc, ips := range podIPs {
				for _, ip := range ips {
					if !strings.Contains(rules, fmt.Sprintf("--to-destination %s:%d", ip, ServicePort)) {
						missing = append(missing, svc+"="+ip)
					}
				}
			}
			return len(missing) == 0, nil
		})
		if err != nil {
			return fmt.Errorf("lab: kube-proxy in %s does not route %s: %w", c, strings.Join(missing, ", "), err)
		}
	}
	return nil
}

// StartAgents installs the agent DaemonSet in every member, exporting to
// endpoint every interval, and waits until every agent is ready.
func (w *KubeWorld) StartAgents(ctx context.Context, endpoint string, interval time.Duration) error {
	for _, c := range w.names {
		objs, err := manifests.Agent(manifests.AgentOptions{
			Image: w.imgs[images.Agent].Ref, PullPolicy: corev1.PullNever, ClusterName: c,
			OTLPEndpoint: endpoint, OTLPInsecure: true, ExportInterval: interval, PollInterval: 500 * time.Millisecond,
		})
		if err != nil {
			return err
		}
		if err := manifests.Apply(ctx, w.client(c), objs); err != nil {
			return fmt.Errorf("lab: agent in %s: %w", c, err)
		}
	}
	for _, c := range w.names {
		var last string
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			ds, err := w.client(c).AppsV1().DaemonSets(manifests.DefaultNamespace).Get(ctx, manifests.AgentName, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			st := ds.Status
			last = fmt.Sprintf("desired %d, updated %d, ready %d", st.DesiredNumberScheduled, st.UpdatedNumberScheduled, st.NumberReady)
			return st.ObservedGeneration == ds.Generation && st.DesiredNumberScheduled > 0 &&
				st.UpdatedNumberScheduled == st.DesiredNumberScheduled && st.NumberReady == st.DesiredNumberScheduled, nil
		})
		if err != nil {
			return fmt.Errorf("lab: agent DaemonSet in %s not ready (%s): %w", c, last, err)
		}
	}
	w.progress("agent DaemonSet ready in %d clusters", len(w.names))
	return nil
}

// StopAgents deletes the agent DaemonSets and waits until their pods are
// gone: each flushes its last export when it is stopped.
func (w *KubeWorld) StopAgents() error {
	ctx := context.Background()
	var errs []error
	for _, c := range w.names {
		fg := metav1.DeletePropagationForeground
		err := w.client(c).AppsV1().DaemonSets(manifests.DefaultNamespace).Delete(ctx, manifests.AgentName, metav1.DeleteOptions{PropagationPolicy: &fg})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("lab: deleting the agent in %s: %w", c, err))
		}
	}
	for _, c := range w.names {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			l, err := w.client(c).CoreV1().Pods(manifests.DefaultNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + manifests.AgentName})
			return err == nil && len(l.Items) == 0, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("lab: agent pods in %s still running: %w", c, err))
		}
	}
	return errors.Join(errs...)
}

// Load runs a client Job in every cluster with a rate, weights[cluster]
// entry requests per second for d, and collects what each measured.
func (w *KubeWorld) Load(ctx context.Context, d time.Duration, weights map[string]float64) (*LoadResult, error) {
	ns := w.opts.App.Namespace
	res := &LoadResult{Requests: map[string]int{}, Errors: map[string]int{}, Latencies: map[string][]time.Duration{}}
	var started []string
	for _, c := range w.names {
		rate := weights[c]
		if rate <= 0 {
			continue
		}
		name := LoadGenerator(c)
		zero := int32(0)
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: batchv1.JobSpec{
				BackoffLimit: &zero,
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
					Spec: corev1.PodSpec{
						RestartPolicy: corev1.RestartPolicyNever,
						Containers: []corev1.Container{{
							Name: "clients", Image: w.imgs[images.CLI].Ref, ImagePullPolicy: corev1.PullNever,
							Args: []string{"lab-load", "--target", fmt.Sprintf("%s:%d", w.clusterIP[c][w.opts.App.Entry], ServicePort),
								"--rate", fmt.Sprint(rate), "--duration", d.String()},
						}},
					},
				},
			},
		}
		if _, err := w.client(c).BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
			return nil, fmt.Errorf("lab: clients in %s: %w", c, err)
		}
		started = append(started, c)
	}
	var errs []error
	for _, c := range started {
		rep, err := w.jobReport(ctx, c, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Requests[c], res.Errors[c] = rep.Requests, rep.Errors
		for _, us := range rep.LatenciesUs {
			res.Latencies[c] = append(res.Latencies[c], time.Duration(us)*time.Microsecond)
		}
		if rep.Errors > 0 {
			w.progress("clients in %s: %d of %d requests failed, first: %s", c, rep.Errors, rep.Requests, rep.FirstError)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	return res, res.check()
}

// jobReport waits for a cluster's client Job, reads the report from its
// pod's log, and deletes the Job.
func (w *KubeWorld) jobReport(ctx context.Context, cluster string, d time.Duration) (*LoadReport, error) {
	ns, name := w.opts.App.Namespace, LoadGenerator(cluster)
	c := w.client(cluster)
	bg := metav1.DeletePropagationBackground
	defer c.BatchV1().Jobs(ns).Delete(context.WithoutCancel(ctx), name, metav1.DeleteOptions{PropagationPolicy: &bg})
	var pod *corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, d+2*time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + name})
		if err != nil || len(l.Items) == 0 {
			return false, nil
		}
		p := l.Items[0]
		switch p.Status.Phase {
		case corev1.PodSucceeded:
			pod = &p
			return true, nil
		case corev1.PodFailed:
			return false, fmt.Errorf("pod %s failed: %s", p.Name, p.Status.Message)
		}
		return false, nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: clients in %s: %w", cluster, err)
	}
	logs, err := c.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("lab: clients in %s: log: %w", cluster, err)
	}
	lines := bytes.Split(bytes.TrimSpace(logs), []byte("\n"))
	var rep LoadReport
	if err := json.Unmarshal(lines[len(lines)-1], &rep); err != nil {
		return nil, fmt.Errorf("lab: clients in %s: report %q: %w", cluster, lines[len(lines)-1], err)
	}
	// The next phase's Job takes the same name.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
			return false, nil
		}
		_, err := c.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return nil, fmt.Errorf("lab: clients in %s: Job not deleted: %w", cluster, err)
	}
	return &rep, nil
}

// Close stops the member clusters and removes everything they made.
func (w *KubeWorld) Close() error {
	if w.fleet == nil {
		return nil
	}
	err := w.fleet.Stop()
	w.fleet = nil
	return err
}

// kubernetesPreflight checks what --kubernetes needs beyond the in-process
// lab, before anything changes.
func kubernetesPreflight() error {
	if _, err := images.FindSourceDir("."); err != nil {
		return fmt.Errorf("lab --kubernetes builds its images from flowplace's source: run it in the repository (%v)", err)
	}
	if _, err := exec.LookPath("nsenter"); err != nil {
		return fmt.Errorf("lab --kubernetes: needs nsenter (util-linux): %w", err)
	}
	if err := nodes.Check(); err != nil {
		return fmt.Errorf("lab --kubernetes: %w", err)
	}
	// Found (or found buildable) now, not after the WAN is up.
	if _, err := controlplane.Resolve(); err != nil {
		return fmt.Errorf("lab --kubernetes: %w", err)
	}
	return nil
}
