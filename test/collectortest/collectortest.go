// Package collectortest builds and runs the real OpenTelemetry Collector of
// collector/ (a separate module: the collector's own Go modules, the
// components of flowplace's gateway) with the gateway configuration the
// chart renders, for tests and benchmarks.
package collectortest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flowplace/flowplace/charts"
)

// moduleDir is collector/ in this repository.
func moduleDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("collectortest: no source path")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "collector"), nil
}

// Build compiles the collector into dir and returns its path. The first
// build downloads the collector's modules from the module proxy.
func Build(ctx context.Context, dir string) (string, error) {
	src, err := moduleDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "flowplace-collector")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, ".")
	cmd.Dir = src
	// The collector's go.mod, not a workspace that may be in the
	// environment.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("collectortest: build %s: %v\n%s", src, err, b)
	}
	return out, nil
}

// Endpoints are the local addresses a test collector uses.
type Endpoints struct {
	OTLP      string // receiver (host:port)
	Estimator string // where the gateway sends OTLP (plaintext)
	Metrics   string // Prometheus exporter
	Health    string // health_check extension
}

// GatewayConfig is the collector configuration the chart renders for a
// member's gateway (collector.enabled), with the endpoints replaced by
// local ones and TLS off: the pipeline, processors and their settings are
// the chart's.
func GatewayConfig(e Endpoints) ([]byte, error) {
	r, err := charts.Render(charts.RenderOptions{Mode: charts.ModeKarmada, Namespace: "karmada-system", Values: map[string]any{
		"collector": map[string]any{"enabled": true},
		"agent": map[string]any{
			"clusterNames": []any{"member"},
			"otlp":         map[string]any{"endpoint": e.Estimator, "insecure": true},
		},
	}})
	if err != nil {
		return nil, fmt.Errorf("collectortest: render the chart: %w", err)
	}
	cm := r.Find("ConfigMap", "flowplace-collector")
	if cm == nil {
		return nil, errors.New("collectortest: the chart rendered no collector ConfigMap")
	}
	data, _ := cm.Object["data"].(map[string]any)
	raw, _ := data["config.yaml"].(string)
	if raw == "" {
		return nil, errors.New("collectortest: the chart's collector ConfigMap has no config.yaml")
	}
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil {
		return nil, fmt.Errorf("collectortest: the chart's collector config: %w", err)
	}
	set := func(v any, path ...string) error {
		m := cfg
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				return fmt.Errorf("collectortest: the chart's collector config has no %v", path)
			}
			m = next
		}
		m[path[len(path)-1]] = v
		return nil
	}
	for _, s := range []struct {
		v    any
		path []string
	}{
		{e.OTLP, []string{"receivers", "otlp", "protocols", "grpc", "endpoint"}},
		{e.Estimator, []string{"exporters", "otlp_grpc/estimator", "endpoint"}},
		{e.Metrics, []string{"exporters", "prometheus", "endpoint"}},
		{e.Health, []string{"extensions", "health_check", "endpoint"}},
		// Its own metrics would listen on :8888 in every test collector.
		{"none", []string{"service", "telemetry", "metrics", "level"}},
	} {
		if err := set(s.v, s.path...); err != nil {
			return nil, err
		}
	}
	return yaml.Marshal(cfg)
}

// NopConfig is the least a collector does with OTLP: the receiver straight
// to the no-op exporter, no processors.
func NopConfig(otlp, health string) []byte {
	return fmt.Appendf(nil, `receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
        max_recv_msg_size_mib: 64
exporters:
  nop: {}
extensions:
  health_check:
    endpoint: %s
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: none
  pipelines:
    metrics:
      receivers: [otlp]
      exporters: [nop]
`, otlp, health)
}

// Process is a running collector.
type Process struct {
	cmd  *exec.Cmd
	done chan error
	log  *syncBuffer
	stop sync.Once
}

// syncBuffer is the collector's output, written by exec's copying
// goroutines while Log reads it.
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

// Start runs bin with config until Stop, once its health check answers.
func Start(ctx context.Context, bin string, config []byte, health string, dir string) (*Process, error) {
	path := filepath.Join(dir, "collector.yaml")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		return nil, err
	}
	p := &Process{cmd: exec.Command(bin, "--config="+path), done: make(chan error, 1), log: &syncBuffer{}}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("collectortest: start: %w", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-p.done:
			return nil, fmt.Errorf("collectortest: the collector exited (%v):\n%s", err, p.log)
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := healthClient.Get("http://" + health + "/"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("collectortest: not healthy after 30s:\n%s", p.log)
		}
	}
}

var healthClient = &http.Client{Timeout: 2 * time.Second}

// Log is what the collector printed.
func (p *Process) Log() string { return p.log.String() }

// Stop ends the collector (SIGINT, then SIGKILL after 10 s); once.
func (p *Process) Stop() {
	p.stop.Do(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// FreeAddr is a free loopback host:port.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
