package routing

import (
	"strings"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	cases := []struct {
		name    string
		ann     map[string]string
		want    Policy
		enabled bool
		err     string
	}{
		{"absent", nil, DefaultPolicy, false, ""},
		{"none", map[string]string{AnnotationRouting: "none"}, DefaultPolicy, false, ""},
		{"nearest", map[string]string{AnnotationRouting: "nearest"}, DefaultPolicy, true, ""},
		{"knobs", map[string]string{AnnotationRouting: "nearest", AnnotationMinLocalEndpoints: "3", AnnotationHysteresis: "5s"},
			Policy{MinLocalEndpoints: 3, Hold: 5 * time.Second}, true, ""},
		{"zero hold", map[string]string{AnnotationRouting: "nearest", AnnotationHysteresis: "0s"}, Policy{MinLocalEndpoints: 1}, true, ""},
		{"bad mode", map[string]string{AnnotationRouting: "closest"}, Policy{}, false, `flowplace.io/routing="closest"`},
		{"bad min", map[string]string{AnnotationRouting: "nearest", AnnotationMinLocalEndpoints: "0"}, Policy{}, false, "routing-min-local-endpoints"},
		{"nan min", map[string]string{AnnotationRouting: "nearest", AnnotationMinLocalEndpoints: "two"}, Policy{}, false, "routing-min-local-endpoints"},
		{"bad hold", map[string]string{AnnotationRouting: "nearest", AnnotationHysteresis: "soon"}, Policy{}, false, "routing-hysteresis"},
		{"negative hold", map[string]string{AnnotationRouting: "nearest", AnnotationHysteresis: "-1s"}, Policy{}, false, "routing-hysteresis"},
		{"long hold", map[string]string{AnnotationRouting: "nearest", AnnotationHysteresis: "2h"}, Policy{}, false, "routing-hysteresis"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, enabled, err := ParsePolicy(c.ann)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || enabled {
					t.Fatalf("ParsePolicy = %v, %v, want an error naming %q and not enabled", enabled, err, c.err)
				}
				return
			}
			if err != nil || enabled != c.enabled || p != c.want {
				t.Fatalf("ParsePolicy = %+v, %v, %v; want %+v, %v", p, enabled, err, c.want, c.enabled)
			}
		})
	}
}
