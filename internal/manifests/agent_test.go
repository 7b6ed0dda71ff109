package manifests

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

func TestAgentFromChart(t *testing.T) {
	objs, err := Agent(AgentOptions{Image: "flowplace.local/flowplace-agent:abc", PullPolicy: corev1.PullNever, ClusterName: "member1",
		OTLPEndpoint: "10.1.2.3:4317", OTLPInsecure: true, Capabilities: []corev1.Capability{"BPF"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 7 {
		t.Fatalf("%d objects, want Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, Role, RoleBinding, DaemonSet", len(objs))
	}
	role := objs[4].(*rbacv1.Role)
	if len(role.Rules) == 0 || !slices.Contains(role.Rules[0].ResourceNames, "flowplace-cluster-latency") {
		t.Errorf("agent Role %+v does not grant the latency matrix ConfigMap", role.Rules)
	}
	ds := objs[6].(*appsv1.DaemonSet)
	c := ds.Spec.Template.Spec.Containers[0]
	if c.Image != "flowplace.local/flowplace-agent:abc" || c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("image %s %s", c.Image, c.ImagePullPolicy)
	}
	for _, a := range []string{"--otlp-endpoint=10.1.2.3:4317", "--otlp-insecure", "--cluster-name=member1"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %v lack %s", c.Args, a)
		}
	}
	if slices.ContainsFunc(c.Args, func(a string) bool { return a == "--otlp-ca-file=/etc/flowplace/otlp-ca/ca.crt" }) {
		t.Errorf("insecure agent still verifies TLS: %v", c.Args)
	}
	if got := c.SecurityContext.Capabilities.Add; !slices.Equal(got, []corev1.Capability{"BPF"}) {
		t.Errorf("capabilities %v, want the override", got)
	}
	if _, err := Agent(AgentOptions{Image: "x", Namespace: "Bad_NS"}); err == nil {
		t.Error("a bad namespace was accepted")
	}
}

// AgentCapabilities is what the chart grants (tests drop one of them).
func TestAgentCapabilitiesAreTheChart(t *testing.T) {
	objs, err := Agent(AgentOptions{Image: "x/y:z"})
	if err != nil {
		t.Fatal(err)
	}
	got := objs[6].(*appsv1.DaemonSet).Spec.Template.Spec.Containers[0].SecurityContext.Capabilities.Add
	if !slices.Equal(got, AgentCapabilities) {
		t.Errorf("chart grants %v, AgentCapabilities says %v", got, AgentCapabilities)
	}
}
