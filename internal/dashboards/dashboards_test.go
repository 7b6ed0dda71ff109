package dashboards

import (
	"bytes"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	promparser "github.com/prometheus/prometheus/promql/parser"
	"go.opentelemetry.io/otel/attribute"

	"github.com/flowplace/flowplace/telemetry"
)

const chartDir = "../../charts/flowplace/dashboards"

// TestGeneratedUpToDate fails when the chart's JSON is not what the code
// generates: a change to a dashboard or to a name in package telemetry
// needs `go generate ./internal/dashboards`.
func TestGeneratedUpToDate(t *testing.T) {
	files, err := All()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range files {
		names = append(names, f.Name)
		want, err := f.JSON()
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir, f.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from what internal/dashboards generates: run go generate ./internal/dashboards", f.Name)
		}
	}
	shipped, _ := filepath.Glob(filepath.Join(chartDir, "*.json"))
	if len(shipped) != len(names) {
		t.Errorf("chart ships %d dashboards, the code generates %v", len(shipped), names)
	}
}

// TestStrictDecode decodes every shipped dashboard with Grafana's schema,
// refusing unknown fields and wrong types.
func TestStrictDecode(t *testing.T) {
	plugins.RegisterDefaultPlugins()
	shipped, err := filepath.Glob(filepath.Join(chartDir, "*.json"))
	if err != nil || len(shipped) != 4 {
		t.Fatalf("dashboards in %s: %v %v", chartDir, shipped, err)
	}
	for _, p := range shipped {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard.Dashboard
		if err := strictDecode(&d, raw); err != nil {
			t.Errorf("%s: %v", filepath.Base(p), err)
			continue
		}
		if d.Uid == nil || !strings.HasPrefix(*d.Uid, "flowplace-") {
			t.Errorf("%s: uid %v", filepath.Base(p), d.Uid)
		}
		vars := map[string]bool{}
		for _, v := range d.Templating.List {
			vars[v.Name] = true
		}
		if !vars[DatasourceVar] || !vars[ClusterVar] {
			t.Errorf("%s: variables %v, want %s and %s", filepath.Base(p), vars, DatasourceVar, ClusterVar)
		}
	}
	// The decoder must be able to fail: an unknown field is refused.
	var d dashboard.Dashboard
	if err := strictDecode(&d, []byte(`{"title":"x","flowplace":1}`)); err == nil {
		t.Error("strict decoding accepted an unknown field")
	}
}

// strictDecode is UnmarshalJSONStrict, whose success in v0.0.22 is an
// empty cog.BuildErrors rather than nil.
func strictDecode(d *dashboard.Dashboard, raw []byte) error {
	err := d.UnmarshalJSONStrict(raw)
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

// TestNamesExist parses every query and checks that each metric and label
// it names is one of package telemetry's (with the Prometheus exporter's
// unit and type suffixes): renaming a metric or an attribute without the
// dashboards fails here, on any machine.
func TestNamesExist(t *testing.T) {
	metrics := metricNames(t)
	labels := map[string]bool{"le": true}
	for _, k := range attributeKeys() {
		labels[promLabel(string(k))] = true
	}
	files, err := All()
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	n := 0
	for _, f := range files {
		for _, q := range Queries(f.Model) {
			n++
			title := q.Panel
			expr, err := promparser.NewParser(promparser.Options{}).ParseExpr(Substitute(q.Expr, SubstituteOptions{}))
			if err != nil {
				t.Errorf("%s / %s: %v", f.Name, title, err)
				continue
			}
			// label_join(v, dst, separator, src...) and
			// label_replace(v, dst, replacement, src, regex) make dst
			// from the src labels.
			made := map[string]bool{}
			var sources []string
			promparser.Inspect(expr, func(n promparser.Node, _ []promparser.Node) error {
				c, ok := n.(*promparser.Call)
				if !ok || (c.Func.Name != "label_join" && c.Func.Name != "label_replace") {
					return nil
				}
				made[c.Args[1].(*promparser.StringLiteral).Val] = true
				src := c.Args[3:]
				if c.Func.Name == "label_replace" {
					src = c.Args[3:4]
				}
				for _, a := range src {
					sources = append(sources, a.(*promparser.StringLiteral).Val)
				}
				return nil
			})
			for _, l := range sources {
				if !labels[l] && !made[l] {
					t.Errorf("%s / %s: label_join/label_replace of unknown label %q", f.Name, title, l)
				}
			}
			promparser.Inspect(expr, func(n promparser.Node, _ []promparser.Node) error {
				switch n := n.(type) {
				case *promparser.VectorSelector:
					base, ok := metrics[n.Name]
					if !ok {
						t.Errorf("%s / %s: metric %s is no telemetry name", f.Name, title, n.Name)
					}
					used[base] = true
					for _, m := range n.LabelMatchers {
						if m.Name != "__name__" && !labels[m.Name] && !made[m.Name] {
							t.Errorf("%s / %s: label %s is no telemetry attribute", f.Name, title, m.Name)
						}
					}
				case *promparser.AggregateExpr:
					for _, l := range n.Grouping {
						if !labels[l] && !made[l] {
							t.Errorf("%s / %s: grouping label %s is no telemetry attribute", f.Name, title, l)
						}
					}
				}
				return nil
			})
		}
	}
	if n < 30 {
		t.Errorf("read %d queries from the dashboards", n)
	}
	// Every metric a component exports that an operator needs is on a
	// dashboard; the rest are listed with the reason.
	notShown := map[string]string{
		telemetry.MetricRTT:                "an exponential histogram: Prometheus receives it as a native histogram only; the estimator's cluster.rtt shows RTT",
		telemetry.MetricConnections:        "connection counts are in WorkloadTraffic; the dashboards show bytes",
		telemetry.MetricConnectionsActive:  "see connections",
		telemetry.MetricRetransmits:        "not used by placement yet",
		telemetry.MetricPointsUnattributed: "in the estimator's logs' terms; ingested and rejected are shown",
		telemetry.MetricRequestsMalformed:  "rare; the estimator logs each",
		telemetry.MetricRequestsUnbound:    "rare; the estimator logs each",
		telemetry.MetricSeriesActive:       "capacity planning, not health",
		telemetry.MetricFlowsActive:        "capacity planning, not health",
		telemetry.MetricWriteDuration:      "API server latency is the API server's dashboard's",
	}
	for _, name := range metricConstants(t) {
		if !used[name] && notShown[name] == "" {
			t.Errorf("metric %s is on no dashboard", name)
		}
	}
}

// metricNames maps every Prometheus name the exporter may render for a
// telemetry metric (unit and type suffixes) to the OTel name.
func metricNames(t *testing.T) map[string]string {
	out := map[string]string{}
	for _, name := range metricConstants(t) {
		base := promLabel(name)
		for _, unit := range []string{"", "_seconds", "_bytes", "_bytes_per_second", "_ratio"} {
			for _, typ := range []string{"", "_total", "_bucket", "_sum", "_count"} {
				out[base+unit+typ] = name
			}
		}
	}
	return out
}

// metricConstants reads the Metric* constants of telemetry/names.go.
func metricConstants(t *testing.T) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../../telemetry/names.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if !strings.HasPrefix(n.Name, "Metric") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok {
					v, _ := strconv.Unquote(lit.Value)
					out = append(out, v)
				}
			}
		}
	}
	if len(out) < 20 {
		t.Fatalf("read %d metric names from telemetry/names.go", len(out))
	}
	slices.Sort(out)
	return out
}

func promLabel(otel string) string { return strings.ReplaceAll(otel, ".", "_") }

// attributeKeys are every attribute key of package telemetry.
func attributeKeys() []attribute.Key {
	return []attribute.Key{
		telemetry.AttrClusterUID, telemetry.AttrClusterName, telemetry.AttrNodeName,
		telemetry.AttrRole, telemetry.AttrNamespace, telemetry.AttrWorkloadKind, telemetry.AttrWorkloadName,
		telemetry.AttrServiceNamespace, telemetry.AttrServiceName, telemetry.AttrServerPort,
		telemetry.AttrPeerClusterUID, telemetry.AttrPeerClusterName, telemetry.AttrPeerNamespace,
		telemetry.AttrPeerWorkloadKind, telemetry.AttrPeerWorkloadName, telemetry.AttrDirection,
		telemetry.AttrRoutingTier, telemetry.AttrRebalanceOutcome, telemetry.AttrRebalanceReason,
		telemetry.AttrRTTQuantile, telemetry.AttrRTTEstimated, telemetry.AttrCrossCluster,
		telemetry.AttrObjectKind, telemetry.AttrObjectState, telemetry.AttrRejectReason,
		telemetry.AttrWriteOperation, telemetry.AttrWriteOutcome, telemetry.AttrExportOutcome,
		telemetry.AttrSchedulerOutcome, telemetry.AttrSchedulerReason, telemetry.AttrOverflow,
	}
}
