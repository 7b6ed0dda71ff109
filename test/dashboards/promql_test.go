// Package dashboards_test runs every query of the shipped Grafana dashboards
// in Prometheus' PromQL engine against a TSDB filled by scraping a short
// `flowplace lab` run: the real agents, estimator, scheduler plugins'
// decisions and routing datapaths, as a fleet's Prometheus scrapes them.
package dashboards_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/flowplace/flowplace/internal/dashboards"
	"github.com/flowplace/flowplace/internal/lab"
	"github.com/flowplace/flowplace/internal/lab/labtest"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/world/wan"
)

// scrapeInterval is the test Prometheus' scrape interval; Grafana's
// $__rate_interval is then 4 of them (its floor).
const scrapeInterval = time.Second

// noData are the panels a lab run gives no data, and why. Their queries
// still parse and run.
var noData = map[string]string{
	"Clusters excluded by LatencyBudget": "the lab's profile sets no latency budget",
}

func TestDashboardQueriesOnLabData(t *testing.T) {
	probetest.RequireKernel(t)
	wan.Require(t)
	ctx := context.Background()

	db, err := tsdb.Open(t.TempDir(), nil, nil, tsdb.DefaultOptions(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	tel, err := lab.NewTelemetry(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tel.Handler())
	defer srv.Close()
	sc := &scraper{url: srv.URL + "/metrics", db: db}
	sctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { sc.run(sctx, t) })

	prof, err := lab.DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rep, err := lab.Run(ctx, lab.RunOptions{Profile: prof, Duration: 20 * time.Second, RoutingDuration: 10 * time.Second,
		Executable: labtest.BuildCLI(t), WithAPIServer: true, Telemetry: tel})
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Advisor == nil || rep.Advisor.WorkloadRebalancers == 0 {
		t.Fatalf("the advisor made no move: %+v", rep.Advisor)
	}
	// The model's last scrape: the estimator stops with the run, and the
	// panels show what it published until then.
	end := sc.lastWith("flowplace_estimator_cluster_rtt_seconds")
	if end.IsZero() {
		t.Fatalf("no scrape carried the estimator's model (%d scrapes)", sc.scrapes)
	}
	t.Logf("%d scrapes, %d samples; evaluating at %s", sc.scrapes, sc.samples, end.Sub(start).Round(time.Second))

	engine := promql.NewEngine(promql.EngineOpts{MaxSamples: 50_000_000, Timeout: time.Minute, LookbackDelta: 5 * time.Minute, Parser: parser.NewParser(parser.Options{})})
	subst := dashboards.SubstituteOptions{RateInterval: (4 * scrapeInterval).String(), Range: end.Sub(start).Round(time.Second).String()}

	plugins.RegisterDefaultPlugins()
	shipped, err := filepath.Glob("../../charts/flowplace/dashboards/*.json")
	if err != nil || len(shipped) == 0 {
		t.Fatalf("dashboards: %v %v", shipped, err)
	}
	ran := 0
	for _, path := range shipped {
		file := filepath.Base(path)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard.Dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		// Variables: label_values(metric, label) must find values.
		for _, v := range d.Templating.List {
			if v.Query == nil || v.Query.String == nil {
				continue
			}
			m := regexp.MustCompile(`^label_values\((\w+), (\w+)\)$`).FindStringSubmatch(*v.Query.String)
			if m == nil {
				continue
			}
			vec := instant(t, engine, db, m[1], end)
			if !slices.ContainsFunc(vec, func(s promql.Sample) bool { return s.Metric.Get(m[2]) != "" }) {
				t.Errorf("%s variable %s: %s has no series with %s", file, v.Name, m[1], m[2])
			}
		}
		byPanel := map[string][]dashboards.Query{}
		for _, q := range dashboards.Queries(d) {
			byPanel[q.Panel] = append(byPanel[q.Panel], q)
		}
		for _, p := range d.Panels {
			if p.Panel == nil {
				continue
			}
			title := *p.Panel.Title
			frames := map[string][]promql.Sample{}
			for _, q := range byPanel[title] {
				ran++
				expr := dashboards.Substitute(q.Expr, subst)
				var series []promql.Sample
				if q.Instant {
					series = instant(t, engine, db, expr, end)
				} else {
					series = rangeLast(t, engine, db, expr, start, end)
				}
				frames[q.Ref] = series
				if _, why := noData[title]; why {
					continue
				}
				if len(series) == 0 {
					t.Errorf("%s / %s [%s]: no series for %s", file, title, q.Ref, expr)
					continue
				}
				// The legend's labels are on the series.
				for _, l := range legendLabels(q.Legend) {
					if !slices.ContainsFunc(series, func(s promql.Sample) bool { return s.Metric.Get(l) != "" }) {
						t.Errorf("%s / %s [%s]: legend label %s on no series: %v", file, title, q.Ref, l, series)
					}
				}
			}
			for _, tr := range p.Panel.Transformations {
				if tr.Id != "groupingToMatrix" {
					continue
				}
				opts := tr.Options.(map[string]any)
				for _, k := range []string{"rowField", "columnField"} {
					l := opts[k].(string)
					if !slices.ContainsFunc(frames["A"], func(s promql.Sample) bool { return s.Metric.Get(l) != "" }) {
						t.Errorf("%s / %s: %s %s on no series", file, title, k, l)
					}
				}
			}
			if p.Panel.Type == "nodeGraph" {
				checkNodeGraph(t, title, frames, p.Panel.Transformations)
			}
		}
	}
	if ran < 30 {
		t.Errorf("ran %d queries", ran)
	}
}

// checkNodeGraph turns the panel's results into the data frames Grafana's
// Prometheus datasource makes of table-formatted instant queries (one
// column per label, the value as "Value #<refId>"), applies the panel's
// organize transformation, and checks what the Node Graph panel needs: an
// edges frame with id, source, target and mainstat, a nodes frame with id,
// title and mainstat, unique node ids, and every edge's ends among them.
func checkNodeGraph(t *testing.T, title string, results map[string][]promql.Sample, trs []dashboard.DataTransformerConfig) {
	t.Helper()
	var rename map[string]any
	exclude := map[string]any{}
	for _, tr := range trs {
		if tr.Id == "organize" {
			o := tr.Options.(map[string]any)
			rename, _ = o["renameByName"].(map[string]any)
			exclude, _ = o["excludeByName"].(map[string]any)
		}
	}
	frame := func(ref string) []map[string]string {
		var rows []map[string]string
		for _, s := range results[ref] {
			row := map[string]string{"Time": "t", "Value #" + ref: fmt.Sprint(s.F)}
			s.Metric.Range(func(l labels.Label) { row[l.Name] = l.Value })
			out := map[string]string{}
			for k, v := range row {
				if ex, _ := exclude[k].(bool); ex {
					continue
				}
				if r, ok := rename[k].(string); ok {
					k = r
				}
				out[k] = v
			}
			rows = append(rows, out)
		}
		return rows
	}
	edges, nodes := frame("edges"), frame("nodes")
	if len(edges) == 0 || len(nodes) == 0 {
		t.Fatalf("%s: %d edges, %d nodes", title, len(edges), len(nodes))
	}
	ids := map[string]bool{}
	for _, n := range nodes {
		for _, f := range []string{"id", "title", "mainstat"} {
			if n[f] == "" {
				t.Errorf("%s: node without %s: %v", title, f, n)
			}
		}
		if ids[n["id"]] {
			t.Errorf("%s: node %s twice", title, n["id"])
		}
		ids[n["id"]] = true
	}
	for _, e := range edges {
		for _, f := range []string{"id", "source", "target", "mainstat"} {
			if e[f] == "" {
				t.Errorf("%s: edge without %s: %v", title, f, e)
			}
		}
		if !ids[e["source"]] || !ids[e["target"]] {
			t.Errorf("%s: edge %s joins a node not in the nodes frame", title, e["id"])
		}
	}
	t.Logf("%s: %d nodes, %d edges", title, len(nodes), len(edges))
}

var legendRef = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)

func legendLabels(legend string) []string {
	var out []string
	for _, m := range legendRef.FindAllStringSubmatch(legend, -1) {
		out = append(out, m[1])
	}
	return out
}

// exec runs a query and fails the test on an error.
func exec(t *testing.T, q promql.Query, err error, expr string) parser.Value {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatalf("%s: %v", expr, res.Err)
	}
	return res.Value
}

func instant(t *testing.T, ng *promql.Engine, db *tsdb.DB, expr string, at time.Time) []promql.Sample {
	t.Helper()
	q, err := ng.NewInstantQuery(context.Background(), db, nil, expr, at)
	switch v := exec(t, q, err, expr).(type) {
	case promql.Vector:
		return v
	case promql.Scalar:
		return []promql.Sample{{F: v.V}}
	default:
		t.Fatalf("%s: %T", expr, v)
		return nil
	}
}

// rangeLast runs a range query as a time series panel does and returns each
// series' last non-NaN point (a series that is NaN throughout is kept with
// NaN: Grafana draws it as a gap, but the series and its labels exist).
func rangeLast(t *testing.T, ng *promql.Engine, db *tsdb.DB, expr string, start, end time.Time) []promql.Sample {
	t.Helper()
	q, err := ng.NewRangeQuery(context.Background(), db, nil, expr, start, end, scrapeInterval)
	var out []promql.Sample
	for _, s := range exec(t, q, err, expr).(promql.Matrix) {
		last := promql.Sample{Metric: s.Metric, F: math.NaN()}
		for _, p := range s.Floats {
			if !math.IsNaN(p.F) {
				last.F = p.F
			}
		}
		out = append(out, last)
	}
	return out
}

// scraper is a minimal Prometheus: it scrapes the text exposition format at
// scrapeInterval and appends every sample, with job and instance labels,
// to the TSDB.
type scraper struct {
	url string
	db  *tsdb.DB

	mu               sync.Mutex
	scrapes, samples int
	last             map[string]time.Time // metric name -> last scrape with it
}

func (s *scraper) run(ctx context.Context, t *testing.T) {
	tick := time.NewTicker(scrapeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if err := s.scrape(ctx, now); err != nil && ctx.Err() == nil {
				t.Errorf("scrape: %v", err)
				return
			}
		}
	}
}

func (s *scraper) scrape(ctx context.Context, now time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return fmt.Errorf("parse exposition: %w", err)
	}
	ts := now.UnixMilli()
	app := s.db.Appender(ctx)
	n := 0
	seen := map[string]bool{}
	add := func(name string, m *dto.Metric, extra map[string]string, v float64) error {
		b := labels.NewBuilder(labels.EmptyLabels())
		b.Set("__name__", name)
		b.Set("job", "flowplace-lab")
		b.Set("instance", "lab")
		for _, l := range m.GetLabel() {
			b.Set(l.GetName(), l.GetValue())
		}
		for k, v := range extra {
			b.Set(k, v)
		}
		seen[name] = true
		n++
		_, err := app.Append(0, b.Labels(), ts, v)
		return err
	}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var err error
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				err = add(name, m, nil, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				err = add(name, m, nil, m.GetGauge().GetValue())
			case dto.MetricType_UNTYPED:
				err = add(name, m, nil, m.GetUntyped().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if math.IsInf(b.GetUpperBound(), 1) {
						continue // added below from the count
					}
					if err = add(name+"_bucket", m, map[string]string{"le": fmt.Sprint(b.GetUpperBound())}, float64(b.GetCumulativeCount())); err != nil {
						break
					}
				}
				if err == nil {
					err = add(name+"_bucket", m, map[string]string{"le": "+Inf"}, float64(h.GetSampleCount()))
				}
				if err == nil {
					err = add(name+"_sum", m, nil, h.GetSampleSum())
				}
				if err == nil {
					err = add(name+"_count", m, nil, float64(h.GetSampleCount()))
				}
			}
			if err != nil {
				_ = app.Rollback()
				return fmt.Errorf("append %s: %w", name, err)
			}
		}
	}
	if err := app.Commit(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scrapes++
	s.samples += n
	if s.last == nil {
		s.last = map[string]time.Time{}
	}
	for name := range seen {
		s.last[name] = now
	}
	return nil
}

func (s *scraper) lastWith(name string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last[name]
}
