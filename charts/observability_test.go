package charts

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestDashboardConfigMaps: with dashboards enabled, the host rendering has
// one ConfigMap per shipped dashboard, labelled for Grafana's sidecar, with
// the file's exact content; none otherwise, and none in karmada mode.
func TestDashboardConfigMaps(t *testing.T) {
	shipped, err := filepath.Glob(filepath.Join("flowplace", "dashboards", "*.json"))
	if err != nil || len(shipped) != 4 {
		t.Fatalf("dashboards: %v %v", shipped, err)
	}
	vals := testValues()
	vals["dashboards"] = map[string]any{"enabled": true, "namespace": "monitoring", "folder": "Multi-cluster"}
	r := render(t, ModeHost, vals)
	for _, p := range shipped {
		file := filepath.Base(p)
		name := "flowplace-dashboards-" + strings.TrimSuffix(file, ".json")
		u := r.Find("ConfigMap", name)
		if u == nil {
			t.Errorf("no ConfigMap %s", name)
			continue
		}
		var cm corev1.ConfigMap
		convert(t, u, &cm)
		want, _ := os.ReadFile(p)
		if cm.Data[file] != string(want) {
			t.Errorf("%s: data[%s] is not the file's content", name, file)
		}
		if cm.Namespace != "monitoring" || cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Multi-cluster" {
			t.Errorf("%s: namespace %q labels %v annotations %v", name, cm.Namespace, cm.Labels, cm.Annotations)
		}
	}
	if r := render(t, ModeHost, testValues()); r.Find("ConfigMap", "flowplace-dashboards-health") != nil {
		t.Error("dashboards rendered while disabled")
	}
	if r := render(t, ModeKarmada, vals); r.Find("ConfigMap", "flowplace-dashboards-health") != nil {
		t.Error("dashboards rendered into the karmada-apiserver")
	}
}

// TestCollectorGateway: with the collector enabled, the agents send to the
// member's gateway in plain OTLP inside the member, the gateway sends on to
// the estimator with the member's identity, its pipeline limits memory
// before batching and exports to the estimator and Prometheus, and it is
// propagated with the agent.
func TestCollectorGateway(t *testing.T) {
	vals := testValues()
	vals["collector"] = map[string]any{"enabled": true}
	r := render(t, ModeKarmada, vals)

	var ds appsv1.DaemonSet
	convert(t, r.Find("DaemonSet", "flowplace-agent"), &ds)
	args := ds.Spec.Template.Spec.Containers[0].Args
	if !slices.Contains(args, "--otlp-endpoint=flowplace-collector.flowplace-system.svc:4317") || !slices.Contains(args, "--otlp-insecure") ||
		slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--otlp-cert-file") }) {
		t.Errorf("agent args %v: want the gateway, plain OTLP", args)
	}

	var cm corev1.ConfigMap
	convert(t, r.Find("ConfigMap", "flowplace-collector"), &cm)
	var cfg struct {
		Exporters map[string]struct {
			Endpoint string `json:"endpoint"`
			TLS      struct {
				CertFile   string `json:"cert_file"`
				ServerName string `json:"server_name_override"`
			} `json:"tls"`
		} `json:"exporters"`
		Service struct {
			Pipelines map[string]struct {
				Receivers, Processors, Exporters []string
			} `json:"pipelines"`
		} `json:"service"`
	}
	// Only the shape: the collector's own schema is the real collector's
	// to check.
	if err := yaml.Unmarshal([]byte(cm.Data["config.yaml"]), &cfg); err != nil {
		t.Fatalf("collector config: %v\n%s", err, cm.Data["config.yaml"])
	}
	p := cfg.Service.Pipelines["metrics"]
	if !slices.Equal(p.Receivers, []string{"otlp"}) || !slices.Equal(p.Processors, []string{"memory_limiter", "batch"}) ||
		!slices.Equal(p.Exporters, []string{"otlp_grpc/estimator", "prometheus"}) {
		t.Errorf("pipeline %+v", p)
	}
	est := cfg.Exporters["otlp_grpc/estimator"]
	if est.Endpoint != "10.0.0.1:30417" || est.TLS.CertFile != "/etc/flowplace/otlp/tls.crt" || est.TLS.ServerName != "flowplace-estimator.karmada-system.svc" {
		t.Errorf("estimator exporter %+v", est)
	}

	var dep appsv1.Deployment
	convert(t, r.Find("Deployment", "flowplace-collector"), &dep)
	if v := dep.Spec.Template.Spec.Volumes[0]; v.Name != "otlp-identity" || v.Secret == nil {
		t.Errorf("volume 0 is %+v, the identity the OverridePolicy replaces", v)
	}
	for _, c := range []string{"member1", "member2"} {
		if r.Find("OverridePolicy", "flowplace-collector-otlp-"+c) == nil {
			t.Errorf("no OverridePolicy giving the gateway %s's identity", c)
		}
	}
	pp := r.Find("PropagationPolicy", "flowplace-agent")
	sel, _ := yaml.Marshal(pp.Object["spec"].(map[string]any)["resourceSelectors"])
	for _, k := range []string{"kind: Deployment", "kind: Service"} {
		if !strings.Contains(string(sel), k+"\n  name: flowplace-collector") {
			t.Errorf("the agent's PropagationPolicy does not carry the collector's %s: %s", k, sel)
		}
	}
	// Off by default, and nothing without an estimator to send to.
	if render(t, ModeKarmada, testValues()).Find("Deployment", "flowplace-collector") != nil {
		t.Error("collector rendered while disabled")
	}
	vals["agent"].(map[string]any)["otlp"] = map[string]any{"endpoint": ""}
	if render(t, ModeKarmada, vals).Find("Deployment", "flowplace-collector") != nil {
		t.Error("collector rendered without agent.otlp.endpoint")
	}
}
