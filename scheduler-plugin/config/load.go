package config

import (
	"fmt"
	"math"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	componentbaseconfigv1alpha1 "k8s.io/component-base/config/v1alpha1"
	schedconfigv1 "k8s.io/kube-scheduler/config/v1"
	"sigs.k8s.io/yaml"

	"github.com/flowplace/flowplace/scheduler-plugin/model"
)

// Defaults.
const (
	DefaultMinSamples                 = 10
	DefaultRebuildInterval            = time.Second
	DefaultBudgetQuantile             = model.QuantileP90
	DefaultScoreQuantile              = model.QuantileP50
	DefaultRequiredPeerTrafficPercent = 10
	DefaultCostFloor                  = 1_000_000
)

// Config is the resolved configuration of one profile: defaulted, validated
// and converted to the types the plugins use.
type Config struct {
	SchedulerName    string
	RecordEvents     bool
	ClientConnection componentbaseconfigv1alpha1.ClientConnectionConfiguration
	Model            Model
	LatencyBudget    LatencyBudget
	TrafficLocality  TrafficLocality
}

// Model is the resolved ModelConfiguration.
type Model struct {
	MinSamples        int64
	WorkloadResources []WorkloadResource
	RebuildInterval   time.Duration
	CapacityPlan      bool
	// PlanQuantile and PlanEgress are the selected profile's
	// TrafficLocality quantile and egress prices: the capacity plan prices
	// links as the score does.
	PlanQuantile model.Quantile
	PlanEgress   EgressConfiguration
}

// LatencyBudget is the resolved LatencyBudgetArgs.
type LatencyBudget struct {
	Enabled       bool
	DefaultBudget time.Duration
	Strict        bool
	Quantile      model.Quantile
	// RequiredFraction is RequiredPeerTrafficPercent / 100.
	RequiredFraction float64
}

// TrafficLocality is the resolved TrafficLocalityArgs.
type TrafficLocality struct {
	Enabled   bool
	Quantile  model.Quantile
	CostFloor float64
	Egress    EgressConfiguration
}

// Default returns the configuration used when no file is given: both
// plugins enabled, all defaults.
func Default() *Config {
	c, err := resolve(&SchedulerConfiguration{Profiles: []Profile{{}}}, "")
	if err != nil {
		panic(fmt.Sprintf("config: defaults do not validate: %v", err))
	}
	return c
}

// Load reads path and resolves the profile for schedulerName (the only
// profile when schedulerName is empty or the file has one profile without
// a name).
func Load(path, schedulerName string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading scheduler config: %w", err)
	}
	c, err := Parse(data, schedulerName)
	if err != nil {
		return nil, fmt.Errorf("scheduler config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes, defaults and validates a configuration document. Unknown
// fields are errors: a misspelt field silently ignored would leave a
// default the operator thinks they changed.
func Parse(data []byte, schedulerName string) (*Config, error) {
	var doc SchedulerConfiguration
	if err := yaml.UnmarshalStrict(data, &doc); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return resolve(&doc, schedulerName)
}

func resolve(doc *SchedulerConfiguration, schedulerName string) (*Config, error) {
	var errs field.ErrorList
	if doc.APIVersion != "" && doc.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(field.NewPath("apiVersion"), doc.APIVersion, []string{APIVersion}))
	}
	if doc.Kind != "" && doc.Kind != Kind {
		errs = append(errs, field.NotSupported(field.NewPath("kind"), doc.Kind, []string{Kind}))
	}
	c := &Config{ClientConnection: doc.ClientConnection, RecordEvents: true}
	if doc.RecordEvents != nil {
		c.RecordEvents = *doc.RecordEvents
	}
	if c.ClientConnection.QPS == 0 {
		c.ClientConnection.QPS = 50
	}
	if c.ClientConnection.Burst == 0 {
		c.ClientConnection.Burst = 100
	}
	if c.ClientConnection.QPS < 0 {
		errs = append(errs, field.Invalid(field.NewPath("clientConnection", "qps"), c.ClientConnection.QPS, "must not be negative"))
	}
	if c.ClientConnection.Burst < 0 {
		errs = append(errs, field.Invalid(field.NewPath("clientConnection", "burst"), c.ClientConnection.Burst, "must not be negative"))
	}
	c.Model, errs = resolveModel(doc.Model, field.NewPath("model"), errs)

	profiles := field.NewPath("profiles")
	if len(doc.Profiles) == 0 {
		errs = append(errs, field.Required(profiles, "at least one profile"))
		return nil, errs.ToAggregate()
	}
	seen := map[string]bool{}
	idx := -1
	for i, p := range doc.Profiles {
		if seen[p.SchedulerName] {
			errs = append(errs, field.Duplicate(profiles.Index(i).Child("schedulerName"), p.SchedulerName))
		}
		seen[p.SchedulerName] = true
		if p.SchedulerName != "" {
			for _, msg := range validation.IsDNS1123Subdomain(p.SchedulerName) {
				errs = append(errs, field.Invalid(profiles.Index(i).Child("schedulerName"), p.SchedulerName, msg))
			}
		}
		if p.SchedulerName == schedulerName || (len(doc.Profiles) == 1 && (schedulerName == "" || p.SchedulerName == "")) {
			idx = i
		}
	}
	// Every profile is validated, not just the selected one, so that a
	// broken profile is found when the file is written, not when a second
	// scheduler starts with it.
	var selected *Config
	for i := range doc.Profiles {
		pc := *c
		var perrs field.ErrorList
		resolveProfile(&pc, &doc.Profiles[i], profiles.Index(i), &perrs)
		errs = append(errs, perrs...)
		if i == idx {
			selected = &pc
		}
	}
	if len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	if selected != nil {
		selected.Model.PlanQuantile = selected.TrafficLocality.Quantile
		selected.Model.PlanEgress = selected.TrafficLocality.Egress
	}
	if selected == nil {
		names := make([]string, 0, len(doc.Profiles))
		for _, p := range doc.Profiles {
			names = append(names, p.SchedulerName)
		}
		return nil, fmt.Errorf("profiles: no profile with schedulerName %q (have %q)", schedulerName, names)
	}
	return selected, nil
}

func resolveModel(m ModelConfiguration, path *field.Path, errs field.ErrorList) (Model, field.ErrorList) {
	out := Model{MinSamples: DefaultMinSamples, RebuildInterval: DefaultRebuildInterval, WorkloadResources: m.WorkloadResources, CapacityPlan: true}
	if m.CapacityPlan != nil {
		out.CapacityPlan = *m.CapacityPlan
	}
	if m.MinSamples != nil {
		if *m.MinSamples < 1 {
			errs = append(errs, field.Invalid(path.Child("minSamples"), *m.MinSamples, "must be at least 1"))
		}
		out.MinSamples = *m.MinSamples
	}
	if m.RebuildInterval != nil {
		if d := m.RebuildInterval.Duration; d < 10*time.Millisecond || d > 5*time.Minute {
			errs = append(errs, field.Invalid(path.Child("rebuildInterval"), d.String(), "must be between 10ms and 5m"))
		}
		out.RebuildInterval = m.RebuildInterval.Duration
	}
	if out.WorkloadResources == nil {
		out.WorkloadResources = []WorkloadResource{
			{Group: "apps", Version: "v1", Resource: "deployments", Kind: "Deployment"},
			{Group: "apps", Version: "v1", Resource: "statefulsets", Kind: "StatefulSet"},
		}
	}
	for i, r := range out.WorkloadResources {
		p := path.Child("workloadResources").Index(i)
		if r.Version == "" {
			errs = append(errs, field.Required(p.Child("version"), ""))
		}
		if r.Resource == "" {
			errs = append(errs, field.Required(p.Child("resource"), ""))
		}
		if r.Kind == "" {
			errs = append(errs, field.Required(p.Child("kind"), ""))
		}
	}
	return out, errs
}

func resolveProfile(c *Config, p *Profile, path *field.Path, errs *field.ErrorList) {
	c.SchedulerName = p.SchedulerName
	c.LatencyBudget.Enabled, c.TrafficLocality.Enabled = true, true
	if p.Plugins != nil {
		pp := path.Child("plugins")
		checkSet := func(name string, set schedconfigv1.PluginSet, allowed ...string) {
			for _, kind := range []struct {
				list    []schedconfigv1.Plugin
				enabled bool
				name    string
			}{{set.Enabled, true, "enabled"}, {set.Disabled, false, "disabled"}} {
				for i, pl := range kind.list {
					fp := pp.Child(name, kind.name).Index(i)
					if pl.Weight != nil {
						*errs = append(*errs, field.Forbidden(fp.Child("weight"), "Karmada sums score plugins without weights"))
					}
					switch {
					case pl.Name == "*" && !kind.enabled:
						for _, a := range allowed {
							c.setEnabled(a, false)
						}
					case contains(allowed, pl.Name):
						c.setEnabled(pl.Name, kind.enabled)
					default:
						*errs = append(*errs, field.NotSupported(fp.Child("name"), pl.Name, allowed))
					}
				}
			}
		}
		checkSet("filter", p.Plugins.Filter, LatencyBudgetName)
		checkSet("score", p.Plugins.Score, TrafficLocalityName)
		checkSet("multiPoint", p.Plugins.MultiPoint, LatencyBudgetName, TrafficLocalityName)
		for name, set := range map[string]schedconfigv1.PluginSet{
			"preEnqueue": p.Plugins.PreEnqueue, "queueSort": p.Plugins.QueueSort, "preFilter": p.Plugins.PreFilter,
			"postFilter": p.Plugins.PostFilter, "preScore": p.Plugins.PreScore, "reserve": p.Plugins.Reserve,
			"permit": p.Plugins.Permit, "preBind": p.Plugins.PreBind, "bind": p.Plugins.Bind,
			"postBind": p.Plugins.PostBind, "placementGenerate": p.Plugins.PlacementGenerate,
			"placementScore": p.Plugins.PlacementScore,
		} {
			if len(set.Enabled)+len(set.Disabled) > 0 {
				*errs = append(*errs, field.Forbidden(pp.Child(name), "Karmada's scheduler has only filter and score extension points"))
			}
		}
	}

	var lb LatencyBudgetArgs
	var tl TrafficLocalityArgs
	seen := map[string]bool{}
	for i, pc := range p.PluginConfig {
		fp := path.Child("pluginConfig").Index(i)
		if seen[pc.Name] {
			*errs = append(*errs, field.Duplicate(fp.Child("name"), pc.Name))
			continue
		}
		seen[pc.Name] = true
		var target any
		switch pc.Name {
		case LatencyBudgetName:
			target = &lb
		case TrafficLocalityName:
			target = &tl
		default:
			*errs = append(*errs, field.NotSupported(fp.Child("name"), pc.Name, []string{LatencyBudgetName, TrafficLocalityName}))
			continue
		}
		if len(pc.Args.Raw) == 0 {
			continue
		}
		if err := yaml.UnmarshalStrict(pc.Args.Raw, target); err != nil {
			*errs = append(*errs, field.Invalid(fp.Child("args"), string(pc.Args.Raw), err.Error()))
			continue
		}
		var apiVersion, kind string
		switch a := target.(type) {
		case *LatencyBudgetArgs:
			apiVersion, kind = a.APIVersion, a.Kind
		case *TrafficLocalityArgs:
			apiVersion, kind = a.APIVersion, a.Kind
		}
		if apiVersion != "" && apiVersion != APIVersion {
			*errs = append(*errs, field.NotSupported(fp.Child("args", "apiVersion"), apiVersion, []string{APIVersion}))
		}
		if want := pc.Name + "Args"; kind != "" && kind != want {
			*errs = append(*errs, field.NotSupported(fp.Child("args", "kind"), kind, []string{want}))
		}
	}
	lbPath := path.Child("pluginConfig").Key(LatencyBudgetName).Child("args")
	tlPath := path.Child("pluginConfig").Key(TrafficLocalityName).Child("args")

	c.LatencyBudget.Quantile = DefaultBudgetQuantile
	c.LatencyBudget.RequiredFraction = DefaultRequiredPeerTrafficPercent / 100.0
	if lb.DefaultBudget != nil {
		if lb.DefaultBudget.Duration < 0 {
			*errs = append(*errs, field.Invalid(lbPath.Child("defaultBudget"), lb.DefaultBudget.Duration.String(), "must not be negative"))
		}
		c.LatencyBudget.DefaultBudget = lb.DefaultBudget.Duration
	}
	if lb.Strict != nil {
		c.LatencyBudget.Strict = *lb.Strict
	}
	if lb.RTTQuantile != nil {
		c.LatencyBudget.Quantile = parseQuantile(*lb.RTTQuantile, lbPath.Child("rttQuantile"), errs)
	}
	if lb.RequiredPeerTrafficPercent != nil {
		if v := *lb.RequiredPeerTrafficPercent; v < 0 || v > 100 {
			*errs = append(*errs, field.Invalid(lbPath.Child("requiredPeerTrafficPercent"), v, "must be between 0 and 100"))
		}
		c.LatencyBudget.RequiredFraction = float64(*lb.RequiredPeerTrafficPercent) / 100
	}

	c.TrafficLocality.Quantile = DefaultScoreQuantile
	c.TrafficLocality.CostFloor = DefaultCostFloor
	if tl.RTTQuantile != nil {
		c.TrafficLocality.Quantile = parseQuantile(*tl.RTTQuantile, tlPath.Child("rttQuantile"), errs)
	}
	if tl.CostFloor != nil {
		if *tl.CostFloor < 1 {
			*errs = append(*errs, field.Invalid(tlPath.Child("costFloor"), *tl.CostFloor, "must be at least 1"))
		}
		c.TrafficLocality.CostFloor = float64(*tl.CostFloor)
	}
	if e := tl.Egress; e != nil {
		ep := tlPath.Child("egress")
		if !(e.MillisecondsPerCostUnit > 0) || math.IsInf(e.MillisecondsPerCostUnit, 0) {
			*errs = append(*errs, field.Invalid(ep.Child("millisecondsPerCostUnit"), e.MillisecondsPerCostUnit, "must be a positive number"))
		}
		for i, r := range e.Rules {
			if !(r.CostPerGiB >= 0) || math.IsInf(r.CostPerGiB, 0) {
				*errs = append(*errs, field.Invalid(ep.Child("rules").Index(i).Child("costPerGiB"), r.CostPerGiB, "must be a non-negative number"))
			}
		}
		c.TrafficLocality.Egress = *e
	}
}

func (c *Config) setEnabled(name string, on bool) {
	switch name {
	case LatencyBudgetName:
		c.LatencyBudget.Enabled = on
	case TrafficLocalityName:
		c.TrafficLocality.Enabled = on
	}
}

func parseQuantile(s string, p *field.Path, errs *field.ErrorList) model.Quantile {
	q, ok := model.ParseQuantile(s)
	if !ok {
		*errs = append(*errs, field.NotSupported(p, s, []string{"min", "p50", "p90", "p99"}))
	}
	return q
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// EgressPrice is the price per GiB of the first rule matching from -> to
// (0 when none matches).
func EgressPrice(rules []EgressRule, from, to model.ClusterInfo) float64 {
	for _, r := range rules {
		if r.FromProvider != "" && r.FromProvider != from.Provider ||
			r.FromRegion != "" && r.FromRegion != from.Region ||
			r.ToProvider != "" && r.ToProvider != to.Provider ||
			r.ToRegion != "" && r.ToRegion != to.Region {
			continue
		}
		if r.SameRegion != nil && *r.SameRegion != (from.Region == to.Region) {
			continue
		}
		return r.CostPerGiB
	}
	return 0
}

// Milliseconds is the egress price of a byte from -> to in the score's unit
// (milliseconds of RTT a byte's price is worth); nil when there are no
// rules.
func (e EgressConfiguration) Milliseconds() func(from, to model.ClusterInfo) float64 {
	if len(e.Rules) == 0 {
		return nil
	}
	return func(from, to model.ClusterInfo) float64 {
		return EgressPrice(e.Rules, from, to) * e.MillisecondsPerCostUnit
	}
}
