package events

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"

	lb "github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/model"
	tl "github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
)

func TestMessage(t *testing.T) {
	cost := func(c string, v float64) score { return score{c, tl.Result{Cost: v, Reason: tl.ReasonCost}} }
	neutral := func(c string, r tl.Reason) score { return score{c, tl.Result{Reason: r}} }
	for _, tc := range []struct {
		name     string
		excluded []exclusion
		scored   []score
		want     string
	}{
		{
			name:   "costs cheapest first, ties by name",
			scored: []score{cost("b", 2e9), cost("c", 1e6), cost("a", 2e9)},
			want:   "TrafficLocality expected cost (B/s*ms): c 1e+06, a 2e+09, b 2e+09",
		},
		{
			name: "at most five costs",
			scored: []score{cost("c1", 1), cost("c2", 2), cost("c3", 3), cost("c4", 4), cost("c5", 5), cost("c6", 6),
				cost("c7", 7)},
			want: "TrafficLocality expected cost (B/s*ms): c1 1, c2 2, c3 3, c4 4, c5 5, and 2 more",
		},
		{
			name:   "neutral clusters grouped by reason",
			scored: []score{neutral("a", tl.ReasonStaleTraffic), neutral("b", tl.ReasonStaleTraffic)},
			want:   "TrafficLocality neutral: WorkloadTraffic is stale (validUntil passed): a, b",
		},
		{
			name:     "costs, a cluster without RTT, and an exclusion",
			scored:   []score{cost("a", 5), neutral("x", tl.ReasonUnknownCluster)},
			excluded: []exclusion{{"far", "p90 RTT 160ms to peer shop/db exceeds the budget 100ms", lb.CausePeerOverBudget}},
			want: "TrafficLocality expected cost (B/s*ms): a 5; TrafficLocality neutral: cluster not in the latency matrix: x; " +
				"LatencyBudget excluded far: p90 RTT 160ms to peer shop/db exceeds the budget 100ms",
		},
		{
			name:     "only exclusions (every cluster filtered out)",
			excluded: []exclusion{{"a", "r1", lb.CausePeerOverBudget}, {"b", "r2", lb.CauseClientOverBudget}},
			want:     "LatencyBudget excluded a: r1; LatencyBudget excluded b: r2",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := message(tc.excluded, tc.scored); got != tc.want {
				t.Errorf("message:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
	var long []exclusion
	for range 50 {
		long = append(long, exclusion{"member-ap-northeast-1", strings.Repeat("é", 20), lb.CausePeerOverBudget})
	}
	if got := message(long, nil); len(got) > MaxMessage || !strings.HasSuffix(got, "...") || !strings.HasPrefix(got, "LatencyBudget excluded member-ap-northeast-1: éé") {
		t.Errorf("long message not cut to %d bytes: %d %q", MaxMessage, len(got), got[len(got)-10:])
	}
}

// TestFlush checks one Event per quiet attempt, on the right object.
func TestFlush(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	fake := record.NewFakeRecorder(10)
	fake.IncludeObject = true
	web := model.KeyFor("shop", "Deployment", "web")
	role := model.Key{Name: "admin-clusterrole"}
	r, err := New(fake, func(k model.Key) (types.UID, bool) { return types.UID("uid-" + k.Name), k == web }, func() time.Time { return now }, nil)
	if err != nil {
		t.Fatal(err)
	}

	r.Scored(web, "a", tl.Result{Cost: 10, Reason: tl.ReasonCost})
	r.Scored(web, "b", tl.Result{Cost: 5, Reason: tl.ReasonCost})
	// A second attempt right after the first: its verdicts replace the
	// first's, cluster by cluster.
	r.Excluded(web, "b", lb.Verdict{Reason: "too far", Cause: lb.CausePeerOverBudget})
	r.Scored(web, "a", tl.Result{Cost: 10, Reason: tl.ReasonCost})
	now = now.Add(Quiet / 2)
	r.Scored(role, "a", tl.Result{Reason: tl.ReasonNoTraffic})
	if n := r.Flush(false); n != 0 {
		t.Fatalf("flushed %d attempts before they were quiet", n)
	}
	now = now.Add(Quiet / 2)
	if n := r.Flush(false); n != 1 {
		t.Fatalf("flushed %d attempts, want web's only", n)
	}
	want := "Normal FlowplacePlacement TrafficLocality expected cost (B/s*ms): a 10; LatencyBudget excluded b: too far " +
		"involvedObject{kind=ResourceBinding,apiVersion=work.karmada.io/v1alpha2}"
	if got := <-fake.Events; got != want {
		t.Errorf("event:\n got %q\nwant %q", got, want)
	}
	if n := r.Flush(true); n != 1 {
		t.Fatalf("forced flush wrote %d, want 1", n)
	}
	if got := <-fake.Events; !strings.Contains(got, "kind=ClusterResourceBinding") || !strings.Contains(got, "no WorkloadTraffic") {
		t.Errorf("cluster-scoped binding's event: %q", got)
	}
	if n := r.Flush(true); n != 0 {
		t.Errorf("an attempt was written twice")
	}
	var none *Recorder
	none.Scored(web, "a", tl.Result{})
	none.Excluded(web, "a", lb.Verdict{Reason: "x"})
}

// BenchmarkScored is what recording adds to each Score call in the
// adapter (100 clusters per attempt, one attempt pending).
func BenchmarkScored(b *testing.B) {
	r, _ := New(record.NewFakeRecorder(1), nil, nil, nil)
	k := model.KeyFor("shop", "Deployment", "web")
	clusters := make([]string, 100)
	for i := range clusters {
		clusters[i] = fmt.Sprintf("member-%d", i)
	}
	res := tl.Result{Cost: 1e9, Reason: tl.ReasonCost}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		r.Scored(k, clusters[i%len(clusters)], res)
		i++
	}
}

// BenchmarkAttempt is one whole attempt: 100 Scored calls, then the Event
// written (off the Score path, in Run's goroutine).
func BenchmarkAttempt(b *testing.B) {
	fake := record.NewFakeRecorder(1)
	r, _ := New(fake, nil, nil, nil)
	k := model.KeyFor("shop", "Deployment", "web")
	clusters := make([]string, 100)
	for i := range clusters {
		clusters[i] = fmt.Sprintf("member-%d", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i, c := range clusters {
			r.Scored(k, c, tl.Result{Cost: float64(i), Reason: tl.ReasonCost})
		}
		r.Flush(true)
		<-fake.Events
	}
}
