// Package otlptest is a real OTLP gRPC metrics receiver for tests: it serves
// the standard MetricsService and keeps what it was sent.
package otlptest

import (
	"context"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	colmetricpb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricpb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// Receiver records every export request.
type Receiver struct {
	colmetricpb.UnimplementedMetricsServiceServer
	Addr string

	mu       sync.Mutex
	requests []*colmetricpb.ExportMetricsServiceRequest
	headers  []metadata.MD
	srv      *grpc.Server
}

// Start serves on a loopback port until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	return StartOn(t, "127.0.0.1")
}

// StartOn serves on a free port of host until the test ends (e.g. a
// fleet's management gateway, which agent pods reach).
func StartOn(t testing.TB, host string) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Addr: ln.Addr().String(), srv: grpc.NewServer()}
	colmetricpb.RegisterMetricsServiceServer(r.srv, r)
	go r.srv.Serve(ln)
	t.Cleanup(r.srv.Stop)
	return r
}

// Export implements MetricsService.
func (r *Receiver) Export(ctx context.Context, req *colmetricpb.ExportMetricsServiceRequest) (*colmetricpb.ExportMetricsServiceResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.requests = append(r.requests, proto.Clone(req).(*colmetricpb.ExportMetricsServiceRequest))
	r.headers = append(r.headers, md)
	r.mu.Unlock()
	return &colmetricpb.ExportMetricsServiceResponse{}, nil
}

// Recorded returns the export requests in the order they arrived.
func (r *Receiver) Recorded() []*colmetricpb.ExportMetricsServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}

// Requests returns how many exports arrived.
func (r *Receiver) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

// LastHeaders returns the gRPC metadata of the latest export.
func (r *Receiver) LastHeaders() metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.headers) == 0 {
		return nil
	}
	return r.headers[len(r.headers)-1]
}

// Point is one data point flattened with its resource and attributes.
type Point struct {
	Metric   string
	Resource map[string]string
	Attrs    map[string]string
	Int      int64   // sums
	Count    uint64  // histograms
	Sum      float64 // histograms
	Scale    int32   // exponential histograms
}

// Latest returns, for every reporter (resource), the points of its newest
// export that carries metric name. Exports are cumulative, so the newest
// holds the totals.
func (r *Receiver) Latest(name string) []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var out []Point
	for i := len(r.requests) - 1; i >= 0; i-- {
		byResource := map[string][]Point{}
		for _, p := range points(r.requests[i], name) {
			k := resourceKey(p.Resource)
			byResource[k] = append(byResource[k], p)
		}
		for k, pts := range byResource {
			if !seen[k] {
				seen[k] = true
				out = append(out, pts...)
			}
		}
	}
	return out
}

func resourceKey(res map[string]string) string {
	keys := make([]string, 0, len(res))
	for k := range res {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + res[k] + ";")
	}
	return b.String()
}

func kv(attrs []*commonpb.KeyValue) map[string]string {
	m := map[string]string{}
	for _, a := range attrs {
		switch v := a.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			m[a.Key] = v.StringValue
		case *commonpb.AnyValue_IntValue:
			m[a.Key] = strconv.FormatInt(v.IntValue, 10)
		case *commonpb.AnyValue_BoolValue:
			m[a.Key] = strconv.FormatBool(v.BoolValue)
		}
	}
	return m
}

func points(req *colmetricpb.ExportMetricsServiceRequest, name string) []Point {
	var out []Point
	for _, rm := range req.ResourceMetrics {
		res := kv(rm.GetResource().GetAttributes())
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != name {
					continue
				}
				switch d := m.Data.(type) {
				case *metricpb.Metric_Sum:
					for _, dp := range d.Sum.DataPoints {
						out = append(out, Point{Metric: name, Resource: res, Attrs: kv(dp.Attributes), Int: dp.GetAsInt()})
					}
				case *metricpb.Metric_Gauge:
					for _, dp := range d.Gauge.DataPoints {
						out = append(out, Point{Metric: name, Resource: res, Attrs: kv(dp.Attributes), Int: dp.GetAsInt()})
					}
				case *metricpb.Metric_ExponentialHistogram:
					for _, dp := range d.ExponentialHistogram.DataPoints {
						out = append(out, Point{Metric: name, Resource: res, Attrs: kv(dp.Attributes), Count: dp.Count, Sum: dp.GetSum(), Scale: dp.Scale})
					}
				case *metricpb.Metric_Histogram:
					for _, dp := range d.Histogram.DataPoints {
						out = append(out, Point{Metric: name, Resource: res, Attrs: kv(dp.Attributes), Count: dp.Count, Sum: dp.GetSum()})
					}
				}
			}
		}
	}
	return out
}

// Match returns the points whose attributes include all of want.
func Match(pts []Point, want map[string]string) []Point {
	var out []Point
	for _, p := range pts {
		ok := true
		for k, v := range want {
			if p.Attrs[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, p)
		}
	}
	return out
}
