package charts

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Install modes: which API server a rendering is applied to.
const (
	// ModeHost is the Karmada host cluster: the estimator and scheduler.
	ModeHost = "host"
	// ModeKarmada is the karmada-apiserver: CRDs, RBAC, the agent and the
	// policies that propagate it.
	ModeKarmada = "karmada"
)

// DefaultReleaseName is the release name of `flowplace addons enable`.
const DefaultReleaseName = "flowplace"

// RenderOptions say what to render.
type RenderOptions struct {
	Mode        string // ModeHost or ModeKarmada
	ReleaseName string // DefaultReleaseName when empty
	Namespace   string // the release namespace (karmada-system)
	// Values are the user's values, over the chart's values.yaml; "installMode"
	// is set from Mode.
	Values map[string]any
	// KubeVersion is the target's version ("v1.36.0"); empty: Helm's default.
	KubeVersion string
}

// Rendered is one rendering of the chart.
type Rendered struct {
	// Objects in Helm's install order (namespaces, CRDs and RBAC first).
	Objects []*unstructured.Unstructured
	// Notes is NOTES.txt rendered.
	Notes string
	// Values are the coalesced values the templates saw.
	Values map[string]any
}

// Render renders the embedded chart.
func Render(o RenderOptions) (*Rendered, error) {
	c, err := Load()
	if err != nil {
		return nil, err
	}
	return RenderChart(c, o)
}

// RenderChart renders c as `helm template` would: values validated against
// values.schema.json, templates rendered, manifests sorted in install order
// and decoded.
func RenderChart(c *chart.Chart, o RenderOptions) (*Rendered, error) {
	if o.Mode != ModeHost && o.Mode != ModeKarmada {
		return nil, fmt.Errorf("charts: install mode %q: want %s or %s", o.Mode, ModeHost, ModeKarmada)
	}
	if o.ReleaseName == "" {
		o.ReleaseName = DefaultReleaseName
	}
	if o.Namespace == "" {
		return nil, errors.New("charts: the release namespace is required")
	}
	vals := chartutil.Values{}
	for k, v := range o.Values {
		vals[k] = v
	}
	vals["installMode"] = o.Mode
	caps := chartutil.DefaultCapabilities.Copy()
	if o.KubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(o.KubeVersion)
		if err != nil {
			return nil, fmt.Errorf("charts: kube version %q: %w", o.KubeVersion, err)
		}
		caps.KubeVersion = *kv
	}
	top, err := chartutil.ToRenderValues(c, vals, chartutil.ReleaseOptions{
		Name: o.ReleaseName, Namespace: o.Namespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, fmt.Errorf("charts: values: %w", err)
	}
	out, err := engine.Render(c, top)
	if err != nil {
		return nil, fmt.Errorf("charts: rendering: %w", err)
	}
	r := &Rendered{}
	if cv, err := top.Table("Values"); err == nil {
		r.Values = cv.AsMap()
	}
	manifests := map[string]string{}
	for name, content := range out {
		if strings.HasSuffix(name, "NOTES.txt") {
			r.Notes = strings.TrimSpace(content)
			continue
		}
		if strings.HasPrefix(path.Base(name), "_") || strings.TrimSpace(content) == "" {
			continue
		}
		manifests[name] = content
	}
	hooks, sorted, err := releaseutil.SortManifests(manifests, caps.APIVersions, releaseutil.InstallOrder)
	if err != nil {
		return nil, fmt.Errorf("charts: %w", err)
	}
	if len(hooks) > 0 {
		// The addon applies what `helm install` would; hooks would differ.
		return nil, fmt.Errorf("charts: %s is a hook: the chart has none", hooks[0].Path)
	}
	for _, m := range sorted {
		var obj map[string]any
		if err := yaml.Unmarshal([]byte(m.Content), &obj); err != nil {
			return nil, fmt.Errorf("charts: %s: %w", m.Name, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("charts: %s: an object without kind or name", m.Name)
		}
		r.Objects = append(r.Objects, u)
	}
	return r, nil
}

// Find returns the rendered object of kind and name (any namespace), or nil.
func (r *Rendered) Find(kind, name string) *unstructured.Unstructured {
	for _, o := range r.Objects {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// Kinds counts the rendered objects per kind, for summaries.
func (r *Rendered) Kinds() []string {
	n := map[string]int{}
	for _, o := range r.Objects {
		n[o.GetKind()]++
	}
	var out []string
	for k, c := range n {
		out = append(out, fmt.Sprintf("%d %s", c, k))
	}
	sort.Strings(out)
	return out
}
