package aggregate

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	common "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/flowplace/flowplace/estimator/otlpwire"
)

// fuzzSeeds are well-formed requests of every kind the estimator reads, so
// that the fuzzer starts from inputs that reach deep into the aggregation.
func fuzzSeeds(t testing.TB) map[string][]byte {
	serverAttrs := []*common.KeyValue{
		kv(AttrRole, "server"), kv(AttrNamespace, "shop"),
		kv(AttrWorkloadKind, "StatefulSet"), kv(AttrWorkloadName, "db"),
		kv(AttrPeerClusterUID, uidA),
	}
	conns := bytesSum(webAttrs(), 3, cumulative, true)
	conns.Name, conns.Unit = MetricConnections, "{connection}"
	delta := bytesSum(serverAttrs, 12, metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA, true)
	return map[string][]byte{
		"sum":          marshal(t, request(resA, bytesSum(webAttrs(), 1234, cumulative, true))),
		"all-kinds":    marshal(t, request(resA, bytesSum(webAttrs(), 5, cumulative, true), conns, delta, expRTT(webAttrs(), nil), explicitRTT(serverAttrs, nil))),
		"exponential":  marshal(t, request(resA, expRTT(webAttrs(), func(p *metricspb.ExponentialHistogramDataPoint) { p.Scale, p.ZeroCount, p.Count = -2, 1, 4 }))),
		"explicit":     marshal(t, request(resA, explicitRTT(webAttrs(), nil))),
		"other-metric": marshal(t, request(resA, &metricspb.Metric{Name: "x", Data: &metricspb.Metric_Summary{Summary: &metricspb.Summary{}}})),
		"empty":        {},
	}
}

// FuzzIngest: whatever the bytes, Ingest neither panics nor returns an
// error other than ErrMalformed, and the snapshot it leaves holds only
// values the API schema accepts (finite, non-negative, ordered quantiles).
//
// Seeds are in testdata/fuzz/FuzzIngest (regenerate with
// FLOWPLACE_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./estimator/aggregate).
func FuzzIngest(f *testing.F) {
	for _, b := range fuzzSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		agg := NewAggregator(AggregatorConfig{MaxSeries: 64, MaxFlows: 64, MaxPairs: 64})
		for range 2 { // twice: the second pass takes the known-series path
			if _, err := agg.Ingest(b); err != nil && !errors.Is(err, otlpwire.ErrMalformed) {
				t.Fatalf("unexpected error kind: %v", err)
			}
		}
		if err := checkSnapshot(agg.Snapshot()); err != nil {
			t.Fatal(err)
		}
	})
}

func checkSnapshot(s *Snapshot) error {
	ok := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) && v >= 0 }
	for src, peers := range s.Latency {
		for dst, p := range peers {
			if !ok(p.Min) || !ok(p.P50) || !ok(p.P90) || !ok(p.P99) || !ok(p.Samples) ||
				p.Min > p.P50 || p.P50 > p.P90 || p.P90 > p.P99 {
				return fmt.Errorf("latency %s->%s invalid: %+v", src, dst, p)
			}
		}
	}
	for w, ws := range s.Traffic {
		check := func(r Rates) error {
			if !ok(r.BytesPerSecond) || !ok(r.ConnectionsPerSecond) || !ok(r.RTTP50) || !ok(r.Samples) {
				return fmt.Errorf("traffic of %v invalid: %+v", w, r)
			}
			return nil
		}
		for _, pairs := range ws.Peers {
			for _, r := range pairs {
				if err := check(r); err != nil {
					return err
				}
			}
		}
		for _, r := range ws.Clients {
			if err := check(r); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestWriteFuzzSeeds writes the seeds as corpus files (only when asked).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("FLOWPLACE_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set FLOWPLACE_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz/FuzzIngest")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzIngest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range fuzzSeeds(t) {
		data := "go test fuzz v1\n[]byte(" + strconv.Quote(string(b)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
