package lab

import (
	"fmt"
	"math"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/flowplace/flowplace/estimator"
	"github.com/flowplace/flowplace/estimator/aggregate"
)

// Collector is the estimator's receiver and aggregation, in this process:
// the lab's agents export to it, and the lab reads the latency matrix and the
// traffic graph from it (what the estimator publishes as ClusterLatency and
// WorkloadTraffic objects).
type Collector struct {
	agg *aggregate.Aggregator
	srv *grpc.Server
	ln  net.Listener
}

// StartCollector serves OTLP on a loopback port. window is the aggregation's
// decay time constant: the lab uses a short one so that a phase's numbers
// are that phase's.
func StartCollector(window time.Duration) (*Collector, error) {
	return StartCollectorOn("127.0.0.1", window, nil)
}

// StartCollectorOn serves OTLP on a free port of host; peerUID resolves
// peer clusters that agents name without a UID (see
// aggregate.AggregatorConfig.PeerClusterUID).
func StartCollectorOn(host string, window time.Duration, peerUID func(string) (string, bool)) (*Collector, error) {
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{Window: window, PeerClusterUID: peerUID})
	srv, err := estimator.NewGRPCServer(agg, estimator.ServerTLS{}, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("lab: OTLP receiver: %w", err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("lab: OTLP receiver: %w", err)
	}
	go srv.Serve(ln)
	return &Collector{agg: agg, srv: srv, ln: ln}, nil
}

// Endpoint is where agents export (host:port).
func (c *Collector) Endpoint() string { return c.ln.Addr().String() }

// Snapshot is the current aggregate.
func (c *Collector) Snapshot() *aggregate.Snapshot { return c.agg.Snapshot() }

// Close stops the receiver.
func (c *Collector) Close() { c.srv.Stop() }

// MeasuredRTT returns the measured mean RTT from cluster a to cluster b, in
// milliseconds, and the decayed sample count; NaN when unmeasured.
func (c *Collector) MeasuredRTT(a, b string) (ms, samples float64) {
	row, ok := c.agg.Snapshot().Latency[ClusterUID(a)]
	if !ok {
		return math.NaN(), 0
	}
	st, ok := row[ClusterUID(b)]
	if !ok {
		return math.NaN(), 0
	}
	return st.Mean * 1e3, st.Samples
}

// ClusterOfUID is the inverse of ClusterUID.
func ClusterOfUID(uid string) string { return strings.TrimPrefix(uid, "lab-") }
