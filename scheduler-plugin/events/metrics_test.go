package events

import (
	"context"
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	lb "github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	tl "github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
	"github.com/flowplace/flowplace/telemetry"
)

// TestDecisionMetrics checks what one flushed attempt adds to each metric,
// read back through the real OTel SDK.
func TestDecisionMetrics(t *testing.T) {
	web := model.KeyFor("shop", "Deployment", "web")
	db := model.KeyFor("shop", "StatefulSet", "db")
	api := model.KeyFor("shop", "Deployment", "api")
	for _, tc := range []struct {
		name       string
		record     func(r *Recorder)
		want       map[string]int64 // metric/attribute=value -> count
		wantSpread []float64
	}{
		{
			name: "costed: the cheapest cluster is preferred, spread is highest over lowest",
			record: func(r *Recorder) {
				r.Scored(web, "a", tl.Result{Cost: 40, Reason: tl.ReasonCost})
				r.Scored(web, "b", tl.Result{Cost: 10, Reason: tl.ReasonCost})
				r.Scored(web, "c", tl.Result{Reason: tl.ReasonMissingRTT})
				r.Excluded(web, "d", lb.Verdict{Reason: "far", Cause: lb.CauseClientOverBudget})
			},
			want: map[string]int64{
				telemetry.MetricSchedulerAttempts + "/" + OutcomeCosted:                             1,
				telemetry.MetricSchedulerPreferred + "/b":                                           1,
				telemetry.MetricSchedulerNeutral + "/missing_rtt":                                   1,
				telemetry.MetricSchedulerExclusions + "/" + string(lb.CauseClientOverBudget) + "/d": 1,
			},
			wantSpread: []float64{4},
		},
		{
			name: "neutral everywhere, and a binding whose every cluster was excluded",
			record: func(r *Recorder) {
				r.Scored(db, "a", tl.Result{Reason: tl.ReasonNoTraffic})
				r.Scored(db, "b", tl.Result{Reason: tl.ReasonNoTraffic})
				r.Excluded(api, "a", lb.Verdict{Reason: "strict", Cause: lb.CauseMissingData})
			},
			want: map[string]int64{
				telemetry.MetricSchedulerAttempts + "/" + OutcomeNeutral:                       1,
				telemetry.MetricSchedulerAttempts + "/" + OutcomeExcluded:                      1,
				telemetry.MetricSchedulerNeutral + "/no_traffic":                               2,
				telemetry.MetricSchedulerExclusions + "/" + string(lb.CauseMissingData) + "/a": 1,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			r, err := New(nil, nil, nil, mp.Meter(telemetry.ScopeScheduler))
			if err != nil {
				t.Fatal(err)
			}
			tc.record(r)
			if n := r.Flush(true); n == 0 {
				t.Fatal("nothing flushed")
			}
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			var spread []float64
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					switch d := m.Data.(type) {
					case metricdata.Sum[int64]:
						for _, p := range d.DataPoints {
							got[m.Name+"/"+attrs(p.Attributes)] += p.Value
						}
					case metricdata.Histogram[float64]:
						for _, p := range d.DataPoints {
							if p.Count == 1 {
								spread = append(spread, p.Sum)
							}
						}
					}
				}
			}
			nonZero := 0
			for _, v := range got {
				if v != 0 {
					nonZero++
				}
			}
			if nonZero != len(tc.want) {
				t.Errorf("series %v, want %v", got, tc.want)
			}
			// The bounded values exist from the start, at 0.
			for _, k := range []string{telemetry.MetricSchedulerNeutral + "/stale_traffic", telemetry.MetricSchedulerAttempts + "/" + OutcomeExcluded} {
				if _, ok := got[k]; !ok {
					t.Errorf("%s not initialized", k)
				}
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
				}
			}
			if len(spread) != len(tc.wantSpread) || (len(spread) == 1 && spread[0] != tc.wantSpread[0]) {
				t.Errorf("spread %v, want %v", spread, tc.wantSpread)
			}
		})
	}
}

// attrs joins the attribute values in key order (reason before cluster).
func attrs(s attribute.Set) string {
	out := ""
	for _, kv := range s.ToSlice() {
		if out != "" {
			out += "/"
		}
		out += kv.Value.Emit()
	}
	return out
}

// TestDecisionSeriesAtFleetScale counts the decision metrics' series after
// attempts over 100 clusters that hit every verdict: bounded by the
// clusters (exclusions by cause, preferred), not by the workloads.
func TestDecisionSeriesAtFleetScale(t *testing.T) {
	const clusters, workloads = 100, 10_000
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	r, err := New(nil, nil, nil, mp.Meter(telemetry.ScopeScheduler))
	if err != nil {
		t.Fatal(err)
	}
	causes := []lb.Cause{lb.CausePeerOverBudget, lb.CauseClientOverBudget, lb.CauseMissingData}
	for w := range workloads {
		k := model.KeyFor("team", "Deployment", fmt.Sprintf("w%d", w))
		for c := range clusters {
			name := fmt.Sprintf("member-%03d", c)
			switch {
			case c == w%clusters: // the cheapest, so every cluster is preferred by some
				r.Scored(k, name, tl.Result{Cost: 1, Reason: tl.ReasonCost})
			case (w+c)%4 == 0:
				r.Excluded(k, name, lb.Verdict{Reason: "x", Cause: causes[(w/4+c)%3]})
			case (w+c)%4 == 1:
				r.Scored(k, name, tl.Result{Reason: tl.Reason(1 + (w+c)%7)})
			default:
				r.Scored(k, name, tl.Result{Cost: float64(2 + (w*c)%97), Reason: tl.ReasonCost})
			}
		}
		r.Flush(true)
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	total := 0
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			n := 0
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				n = len(d.DataPoints)
			case metricdata.Histogram[float64]:
				n = len(d.DataPoints)
			}
			got[m.Name] = n
			total += n
		}
	}
	want := map[string]int{
		telemetry.MetricSchedulerAttempts:   3,
		telemetry.MetricSchedulerNeutral:    7,
		telemetry.MetricSchedulerPreferred:  clusters,
		telemetry.MetricSchedulerExclusions: clusters * len(causes),
		telemetry.MetricSchedulerCostSpread: 1,
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d series, want %d", k, got[k], n)
		}
	}
	t.Logf("decision series at %d clusters after %d attempts: %d (%v); the histogram's one series has 12 buckets", clusters, workloads, total, got)
}

// BenchmarkAttemptWithMetrics is BenchmarkAttempt with the decision
// metrics recorded at the flush (no Event).
func BenchmarkAttemptWithMetrics(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	r, err := New(nil, nil, nil, mp.Meter(telemetry.ScopeScheduler))
	if err != nil {
		b.Fatal(err)
	}
	k := model.KeyFor("shop", "Deployment", "web")
	clusters := make([]string, 100)
	for i := range clusters {
		clusters[i] = fmt.Sprintf("member-%d", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i, c := range clusters {
			r.Scored(k, c, tl.Result{Cost: float64(i + 1), Reason: tl.ReasonCost})
		}
		r.Flush(true)
	}
}
