package aggregate

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"testing"
	"time"

	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

func liveHeap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// TestFloodMemory: a flood of unique series, each its own flow, up to the
// default 500,000-flow cap, costs what the README says per flow, and the
// memory is given back once the series expire and their flows decay.
func TestFloodMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("ingests 500,000 series")
	}
	const flows = 500_000
	const perRequest = 1000
	now := time.Now()
	clock := func() time.Time { return now }
	// The requests are built up front and stay alive through every
	// measurement, so that only the aggregator's state is measured.
	reqs := make([][]byte, 0, flows/perRequest)
	base := uint64(now.UnixNano())
	for r := range flows / perRequest {
		ms := make([]*metricspb.Metric, 0, perRequest)
		for i := range perRequest {
			attrs := webAttrs()
			attrs[3] = kv(AttrWorkloadName, "flood-"+strconv.Itoa(r*perRequest+i))
			m := bytesSum(attrs, 5, cumulative, true)
			m.GetSum().DataPoints[0].StartTimeUnixNano, m.GetSum().DataPoints[0].TimeUnixNano = base, base+1e9
			ms = append(ms, m)
		}
		reqs = append(reqs, marshal(t, request(resA, ms...)))
	}
	debug.FreeOSMemory()
	before := liveHeap()
	agg := NewAggregator(AggregatorConfig{Window: time.Minute, SeriesTTL: 5 * time.Minute, Now: clock})
	for _, b := range reqs {
		if res, err := agg.Ingest(b); err != nil || res.Rejected != 0 {
			t.Fatalf("flood: %+v %v (%s)", res, err, res.Message())
		}
	}
	st := agg.Stats()
	if st.Series != flows || st.Flows != flows {
		t.Fatalf("stats %+v, want %d series and flows", st, flows)
	}
	full := liveHeap() - before
	perFlow := float64(full) / flows
	t.Logf("flood of %d unique series (one flow each): %d bytes live, %.0f bytes per series+flow", flows, full, perFlow)
	// The README states the cost per series+flow; it must stay true.
	if perFlow > maxBytesPerFloodFlow {
		t.Errorf("%.0f bytes per flooded flow, README promises at most %d", perFlow, maxBytesPerFloodFlow)
	}
	// Series expire after the TTL, flows after ten windows of decay.
	now = now.Add(6 * time.Minute)
	agg.Expire()
	now = now.Add(11 * time.Minute)
	agg.Expire()
	if st := agg.Stats(); st.Series != 0 || st.Flows != 0 {
		t.Fatalf("after expiry: %+v", st)
	}
	left := liveHeap() - before
	t.Logf("after expiry: %d bytes live (%.1f%% of the flood)", left, 100*float64(left)/float64(full))
	// An empty aggregator holds a few KB; what is left of the flood must
	// be at most the size of one empty map per structure, not the peak.
	if f := os.Getenv("FLOOD_HEAP_PROFILE"); f != "" {
		w, _ := os.Create(f)
		_ = pprof.WriteHeapProfile(w)
		w.Close()
	}
	if left > full/50 {
		t.Errorf("after every series and flow expired, %d of %d bytes are still held", left, full)
	}
	runtime.KeepAlive(agg)
	runtime.KeepAlive(reqs)
}

// maxBytesPerFloodFlow is the README's bound ("Bounds") per input series
// that is its own flow, the worst case of a flood.
const maxBytesPerFloodFlow = 600
