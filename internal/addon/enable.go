package addon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/flowplace/flowplace/charts"
	"github.com/flowplace/flowplace/estimator"
)

// Names of the objects enable reads back to keep their certificates.
const (
	estimatorName       = "flowplace-estimator"
	schedulerName       = "flowplace-scheduler"
	agentName           = "flowplace-agent"
	otlpCASecret        = "flowplace-otlp-ca"
	estimatorOTLPSecret = estimatorName + "-otlp-tls"
	karmadaConfigSuffix = "-karmada-config"
	// EstimatorConfigSecret is the estimator's kubeconfig of the
	// karmada-apiserver, named as karmadactl expects an addon's (<addon>-config).
	EstimatorConfigSecret = Name + "-config"
	identitySecretStem    = "flowplace-agent-otlp-"
	estimatorUser         = "system:flowplace:estimator"
	schedulerUser         = "system:flowplace:scheduler"
)

// member is a Karmada member cluster the agent runs in.
type member struct {
	Name string
	ID   string // Cluster.spec.id: the kube-system namespace's UID
}

// plan is everything enable decided before it changes anything.
type plan struct {
	host, karmada *apiServer
	values        map[string]any
	members       []member
	hostObjs      *charts.Rendered
	karmadaObjs   *charts.Rendered
	// user are the values given (or recorded by the last enable).
	user map[string]any
	// autoEndpoint: the agents' OTLP endpoint is read from the Service
	// once it exists (NodePort or LoadBalancer, no agent.otlp.endpoint).
	autoEndpoint string
}

// Render returns what Enable would apply to the host cluster and to the
// karmada-apiserver (with the agents' endpoint still empty when it is read
// from the Service); it writes nothing.
func Render(ctx context.Context, o EnableOptions) (host, karmada *charts.Rendered, err error) {
	p, err := o.plan(ctx)
	if err != nil {
		return nil, nil, err
	}
	return p.hostObjs, p.karmadaObjs, nil
}

// Enable installs or upgrades flowplace: it renders the chart for the host
// cluster and the karmada-apiserver, applies both, prunes what an earlier
// release had and this one has not, and waits for the components. Every
// check that can fail runs before the first write.
func Enable(ctx context.Context, o EnableOptions) error {
	start := time.Now()
	p, err := o.plan(ctx)
	if err != nil {
		return err
	}
	o.logf("flowplace: rendered %d object(s) for the host cluster, %d for the karmada-apiserver; agents in %s",
		len(p.hostObjs.Objects), len(p.karmadaObjs.Objects), memberNames(p.members))

	if err := ensureNamespace(ctx, p.host, o.Namespace); err != nil {
		return err
	}
	if err := ensureNamespace(ctx, p.karmada, o.Namespace); err != nil {
		return err
	}
	// The host first: a NodePort or LoadBalancer Service gives the agents'
	// endpoint, which the karmada-apiserver's rendering needs.
	rh, err := p.host.applyAll(ctx, p.hostObjs.Objects)
	if err != nil {
		return err
	}
	if p.autoEndpoint != "" {
		ep, err := otlpEndpoint(ctx, p.host, o.Namespace, p.autoEndpoint, o.PodTimeout)
		if err != nil {
			return err
		}
		o.logf("flowplace: the agents reach the estimator at %s (%s Service); set agent.otlp.endpoint to choose another address", ep, p.autoEndpoint)
		setPath(p.values, ep, "agent", "otlp", "endpoint")
		if p.karmadaObjs, err = render(charts.ModeKarmada, o.Namespace, p.values); err != nil {
			return err
		}
	}
	rk, err := p.karmada.applyAll(ctx, crdsFirst(p.karmadaObjs.Objects))
	if err != nil {
		return err
	}
	if rk.Pruned, err = p.karmada.prune(ctx, charts.ModeKarmada, charts.DefaultReleaseName, p.karmadaObjs.Objects); err != nil {
		return err
	}
	if rh.Pruned, err = p.host.prune(ctx, charts.ModeHost, charts.DefaultReleaseName, p.hostObjs.Objects); err != nil {
		return err
	}
	if err := writeRelease(ctx, p.host, o.Namespace, p.user); err != nil {
		return err
	}
	o.logf("flowplace: karmada-apiserver: %d applied, %d changed, %d pruned; host cluster: %d applied, %d changed, %d pruned",
		rk.Applied, rk.Changed, rk.Pruned, rh.Applied, rh.Changed, rh.Pruned)
	if err := waitComponents(ctx, p.host, o.Namespace, p.hostObjs, o.PodTimeout, o.logf); err != nil {
		return err
	}
	o.logf("flowplace: enabled in %s", time.Since(start).Round(time.Millisecond))
	if p.karmadaObjs.Notes != "" {
		o.logf("%s", p.karmadaObjs.Notes)
	}
	return nil
}

// plan connects, reads what is installed, creates or reuses the TLS
// material and renders both releases; it writes nothing.
func (o *EnableOptions) plan(ctx context.Context) (*plan, error) {
	user, err := userValues(o.ValueFiles, o.SetValues)
	if err != nil {
		return nil, err
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	host, karmada, err := o.connectBoth(ctx)
	if err != nil {
		return nil, err
	}
	p := &plan{host: host, karmada: karmada}
	if len(o.ValueFiles) == 0 && len(o.SetValues) == 0 {
		// No values given (karmadactl gives none): keep the installed ones.
		rec, err := readRelease(ctx, host, o.Namespace)
		if err != nil {
			return nil, err
		}
		if rec != nil {
			o.logf("flowplace: reusing the values of the installed release (give -f or --set to replace them)")
			user = rec
		}
	}
	p.user = user

	karmadaCA, err := readKarmadaCA(ctx, host, o.Namespace)
	if err != nil {
		return nil, err
	}
	if p.members, err = o.chooseMembers(ctx, karmada, user); err != nil {
		return nil, err
	}

	gen := map[string]any{}
	if o.PrivateImageRegistry != "" {
		setPath(gen, o.PrivateImageRegistry, "global", "imageRegistry")
	}
	setPath(gen, karmada.rest.Host, "karmada", "apiServer")
	ca, err := caPEM(karmada.rest)
	if err != nil {
		return nil, fmt.Errorf("karmada-apiserver: CA of its kubeconfig: %w", err)
	}
	if len(ca) == 0 {
		ca = karmadaCA.CertPEM
	}
	setPath(gen, string(ca), "karmada", "caCrt")

	agentNS := stringAt(mergeMaps(chartDefaults(), user), "agent", "namespace")
	if err := o.certificates(ctx, p, karmadaCA, gen, agentNS, user, now); err != nil {
		return nil, err
	}
	if _, ok := lookup(user, "agent", "clusterSelector"); !ok {
		names := make([]any, len(p.members))
		for i, m := range p.members {
			names[i] = m.Name
		}
		setPath(gen, names, "agent", "clusterNames")
	}
	p.values = mergeMaps(gen, user)

	// Where the members send OTLP.
	merged := mergeMaps(chartDefaults(), p.values)
	if stringAt(merged, "agent", "otlp", "endpoint") == "" && boolAt(merged, "agent", "enabled") {
		switch t := stringAt(merged, "estimator", "otlp", "service", "type"); t {
		case "NodePort", "LoadBalancer":
			// Installed already: the Service has its address now, and
			// the rendering is final before anything is applied.
			if ep, err := otlpEndpoint(ctx, host, o.Namespace, t, 0); err == nil {
				setPath(p.values, ep, "agent", "otlp", "endpoint")
			} else {
				p.autoEndpoint = t
			}
		default:
			return nil, fmt.Errorf("agent.otlp.endpoint is required with estimator.otlp.service.type=%s: give the host:port at which the members reach the estimator (your gateway), or use NodePort or LoadBalancer", t)
		}
	}
	if p.hostObjs, err = render(charts.ModeHost, o.Namespace, p.values); err != nil {
		return nil, err
	}
	if p.karmadaObjs, err = render(charts.ModeKarmada, o.Namespace, p.values); err != nil {
		return nil, err
	}
	return p, nil
}

func render(mode, ns string, values map[string]any) (*charts.Rendered, error) {
	r, err := charts.Render(charts.RenderOptions{Mode: mode, Namespace: ns, Values: values})
	if err != nil {
		return nil, fmt.Errorf("invalid values: %w", err)
	}
	return r, nil
}

// readKarmadaCA reads Karmada's CA from karmada-cert.
func readKarmadaCA(ctx context.Context, host *apiServer, ns string) (*authority, error) {
	s, err := host.kube.CoreV1().Secrets(ns).Get(ctx, KarmadaCertSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("secret %s/%s not found in the host cluster: flowplace's components authenticate to the karmada-apiserver with certificates from Karmada's CA in it (karmadactl init and Karmada's chart create it; check -n/--namespace)", ns, KarmadaCertSecret)
	}
	if err != nil {
		return nil, fmt.Errorf("host cluster: reading secret %s/%s: %w", ns, KarmadaCertSecret, err)
	}
	if len(s.Data["ca.crt"]) == 0 || len(s.Data["ca.key"]) == 0 {
		return nil, fmt.Errorf("secret %s/%s has no ca.crt and ca.key", ns, KarmadaCertSecret)
	}
	a, err := parseAuthority(s.Data["ca.crt"], s.Data["ca.key"])
	if err != nil {
		return nil, fmt.Errorf("secret %s/%s: %w", ns, KarmadaCertSecret, err)
	}
	return a, nil
}

// chooseMembers resolves -C, or agent.clusterSelector, or all members.
func (o *GlobalOptions) chooseMembers(ctx context.Context, karmada *apiServer, user map[string]any) ([]member, error) {
	list, err := karmada.dyn.Resource(estimator.ClusterGVR).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("karmada-apiserver: listing member clusters (%s): %w", estimator.ClusterGVR.GroupResource(), err)
	}
	byName := map[string]*unstructured.Unstructured{}
	var all []string
	for i := range list.Items {
		byName[list.Items[i].GetName()] = &list.Items[i]
		all = append(all, list.Items[i].GetName())
	}
	slices.Sort(all)
	var names []string
	if want := clusterList(o.Cluster); len(want) > 0 {
		for _, n := range want {
			if byName[n] == nil {
				return nil, fmt.Errorf("-C %s: no such member cluster in the karmada-apiserver (members: %s)", n, strings.Join(all, ", "))
			}
		}
		names = want
	} else if sel, ok := lookup(user, "agent", "clusterSelector"); ok {
		ls, err := labelSelector(sel)
		if err != nil {
			return nil, fmt.Errorf("agent.clusterSelector: %w", err)
		}
		for _, n := range all {
			if ls.Matches(labels.Set(byName[n].GetLabels())) {
				names = append(names, n)
			}
		}
	} else {
		names = all
	}
	if len(names) == 0 {
		return nil, errors.New("no member cluster to run the agent in: join members to Karmada first, or choose them with -C")
	}
	var out []member
	for _, n := range names {
		id, _, _ := unstructured.NestedString(byName[n].Object, "spec", "id")
		if id == "" {
			if id, err = o.memberKubeSystemUID(ctx, n); err != nil {
				return nil, fmt.Errorf("member %s: its Cluster has no spec.id (the kube-system UID its agents report) and %w", n, err)
			}
		}
		out = append(out, member{Name: n, ID: id})
	}
	return out, nil
}

func (o *GlobalOptions) memberKubeSystemUID(ctx context.Context, name string) (string, error) {
	if o.MemberKubeConfig == "" {
		return "", errors.New("no --member-kubeconfig to read it from")
	}
	m, err := o.connectMember(ctx, name)
	if err != nil {
		return "", err
	}
	ns, err := m.kube.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading its kube-system namespace: %w", err)
	}
	return string(ns.UID), nil
}

// connectMember reaches a member with --member-kubeconfig: the context named
// like the member, or --member-context.
func (o *GlobalOptions) connectMember(ctx context.Context, name string) (*apiServer, error) {
	kctx := name
	if o.MemberContext != "" {
		kctx = o.MemberContext
	}
	return connect(ctx, "member "+name, o.MemberKubeConfig, kctx)
}

// certificates fills gen with the TLS material: kept from the installed
// Secrets where it still fits, else issued.
func (o *EnableOptions) certificates(ctx context.Context, p *plan, karmadaCA *authority, gen map[string]any, agentNS string, user map[string]any, now time.Time) error {
	ns := o.Namespace
	read := func(s *apiServer, ns, name string) map[string][]byte {
		sec, err := s.kube.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil
		}
		return sec.Data
	}
	// The OTLP CA: the user's (otlpCA.crt and .key), the installed one, or new.
	var otlpCA *authority
	var err error
	if crt, key := stringAt(user, "otlpCA", "crt"), stringAt(user, "otlpCA", "key"); crt != "" || key != "" {
		if otlpCA, err = parseAuthority([]byte(crt), []byte(key)); err != nil {
			return fmt.Errorf("otlpCA: %w", err)
		}
	} else if d := read(p.host, ns, otlpCASecret); d != nil {
		if otlpCA, err = parseAuthority(d["ca.crt"], d["ca.key"]); err != nil {
			return fmt.Errorf("host cluster: secret %s/%s: %w", ns, otlpCASecret, err)
		}
	} else if otlpCA, err = newAuthority("flowplace-otlp-ca", now); err != nil {
		return err
	}
	setPath(gen, string(otlpCA.CertPEM), "otlpCA", "crt")
	setPath(gen, string(otlpCA.KeyPEM), "otlpCA", "key")

	merged := mergeMaps(chartDefaults(), user)
	serverName := stringAt(merged, "agent", "otlp", "serverName")
	dns := []string{estimatorName, estimatorName + "." + ns, estimatorName + "." + ns + ".svc", estimatorName + "." + ns + ".svc.cluster.local"}
	if serverName != "" && !slices.Contains(dns, serverName) {
		dns = append(dns, serverName)
	}
	d := read(p.host, ns, estimatorOTLPSecret)
	crt, key, err := otlpCA.keepOrIssue(leafRequest{CommonName: estimatorName, DNSNames: dns, Server: true}, d["tls.crt"], d["tls.key"], now)
	if err != nil {
		return err
	}
	setPath(gen, string(crt), "estimator", "otlp", "crt")
	setPath(gen, string(key), "estimator", "otlp", "key")

	for _, c := range []struct{ component, secret, user string }{
		{"estimator", EstimatorConfigSecret, estimatorUser},
		{"scheduler", schedulerName + karmadaConfigSuffix, schedulerUser},
	} {
		d := read(p.host, ns, c.secret)
		crt, key, err := karmadaCA.keepOrIssue(leafRequest{CommonName: c.user}, d["tls.crt"], d["tls.key"], now)
		if err != nil {
			return err
		}
		setPath(gen, string(crt), c.component, "karmadaClient", "crt")
		setPath(gen, string(key), c.component, "karmadaClient", "key")
	}

	ids := map[string]any{}
	for _, m := range p.members {
		d := read(p.karmada, agentNS, identitySecretStem+m.Name)
		req := leafRequest{CommonName: "flowplace-agent." + m.Name, Organization: []string{"flowplace:agents"}, URIs: []string{clusterIdentityURI(m.ID)}}
		crt, key, err := otlpCA.keepOrIssue(req, d["tls.crt"], d["tls.key"], now)
		if err != nil {
			return err
		}
		ids[m.Name] = map[string]any{"crt": string(crt), "key": string(key)}
	}
	setPath(gen, ids, "agent", "identities")
	return nil
}

func ensureNamespace(ctx context.Context, s *apiServer, ns string) error {
	_, err := s.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: reading namespace %s: %w", s.name, ns, err)
	}
	if _, err := s.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("%s: creating namespace %s: %w", s.name, ns, err)
	}
	return nil
}

// otlpEndpoint reads where the members reach the estimator's Service: a
// Ready node's InternalIP and the node port, or the load balancer.
func otlpEndpoint(ctx context.Context, host *apiServer, ns, typ string, timeout time.Duration) (string, error) {
	var ep string
	try := func(ctx context.Context) (bool, error) {
		svc, err := host.kube.CoreV1().Services(ns).Get(ctx, estimatorName, metav1.GetOptions{})
		if err != nil || len(svc.Spec.Ports) == 0 {
			return false, nil
		}
		port := svc.Spec.Ports[0]
		if typ == "LoadBalancer" {
			for _, in := range svc.Status.LoadBalancer.Ingress {
				addr := in.IP
				if addr == "" {
					addr = in.Hostname
				}
				if addr != "" {
					ep = net.JoinHostPort(addr, strconv.Itoa(int(port.Port)))
					return true, nil
				}
			}
			return false, nil
		}
		if port.NodePort == 0 {
			return false, nil
		}
		nodes, err := host.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, n := range nodes.Items {
			if !nodeReady(&n) {
				continue
			}
			for _, a := range n.Status.Addresses {
				if a.Type == corev1.NodeInternalIP {
					ep = net.JoinHostPort(a.Address, strconv.Itoa(int(port.NodePort)))
					return true, nil
				}
			}
		}
		return false, nil
	}
	if timeout <= 0 { // one look, no wait
		if ok, _ := try(ctx); ok {
			return ep, nil
		}
		return "", errors.New("no address yet")
	}
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, try)
	if err != nil {
		return "", fmt.Errorf("host cluster: no address of the %s Service %s/%s for the agents within %s; set agent.otlp.endpoint: %w", typ, ns, estimatorName, timeout, err)
	}
	return ep, nil
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func memberNames(ms []member) string {
	var n []string
	for _, m := range ms {
		n = append(n, m.Name)
	}
	return strings.Join(n, ", ")
}
