package charts

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// testValues are the values `flowplace addons enable` generates, with
// placeholder PEM (the chart only copies them).
func testValues() map[string]any {
	pair := map[string]any{"crt": "CRT", "key": "KEY"}
	return map[string]any{
		"karmada":   map[string]any{"caCrt": "KARMADA-CA"},
		"otlpCA":    map[string]any{"crt": "OTLP-CA", "key": "OTLP-CA-KEY"},
		"estimator": map[string]any{"karmadaClient": pair, "otlp": map[string]any{"crt": "SRV", "key": "SRVKEY"}},
		"scheduler": map[string]any{"karmadaClient": pair},
		"agent": map[string]any{
			"clusterNames": []any{"member1", "member2"},
			"identities":   map[string]any{"member1": pair, "member2": pair},
			"otlp":         map[string]any{"endpoint": "10.0.0.1:30417"},
		},
	}
}

func render(t *testing.T, mode string, values map[string]any) *Rendered {
	t.Helper()
	r, err := Render(RenderOptions{Mode: mode, Namespace: "karmada-system", Values: values})
	if err != nil {
		t.Fatalf("%s: %v", mode, err)
	}
	return r
}

func TestLint(t *testing.T) {
	for _, tc := range []struct {
		mode          string
		observability bool // the collector gateway and the dashboards
	}{{ModeHost, false}, {ModeKarmada, false}, {ModeHost, true}, {ModeKarmada, true}} {
		mode := tc.mode
		vals := testValues()
		if tc.observability {
			vals["collector"] = map[string]any{"enabled": true}
			vals["dashboards"] = map[string]any{"enabled": true}
		}
		vals["installMode"] = mode
		res := action.NewLint().Run([]string{"flowplace"}, vals)
		for _, m := range res.Messages {
			if m.Severity >= support.WarningSev { // INFO: "icon is recommended"
				t.Errorf("helm lint (%s): %s", mode, m)
			}
		}
		if len(res.Errors) > 0 {
			t.Errorf("helm lint (%s): %v", mode, res.Errors)
		}
	}
}

func TestRenderedObjects(t *testing.T) {
	host := render(t, ModeHost, testValues())
	kinds := strings.Join(host.Kinds(), ", ")
	if want := "1 ConfigMap, 2 Deployment, 2 Service, 2 ServiceAccount, 4 Secret"; kinds != want {
		t.Errorf("host objects: %s, want %s", kinds, want)
	}
	karmada := render(t, ModeKarmada, testValues())
	kinds = strings.Join(karmada.Kinds(), ", ")
	want := "1 ClusterPropagationPolicy, 1 ConfigMap, 1 DaemonSet, 1 Namespace, 1 ServiceAccount, 2 CustomResourceDefinition, 2 OverridePolicy, 2 Secret, 3 ClusterRole, 3 ClusterRoleBinding, 3 PropagationPolicy, 4 Role, 4 RoleBinding"
	if kinds != want {
		t.Errorf("karmada-apiserver objects: %s, want %s", kinds, want)
	}
	for _, o := range append(host.Objects, karmada.Objects...) {
		if o.GetKind() == "Secret" || o.GetKind() == "Deployment" || o.GetKind() == "DaemonSet" {
			if o.GetNamespace() == "" {
				t.Errorf("%s %s has no namespace", o.GetKind(), o.GetName())
			}
		}
	}
	if karmada.Objects[0].GetKind() != "Namespace" {
		t.Errorf("first object is a %s, want the Namespace (Helm's install order)", karmada.Objects[0].GetKind())
	}
	// CRDs are kept by helm uninstall and by disable.
	for _, o := range karmada.Objects {
		if o.GetKind() == "CustomResourceDefinition" && o.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
			t.Errorf("CRD %s lacks helm.sh/resource-policy: keep", o.GetName())
		}
	}
}

func TestAgentDaemonSet(t *testing.T) {
	r := render(t, ModeKarmada, testValues())
	var ds appsv1.DaemonSet
	convert(t, r.Find("DaemonSet", "flowplace-agent"), &ds)
	pod := ds.Spec.Template.Spec
	c := pod.Containers[0]
	caps := c.SecurityContext.Capabilities.Add
	if want := []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"}; !slices.Equal(caps, want) {
		t.Errorf("capabilities %v, want %v (never SYS_RESOURCE)", caps, want)
	}
	if *c.SecurityContext.Privileged || *c.SecurityContext.AllowPrivilegeEscalation || !*c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("security context %+v: want unprivileged, no escalation, read-only root", c.SecurityContext)
	}
	if !pod.HostNetwork || !pod.HostPID || pod.PriorityClassName != "system-node-critical" {
		t.Errorf("hostNetwork %v hostPID %v priority %q", pod.HostNetwork, pod.HostPID, pod.PriorityClassName)
	}
	if len(pod.Tolerations) != 1 || pod.Tolerations[0].Operator != corev1.TolerationOpExists || pod.Tolerations[0].Key != "" {
		t.Errorf("tolerations %+v, want one that tolerates every taint", pod.Tolerations)
	}
	if len(c.Env) == 0 || c.Env[0].Name != "NODE_NAME" || c.Env[0].ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("env %+v, want NODE_NAME from spec.nodeName", c.Env)
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m.Name
	}
	for _, p := range []string{"/sys/fs/bpf", "/sys/fs/cgroup", "/sys/kernel/btf", "/etc/flowplace/otlp", "/etc/flowplace/otlp-ca"} {
		if mounts[p] == "" {
			t.Errorf("no mount at %s: %v", p, mounts)
		}
	}
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("probes %s %s", c.LivenessProbe.HTTPGet.Path, c.ReadinessProbe.HTTPGet.Path)
	}
	for _, a := range []string{"--otlp-endpoint=10.0.0.1:30417", "--otlp-cert-file=/etc/flowplace/otlp/tls.crt", "--cgroup=pods"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %v lack %s", c.Args, a)
		}
	}
	// Each member's OverridePolicy points volume 0 at its own identity.
	if pod.Volumes[0].Secret == nil {
		t.Fatalf("volume 0 is %+v, want the identity Secret the OverridePolicies replace", pod.Volumes[0])
	}
	op := r.Find("OverridePolicy", "flowplace-agent-otlp-member2")
	rules, _, _ := unstructured.NestedSlice(op.Object, "spec", "overrideRules")
	rule := rules[0].(map[string]any)
	names, _, _ := unstructured.NestedStringSlice(rule, "targetCluster", "clusterNames")
	pt, _, _ := unstructured.NestedSlice(rule, "overriders", "plaintext")
	ov := pt[0].(map[string]any)
	if !slices.Equal(names, []string{"member2"}) || ov["path"] != "/spec/template/spec/volumes/0/secret/secretName" || ov["value"] != "flowplace-agent-otlp-member2" {
		t.Errorf("member2's override: clusters %v, %v", names, ov)
	}
	pp := r.Find("PropagationPolicy", "flowplace-agent-otlp-member2")
	sel, _, _ := unstructured.NestedSlice(pp.Object, "spec", "resourceSelectors")
	cl, _, _ := unstructured.NestedStringSlice(pp.Object, "spec", "placement", "clusterAffinity", "clusterNames")
	if len(sel) != 1 || sel[0].(map[string]any)["name"] != "flowplace-agent-otlp-member2" || !slices.Equal(cl, []string{"member2"}) {
		t.Errorf("member2's identity is propagated by %v to %v; want only its Secret, to member2 only", sel, cl)
	}
}

func TestValuesRefused(t *testing.T) {
	cases := []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"unknown key", func(v map[string]any) { v["estimatr"] = map[string]any{} }, "additional properties 'estimatr' not allowed"},
		{"wrong type", func(v map[string]any) { v["estimator"].(map[string]any)["replicas"] = "two" }, "/estimator/replicas"},
		{"bad enum", func(v map[string]any) {
			v["estimator"].(map[string]any)["otlp"].(map[string]any)["service"] = map[string]any{"type": "Ingress"}
		}, "/estimator/otlp/service/type"},
		{"bad endpoint", func(v map[string]any) { v["agent"].(map[string]any)["otlp"] = map[string]any{"endpoint": "nohostport"} }, "/agent/otlp/endpoint"},
		{"bad member name", func(v map[string]any) { v["agent"].(map[string]any)["clusterNames"] = []any{"Member_1"} }, "/agent/clusterNames/0"},
		{"missing certificate", func(v map[string]any) { v["estimator"].(map[string]any)["otlp"] = map[string]any{} }, "estimator.otlp.crt is required"},
		{"bad rebalance quantile", func(v map[string]any) {
			v["estimator"].(map[string]any)["rebalance"] = map[string]any{"enabled": true, "rttQuantile": "p95"}
		}, "/estimator/rebalance/rttQuantile"},
		{"no members", func(v map[string]any) { v["agent"].(map[string]any)["clusterNames"] = []any{} }, "agent.clusterNames or agent.clusterSelector is required"},
	}
	for _, c := range cases {
		v := testValues()
		c.edit(v)
		var errs []string
		for _, mode := range []string{ModeHost, ModeKarmada} {
			if _, err := Render(RenderOptions{Mode: mode, Namespace: "karmada-system", Values: v}); err != nil {
				errs = append(errs, err.Error())
			}
		}
		if got := strings.Join(errs, "\n"); !strings.Contains(got, c.want) {
			t.Errorf("%s: errors %q, want one naming %q", c.name, got, c.want)
		}
	}
}

// TestCRDsMatchAPI: the chart's CRDs are the generated ones (go generate
// ./api/... copies them).
func TestCRDsMatchAPI(t *testing.T) {
	gen, err := filepath.Glob("../api/crds/*.yaml")
	if err != nil || len(gen) == 0 {
		t.Fatalf("generated CRDs: %v %v", gen, err)
	}
	inChart, _ := filepath.Glob("flowplace/files/crds/*.yaml")
	if len(inChart) != len(gen) {
		t.Fatalf("chart has %d CRD files, api/crds %d", len(inChart), len(gen))
	}
	for _, g := range gen {
		a, _ := os.ReadFile(g)
		b, err := os.ReadFile(filepath.Join("flowplace/files/crds", filepath.Base(g)))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs from the chart's copy (run go generate ./api/...): %v", filepath.Base(g), err)
		}
	}
}

// TestDefaultsMeetSchema: values.yaml's defaults pass its own schema, which
// refuses unknown keys (TestValuesRefused checks the refusals).
func TestDefaultsMeetSchema(t *testing.T) {
	c, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if err := chartutil.ValidateAgainstSchema(c, c.Values); err != nil {
		t.Fatalf("values.yaml against its own schema: %v", err)
	}
	if !bytes.Contains(c.Schema, []byte(`"additionalProperties": false`)) {
		t.Error("the schema does not refuse unknown keys")
	}
}

func convert(t *testing.T, u *unstructured.Unstructured, into any) {
	t.Helper()
	if u == nil {
		t.Fatal("object not rendered")
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, into, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

func TestAgentRouting(t *testing.T) {
	r := render(t, ModeKarmada, testValues())
	var ds appsv1.DaemonSet
	convert(t, r.Find("DaemonSet", "flowplace-agent"), &ds)
	c := ds.Spec.Template.Spec.Containers[0]
	for _, a := range []string{"--routing=true", "--routing-fail-threshold=3", "--routing-base-ejection=10s", "--routing-max-ejection=5m",
		"--routing-sync-interval=1s", "--routing-matrix-configmap=flowplace-system/flowplace-cluster-latency"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("args %v lack %s", c.Args, a)
		}
	}
	// Env index 1 is what each member's OverridePolicy sets to its name.
	if len(c.Env) < 4 || c.Env[1].Name != "CLUSTER_NAME" || c.Env[2].Name != "POD_NAME" || c.Env[3].Name != "POD_NAMESPACE" {
		t.Fatalf("env %+v, want NODE_NAME, CLUSTER_NAME, POD_NAME, POD_NAMESPACE", c.Env)
	}
	op := r.Find("OverridePolicy", "flowplace-agent-otlp-member1")
	rules, _, _ := unstructured.NestedSlice(op.Object, "spec", "overrideRules")
	pt, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "overriders", "plaintext")
	if len(pt) != 2 || pt[1].(map[string]any)["path"] != "/spec/template/spec/containers/0/env/1/value" || pt[1].(map[string]any)["value"] != "member1" {
		t.Errorf("member1's overriders %v: want CLUSTER_NAME set to member1", pt)
	}
	// The matrix ConfigMap and the agent's Role travel with the agent.
	pp := r.Find("PropagationPolicy", "flowplace-agent")
	sel, _, _ := unstructured.NestedSlice(pp.Object, "spec", "resourceSelectors")
	var selected []string
	for _, s := range sel {
		m := s.(map[string]any)
		selected = append(selected, m["kind"].(string)+"/"+m["name"].(string))
	}
	for _, want := range []string{"ConfigMap/flowplace-cluster-latency", "Role/flowplace-agent", "RoleBinding/flowplace-agent"} {
		if !slices.Contains(selected, want) {
			t.Errorf("agent PropagationPolicy selects %v, not %s", selected, want)
		}
	}
	cr := r.Find("ClusterRole", "flowplace-agent")
	rulesCR, _, _ := unstructured.NestedSlice(cr.Object, "rules")
	var resources []string
	for _, rr := range rulesCR {
		res, _, _ := unstructured.NestedStringSlice(rr.(map[string]any), "resources")
		resources = append(resources, res...)
	}
	for _, want := range []string{"serviceimports", "multiclusterservices", "events", "endpointslices"} {
		if !slices.Contains(resources, want) {
			t.Errorf("agent ClusterRole covers %v, not %s", resources, want)
		}
	}
	var est appsv1.Deployment
	convert(t, render(t, ModeHost, testValues()).Find("Deployment", "flowplace-estimator"), &est)
	if args := est.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--matrix-configmap=flowplace-system/flowplace-cluster-latency") {
		t.Errorf("estimator args %v do not publish the matrix ConfigMap", args)
	}

	v := testValues()
	v["agent"].(map[string]any)["routing"] = map[string]any{"enabled": false}
	convert(t, render(t, ModeKarmada, v).Find("DaemonSet", "flowplace-agent"), &ds)
	for _, a := range ds.Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--routing") && a != "--routing=false" {
			t.Errorf("routing disabled, yet %s", a)
		}
	}
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--routing=false") {
		t.Error("routing disabled without --routing=false (which removes pinned routing)")
	}
}

func TestAgentWithoutAdoption(t *testing.T) {
	v := testValues()
	v["agent"].(map[string]any)["adoptExisting"] = false
	var ds appsv1.DaemonSet
	convert(t, render(t, ModeKarmada, v).Find("DaemonSet", "flowplace-agent"), &ds)
	c := ds.Spec.Template.Spec.Containers[0]
	if got := c.SecurityContext.Capabilities.Add; !slices.Equal(got, []corev1.Capability{"BPF", "PERFMON", "NET_ADMIN"}) {
		t.Errorf("capabilities without adoption: %v, want no SYS_ADMIN", got)
	}
	if !slices.Contains(c.Args, "--adopt-existing=false") {
		t.Errorf("args %v lack --adopt-existing=false", c.Args)
	}
}

func TestCommonLabelsReachPods(t *testing.T) {
	v := testValues()
	v["global"] = map[string]any{"commonLabels": map[string]any{"team": "net"}}
	for _, c := range []struct{ mode, kind, name string }{
		{ModeHost, "Deployment", "flowplace-estimator"}, {ModeHost, "Deployment", "flowplace-scheduler"}, {ModeKarmada, "DaemonSet", "flowplace-agent"},
	} {
		o := render(t, c.mode, v).Find(c.kind, c.name)
		l, _, _ := unstructured.NestedStringMap(o.Object, "spec", "template", "metadata", "labels")
		if o.GetLabels()["team"] != "net" || l["team"] != "net" {
			t.Errorf("%s %s: object labels %v, pod labels %v; want team=net on both", c.kind, c.name, o.GetLabels(), l)
		}
	}
}

func TestEstimatorRebalance(t *testing.T) {
	rules := func(r *Rendered) []string {
		cr := r.Find("ClusterRole", "flowplace:estimator")
		rs, _, _ := unstructured.NestedSlice(cr.Object, "rules")
		var out []string
		for _, rr := range rs {
			res, _, _ := unstructured.NestedStringSlice(rr.(map[string]any), "resources")
			verbs, _, _ := unstructured.NestedStringSlice(rr.(map[string]any), "verbs")
			for _, x := range res {
				out = append(out, x+":"+strings.Join(verbs, ","))
			}
		}
		return out
	}
	args := func(v map[string]any) []string {
		var est appsv1.Deployment
		convert(t, render(t, ModeHost, v).Find("Deployment", "flowplace-estimator"), &est)
		return est.Spec.Template.Spec.Containers[0].Args
	}

	// Off by default: no flag, no right to move workloads.
	for _, a := range args(testValues()) {
		if strings.HasPrefix(a, "--rebalance") {
			t.Errorf("rebalance off, yet %s", a)
		}
	}
	if rs := rules(render(t, ModeKarmada, testValues())); slices.Contains(rs, "workloadrebalancers:create,get,list") {
		t.Errorf("rebalance off, yet the estimator may create WorkloadRebalancers: %v", rs)
	}

	v := testValues()
	v["estimator"].(map[string]any)["rebalance"] = map[string]any{"enabled": true, "dryRun": false, "maxMoves": 2}
	got := args(v)
	for _, a := range []string{"--rebalance", "--rebalance-dry-run=false", "--rebalance-max-moves=2", "--rebalance-interval=5m",
		"--rebalance-cooldown=1h", "--rebalance-rtt-quantile=p50", "--rebalance-scheduler-name=flowplace-scheduler", "--rebalance-min-samples=10"} {
		if !slices.Contains(got, a) {
			t.Errorf("args %v lack %s", got, a)
		}
	}
	rs := rules(render(t, ModeKarmada, v))
	for _, want := range []string{"workloadrebalancers:create,get,list", "events:create"} {
		if !slices.Contains(rs, want) {
			t.Errorf("estimator ClusterRole %v lacks %s", rs, want)
		}
	}
}
