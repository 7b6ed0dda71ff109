package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flowplace/flowplace/internal/probe/probetest"
)

// Bad input and a missing privilege are refused before the machine changes.
func TestLabRefusesBadInputBeforeAnyChange(t *testing.T) {
	badProfile := filepath.Join(t.TempDir(), "p.yaml")
	os.WriteFile(badProfile, []byte("apiVersion: flowplace.io/v1alpha1\nkind: LabProfile\nclusters: [{name: a}, {name: b}]\nrtt: [{a: a, b: b, ms: -1}]\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		cred *syscall.Credential
		want string
	}{
		{"too many clusters", []string{"lab", "--clusters", "7"}, nil, "clusters: 7, want 2 to 6"},
		{"bad profile", []string{"lab", "--profile", badProfile}, nil, "rtt[0].ms: -1"},
		{"missing profile", []string{"lab", "--profile", "/nonexistent.yaml"}, nil, "no such file"},
		{"bad output", []string{"lab", "--output", "xml"}, nil, `--output "xml"`},
		{"short duration", []string{"lab", "--duration", "1s"}, nil, "--duration 1s"},
		{"not root", []string{"lab", "--duration", "20s"}, &syscall.Credential{Uid: 65534, Gid: 65534}, "run as root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.cred != nil && os.Geteuid() != 0 {
				tc.cred = nil // already unprivileged
			}
			before, _ := filepath.Glob("/run/netns/fplab*")
			stdout, stderr, code := runCLI(t, tc.cred, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0: %s", stdout)
			}
			if !strings.Contains(stderr, tc.want) {
				t.Errorf("stderr %q does not say %q", stderr, tc.want)
			}
			if strings.Contains(stderr, "creating") {
				t.Errorf("the lab started building despite the error: %s", stderr)
			}
			after, _ := filepath.Glob("/run/netns/fplab*")
			if len(after) != len(before) {
				t.Errorf("namespaces changed: %v -> %v", before, after)
			}
		})
	}
}

// A short run through the CLI: JSON report with the three top-level numbers,
// and placement getting better.
func TestLabJSONReport(t *testing.T) {
	probetest.RequireKernel(t)
	stdout, stderr, code := runCLI(t, nil, "lab", "--duration", "20s", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	for _, k := range []string{"measured_rtt_max_error_ms", "cross_cluster_bytes_ratio", "mean_latency_ratio"} {
		v, ok := rep[k].(float64)
		if !ok {
			t.Fatalf("report lacks the number %s: %v", k, rep[k])
		}
		t.Logf("%s = %v", k, v)
	}
	if v := rep["measured_rtt_max_error_ms"].(float64); v > 2 {
		t.Errorf("measured RTT off by %.2f ms", v)
	}
	if v := rep["cross_cluster_bytes_ratio"].(float64); v >= 1 {
		t.Errorf("cross-cluster bytes ratio %v, want < 1", v)
	}
	if v := rep["mean_latency_ratio"].(float64); v >= 1 {
		t.Errorf("mean latency ratio %v, want < 1", v)
	}
	if live, _ := filepath.Glob("/run/netns/fplab*"); len(live) > 0 {
		t.Errorf("namespaces left behind: %v", live)
	}
}
