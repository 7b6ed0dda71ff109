package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagValue(t *testing.T) {
	args := []string{"--kubeconfig=/a", "--scheduler-name", "flowplace", "-v=4", "--master", "https://x", "--kubeconfig", "/b", "--", "--scheduler-name=ignored"}
	for _, tc := range []struct {
		name, want string
		found      bool
	}{
		{"kubeconfig", "/b", true},
		{"scheduler-name", "flowplace", true},
		{"master", "https://x", true},
		{"v", "4", true},
		{"leader-elect", "", false},
	} {
		got, ok := FlagValue(args, tc.name)
		if got != tc.want || ok != tc.found {
			t.Errorf("%s: %q %v, want %q %v", tc.name, got, ok, tc.want, tc.found)
		}
	}
}

func TestOptionsAndConfig(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	o := OptionsFrom([]string{"--scheduler-name=flowplace-scheduler"}, getenv)
	if o.ConfigPath != DefaultConfigPath || o.ConfigRequired || o.SchedulerName != "flowplace-scheduler" {
		t.Fatalf("%+v", o)
	}
	// Default path missing: defaults, named after the scheduler.
	o.ConfigPath = filepath.Join(t.TempDir(), "absent.yaml")
	c, err := LoadConfig(o)
	if err != nil || c.SchedulerName != "flowplace-scheduler" || !c.LatencyBudget.Enabled {
		t.Fatalf("defaults: %+v %v", c, err)
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "c.yaml")
	env[ConfigEnv] = p
	o = OptionsFrom([]string{"--scheduler-name", "flowplace-scheduler"}, getenv)
	if _, err := LoadConfig(o); err == nil || !strings.Contains(err.Error(), "reading scheduler config") {
		t.Errorf("explicit missing file must fail: %v", err)
	}
	doc := "profiles:\n- schedulerName: flowplace-scheduler\n  pluginConfig:\n  - name: LatencyBudget\n    args: {defaultBudget: 40ms}\n"
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadConfig(o); err != nil || c.LatencyBudget.DefaultBudget.String() != "40ms" {
		t.Errorf("explicit file: %+v %v", c, err)
	}
	o.SchedulerName = "default-scheduler"
	if _, err := LoadConfig(o); err == nil || !strings.Contains(err.Error(), `no profile with schedulerName "default-scheduler"`) {
		t.Errorf("wrong scheduler name: %v", err)
	}
}
