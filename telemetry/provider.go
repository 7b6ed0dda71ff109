package telemetry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	"google.golang.org/grpc/credentials"
)

// OTLPConfig configures the OTLP gRPC metric exporter.
type OTLPConfig struct {
	// Endpoint is host:port of an OTLP gRPC receiver (the estimator or a
	// collector). Empty disables OTLP export.
	Endpoint string
	// Insecure sends without TLS.
	Insecure bool
	// CAFile verifies the receiver; empty uses the system roots.
	CAFile string
	// CertFile and KeyFile present a client certificate (mTLS).
	CertFile, KeyFile string
	// ServerName overrides the name checked in the receiver's certificate.
	ServerName string
	// Headers are sent with every export (e.g. an authorization token).
	Headers map[string]string
	// Interval between exports; Timeout for one export.
	Interval, Timeout time.Duration
}

// Config configures the meter provider.
type Config struct {
	// Resource identifies the reporter: k8s.cluster.uid, k8s.node.name, ...
	Resource []attribute.KeyValue
	OTLP     OTLPConfig
	// Prometheus enables the /metrics handler.
	Prometheus bool
	// MaxSeries is also applied as the SDK's cardinality limit per
	// instrument; <= 0 means DefaultMaxSeries.
	MaxSeries int
	// CardinalityLimit, when > 0, is the SDK's limit of series per
	// instrument instead (the estimator's, whose model metrics have their
	// own bounds); beyond it the SDK folds series into one marked
	// otel.metric.overflow.
	CardinalityLimit int
}

// Provider is a configured meter provider with its exporters.
type Provider struct {
	*sdkmetric.MeterProvider
	prometheus http.Handler
	gatherer   prometheus.Gatherer
}

// Validate checks the configuration without side effects.
func (c *Config) Validate() error {
	o := c.OTLP
	if o.Endpoint != "" {
		if _, _, err := splitHostPort(o.Endpoint); err != nil {
			return fmt.Errorf("otlp endpoint %q: want host:port: %w", o.Endpoint, err)
		}
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("otlp client certificate: need both a certificate and a key file")
	}
	if o.Insecure && (o.CAFile != "" || o.CertFile != "") {
		return errors.New("otlp: --otlp-insecure contradicts TLS files")
	}
	if o.Interval < 0 || o.Timeout < 0 {
		return errors.New("otlp: interval and timeout must not be negative")
	}
	for k := range o.Headers {
		if k == "" {
			return errors.New("otlp header with an empty name")
		}
	}
	return nil
}

func splitHostPort(hp string) (string, string, error) {
	u, err := url.Parse("//" + hp)
	if err != nil {
		return "", "", err
	}
	if u.Hostname() == "" || u.Port() == "" {
		return "", "", errors.New("missing host or port")
	}
	return u.Hostname(), u.Port(), nil
}

// NewProvider builds the meter provider: the RTT histogram uses OTel's
// base-2 exponential aggregation (at least 8 buckets per power of two over
// 50 µs..2 s, i.e. quantiles within ~4.5%), exported over OTLP gRPC and/or
// Prometheus.
func NewProvider(ctx context.Context, cfg Config) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	maxSeries := cfg.MaxSeries
	if maxSeries <= 0 {
		maxSeries = DefaultMaxSeries
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(cfg.Resource...))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	limit := 2*maxSeries + 1 // overflow, retransmit and direction variants per series
	if cfg.CardinalityLimit > 0 {
		limit = cfg.CardinalityLimit
	}
	opts := []sdkmetric.Option{
		sdkmetric.WithResource(res),
		sdkmetric.WithCardinalityLimit(limit),
		sdkmetric.WithView(sdkmetric.NewView(
			sdkmetric.Instrument{Name: MetricRTT},
			sdkmetric.Stream{Aggregation: sdkmetric.AggregationBase2ExponentialHistogram{MaxSize: 160, MaxScale: 20}},
		)),
	}
	p := &Provider{}
	var counted *countingExporter
	if cfg.OTLP.Endpoint != "" {
		exp, err := newOTLPExporter(ctx, cfg.OTLP)
		if err != nil {
			return nil, err
		}
		var ropts []sdkmetric.PeriodicReaderOption
		if cfg.OTLP.Interval > 0 {
			ropts = append(ropts, sdkmetric.WithInterval(cfg.OTLP.Interval))
		}
		if cfg.OTLP.Timeout > 0 {
			ropts = append(ropts, sdkmetric.WithTimeout(cfg.OTLP.Timeout))
		}
		counted = &countingExporter{Exporter: exp}
		opts = append(opts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(counted, ropts...)))
	}
	if cfg.Prometheus {
		reg := prometheus.NewRegistry()
		exp, err := otelprom.New(
			otelprom.WithRegisterer(reg),
			// The reporter's identity as labels on every series, so a
			// scrape needs no join with target_info.
			otelprom.WithResourceAsConstantLabels(attribute.NewAllowKeysFilter(AttrClusterUID, AttrClusterName, AttrNodeName)),
		)
		if err != nil {
			return nil, fmt.Errorf("prometheus exporter: %w", err)
		}
		opts = append(opts, sdkmetric.WithReader(exp))
		p.prometheus = promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
		p.gatherer = reg
	}
	p.MeterProvider = sdkmetric.NewMeterProvider(opts...)
	if counted != nil {
		if err := counted.register(p.Meter()); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Gatherer is what PrometheusHandler serves; nil unless Config.Prometheus.
func (p *Provider) Gatherer() prometheus.Gatherer { return p.gatherer }

// countingExporter counts OTLP exports by outcome: the SDK only logs a
// failed export, and a dashboard has to show that an agent's numbers are
// not reaching the estimator.
type countingExporter struct {
	sdkmetric.Exporter
	ok, failed atomic.Int64
}

func (e *countingExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	err := e.Exporter.Export(ctx, rm)
	if err != nil {
		e.failed.Add(1)
	} else {
		e.ok.Add(1)
	}
	return err
}

func (e *countingExporter) register(m metric.Meter) error {
	c, err := m.Int64ObservableCounter(MetricOTLPExports, metric.WithUnit(UnitExports),
		metric.WithDescription("OTLP export requests, by outcome (ok, error: after the exporter's retries)"))
	if err != nil {
		return fmt.Errorf("create %s: %w", MetricOTLPExports, err)
	}
	ok := metric.WithAttributes(AttrExportOutcome.String("ok"))
	failed := metric.WithAttributes(AttrExportOutcome.String("error"))
	_, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		o.ObserveInt64(c, e.ok.Load(), ok)
		o.ObserveInt64(c, e.failed.Load(), failed)
		return nil
	}, c)
	if err != nil {
		return fmt.Errorf("register %s: %w", MetricOTLPExports, err)
	}
	return nil
}

// Meter is the agent's meter.
func (p *Provider) Meter() metric.Meter { return p.MeterProvider.Meter(ScopeName) }

// PrometheusHandler serves /metrics; nil unless Config.Prometheus.
func (p *Provider) PrometheusHandler() http.Handler { return p.prometheus }

func newOTLPExporter(ctx context.Context, c OTLPConfig) (sdkmetric.Exporter, error) {
	opts := []otlpmetricgrpc.Option{
		otlpmetricgrpc.WithEndpoint(c.Endpoint),
		// Retries with backoff when the receiver is down; the data stays
		// cumulative, so nothing piles up in memory meanwhile.
		otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: true, InitialInterval: time.Second, MaxInterval: 30 * time.Second, MaxElapsedTime: time.Minute}),
	}
	if len(c.Headers) > 0 {
		opts = append(opts, otlpmetricgrpc.WithHeaders(c.Headers))
	}
	if c.Insecure {
		opts = append(opts, otlpmetricgrpc.WithInsecure())
	} else {
		tc, err := ClientTLS(c.CAFile, c.CertFile, c.KeyFile, c.ServerName)
		if err != nil {
			return nil, err
		}
		opts = append(opts, otlpmetricgrpc.WithTLSCredentials(credentials.NewTLS(tc)))
	}
	exp, err := otlpmetricgrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("otlp exporter for %s: %w", c.Endpoint, err)
	}
	return exp, nil
}

// ClientTLS builds a TLS client configuration from PEM files.
func ClientTLS(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
		}
		tc.RootCAs = pool
	}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// NewPrometheusMeterProvider is a meter provider whose metrics are
// gathered by reg: for a component that already serves a Prometheus
// registry (Karmada's scheduler serves controller-runtime's), so that
// flowplace's metrics appear on its /metrics.
func NewPrometheusMeterProvider(reg prometheus.Registerer) (*sdkmetric.MeterProvider, error) {
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("prometheus exporter: %w", err)
	}
	return sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp)), nil
}
