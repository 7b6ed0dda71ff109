// Package addon installs flowplace on a Karmada fleet the way `karmadactl
// addons` installs Karmada's own addons: enable, disable, status and list,
// with karmadactl's flag names. Every object comes from the Helm chart
// (package charts), rendered with Helm's Go library and applied with
// server-side apply under one field manager, so `helm install` and the addon
// cannot diverge. enable also creates the TLS material: the OTLP CA, the
// estimator's serving certificate, one client identity per member (its
// Cluster.spec.id in a URI SAN, which the estimator enforces), and the
// components' client certificates towards the karmada-apiserver, signed by
// Karmada's CA from karmada-cert.
package addon

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"helm.sh/helm/v3/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// Name is the addon's name in `karmadactl addons list`.
const Name = "flowplace"

// Statuses, as karmadactl's addons report them.
const (
	StatusEnabled   = "enabled"
	StatusDisabled  = "disabled"
	StatusUnhealthy = "unhealthy"
	StatusUnknown   = "unknown"
)

// FieldManager owns every field the addon applies.
const FieldManager = "flowplace-addon"

// Defaults of the global flags, as karmadactl's.
const (
	DefaultNamespace         = "karmada-system"
	DefaultKarmadaKubeconfig = "/etc/karmada/karmada-apiserver.config"
	// KarmadaCertSecret holds Karmada's CA (ca.crt, ca.key) in the host
	// cluster, as karmadactl init and Karmada's chart create it.
	KarmadaCertSecret = "karmada-cert"
)

// GlobalOptions are karmadactl addons' global flags.
type GlobalOptions struct {
	// Namespace of Karmada's components in the host cluster (and of
	// flowplace's Leases in the karmada-apiserver).
	Namespace string
	// KubeConfig and Context select the Karmada host cluster.
	KubeConfig, Context string
	// KarmadaConfig and KarmadaContext select the karmada-apiserver.
	KarmadaConfig, KarmadaContext string
	// Cluster is the member clusters that run the agent, comma-separated;
	// empty: every member.
	Cluster string
	// MemberKubeConfig (and MemberContext for a single -C) reach the
	// members directly: status then reads the agents there, and enable
	// reads a member's kube-system UID when its Cluster has no spec.id.
	// Without it, the agents' status comes from Karmada's aggregated status.
	MemberKubeConfig, MemberContext string
	// Out receives progress lines; nil discards them.
	Out io.Writer
}

// AddFlags registers the global flags with karmadactl's names.
func (o *GlobalOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&o.Namespace, "namespace", "n", DefaultNamespace, "namespace where Karmada components are installed.")
	fs.StringVar(&o.KubeConfig, "kubeconfig", "", "Path to the host cluster kubeconfig file.")
	fs.StringVar(&o.Context, "context", "", "The name of the kubeconfig context to use.")
	fs.StringVar(&o.KarmadaConfig, "karmada-kubeconfig", DefaultKarmadaKubeconfig, "Path to the karmada control plane kubeconfig file.")
	fs.StringVar(&o.KarmadaContext, "karmada-context", "", "The name of the karmada control plane kubeconfig context to use.")
	fs.StringVarP(&o.Cluster, "cluster", "C", "", "Member clusters that run the flowplace agent, comma-separated (default: all members).")
	fs.StringVar(&o.MemberKubeConfig, "member-kubeconfig", "", "Kubeconfig of the member clusters (one context per member, named like the member; or --member-context with one -C member).")
	fs.StringVar(&o.MemberContext, "member-context", "", "Context in --member-kubeconfig of the single member given with -C.")
}

// EnableOptions are `enable`'s flags.
type EnableOptions struct {
	GlobalOptions
	// PrivateImageRegistry replaces the images' registry (global.imageRegistry).
	PrivateImageRegistry string
	// PodTimeout bounds the wait for the components to become ready.
	PodTimeout time.Duration
	// ValueFiles and SetValues are helm's -f and --set, over values.yaml.
	ValueFiles []string
	SetValues  []string
	// Now is the clock for certificates; zero: time.Now.
	Now time.Time
}

// AddFlags registers enable's flags.
func (o *EnableOptions) AddFlags(fs *pflag.FlagSet) {
	o.GlobalOptions.AddFlags(fs)
	fs.StringVar(&o.PrivateImageRegistry, "private-image-registry", "", "Private image registry where to pull flowplace's images from (global.imageRegistry).")
	o.PodTimeout = 120 * time.Second
	fs.Var((*secondsOrDuration)(&o.PodTimeout), "pod-timeout", "Wait this long for the components to become ready (seconds, as karmadactl, or a duration).")
	fs.StringArrayVarP(&o.ValueFiles, "values", "f", nil, "Chart values from a YAML file (repeatable; as helm -f).")
	fs.StringArrayVar(&o.SetValues, "set", nil, "Chart values on the command line, key1=val1,key2=val2 (repeatable; as helm --set).")
}

// DisableOptions are `disable`'s flags.
type DisableOptions struct {
	GlobalOptions
	// Purge also deletes flowplace's CRDs, and with them every
	// ClusterLatency and WorkloadTraffic.
	Purge bool
	// PodTimeout bounds the wait for the objects to be gone.
	PodTimeout time.Duration
}

// AddFlags registers disable's flags.
func (o *DisableOptions) AddFlags(fs *pflag.FlagSet) {
	o.GlobalOptions.AddFlags(fs)
	fs.BoolVar(&o.Purge, "purge", false, "Also delete flowplace's CRDs and every object in them.")
	o.PodTimeout = 120 * time.Second
	fs.Var((*secondsOrDuration)(&o.PodTimeout), "pod-timeout", "Wait this long for the objects to be deleted (seconds, as karmadactl, or a duration).")
}

// userValues reads -f files then --set, in order, as helm does.
func userValues(files, sets []string) (map[string]any, error) {
	out := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("values file: %w", err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("values file %s: %w", f, err)
		}
		out = mergeMaps(out, v)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, out); err != nil {
			return nil, fmt.Errorf("--set %q: %w", s, err)
		}
	}
	return out, nil
}

// mergeMaps returns b over a, recursively on maps (helm's -f semantics).
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bm, ok := v.(map[string]any); ok {
			if am, ok := out[k].(map[string]any); ok {
				out[k] = mergeMaps(am, bm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// clusterList splits -C.
func clusterList(s string) []string {
	var out []string
	for _, c := range strings.Split(s, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

func (o *GlobalOptions) logf(format string, args ...any) {
	if o.Out != nil {
		fmt.Fprintf(o.Out, format+"\n", args...)
	}
}

// secondsOrDuration is --pod-timeout: karmadactl takes seconds ("120"); a
// Go duration ("2m") is accepted too.
type secondsOrDuration time.Duration

func (d *secondsOrDuration) String() string { return time.Duration(*d).String() }
func (d *secondsOrDuration) Type() string   { return "duration" }
func (d *secondsOrDuration) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 {
			return fmt.Errorf("%q: want a positive number of seconds", s)
		}
		*d = secondsOrDuration(time.Duration(n) * time.Second)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return fmt.Errorf("%q: want seconds (120) or a positive duration (2m)", s)
	}
	*d = secondsOrDuration(v)
	return nil
}
