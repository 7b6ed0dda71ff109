// Package manifests builds the Kubernetes objects that run flowplace's
// components in a member cluster.
package manifests

import (
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
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
// ClusterRoleBinding and DaemonSet, in the order they are applied.
func Agent(o AgentOptions) ([]any, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	labels := map[string]string{"app.kubernetes.io/name": AgentName, "app.kubernetes.io/part-of": "flowplace"}
	meta := func(name string, namespaced bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: name, Labels: labels}
		if namespaced {
			m.Namespace = o.Namespace
		}
		return m
	}
	ns := &corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: meta(o.Namespace, false)}
	sa := &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(AgentName, true)}
	role := &rbacv1.ClusterRole{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
		ObjectMeta: meta(AgentName, false),
		Rules: []rbacv1.PolicyRule{
			// The kube-system namespace's UID identifies the cluster.
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
			// Attribution: pods to workloads, Services and their
			// endpoints (local and Karmada-dispatched) to services and
			// clusters.
			{APIGroups: []string{""}, Resources: []string{"pods", "services"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
		ObjectMeta: meta(AgentName, false),
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: AgentName},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: AgentName, Namespace: o.Namespace}},
	}

	args := []string{
		"--cgroup=pods",
		"--node-name=$(NODE_NAME)",
		fmt.Sprintf("--listen-address=:%d", AgentMetricsPort),
	}
	if o.ClusterName != "" {
		args = append(args, "--cluster-name="+o.ClusterName)
	}
	if o.OTLPEndpoint != "" {
		args = append(args, "--otlp-endpoint="+o.OTLPEndpoint)
		if o.OTLPInsecure {
			args = append(args, "--otlp-insecure")
		}
	}
	if o.ExportInterval > 0 {
		args = append(args, "--export-interval="+o.ExportInterval.String())
	}
	if o.PollInterval > 0 {
		args = append(args, "--poll-interval="+o.PollInterval.String())
	}
	args = append(args, o.ExtraArgs...)

	hostPathDir := corev1.HostPathDirectory
	probe := func(path string) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(AgentMetricsPort)}},
			PeriodSeconds: 5, FailureThreshold: 3,
		}
	}
	ds := &appsv1.DaemonSet{
		TypeMeta:   typeMeta("apps/v1", "DaemonSet"),
		ObjectMeta: meta(AgentName, true),
		Spec: appsv1.DaemonSetSpec{
			Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": AgentName}},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: AgentName,
					// The probes see every pod's sockets from the kernel;
					// the host's PID namespace holds the pods' processes,
					// whose cgroups and network namespaces the agent reads.
					HostNetwork: true,
					HostPID:     true,
					DNSPolicy:   corev1.DNSClusterFirstWithHostNet,
					// Every node, whatever its taints.
					Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{
						Name:            "agent",
						Image:           o.Image,
						ImagePullPolicy: o.PullPolicy,
						Args:            args,
						Env: []corev1.EnvVar{{
							Name:      "NODE_NAME",
							ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "spec.nodeName"}},
						}},
						Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: AgentMetricsPort, Protocol: corev1.ProtocolTCP}},
						SecurityContext: &corev1.SecurityContext{
							Privileged:               ptr(false),
							AllowPrivilegeEscalation: ptr(false),
							ReadOnlyRootFilesystem:   ptr(true),
							Capabilities:             &corev1.Capabilities{Add: o.Capabilities},
						},
						ReadinessProbe: probe("/readyz"),
						LivenessProbe:  probe("/healthz"),
						// A failed start says why in the pod's status.
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU:    resource.MustParse("50m"),
							corev1.ResourceMemory: resource.MustParse("64Mi"),
						}},
						VolumeMounts: []corev1.VolumeMount{
							{Name: "cgroup", MountPath: "/sys/fs/cgroup", ReadOnly: true},
							{Name: "bpffs", MountPath: "/sys/fs/bpf"},
						},
					}},
					Volumes: []corev1.Volume{
						{Name: "cgroup", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/cgroup", Type: &hostPathDir}}},
						{Name: "bpffs", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/fs/bpf", Type: &hostPathDir}}},
					},
				},
			},
		},
	}
	return []any{ns, sa, role, binding, ds}, nil
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func ptr[T any](v T) *T { return &v }
