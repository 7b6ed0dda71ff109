package controlplane

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// extraCRD exercises Config.CRDDirs: a tiny namespaced CRD.
const extraCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.flowplace.io
spec:
  group: test.flowplace.io
  names: {kind: Widget, listKind: WidgetList, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

func TestControlPlane(t *testing.T) {
	extra := t.TempDir()
	if err := os.WriteFile(filepath.Join(extra, "widgets.yaml"), []byte(extraCRD), 0o644); err != nil {
		t.Fatal(err)
	}
	// Binaries are built (or found) by StartForTest before it times Start,
	// so this measures a warm start.
	start := time.Now()
	cp := StartForTest(t, Config{Members: []string{"member1", "member2"}, CRDDirs: []string{extra}})
	t.Logf("warm start, %s + 2 members with CRDs: %s", HostName, time.Since(start).Round(time.Millisecond))
	logRSS(t, cp)
	ctx := t.Context()
	m1, m2 := cp.Members["member1"], cp.Members["member2"]

	t.Run("Version", func(t *testing.T) {
		for _, c := range cp.Clusters() {
			v, err := c.Client.Discovery().ServerVersion()
			if err != nil {
				t.Fatalf("%s: /version: %v", c.Name, err)
			}
			if v.GitVersion != KubernetesVersion {
				t.Errorf("%s: /version gitVersion = %q, want %q (the -X ldflags)", c.Name, v.GitVersion, KubernetesVersion)
			}
		}
	})

	t.Run("Kubeconfig", func(t *testing.T) {
		for _, c := range cp.Clusters() {
			rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
			if err != nil {
				t.Fatalf("%s: loading %s: %v", c.Name, c.Kubeconfig, err)
			}
			cs, err := kubernetes.NewForConfig(rc)
			if err != nil {
				t.Fatal(err)
			}
			// Verifies the CA (no insecure flag) and the admin token.
			if _, err := cs.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{}); err != nil {
				t.Errorf("%s: kube-system through the kubeconfig: %v", c.Name, err)
			}
		}
	})

	t.Run("EtcdPrefixIsolation", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "isolation"}}
		if _, err := m1.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("member1: creating namespace: %v", err)
		}
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "only-in-member1", Namespace: "isolation"},
			Data:       map[string]string{"k": "v"},
		}
		if _, err := m1.Client.CoreV1().ConfigMaps("isolation").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("member1: creating configmap: %v", err)
		}
		got, err := m1.Client.CoreV1().ConfigMaps("isolation").Get(ctx, "only-in-member1", metav1.GetOptions{})
		if err != nil || got.Data["k"] != "v" {
			t.Fatalf("member1: reading configmap back: %v, %v", got, err)
		}
		for _, other := range []*Cluster{m2, cp.Host} {
			if _, err := other.Client.CoreV1().Namespaces().Get(ctx, "isolation", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("%s: namespace created in member1: want NotFound, got %v", other.Name, err)
			}
			if _, err := other.Client.CoreV1().ConfigMaps("isolation").Get(ctx, "only-in-member1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("%s: configmap created in member1: want NotFound, got %v", other.Name, err)
			}
		}
	})

	t.Run("ServiceCIDRs", func(t *testing.T) {
		seen := map[string]string{}
		for _, c := range []*Cluster{m1, m2} {
			svc := &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: metav1.NamespaceDefault},
				Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
			}
			got, err := c.Client.CoreV1().Services(metav1.NamespaceDefault).Create(ctx, svc, metav1.CreateOptions{})
			if err != nil {
				t.Fatalf("%s: creating service: %v", c.Name, err)
			}
			_, cidr, err := net.ParseCIDR(c.ServiceCIDR)
			if err != nil {
				t.Fatal(err)
			}
			ip := net.ParseIP(got.Spec.ClusterIP)
			if ip == nil || !cidr.Contains(ip) {
				t.Errorf("%s: ClusterIP %q not in %s", c.Name, got.Spec.ClusterIP, c.ServiceCIDR)
			}
			if prev, ok := seen[c.ServiceCIDR]; ok {
				t.Errorf("%s and %s share service CIDR %s", prev, c.Name, c.ServiceCIDR)
			}
			seen[c.ServiceCIDR] = c.Name
		}
	})

	t.Run("CRDsEstablished", func(t *testing.T) {
		list, err := cp.Host.Dynamic.Resource(CRDGVR).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		karmada, _ := filepath.Glob("crds/karmada/*.yaml")
		// Karmada's files hold one CRD each, plus the test Cluster CRD and
		// the extra one from CRDDirs.
		if want := len(karmada) + 2; len(list.Items) != want {
			t.Errorf("host has %d CRDs, want %d", len(list.Items), want)
		}
		// Members get no CRDs.
		if l, err := m1.Dynamic.Resource(CRDGVR).List(ctx, metav1.ListOptions{}); err != nil || len(l.Items) != 0 {
			t.Errorf("member1 CRDs: %d, %v; want none", len(l.Items), err)
		}
		w := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "test.flowplace.io/v1", "kind": "Widget",
			"metadata": map[string]any{"name": "w", "namespace": metav1.NamespaceDefault},
			"spec":     map[string]any{"size": int64(3)},
		}}
		gvr := schema.GroupVersionResource{Group: "test.flowplace.io", Version: "v1", Resource: "widgets"}
		// Fast too: Start waited out the API server's 2 s "just created" delay.
		start := time.Now()
		_, err = cp.Host.Dynamic.Resource(gvr).Namespace(metav1.NamespaceDefault).Create(ctx, w, metav1.CreateOptions{})
		if err != nil {
			t.Errorf("creating a Widget from the CRDDirs CRD: %v", err)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("first create of a Widget took %s: the just-created delay was not waited out", d)
		}
	})

	t.Run("ResourceBinding", func(t *testing.T) {
		rbs := cp.Host.Dynamic.Resource(ResourceBindingGVR).Namespace(metav1.NamespaceDefault)
		rb := resourceBinding("web-deployment", int64(3))
		if _, err := rbs.Create(ctx, rb, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating ResourceBinding: %v", err)
		}
		got, err := rbs.Get(ctx, "web-deployment", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading ResourceBinding back: %v", err)
		}
		if r, _, _ := unstructured.NestedInt64(got.Object, "spec", "replicas"); r != 3 {
			t.Errorf("spec.replicas = %d, want 3", r)
		}
		if n, _, _ := unstructured.NestedString(got.Object, "spec", "resource", "name"); n != "web" {
			t.Errorf("spec.resource.name = %q, want web", n)
		}
		clusters, _, _ := unstructured.NestedSlice(got.Object, "spec", "clusters")
		if len(clusters) != 2 || clusters[0].(map[string]any)["name"] != "member1" {
			t.Errorf("spec.clusters = %v, want member1 and member2", clusters)
		}
	})

	t.Run("ResourceBindingSchemaValidation", func(t *testing.T) {
		rbs := cp.Host.Dynamic.Resource(ResourceBindingGVR).Namespace(metav1.NamespaceDefault)
		wrongType := resourceBinding("wrong-type", "three")
		_, err := rbs.Create(ctx, wrongType, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.replicas") {
			t.Errorf("string spec.replicas: want Invalid naming spec.replicas, got %v", err)
		}
		noResource := resourceBinding("no-resource", int64(1))
		unstructured.RemoveNestedField(noResource.Object, "spec", "resource")
		_, err = rbs.Create(ctx, noResource, metav1.CreateOptions{})
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.resource") {
			t.Errorf("missing spec.resource: want Invalid naming spec.resource, got %v", err)
		}
		if l, err := rbs.List(ctx, metav1.ListOptions{}); err == nil {
			for _, item := range l.Items {
				if item.GetName() != "web-deployment" {
					t.Errorf("rejected binding %s was stored", item.GetName())
				}
			}
		}
	})

	t.Run("RegisterMembers", func(t *testing.T) {
		locs := map[string]ClusterLocation{"member2": {Provider: "lab", Region: "eu-west", Zones: []string{"eu-west-a"}}}
		// Twice: registration must be idempotent.
		for range 2 {
			if err := cp.RegisterMembers(ctx, locs); err != nil {
				t.Fatal(err)
			}
		}
		ids := map[string]bool{}
		for _, m := range []*Cluster{m1, m2} {
			uid, err := m.KubeSystemUID(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if uid == "" {
				t.Fatalf("%s: empty kube-system UID", m.Name)
			}
			c, err := cp.Host.Dynamic.Resource(ClusterGVR).Get(ctx, m.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("reading Cluster %s from the host: %v", m.Name, err)
			}
			if id, _, _ := unstructured.NestedString(c.Object, "spec", "id"); id != uid {
				t.Errorf("Cluster %s spec.id = %q, want kube-system UID %q", m.Name, id, uid)
			}
			if ep, _, _ := unstructured.NestedString(c.Object, "spec", "apiEndpoint"); ep != m.URL {
				t.Errorf("Cluster %s spec.apiEndpoint = %q, want %q", m.Name, ep, m.URL)
			}
			ids[uid] = true
		}
		if len(ids) != 2 {
			t.Errorf("member1 and member2 have the same kube-system UID")
		}
		c2, err := cp.Host.Dynamic.Resource(ClusterGVR).Get(ctx, "member2", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		region, _, _ := unstructured.NestedString(c2.Object, "spec", "region")
		zones, _, _ := unstructured.NestedStringSlice(c2.Object, "spec", "zones")
		if region != "eu-west" || len(zones) != 1 || zones[0] != "eu-west-a" {
			t.Errorf("member2 location = %q %v, want eu-west [eu-west-a]", region, zones)
		}
		if err := cp.RegisterMembers(ctx, map[string]ClusterLocation{"nope": {}}); err == nil {
			t.Error("RegisterMembers accepted a location for an unknown member")
		}
	})
}

// resourceBinding is a minimal work.karmada.io/v1alpha2 ResourceBinding
// (named <name>-<kind> as Karmada names them).
func resourceBinding(name string, replicas any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": ResourceBindingGVR.GroupVersion().String(),
		"kind":       "ResourceBinding",
		"metadata":   map[string]any{"name": name, "namespace": metav1.NamespaceDefault},
		"spec": map[string]any{
			"resource": map[string]any{
				"apiVersion": "apps/v1", "kind": "Deployment",
				"namespace": metav1.NamespaceDefault, "name": "web",
			},
			"replicas": replicas,
			"clusters": []any{
				map[string]any{"name": "member1", "replicas": int64(2)},
				map[string]any{"name": "member2", "replicas": int64(1)},
			},
		},
	}}
}

// logRSS logs each process's resident memory, from /proc/<pid>/status.
func logRSS(t *testing.T, cp *ControlPlane) {
	t.Helper()
	var total int64
	var parts []string
	for name, pid := range cp.PIDs() {
		kb := vmRSSKiB(pid)
		total += kb
		parts = append(parts, name+"="+strconv.FormatInt(kb>>10, 10)+"MiB")
	}
	t.Logf("RSS after start: total %d MiB (%s)", total>>10, strings.Join(parts, " "))
}

func vmRSSKiB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}
