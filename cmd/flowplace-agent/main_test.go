package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowplace/flowplace/internal/probe/probetest"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flowplace-agent-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "flowplace-agent")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		panic("build flowplace-agent: " + err.Error())
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func runAgent(t *testing.T, timeout time.Duration, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String(), ee.ExitCode()
		}
		return out.String(), 0
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("agent %v still running after %s:\n%s", args, timeout, out.String())
	}
	return "", 0
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const validHeader = "apiVersion: flowplace.io/v1alpha1\nkind: AgentTopology\ncluster: a\n"

// Bad input is refused before anything touches the kernel, with an error
// that names the problem.
func TestAgentRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing topology file", []string{"--topology-file", "/nonexistent/topo.yaml"}, "no such file"},
		{"garbage topology file", []string{"--topology-file", writeFile(t, "{{{ not yaml")}, "topology file"},
		{"unknown field", []string{"--topology-file", writeFile(t, validHeader+"clusters: [{name: a, cidrs: [10.0.0.0/8]}]\nbogus: 1\n")}, `unknown field "bogus"`},
		{"bad cidr", []string{"--topology-file", writeFile(t, validHeader+"clusters: [{name: a, cidrs: [10.0.0.300/8]}]\n")}, `clusters[0].cidrs[0]: "10.0.0.300/8" is not a CIDR`},
		{"unknown own cluster", []string{"--topology-file", writeFile(t, "apiVersion: flowplace.io/v1alpha1\nkind: AgentTopology\ncluster: zz\nclusters: [{name: a, cidrs: [10.0.0.0/8]}]\n")}, `cluster: "zz" is not one of clusters[].name`},
		{"bad workload kind", []string{"--topology-file", writeFile(t, validHeader+"clusters: [{name: a, cidrs: [10.0.0.0/8]}]\nworkloads: [{namespace: x, name: y, kind: Lambda, addresses: [10.0.0.1]}]\n")}, `workloads[0].kind: "Lambda"`},
		{"both modes", []string{"--topology-file", "x", "--kubeconfig", "y"}, "exclude each other"},
		{"bad header", []string{"--topology-file", "x", "--otlp-header", "novalue"}, `--otlp-header "novalue": want key=value`},
		{"bad poll interval", []string{"--topology-file", "x", "--poll-interval", "1ms"}, "--poll-interval 1ms"},
		{"half mTLS", []string{"--topology-file", "x", "--otlp-endpoint", "127.0.0.1:4317", "--otlp-cert-file", "c.pem"}, "need both a certificate and a key file"},
		{"bad endpoint", []string{"--topology-file", "x", "--otlp-endpoint", "nohostport"}, `otlp endpoint "nohostport"`},
		{"unknown flag", []string{"--frobnicate"}, "unknown flag: --frobnicate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runAgent(t, 10*time.Second, tc.args...)
			if code == 0 {
				t.Fatalf("exit code 0:\n%s", out)
			}
			if !strings.Contains(out, tc.want) {
				t.Errorf("output does not say %q:\n%s", tc.want, out)
			}
			if strings.Contains(out, "Probes attached") {
				t.Errorf("probes were attached despite bad input:\n%s", out)
			}
		})
	}
}

// An API server that does not answer is a clear error, not a hang or crash.
func TestAgentUnreachableAPIServer(t *testing.T) {
	kc := writeFile(t, `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`)
	out, code := runAgent(t, 90*time.Second, "--kubeconfig", kc)
	if code == 0 {
		t.Fatalf("exit 0:\n%s", out)
	}
	for _, want := range []string{"member cluster https://127.0.0.1:1", "kube-system", "connection refused"} {
		if !strings.Contains(out, want) {
			t.Errorf("error does not say %q:\n%s", want, out)
		}
	}
}

// With the OTLP receiver down the agent keeps running, keeps serving
// Prometheus, and stays healthy.
func TestAgentSurvivesOTLPDown(t *testing.T) {
	probetest.RequireKernel(t)
	cg := probetest.Cgroup(t)
	topo := writeFile(t, validHeader+"clusters: [{name: a, cidrs: [127.0.0.0/8]}]\n")
	cmd := exec.Command(binary, "--topology-file", topo, "--cgroup", cg, "--listen-address", "127.0.0.1:19467",
		"--otlp-endpoint", "127.0.0.1:1", "--otlp-insecure", "--export-interval", "200ms", "--export-timeout", "200ms", "--poll-interval", "100ms")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	select {
	case err := <-exited:
		t.Fatalf("agent exited (%v):\n%s", err, out.String())
	case <-time.After(3 * time.Second):
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := httpGet("http://127.0.0.1:19467" + path)
		if err != nil || resp != 200 {
			t.Errorf("GET %s: %d %v\n%s", path, resp, err, out.String())
		}
	}
	if !strings.Contains(out.String(), "connection refused") {
		t.Errorf("export failures are not logged:\n%s", out.String())
	}
	// Adoption of connections open before the start is on by default and
	// says what it found.
	if !strings.Contains(out.String(), "Adopted connections open before the agent started") {
		t.Errorf("adoption of existing connections is not logged:\n%s", out.String())
	}
}

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}
