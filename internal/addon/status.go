package addon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/charts"
	"github.com/flowplace/flowplace/estimator"
)

var (
	propagationPolicyGVR = schema.GroupVersionResource{Group: "policy.karmada.io", Version: "v1alpha1", Resource: "propagationpolicies"}
)

// Check is one line of `status`.
type Check struct {
	Component string // estimator, scheduler, crds, agent
	Where     string // host cluster, karmada-apiserver, or the member
	Healthy   bool
	Detail    string
}

// Report is `status`'s result.
type Report struct {
	Installed bool
	Checks    []Check
}

// Status is enabled when installed and every check is healthy, unhealthy
// when installed and one is not, disabled when nothing is installed.
func (r *Report) Status() string {
	if !r.Installed {
		return StatusDisabled
	}
	for _, c := range r.Checks {
		if !c.Healthy {
			return StatusUnhealthy
		}
	}
	return StatusEnabled
}

// Print writes the report as a table.
func (r *Report) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tWHERE\tHEALTHY\tDETAIL")
	for _, c := range r.Checks {
		h := "yes"
		if !c.Healthy {
			h = "NO"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Component, c.Where, h, c.Detail)
	}
	fmt.Fprintf(tw, "flowplace\t\t%s\t\n", r.Status())
	tw.Flush()
}

// ErrUnhealthy is returned by Status when anything is not healthy.
var ErrUnhealthy = errors.New("flowplace is not healthy")

// Status checks, per component and per member, what is installed, whether it
// is ready, and how fresh the published data is.
func Status(ctx context.Context, o GlobalOptions) (*Report, error) {
	host, karmada, err := o.connectBoth(ctx)
	if err != nil {
		return nil, err
	}
	return o.status(ctx, host, karmada, time.Now())
}

func (o *GlobalOptions) status(ctx context.Context, host, karmada *apiServer, now time.Time) (*Report, error) {
	r := &Report{}
	add := func(c Check) { r.Checks = append(r.Checks, c) }
	hostWhere := "host/" + o.Namespace

	for _, d := range []struct{ component, name string }{{"estimator", estimatorName}, {"scheduler", schedulerName}} {
		dep, err := host.kube.AppsV1().Deployments(o.Namespace).Get(ctx, d.name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("host cluster: %w", err)
		}
		r.Installed = true
		ok, detail := deploymentHealth(dep, d.component == "estimator")
		if d.component == "estimator" {
			if holder := leaseHolder(ctx, karmada, o.Namespace, estimatorName); holder != "" {
				detail += ", leader " + holder
			} else if ok {
				ok, detail = false, detail+", no leader"
			}
		}
		add(Check{Component: d.component, Where: hostWhere, Healthy: ok, Detail: detail})
	}

	crds, err := karmada.dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{LabelSelector: partOfLabel + "=flowplace"})
	if err != nil {
		return nil, fmt.Errorf("karmada-apiserver: listing CRDs: %w", err)
	}
	want := []string{"clusterlatencies.flowplace.io", "workloadtraffics.flowplace.io"}
	have := map[string]bool{}
	for _, c := range crds.Items {
		have[c.GetName()] = true
	}
	var missing []string
	for _, n := range want {
		if !have[n] {
			missing = append(missing, n)
		}
	}
	detail := "installed: " + strings.Join(want, ", ")
	if len(missing) > 0 {
		detail = "missing: " + strings.Join(missing, ", ")
	}
	if len(have) > 0 || r.Installed {
		add(Check{Component: "crds", Where: "karmada-apiserver", Healthy: len(missing) == 0, Detail: detail})
	}

	// The agent's namespace as the release was given it.
	rec, err := readRelease(ctx, host, o.Namespace)
	if err != nil {
		return nil, err
	}
	agentNS := stringAt(mergeMaps(chartDefaults(), rec), "agent", "namespace")
	pp, err := karmada.dyn.Resource(propagationPolicyGVR).Namespace(agentNS).Get(ctx, agentName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("karmada-apiserver: reading the agent's PropagationPolicy: %w", err)
	}
	r.Installed = true
	members, err := policyMembers(ctx, karmada, pp)
	if err != nil {
		return nil, err
	}
	if only := clusterList(o.Cluster); len(only) > 0 {
		members = only
	}
	for _, m := range members {
		add(o.memberCheck(ctx, karmada, agentNS, m, now))
	}
	return r, nil
}

// memberCheck: the agents ready there, and its ClusterLatency valid.
func (o *GlobalOptions) memberCheck(ctx context.Context, karmada *apiServer, agentNS, m string, now time.Time) Check {
	c := Check{Component: "agent", Where: m}
	ready, detail := o.agentsReady(ctx, karmada, agentNS, m)
	var cl flowplacev1alpha1.ClusterLatency
	u, err := karmada.dyn.Resource(flowplacev1alpha1.ClusterLatencyResource).Get(ctx, m, metav1.GetOptions{})
	fresh := false
	switch {
	case err != nil:
		detail += "; no ClusterLatency yet (no data from its agents)"
	case fromUnstructured(u, &cl) != nil:
		detail += "; ClusterLatency unreadable"
	case cl.Status.ValidUntil.Time.After(now):
		fresh = true
		detail += fmt.Sprintf("; data fresh: %d peer(s), valid for %s more", len(cl.Status.Peers), cl.Status.ValidUntil.Time.Sub(now).Round(time.Second))
	default:
		detail += fmt.Sprintf("; data stale since %s (agents not reporting)", cl.Status.ValidUntil.Time.Format(time.RFC3339))
	}
	c.Healthy = ready && fresh
	c.Detail = detail
	return c
}

// agentsReady reads the member's DaemonSet directly with --member-kubeconfig,
// else from Karmada's aggregated status of its ResourceBinding.
func (o *GlobalOptions) agentsReady(ctx context.Context, karmada *apiServer, agentNS, m string) (bool, string) {
	if o.MemberKubeConfig != "" {
		ms, err := o.connectMember(ctx, m)
		if err != nil {
			return false, err.Error()
		}
		ds, err := ms.kube.AppsV1().DaemonSets(agentNS).Get(ctx, agentName, metav1.GetOptions{})
		if err != nil {
			return false, "agent DaemonSet: " + err.Error()
		}
		return daemonSetHealth(ds.Status.DesiredNumberScheduled, ds.Status.NumberReady, ds.Status.UpdatedNumberScheduled)
	}
	rb, err := karmada.dyn.Resource(estimator.ResourceBindingGVR).Namespace(agentNS).Get(ctx, agentName+"-daemonset", metav1.GetOptions{})
	if err != nil {
		return false, "agents unknown (no --member-kubeconfig, and no ResourceBinding: " + err.Error() + ")"
	}
	items, _, _ := unstructured.NestedSlice(rb.Object, "status", "aggregatedStatus")
	for _, it := range items {
		im, _ := it.(map[string]any)
		if im["clusterName"] != m {
			continue
		}
		st, _ := im["status"].(map[string]any)
		num := func(k string) int32 {
			v, _ := st[k].(int64)
			return int32(v)
		}
		return daemonSetHealth(num("desiredNumberScheduled"), num("numberReady"), num("updatedNumberScheduled"))
	}
	return false, "agents not reported by Karmada yet"
}

func daemonSetHealth(desired, ready, updated int32) (bool, string) {
	d := fmt.Sprintf("%d/%d agent pod(s) ready", ready, desired)
	if updated < desired {
		d += fmt.Sprintf(", %d updated", updated)
	}
	return desired > 0 && ready == desired && updated == desired, d
}

// deploymentHealth: rolled out, and ready: every replica, or for the
// estimator exactly its leader.
func deploymentHealth(d *appsv1.Deployment, leaderOnly bool) (bool, string) {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	detail := fmt.Sprintf("%d/%d ready", d.Status.ReadyReplicas, want)
	rolled := d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want && d.Status.Replicas == want
	if want == 0 {
		return rolled || d.Status.Replicas == 0, "0 replicas (not running)"
	}
	if !rolled {
		detail += fmt.Sprintf(", rolling out (%d/%d updated)", d.Status.UpdatedReplicas, want)
	}
	if leaderOnly {
		detail += " (standbys are not ready by design)"
		return rolled && d.Status.ReadyReplicas == 1, detail
	}
	return rolled && d.Status.ReadyReplicas == want, detail
}

func leaseHolder(ctx context.Context, karmada *apiServer, ns, name string) string {
	l, err := karmada.kube.CoordinationV1().Leases(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil &&
		time.Since(l.Spec.RenewTime.Time) > time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// policyMembers resolves the agent PropagationPolicy's placement to names.
func policyMembers(ctx context.Context, karmada *apiServer, pp *unstructured.Unstructured) ([]string, error) {
	names, _, _ := unstructured.NestedStringSlice(pp.Object, "spec", "placement", "clusterAffinity", "clusterNames")
	sel, ok, _ := unstructured.NestedMap(pp.Object, "spec", "placement", "clusterAffinity", "labelSelector")
	if !ok {
		return names, nil
	}
	ls, err := labelSelector(sel)
	if err != nil {
		return nil, fmt.Errorf("the agent's PropagationPolicy: %w", err)
	}
	list, err := karmada.dyn.Resource(estimator.ClusterGVR).List(ctx, metav1.ListOptions{LabelSelector: ls.String()})
	if err != nil {
		return nil, fmt.Errorf("karmada-apiserver: listing clusters: %w", err)
	}
	for _, c := range list.Items {
		names = append(names, c.GetName())
	}
	return names, nil
}

// waitComponents waits until the rendered Deployments are healthy, printing
// each change of their state.
func waitComponents(ctx context.Context, host *apiServer, ns string, r *charts.Rendered, timeout time.Duration, logf func(string, ...any)) error {
	var names []string
	for _, o := range r.Objects {
		if o.GetKind() == "Deployment" {
			names = append(names, o.GetName())
		}
	}
	last := map[string]string{}
	err := wait.PollUntilContextTimeout(ctx, time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		all := true
		for _, n := range names {
			d, err := host.kube.AppsV1().Deployments(ns).Get(ctx, n, metav1.GetOptions{})
			if err != nil {
				all = false
				continue
			}
			ok, detail := deploymentHealth(d, n == estimatorName)
			if last[n] != detail {
				logf("flowplace: waiting: %s %s", n, detail)
				last[n] = detail
			}
			all = all && ok
		}
		return all, nil
	})
	if err != nil {
		var why []string
		for _, n := range names {
			why = append(why, n+": "+last[n])
		}
		return fmt.Errorf("host cluster: components not ready within %s (--pod-timeout): %s", timeout, strings.Join(why, "; "))
	}
	return nil
}

func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtimeConverter.FromUnstructured(u.Object, into)
}
