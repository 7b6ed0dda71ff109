package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"

	v1 "github.com/flowplace/flowplace/api/v1alpha1"
	"github.com/flowplace/flowplace/estimator"
	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/world/controlplane"
)

// TestBadFlags: every invalid flag value is refused before anything
// starts (no API server is reachable here, and none is contacted), with an
// error that names the flag.
func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"--no-such-flag"}, "--no-such-flag"},
		{[]string{"--otlp-address", "nonsense"}, "--otlp-address"},
		{[]string{"--window", "10ms"}, "--window"},
		{[]string{"--relative-change", "1.5"}, "--relative-change"},
		{[]string{"--relative-change", "NaN"}, "--relative-change"},
		{[]string{"--relative-change", "0"}, "--relative-change"},
		{[]string{"--valid-for", "-1s"}, "--valid-for"},
		{[]string{"--valid-for", "20s", "--publish-interval", "15s"}, "--valid-for"},
		{[]string{"--publish-interval", "0s"}, "--publish-interval"},
		{[]string{"--series-ttl", "-1s"}, "--series-ttl"},
		{[]string{"--max-clock-skew", "0s"}, "--max-clock-skew"},
		{[]string{"--max-clock-skew", "1000h"}, "--max-clock-skew"},
		{[]string{"--kube-api-qps", "-1"}, "--kube-api-qps"},
		{[]string{"--kube-api-qps", "NaN"}, "--kube-api-qps"},
		{[]string{"--kube-api-qps", "+Inf"}, "--kube-api-qps"},
		{[]string{"--kube-api-burst", "0"}, "--kube-api-burst"},
		{[]string{"--otlp-max-message-bytes", "99999999999"}, "--otlp-max-message-bytes"},
		{[]string{"--otlp-max-message-bytes", "100"}, "--otlp-max-message-bytes"},
		{[]string{"--max-series", "0"}, "--max-series"},
		{[]string{"--max-flows", "-5"}, "--max-flows"},
		{[]string{"--retry-period", "-1s"}, "--retry-period"},
		{[]string{"--lease-namespace", "Not A Namespace"}, "--lease-namespace"},
		{[]string{"--lease-name", ""}, "--lease-name"},
		{[]string{"--otlp-cert-file", "c.pem"}, "--otlp-cert-file"},
		{[]string{"--otlp-client-ca-file", "ca.pem"}, "--otlp-client-ca-file"},
		{[]string{"--lease-duration", "1s", "--renew-deadline", "2s"}, "--lease-duration"},
		{[]string{"--kubeconfig", "/nonexistent/kubeconfig"}, "/nonexistent/kubeconfig"},
		{[]string{"extra-arg"}, "extra-arg"},
		{[]string{"--rebalance", "--rebalance-interval", "0s"}, "--rebalance-interval"},
		{[]string{"--rebalance", "--rebalance-move-cost", "-1m"}, "--rebalance-move-cost"},
		{[]string{"--rebalance", "--rebalance-min-rounds", "0"}, "--rebalance-min-rounds"},
		{[]string{"--rebalance", "--rebalance-cooldown", "1m"}, "--rebalance-cooldown"}, // below the 5m interval
		{[]string{"--rebalance", "--rebalance-max-moves", "0"}, "--rebalance-max-moves"},
		{[]string{"--rebalance", "--rebalance-noise-floor", "NaN"}, "--rebalance-noise-floor"},
		{[]string{"--rebalance", "--rebalance-rtt-quantile", "p95"}, "--rebalance-rtt-quantile"},
		{[]string{"--rebalance", "--rebalance-min-samples", "0"}, "--rebalance-min-samples"},
	} {
		cmd := newCommand()
		cmd.SetArgs(tc.args)
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.want)
		}
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestProcessRestartResumes runs the estimator binary against a real API
// server, feeds it through a real agent exporter, stops it with SIGTERM and
// starts a new process, which resumes from the objects the first published.
func TestProcessRestartResumes(t *testing.T) {
	cp := controlplane.StartForTest(t, controlplane.Config{CRDDirs: []string{filepath.Join("..", "..", "api", "crds")}})
	ctx := context.Background()
	uidA, uidB := "a0000000-0000-4000-8000-00000000000a", "b0000000-0000-4000-8000-00000000000b"
	dc := cp.Host.Dynamic
	for name, id := range map[string]string{"member1": uidA, "member2": uidB} {
		c := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.karmada.io/v1alpha1", "kind": "Cluster",
			"metadata": map[string]any{"name": name}, "spec": map[string]any{"id": id},
		}}
		if _, err := dc.Resource(estimator.ClusterGVR).Create(ctx, c, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cp.Host.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "karmada-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(t.TempDir(), "flowplace-estimator")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	otlp, health := freePort(t), freePort(t)
	start := func() (*exec.Cmd, *syncBuffer) {
		cmd := exec.Command(bin, "--kubeconfig", cp.Host.Kubeconfig, "--otlp-address", otlp, "--health-address", health,
			"--window", "1m", "--publish-interval", "500ms", "--valid-for", "1m",
			"--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "500ms", "-v", "2")
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
			resp, err := http.Get("http://" + health + "/readyz")
			if err != nil {
				return false, nil
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, nil
		})
		if err != nil {
			t.Fatalf("estimator not ready: %v\n%s", err, out.String())
		}
		return cmd, out
	}
	stop := func(cmd *exec.Cmd, out *syncBuffer) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("estimator exit after SIGTERM: %v\n%s", err, out.String())
		}
	}

	first, out1 := start()
	p, err := telemetry.NewProvider(ctx, telemetry.Config{
		Resource: []attribute.KeyValue{telemetry.AttrClusterUID.String(uidA)},
		OTLP:     telemetry.OTLPConfig{Endpoint: otlp, Insecure: true, Interval: time.Hour, Timeout: 5 * time.Second},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := telemetry.NewRecorder(p.Meter(), 0)
	if err != nil {
		t.Fatal(err)
	}
	var h loghist.Histogram
	for range 100 {
		h.Add(3000)
	}
	rec.Record(ctx, telemetry.SeriesKey{Role: telemetry.RoleClient, Namespace: "shop", WorkloadKind: "Deployment", WorkloadName: "web",
		ServiceNamespace: "shop", ServiceName: "db", Peer: telemetry.Peer{ClusterUID: uidB}}, telemetry.Delta{Opened: 1, RTT: &h})
	if err := p.ForceFlush(ctx); err != nil {
		t.Fatal(err)
	}
	shutdownCtx, cancel := context.WithTimeout(ctx, time.Second)
	_ = p.Shutdown(shutdownCtx)
	cancel()

	var cl v1.ClusterLatency
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		u, err := dc.Resource(v1.ClusterLatencyResource).Get(ctx, "member1", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		peers, _, _ := unstructured.NestedSlice(u.Object, "status", "peers")
		if len(peers) == 0 {
			return false, nil
		}
		cl.Name = u.GetName()
		cl.UID = u.GetUID()
		return true, nil
	})
	if err != nil {
		t.Fatalf("no ClusterLatency published: %v\n%s", err, out1.String())
	}
	stop(first, out1)

	second, out2 := start()
	defer stop(second, out2)
	// The new process read the published object back into its state.
	if !strings.Contains(out2.String(), `"Resumed from published objects" clusterLatencies=1`) {
		t.Errorf("new process did not resume:\n%s", out2.String())
	}
	u, err := dc.Resource(v1.ClusterLatencyResource).Get(ctx, "member1", metav1.GetOptions{})
	if err != nil || u.GetUID() != cl.UID {
		t.Errorf("ClusterLatency recreated instead of kept: %v", err)
	}
}
