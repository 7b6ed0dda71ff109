package addon

import (
	"fmt"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/flowplace/flowplace/charts"
)

// chartDefaults are the chart's values.yaml, parsed once; callers merge
// over them and never modify them. The embedded chart always loads (the
// charts package's tests), so an error leaves no defaults.
var chartDefaults = sync.OnceValue(func() map[string]any {
	c, err := charts.Load()
	if err != nil {
		return map[string]any{}
	}
	return c.Values
})

func lookup(m map[string]any, path ...string) (any, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = mm[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func stringAt(m map[string]any, path ...string) string {
	v, _ := lookup(m, path...)
	s, _ := v.(string)
	return s
}

func boolAt(m map[string]any, path ...string) bool {
	v, _ := lookup(m, path...)
	b, _ := v.(bool)
	return b
}

// setPath sets m[path...] = v, creating maps on the way.
func setPath(m map[string]any, v any, path ...string) {
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// labelSelector converts a values map to a selector.
func labelSelector(v any) (labels.Selector, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("want a label selector (matchLabels, matchExpressions), got %T", v)
	}
	var ls metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, &ls); err != nil {
		return nil, err
	}
	return metav1.LabelSelectorAsSelector(&ls)
}
