package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowplace/flowplace/internal/attribution"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/telemetry"
)

func echo(t *testing.T, reqSize, respSize int) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, resp := make([]byte, reqSize), bytes.Repeat([]byte{'r'}, respSize)
				for {
					if _, err := io.ReadFull(c, req); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

func roundTrips(t *testing.T, c net.Conn, n, reqSize, respSize int) {
	t.Helper()
	req, resp := bytes.Repeat([]byte{'q'}, reqSize), make([]byte, respSize)
	for range n {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, resp); err != nil {
			t.Fatal(err)
		}
	}
}

// metricSum adds the data points of a sum metric that carry every one of
// the given attributes.
func metricSum(t *testing.T, reader *sdkmetric.ManualReader, name string, match ...attribute.KeyValue) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
		points:
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				for _, kv := range match {
					if v, ok := dp.Attributes.Value(kv.Key); !ok || v != kv.Value {
						continue points
					}
				}
				n += dp.Value
			}
		}
	}
	return n
}

// TestAgentAdoptsExistingConnections: connections open before the agent
// starts are reported as open (not as newly established) under the same
// series as new ones, and only the bytes they move afterwards are counted.
func TestAgentAdoptsExistingConnections(t *testing.T) {
	cg := probetest.Cgroup(t)
	const reqSize, respSize, before, after = 200, 3000, 5, 7
	ln := echo(t, reqSize, respSize)
	old, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	roundTrips(t, old, before, reqSize, respSize)

	p := probetest.Attach(t, probe.Options{Cgroup: cg})
	r, err := attribution.NewStatic(&attribution.TopologyFile{
		APIVersion: attribution.TopologyAPIVersion, Kind: attribution.TopologyKind, Cluster: "a",
		Clusters:  []attribution.TopologyCluster{{Name: "a", UID: "uid-a", CIDRs: []string{"127.0.0.0/8"}}},
		Services:  []attribution.TopologyService{{Namespace: "ns", Name: "echo", Addresses: []string{ln.Addr().String()}}},
		Workloads: []attribution.TopologyWorkload{{Namespace: "ns", Name: "app", Kind: "Deployment", Service: "echo", Addresses: []string{"127.0.0.1"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { mp.Shutdown(context.Background()) })
	rec, err := telemetry.NewRecorder(mp.Meter(telemetry.ScopeName), 0)
	if err != nil {
		t.Fatal(err)
	}
	ag, err := New(Config{Source: p, Resolver: r, Recorder: rec, Adopter: p, PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := ag.AdoptExisting(ctx)
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if res.Adopted != 2 || res.Failed != 0 {
		t.Fatalf("adopted %+v, want both ends of the one connection", res)
	}
	if err := ag.PollOnce(ctx); err != nil {
		t.Fatal(err)
	}
	svc := telemetry.AttrServiceName.String("echo")
	client, server := telemetry.AttrRole.String(telemetry.RoleClient), telemetry.AttrRole.String(telemetry.RoleServer)
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"client connections active", metricSum(t, reader, telemetry.MetricConnectionsActive, svc, client), 1},
		{"server connections active", metricSum(t, reader, telemetry.MetricConnectionsActive, svc, server), 1},
		{"connections established", metricSum(t, reader, telemetry.MetricConnections, svc), 0},
		{"bytes", metricSum(t, reader, telemetry.MetricBytes, svc), 0},
	} {
		if c.got != c.want {
			t.Errorf("after adoption: %s = %d, want %d", c.name, c.got, c.want)
		}
	}

	// Traffic on the adopted connection and on a new one; then both close.
	fresh, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	roundTrips(t, old, after, reqSize, respSize)
	roundTrips(t, fresh, after, reqSize, respSize)
	old.Close()
	fresh.Close()
	tx := telemetry.AttrDirection.String("transmit")
	for range 100 {
		if err := ag.PollOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if metricSum(t, reader, telemetry.MetricConnectionsActive, svc) == 0 {
			break
		}
		sleep()
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"connections active", metricSum(t, reader, telemetry.MetricConnectionsActive, svc), 0},
		{"client connections established", metricSum(t, reader, telemetry.MetricConnections, svc, client), 1},
		{"server connections established", metricSum(t, reader, telemetry.MetricConnections, svc, server), 1},
		{"client bytes sent", metricSum(t, reader, telemetry.MetricBytes, svc, client, tx), 2 * after * reqSize},
		{"server bytes sent", metricSum(t, reader, telemetry.MetricBytes, svc, server, tx), 2 * after * respSize},
		{"bytes both ways, both ends", metricSum(t, reader, telemetry.MetricBytes, svc), 2 * 2 * after * (reqSize + respSize)},
	} {
		if c.got != c.want {
			t.Errorf("after close: %s = %d, want %d", c.name, c.got, c.want)
		}
	}

	// A second adoption finds nothing new.
	if res, err := ag.AdoptExisting(ctx); err != nil || res.Adopted != 0 {
		t.Errorf("second adoption: %+v, %v: want nothing adopted", res, err)
	}
}

type refusingAdopter struct{}

func (refusingAdopter) AdoptExisting() (probe.AdoptResult, error) {
	return probe.AdoptResult{}, probe.ErrUnsupportedProg
}

// An agent on a kernel that cannot adopt says so and keeps polling.
func TestAgentAdoptionUnsupported(t *testing.T) {
	r, err := attribution.NewStatic(&attribution.TopologyFile{
		APIVersion: attribution.TopologyAPIVersion, Kind: attribution.TopologyKind, Cluster: "a",
		Clusters: []attribution.TopologyCluster{{Name: "a", UID: "uid-a", CIDRs: []string{"10.0.0.0/8"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := telemetry.NewRecorder(sdkmetric.NewMeterProvider().Meter(telemetry.ScopeName), 0)
	if err != nil {
		t.Fatal(err)
	}
	src := &emptySource{}
	ag, err := New(Config{Source: src, Resolver: r, Recorder: rec, Adopter: refusingAdopter{}, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ag.AdoptExisting(context.Background()); !errors.Is(err, probe.ErrUnsupportedProg) {
		t.Errorf("adoption error %v, want ErrUnsupportedProg", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	for src.polls() < 2 {
		sleep()
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	if !ag.Ready() {
		t.Error("agent not ready after polls")
	}
}

func sleep() { time.Sleep(20 * time.Millisecond) }

// emptySource is a datapath with no flows.
type emptySource struct{ n atomic.Int64 }

func (s *emptySource) polls() int64 { return s.n.Load() }

func (s *emptySource) Poll() (*probe.Snapshot, error) {
	s.n.Add(1)
	return &probe.Snapshot{Time: time.Now()}, nil
}
func (*emptySource) DeleteFlow(probe.FlowKey) error        { return nil }
func (*emptySource) SetNATService(netip.AddrPort) error    { return nil }
func (*emptySource) DeleteNATService(netip.AddrPort) error { return nil }
