// Package dashboards defines flowplace's Grafana dashboards as code, with
// Grafana's own Go schema (grafana-foundation-sdk), from the metric and
// attribute names in package telemetry. The JSON shipped in the chart
// (charts/flowplace/dashboards) is generated from it; a test fails when the
// two differ, when a dashboard does not decode strictly, or when a query
// names a metric that no component exports.
//
// Every query is PromQL over what Prometheus scrapes from the components'
// /metrics (or what a Collector's Prometheus exporter re-exports): OTel
// names with dots as underscores, the unit as a suffix, _total on counters.
package dashboards

//go:generate go run ./gen ../../charts/flowplace/dashboards

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/bargauge"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/nodegraph"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/table"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// File is one generated dashboard.
type File struct {
	Name  string // file name in charts/flowplace/dashboards
	Model dashboard.Dashboard
}

// JSON is the file's content.
func (f File) JSON() ([]byte, error) {
	b, err := json.MarshalIndent(f.Model, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("dashboard %s: %w", f.Name, err)
	}
	return append(b, '\n'), nil
}

// All builds every dashboard.
func All() ([]File, error) {
	var out []File
	for _, d := range []struct {
		name string
		b    *dashboard.DashboardBuilder
	}{
		{"fleet-network.json", fleetNetwork()},
		{"placement.json", placement()},
		{"routing.json", routing()},
		{"health.json", health()},
	} {
		m, err := d.b.Build()
		if err != nil {
			return nil, fmt.Errorf("dashboard %s: %w", d.name, err)
		}
		// Unique panel ids, in layout order: links and Grafana's
		// panel-level state key on them.
		for i, p := range m.Panels {
			id := uint32(i + 1)
			switch {
			case p.Panel != nil:
				p.Panel.Id = &id
			case p.RowPanel != nil:
				p.RowPanel.Id = id
			}
		}
		out = append(out, File{Name: d.name, Model: m})
	}
	return out, nil
}

// Variables every dashboard has.
const (
	// DatasourceVar selects the Prometheus datasource.
	DatasourceVar = "datasource"
	// ClusterVar selects member clusters (multi, All = ".*").
	ClusterVar = "cluster"
)

func ptr[T any](v T) *T { return &v }

var datasource = common.DataSourceRef{Type: ptr("prometheus"), Uid: ptr("${" + DatasourceVar + "}")}

// base is a dashboard with the shared settings and variables.
func base(uid, title, description string) *dashboard.DashboardBuilder {
	return dashboard.NewDashboardBuilder(title).
		Uid(uid).
		Description(description).
		Tags([]string{"flowplace", "karmada", "multi-cluster"}).
		Editable().
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		WithVariable(dashboard.NewDatasourceVariableBuilder(DatasourceVar).
			Label("Data source").
			Type("prometheus")).
		WithVariable(labelVariable(ClusterVar, "Cluster", "flowplace_estimator_cluster_rtt_seconds", "k8s_cluster_name"))
}

// labelVariable is a multi-value query variable over one label's values.
func labelVariable(name, label, metric, key string) *dashboard.QueryVariableBuilder {
	q := fmt.Sprintf("label_values(%s, %s)", metric, key)
	return dashboard.NewQueryVariableBuilder(name).
		Label(label).
		Datasource(datasource).
		Query(dashboard.StringOrMap{String: &q}).
		Definition(q).
		Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
		Sort(dashboard.VariableSortAlphabeticalAsc).
		Multi(true).
		IncludeAll(true).
		AllValue(".*")
}

// query is one PromQL target.
type query struct {
	ref, expr, legend string
	// table: an instant query formatted as a table (labels become
	// columns, as Node Graph and table panels need).
	table bool
}

func (q query) build() *prometheus.DataqueryBuilder {
	b := prometheus.NewDataqueryBuilder().Datasource(datasource).RefId(q.ref).Expr(q.expr)
	if q.legend != "" {
		b = b.LegendFormat(q.legend)
	}
	if q.table {
		b = b.Instant().Format(prometheus.PromQueryFormatTable)
	} else {
		b = b.Range()
	}
	return b
}

// panelBuilder is what every panel kind's builder offers.
type panelBuilder[B any] interface {
	cog.Builder[dashboard.Panel]
	Title(string) B
	Description(string) B
	Unit(string) B
	Span(uint32) B
	Height(uint32) B
	Datasource(common.DataSourceRef) B
	WithTarget(cog.Builder[variants.Dataquery]) B
	WithTransformation(dashboard.DataTransformerConfig) B
}

// panel is a panel's content, whatever its kind.
type panel struct {
	title, desc, unit string
	w, h              uint32
	queries           []query
	transforms        []dashboard.DataTransformerConfig
}

func fill[B panelBuilder[B]](b B, p panel) B {
	b = b.Title(p.title).Description(p.desc).Span(p.w).Height(p.h).Datasource(datasource)
	if p.unit != "" {
		b = b.Unit(p.unit)
	}
	for _, q := range p.queries {
		b = b.WithTarget(q.build())
	}
	for _, t := range p.transforms {
		b = b.WithTransformation(t)
	}
	return b
}

func timeSeries(p panel) *timeseries.PanelBuilder {
	return fill(timeseries.NewPanelBuilder(), p).
		Legend(common.NewVizLegendOptionsBuilder().DisplayMode(common.LegendDisplayModeTable).
			Placement(common.LegendPlacementRight).ShowLegend(true).Calcs([]string{"lastNotNull", "max"}))
}

func tablePanel(p panel) *table.PanelBuilder {
	// The schema requires a footer reducer even with the footer hidden.
	return fill(table.NewPanelBuilder(), p).
		Footer(common.NewTableFooterOptionsBuilder().Show(false).Reducer([]string{"sum"}))
}

func statPanel(p panel) *stat.PanelBuilder {
	return fill(stat.NewPanelBuilder(), p).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
}

func barGauge(p panel) *bargauge.PanelBuilder {
	return fill(bargauge.NewPanelBuilder(), p).
		Orientation(common.VizOrientationHorizontal).
		DisplayMode(common.BarGaugeDisplayModeGradient).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
}

func nodeGraph(p panel) *nodegraph.PanelBuilder { return fill(nodegraph.NewPanelBuilder(), p) }

// organize drops columns and renames others (Grafana's "organize"
// transformation).
func organize(exclude []string, rename map[string]string) dashboard.DataTransformerConfig {
	ex := map[string]bool{}
	for _, e := range exclude {
		ex[e] = true
	}
	return dashboard.DataTransformerConfig{Id: "organize", Options: map[string]any{
		"excludeByName": ex, "renameByName": rename, "indexByName": map[string]int{},
	}}
}

// scopeColumns are what every series of the OTel Prometheus exporter
// carries and no table needs.
var scopeColumns = []string{"Time", "otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}

func row(title string) *dashboard.RowBuilder { return dashboard.NewRowBuilder(title) }
