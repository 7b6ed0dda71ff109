// Package runtime wires the plugins for a scheduler process: it finds and
// loads the profile config, connects to the Karmada API server, starts the
// informer-backed model and creates both plugins over it, once per process.
//
// It lives in the root module (tested in CI) so that the Karmada adapter in
// the nested module stays a thin type conversion. Karmada's plugin factories
// take no arguments, so the settings come from the process: the
// --scheduler-name, --kubeconfig and --master flags the karmada-scheduler
// was started with, and FLOWPLACE_SCHEDULER_CONFIG.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/events"
	"github.com/flowplace/flowplace/scheduler-plugin/latencybudget"
	"github.com/flowplace/flowplace/scheduler-plugin/source"
	"github.com/flowplace/flowplace/scheduler-plugin/trafficlocality"
	"github.com/flowplace/flowplace/telemetry"
)

const (
	// ConfigEnv names the profile config file.
	ConfigEnv = "FLOWPLACE_SCHEDULER_CONFIG"
	// DefaultConfigPath is read when ConfigEnv is unset; when it does not
	// exist either, the defaults apply.
	DefaultConfigPath = "/etc/flowplace/scheduler-config.yaml"
	// DefaultSchedulerName is karmada-scheduler's --scheduler-name default.
	DefaultSchedulerName = "default-scheduler"
	// SyncTimeout bounds the wait for the informer caches at start. Past
	// it the scheduler runs anyway: the plugins fail open / score neutral
	// until the model fills in.
	SyncTimeout = 30 * time.Second
)

// Options say where the settings come from.
type Options struct {
	ConfigPath string
	// ConfigRequired is set when the path was given explicitly: a missing
	// file is then an error rather than "use defaults".
	ConfigRequired bool
	SchedulerName  string
	Kubeconfig     string
	Master         string
	// MeterProvider receives the decision metrics; nil means OTel's
	// global provider (which the scheduler binary sets to its Prometheus
	// registry, see scheduler-plugin/karmada).
	MeterProvider metric.MeterProvider
}

// OptionsFrom reads the process's flags and environment.
func OptionsFrom(args []string, getenv func(string) string) Options {
	o := Options{ConfigPath: DefaultConfigPath, SchedulerName: DefaultSchedulerName}
	if p := getenv(ConfigEnv); p != "" {
		o.ConfigPath, o.ConfigRequired = p, true
	}
	if v, ok := FlagValue(args, "scheduler-name"); ok {
		o.SchedulerName = v
	}
	o.Kubeconfig, _ = FlagValue(args, "kubeconfig")
	o.Master, _ = FlagValue(args, "master")
	return o
}

// FlagValue finds --name=value, --name value, -name=value or -name value
// in args (pflag spellings), the last occurrence winning as with pflag.
func FlagValue(args []string, name string) (string, bool) {
	var val string
	var found bool
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		trimmed := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if trimmed == a {
			continue
		}
		switch {
		case strings.HasPrefix(trimmed, name+"="):
			val, found = strings.TrimPrefix(trimmed, name+"="), true
		case trimmed == name && i+1 < len(args):
			val, found = args[i+1], true
			i++
		}
	}
	return val, found
}

// LoadConfig resolves the profile for o.
func LoadConfig(o Options) (*config.Config, error) {
	c, err := config.Load(o.ConfigPath, o.SchedulerName)
	if err != nil && !o.ConfigRequired && errors.Is(err, fs.ErrNotExist) {
		klog.InfoS("flowplace: no scheduler config file, using defaults", "path", o.ConfigPath)
		c = config.Default()
		c.SchedulerName = o.SchedulerName
		return c, nil
	}
	return c, err
}

// Runtime is the process-wide state shared by both plugins.
type Runtime struct {
	Config          *config.Config
	Source          *source.Source
	LatencyBudget   *latencybudget.Plugin
	TrafficLocality *trafficlocality.Plugin
	// Events records each scheduling attempt's verdicts in the decision
	// metrics and, when recordEvents is true, as an Event on the binding.
	Events *events.Recorder
}

// New loads the config, connects and starts the model (stopped with ctx).
func New(ctx context.Context, o Options) (*Runtime, error) {
	c, err := LoadConfig(o)
	if err != nil {
		return nil, err
	}
	kubeconfig := c.ClientConnection.Kubeconfig
	if kubeconfig == "" {
		kubeconfig = o.Kubeconfig
	}
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	// BuildConfigFromFlags falls back to in-cluster config when both are empty.
	rc, err := clientcmd.BuildConfigFromFlags(o.Master, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("flowplace: Karmada API server config (kubeconfig %q): %w", kubeconfig, err)
	}
	rc.QPS, rc.Burst = c.ClientConnection.QPS, int(c.ClientConnection.Burst)
	if c.ClientConnection.ContentType != "" {
		rc.ContentType = c.ClientConnection.ContentType
	}
	rc.UserAgent = "flowplace-scheduler-plugins"
	src, err := source.New(rc, c.Model)
	if err != nil {
		return nil, err
	}
	src.Start(ctx)
	syncCtx, cancel := context.WithTimeout(ctx, SyncTimeout)
	defer cancel()
	if err := src.WaitForSync(syncCtx); err != nil {
		// Not fatal: flowplace's CRDs may be installed after the scheduler.
		klog.ErrorS(err, "flowplace: model not synced; plugins are neutral until it is")
	}
	rt := &Runtime{
		Config:          c,
		Source:          src,
		LatencyBudget:   latencybudget.New(src, c.LatencyBudget, nil),
		TrafficLocality: trafficlocality.New(src, c.TrafficLocality, nil),
	}
	var rec record.EventRecorder
	if c.RecordEvents {
		cs, err := kubernetes.NewForConfig(rc)
		if err != nil {
			return nil, fmt.Errorf("flowplace: client for Events: %w", err)
		}
		// Same broadcaster setup as Kubernetes components: the sink
		// correlates and rate-limits repeated Events per object.
		b := record.NewBroadcaster(record.WithContext(ctx))
		b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
		go func() {
			<-ctx.Done()
			b.Shutdown()
		}()
		rec = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: c.SchedulerName})
	}
	mp := o.MeterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if rt.Events, err = events.New(rec, src.BindingUID, nil, mp.Meter(telemetry.ScopeScheduler)); err != nil {
		return nil, fmt.Errorf("flowplace: decision metrics: %w", err)
	}
	go rt.Events.Run(ctx)
	klog.InfoS("flowplace plugins ready", "schedulerName", c.SchedulerName,
		"latencyBudget", c.LatencyBudget.Enabled, "trafficLocality", c.TrafficLocality.Enabled, "events", c.RecordEvents,
		"clusters", src.Snapshot().NumClusters(), "workloads", src.Snapshot().NumWorkloads())
	return rt, nil
}

var (
	once   sync.Once
	shared *Runtime
	errGet error
)

// Get returns the process's Runtime, creating it on the first call from
// os.Args and the environment. Both plugin factories call it, so the model
// and its informers exist once.
func Get() (*Runtime, error) {
	once.Do(func() {
		shared, errGet = New(context.Background(), OptionsFrom(os.Args[1:], os.Getenv))
	})
	return shared, errGet
}
