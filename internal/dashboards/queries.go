package dashboards

import (
	"regexp"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
)

// Query is one panel target as Grafana would run it.
type Query struct {
	Panel string // panel title
	Type  string // panel type
	Ref   string // refId
	Expr  string
	// Legend is the legendFormat; Instant marks a table-formatted
	// instant query.
	Legend  string
	Instant bool
}

// Queries returns every Prometheus target of d in layout order.
func Queries(d dashboard.Dashboard) []Query {
	var out []Query
	for _, p := range d.Panels {
		if p.Panel == nil {
			continue
		}
		for _, t := range p.Panel.Targets {
			pq, ok := t.(prometheus.Dataquery)
			if !ok {
				if ptr, ok2 := t.(*prometheus.Dataquery); ok2 {
					pq, ok = *ptr, true
				}
			}
			if !ok {
				continue
			}
			q := Query{Panel: deref(p.Panel.Title), Type: p.Panel.Type, Ref: deref(pq.RefId), Expr: pq.Expr, Legend: deref(pq.LegendFormat)}
			q.Instant = pq.Instant != nil && *pq.Instant
			out = append(out, q)
		}
	}
	return out
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// SubstituteOptions are the values Grafana would put in a query.
type SubstituteOptions struct {
	// RateInterval is $__rate_interval (Grafana: max(4 x scrape
	// interval, $__interval + scrape interval)); empty: "1m".
	RateInterval string
	// Range is $__range; empty: "1h".
	Range string
	// Vars are variable values; a variable not given is its All value
	// (".*"), and quantile is "0.9".
	Vars map[string]string
}

var variableRef = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

// Substitute replaces Grafana's macros and variables in expr.
func Substitute(expr string, o SubstituteOptions) string {
	rate, rng := o.RateInterval, o.Range
	if rate == "" {
		rate = "1m"
	}
	if rng == "" {
		rng = "1h"
	}
	expr = strings.NewReplacer("$__rate_interval", rate, "$__range", rng, "$__interval", rate).Replace(expr)
	return variableRef.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}")
		if v, ok := o.Vars[name]; ok {
			return v
		}
		if name == "quantile" {
			return "0.9"
		}
		// "$1" in label_replace is a regex group, not a variable.
		if name[0] >= '0' && name[0] <= '9' {
			return m
		}
		return ".*"
	})
}
