package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flowplace/flowplace/world/controlplane"
)

// TestAgentKubernetesMissingPermissions runs the agent with a service
// account that may not read what attribution needs: it must stop with an
// error that says which permission is missing, before touching the kernel.
func TestAgentKubernetesMissingPermissions(t *testing.T) {
	ctx := context.Background()
	cp := controlplane.StartForTest(t, controlplane.Config{Members: []string{"m1"}})
	m := cp.Members["m1"]
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "flowplace-agent", Namespace: "kube-system"}}
	if _, err := m.Client.CoreV1().ServiceAccounts("kube-system").Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := m.Client.CoreV1().ServiceAccounts("kube-system").CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["m1"] = &clientcmdapi.Cluster{Server: m.URL, CertificateAuthorityData: m.RESTConfig.TLSClientConfig.CAData}
	kc.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: tok.Status.Token}
	kc.Contexts["m1"] = &clientcmdapi.Context{Cluster: "m1", AuthInfo: "agent"}
	kc.CurrentContext = "m1"
	path := filepath.Join(t.TempDir(), "agent.kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t, "./cmd/flowplace-agent")
	run := func() string {
		t.Helper()
		cmd := exec.Command(bin, "--kubeconfig", path, "--sync-timeout", "5s", "--listen-address", freePort(t))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if err == nil {
			t.Fatalf("agent ran without permissions:\n%s", out.String())
		}
		if strings.Contains(out.String(), "Probes attached") {
			t.Errorf("probes attached before the member cluster was readable:\n%s", out.String())
		}
		return out.String()
	}

	// Nothing granted: the identity read fails and says so.
	out := run()
	for _, want := range []string{"kube-system", "forbidden", "system:serviceaccount:kube-system:flowplace-agent"} {
		if !strings.Contains(out, want) {
			t.Errorf("error does not say %q:\n%s", want, out)
		}
	}

	// Namespaces readable but not pods: attribution cannot work.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "read-namespaces"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}}}}
	if _, err := m.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "agent-read-namespaces"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: sa.Name, Namespace: sa.Namespace}}}
	if _, err := m.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out = run()
		if !strings.Contains(out, "cannot get resource \"namespaces\"") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // RBAC caches catch up
	}
	for _, want := range []string{"list pods in all namespaces", "needs get, list and watch", `cannot list resource "pods"`} {
		if !strings.Contains(out, want) {
			t.Errorf("error does not say %q:\n%s", want, out)
		}
	}
}
