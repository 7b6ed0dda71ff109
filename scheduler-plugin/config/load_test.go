package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/model"
)

const full = `
apiVersion: scheduler.flowplace.io/v1alpha1
kind: SchedulerConfiguration
clientConnection:
  kubeconfig: /etc/karmada/karmada-apiserver.config
  qps: 20
  burst: 40
recordEvents: false
model:
  minSamples: 50
  rebuildInterval: 250ms
  capacityPlan: false
  workloadResources:
  - {group: apps, version: v1, resource: deployments, kind: Deployment}
profiles:
- schedulerName: flowplace-scheduler
  plugins:
    filter:
      enabled: [{name: LatencyBudget}]
    score:
      enabled: [{name: TrafficLocality}]
  pluginConfig:
  - name: LatencyBudget
    args:
      apiVersion: scheduler.flowplace.io/v1alpha1
      kind: LatencyBudgetArgs
      defaultBudget: 80ms
      strict: true
      rttQuantile: p99
      requiredPeerTrafficPercent: 25
  - name: TrafficLocality
    args:
      kind: TrafficLocalityArgs
      rttQuantile: p90
      costFloor: 5000
      egress:
        millisecondsPerCostUnit: 500
        rules:
        - {fromProvider: aws, toProvider: aws, sameRegion: true, costPerGiB: 0.01}
        - {costPerGiB: 0.09}
- schedulerName: flowplace-lite
  plugins:
    multiPoint:
      disabled: [{name: "*"}]
`

func TestParseFull(t *testing.T) {
	c, err := Parse([]byte(full), "flowplace-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	if c.SchedulerName != "flowplace-scheduler" || c.ClientConnection.Kubeconfig != "/etc/karmada/karmada-apiserver.config" || c.ClientConnection.QPS != 20 || c.ClientConnection.Burst != 40 {
		t.Errorf("profile/client: %+v", c)
	}
	if c.Model.MinSamples != 50 || c.Model.RebuildInterval != 250*time.Millisecond || len(c.Model.WorkloadResources) != 1 || c.Model.CapacityPlan || c.RecordEvents {
		t.Errorf("model: %+v", c.Model)
	}
	wantLB := LatencyBudget{Enabled: true, DefaultBudget: 80 * time.Millisecond, Strict: true, Quantile: model.QuantileP99, RequiredFraction: 0.25}
	if c.LatencyBudget != wantLB {
		t.Errorf("LatencyBudget %+v, want %+v", c.LatencyBudget, wantLB)
	}
	tl := c.TrafficLocality
	if !tl.Enabled || tl.Quantile != model.QuantileP90 || tl.CostFloor != 5000 || tl.Egress.MillisecondsPerCostUnit != 500 || len(tl.Egress.Rules) != 2 || tl.Egress.Rules[1].CostPerGiB != 0.09 {
		t.Errorf("TrafficLocality %+v", tl)
	}

	lite, err := Parse([]byte(full), "flowplace-lite")
	if err != nil {
		t.Fatal(err)
	}
	if lite.LatencyBudget.Enabled || lite.TrafficLocality.Enabled {
		t.Errorf("multiPoint disabled *: %+v %+v", lite.LatencyBudget, lite.TrafficLocality)
	}
}

func TestDefaults(t *testing.T) {
	for _, doc := range []string{"profiles: [{}]", "apiVersion: scheduler.flowplace.io/v1alpha1\nkind: SchedulerConfiguration\nprofiles:\n- schedulerName: x\n"} {
		c, err := Parse([]byte(doc), "")
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		want := Default()
		want.SchedulerName = c.SchedulerName
		if c.LatencyBudget != want.LatencyBudget || c.Model.MinSamples != DefaultMinSamples || c.Model.RebuildInterval != time.Second ||
			c.TrafficLocality.Quantile != model.QuantileP50 || c.TrafficLocality.CostFloor != DefaultCostFloor || !c.TrafficLocality.Enabled ||
			len(c.Model.WorkloadResources) != 2 || c.ClientConnection.QPS != 50 || !c.Model.CapacityPlan || !c.RecordEvents {
			t.Errorf("%q: %+v", doc, c)
		}
		if c.LatencyBudget.DefaultBudget != 0 || c.LatencyBudget.Strict || c.LatencyBudget.Quantile != model.QuantileP90 || c.LatencyBudget.RequiredFraction != 0.1 {
			t.Errorf("LatencyBudget defaults: %+v", c.LatencyBudget)
		}
	}
}

func TestInvalid(t *testing.T) {
	tests := []struct {
		name, doc, scheduler string
		// want are substrings of the error: the field path and the problem.
		want []string
	}{
		{"unknown top-level field", "profile: []", "", []string{`unknown field "profile"`}},
		{"unknown args field", "profiles:\n- pluginConfig:\n  - name: LatencyBudget\n    args: {defaultBuget: 10ms}\n", "",
			[]string{"profiles[0].pluginConfig[0].args", `unknown field "defaultBuget"`}},
		{"no profiles", "apiVersion: scheduler.flowplace.io/v1alpha1", "", []string{"profiles: Required value"}},
		{"wrong apiVersion", "apiVersion: kubescheduler.config.k8s.io/v1\nprofiles: [{}]", "", []string{`apiVersion: Unsupported value: "kubescheduler.config.k8s.io/v1"`}},
		{"wrong kind", "kind: KubeSchedulerConfiguration\nprofiles: [{}]", "", []string{`kind: Unsupported value: "KubeSchedulerConfiguration"`}},
		{"bad quantile", "profiles:\n- pluginConfig:\n  - name: TrafficLocality\n    args: {rttQuantile: p95}\n", "",
			[]string{`profiles[0].pluginConfig[TrafficLocality].args.rttQuantile: Unsupported value: "p95"`}},
		{"negative budget", "profiles:\n- pluginConfig:\n  - name: LatencyBudget\n    args: {defaultBudget: -5ms}\n", "",
			[]string{`profiles[0].pluginConfig[LatencyBudget].args.defaultBudget: Invalid value: "-5ms"`}},
		{"unparsable budget", "profiles:\n- pluginConfig:\n  - name: LatencyBudget\n    args: {defaultBudget: soon}\n", "",
			[]string{"profiles[0].pluginConfig[0].args", "soon"}},
		{"percent out of range", "profiles:\n- pluginConfig:\n  - name: LatencyBudget\n    args: {requiredPeerTrafficPercent: 150}\n", "",
			[]string{"profiles[0].pluginConfig[LatencyBudget].args.requiredPeerTrafficPercent: Invalid value: 150"}},
		{"egress without weight", "profiles:\n- pluginConfig:\n  - name: TrafficLocality\n    args: {egress: {rules: [{costPerGiB: 0.02}]}}\n", "",
			[]string{"profiles[0].pluginConfig[TrafficLocality].args.egress.millisecondsPerCostUnit: Invalid value: 0"}},
		{"negative price", "profiles:\n- pluginConfig:\n  - name: TrafficLocality\n    args: {egress: {millisecondsPerCostUnit: 1, rules: [{costPerGiB: -1}]}}\n", "",
			[]string{"profiles[0].pluginConfig[TrafficLocality].args.egress.rules[0].costPerGiB"}},
		{"cost floor zero", "profiles:\n- pluginConfig:\n  - name: TrafficLocality\n    args: {costFloor: 0}\n", "",
			[]string{"profiles[0].pluginConfig[TrafficLocality].args.costFloor: Invalid value: 0"}},
		{"args kind mismatch", "profiles:\n- pluginConfig:\n  - name: LatencyBudget\n    args: {kind: TrafficLocalityArgs}\n", "",
			[]string{`profiles[0].pluginConfig[0].args.kind: Unsupported value: "TrafficLocalityArgs"`}},
		{"unknown plugin config", "profiles:\n- pluginConfig:\n  - name: NetworkOverhead\n", "",
			[]string{`profiles[0].pluginConfig[0].name: Unsupported value: "NetworkOverhead"`}},
		{"duplicate plugin config", "profiles:\n- pluginConfig:\n  - name: LatencyBudget\n  - name: LatencyBudget\n", "",
			[]string{`profiles[0].pluginConfig[1].name: Duplicate value: "LatencyBudget"`}},
		{"built-in plugin in our file", "profiles:\n- plugins:\n    filter:\n      enabled: [{name: ClusterAffinity}]\n", "",
			[]string{`profiles[0].plugins.filter.enabled[0].name: Unsupported value: "ClusterAffinity"`}},
		{"score plugin under filter", "profiles:\n- plugins:\n    filter:\n      disabled: [{name: TrafficLocality}]\n", "",
			[]string{`profiles[0].plugins.filter.disabled[0].name: Unsupported value: "TrafficLocality"`}},
		{"weight", "profiles:\n- plugins:\n    score:\n      enabled: [{name: TrafficLocality, weight: 2}]\n", "",
			[]string{"profiles[0].plugins.score.enabled[0].weight: Forbidden"}},
		{"unsupported extension point", "profiles:\n- plugins:\n    preScore:\n      enabled: [{name: TrafficLocality}]\n", "",
			[]string{"profiles[0].plugins.preScore: Forbidden"}},
		{"bad minSamples", "model: {minSamples: 0}\nprofiles: [{}]", "", []string{"model.minSamples: Invalid value: 0"}},
		{"bad rebuildInterval", "model: {rebuildInterval: 1h}\nprofiles: [{}]", "", []string{`model.rebuildInterval: Invalid value: "1h0m0s"`}},
		{"workload resource without version", "model: {workloadResources: [{group: apps, resource: deployments}]}\nprofiles: [{}]", "",
			[]string{"model.workloadResources[0].version: Required value", "model.workloadResources[0].kind: Required value"}},
		{"duplicate scheduler name", "profiles: [{schedulerName: a}, {schedulerName: a}]", "a", []string{`profiles[1].schedulerName: Duplicate value: "a"`}},
		{"invalid scheduler name", "profiles: [{schedulerName: Not_A_Name}]", "", []string{"profiles[0].schedulerName: Invalid value"}},
		{"no profile for this scheduler", "profiles: [{schedulerName: a}, {schedulerName: b}]", "c", []string{`profiles: no profile with schedulerName "c"`}},
		{"broken second profile refused too", "profiles:\n- schedulerName: a\n- schedulerName: b\n  pluginConfig: [{name: LatencyBudget, args: {strict: 3}}]\n", "a",
			[]string{"profiles[1].pluginConfig[0].args"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc), tc.scheduler)
			if err == nil {
				t.Fatalf("accepted: %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(p, []byte(full), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := Load(p, "flowplace-scheduler"); err != nil || c.LatencyBudget.DefaultBudget != 80*time.Millisecond {
		t.Fatalf("Load: %+v, %v", c, err)
	}
	_, err := Load(filepath.Join(dir, "missing.yaml"), "")
	if err == nil || !strings.Contains(err.Error(), "reading scheduler config") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.WriteFile(p, []byte("profiles: [{pluginConfig: [{name: X}]}]"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p, ""); err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "profiles[0].pluginConfig[0].name") {
		t.Errorf("invalid file: %v", err)
	}
}

// The example shipped for operators must stay valid and mean what the
// README says.
func TestExampleFile(t *testing.T) {
	c, err := Load("../scheduler-config.example.yaml", "flowplace-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	if !c.LatencyBudget.Enabled || !c.TrafficLocality.Enabled || c.LatencyBudget.DefaultBudget != 0 ||
		c.TrafficLocality.CostFloor != DefaultCostFloor || len(c.TrafficLocality.Egress.Rules) != 3 || c.Model.MinSamples != DefaultMinSamples {
		t.Errorf("%+v", c)
	}
}
