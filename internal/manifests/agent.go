// Package manifests builds the Kubernetes objects that run flowplace's
// components in a member cluster.
package manifests

import (
	"errors"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flowplace/flowplace/charts"
)

// Names of the agent's objects.
const (
	DefaultNamespace = "flowplace-system"
	AgentName        = "flowplace-agent"
	// AgentMetricsPort serves /metrics, /healthz and /readyz on the host
	// network.
	AgentMetricsPort = 9464
)

// AgentCapabilities are what the agent needs beyond a container's
// defaults, and why. It never runs privileged and never needs
// SYS_RESOURCE (BPF memory is charged to the memory cgroup).
var AgentCapabilities = []corev1.Capability{
	"BPF",       // load the probes and create their maps
	"PERFMON",   // read kernel memory from the probes (pointer access, iterators)
	"NET_ADMIN", // attach to the pods' cgroup; read kube-proxy's conntrack table
	// Enter pods' network namespaces to adopt the connections that were
	// open before the agent started (iter/tcp walks the namespace of the
	// thread that opens it).
	"SYS_ADMIN",
}

// AgentOptions configures the agent's DaemonSet.
type AgentOptions struct {
	Namespace string // DefaultNamespace when empty
	Image     string
	// PullPolicy defaults to IfNotPresent.
	PullPolicy corev1.PullPolicy
	// ClusterName is the member's name in Karmada.
	ClusterName string
	// OTLPEndpoint is host:port of the estimator or a collector; empty
	// disables OTLP.
	OTLPEndpoint   string
	OTLPInsecure   bool
	ExportInterval time.Duration // 0: the agent's default
	PollInterval   time.Duration // 0: the agent's default
	// Capabilities replaces AgentCapabilities when not nil (tests remove
	// one to see the agent say what is missing).
	Capabilities []corev1.Capability
	ExtraArgs    []string
}

func (o *AgentOptions) defaults() error {
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if errs := validation.IsDNS1123Label(o.Namespace); len(errs) > 0 {
		return fmt.Errorf("manifests: namespace %q: %v", o.Namespace, errs)
	}
	if o.Image == "" {
		return errors.New("manifests: the agent's image is required")
	}
	if o.PullPolicy == "" {
		o.PullPolicy = corev1.PullIfNotPresent
	}
	if o.Capabilities == nil {
		o.Capabilities = AgentCapabilities
	}
	return nil
}

// Agent returns the agent's Namespace, ServiceAccount, ClusterRole,
// ClusterRoleBinding, Role and RoleBinding (routing reads the latency
// matrix ConfigMap and its own DaemonSet) and DaemonSet, in the order they
// are applied, as the
// chart (charts/flowplace, installMode karmada) renders them: the chart is
// the one source of the agent's manifests; these are the objects Karmada
// would propagate to one member, for the lab and the tests that run agents
// without a Karmada control plane.
func Agent(o AgentOptions) ([]any, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	repoTag := o.Image
	registry := ""
	if i := strings.IndexByte(repoTag, '/'); i >= 0 && strings.ContainsAny(repoTag[:i], ".:") {
		registry, repoTag = repoTag[:i], repoTag[i+1:]
	}
	repo, tag := repoTag, ""
	if i := strings.LastIndexByte(repoTag, ':'); i > strings.LastIndexByte(repoTag, '/') {
		repo, tag = repoTag[:i], repoTag[i+1:]
	}
	extra := []any{}
	if o.ClusterName != "" {
		extra = append(extra, "--cluster-name="+o.ClusterName)
	}
	for _, a := range o.ExtraArgs {
		extra = append(extra, a)
	}
	otlp := map[string]any{"endpoint": o.OTLPEndpoint, "insecure": o.OTLPInsecure}
	if o.ExportInterval > 0 {
		otlp["exportInterval"] = o.ExportInterval.String()
	}
	agent := map[string]any{
		"namespace":    o.Namespace,
		"image":        map[string]any{"registry": registry, "repository": repo, "tag": tag, "pullPolicy": string(o.PullPolicy)},
		"clusterNames": []any{clusterOrDefault(o.ClusterName)},
		"otlp":         otlp,
		"extraArgs":    extra,
	}
	if o.PollInterval > 0 {
		agent["pollInterval"] = o.PollInterval.String()
	}
	r, err := charts.Render(charts.RenderOptions{
		Mode: charts.ModeKarmada, Namespace: "karmada-system",
		Values: map[string]any{
			"estimator": map[string]any{"enabled": false},
			"scheduler": map[string]any{"enabled": false},
			"agent":     agent,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("manifests: %w", err)
	}
	var ns corev1.Namespace
	var sa corev1.ServiceAccount
	var role rbacv1.ClusterRole
	var binding rbacv1.ClusterRoleBinding
	var nsRole rbacv1.Role
	var nsBinding rbacv1.RoleBinding
	var ds appsv1.DaemonSet
	for _, c := range []struct {
		kind, name string
		into       any
	}{{"Namespace", o.Namespace, &ns}, {"ServiceAccount", AgentName, &sa}, {"ClusterRole", AgentName, &role}, {"ClusterRoleBinding", AgentName, &binding},
		{"Role", AgentName, &nsRole}, {"RoleBinding", AgentName, &nsBinding}, {"DaemonSet", AgentName, &ds}} {
		u := r.Find(c.kind, c.name)
		if u == nil {
			return nil, fmt.Errorf("manifests: the chart renders no agent %s", c.kind)
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, c.into); err != nil {
			return nil, fmt.Errorf("manifests: agent %s: %w", c.kind, err)
		}
	}
	if o.Capabilities != nil {
		ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add = o.Capabilities
	}
	return []any{&ns, &sa, &role, &binding, &nsRole, &nsBinding, &ds}, nil
}

func clusterOrDefault(c string) string {
	if c == "" {
		return "member"
	}
	return c
}
