package estimator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // agents and collectors may compress
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/estimator/otlpwire"
)

// The OTLP metrics service, as named in
// opentelemetry/proto/collector/metrics/v1/metrics_service.proto.
const (
	metricsServiceName = "opentelemetry.proto.collector.metrics.v1.MetricsService"
	exportMethod       = "Export"
)

// rawRequest carries an ExportMetricsServiceRequest's bytes undecoded, and
// exportResponse an ExportMetricsServiceResponse: the service is registered
// with a codec that passes bytes through, so that the request is decoded
// once, by otlpwire, without the generated structs.
type rawRequest struct {
	b   []byte
	buf mem.Buffer
}

type exportResponse struct {
	rejected int64
	message  string
}

// marshal encodes ExportMetricsServiceResponse{partial_success(1):
// {rejected_data_points(1), error_message(2)}}; an empty message when all
// was accepted.
func (r *exportResponse) marshal() []byte {
	if r.rejected == 0 && r.message == "" {
		return nil
	}
	var ps []byte
	if r.rejected != 0 {
		ps = protowire.AppendTag(ps, 1, protowire.VarintType)
		ps = protowire.AppendVarint(ps, uint64(r.rejected))
	}
	if r.message != "" {
		ps = protowire.AppendTag(ps, 2, protowire.BytesType)
		ps = protowire.AppendString(ps, r.message)
	}
	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(out, ps)
}

// rawCodec is the "proto" codec for this server: raw bytes for our own
// message types, the protobuf library for anything else (gRPC internals).
// It is a CodecV2 so that a request is gathered into a pooled buffer (and
// given back after ingestion) instead of a fresh allocation per request.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	var b []byte
	var err error
	switch m := v.(type) {
	case *exportResponse:
		b = m.marshal()
	case proto.Message:
		b, err = proto.Marshal(m)
	default:
		err = fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *rawRequest:
		// gRPC frees data after Unmarshal returns; the materialized copy
		// is ours until rawRequest.free.
		m.buf = data.MaterializeToBuffer(mem.DefaultBufferPool())
		m.b = m.buf.ReadOnlyData()
		return nil
	case proto.Message:
		return proto.Unmarshal(data.Materialize(), m)
	}
	return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
}

func (r *rawRequest) free() {
	if r.buf != nil {
		r.buf.Free()
		r.buf, r.b = nil, nil
	}
}

// metricsServer is the handler type of the service description.
type metricsServer interface {
	export(ctx context.Context, req *rawRequest) (*exportResponse, error)
}

var metricsServiceDesc = grpc.ServiceDesc{
	ServiceName: metricsServiceName,
	HandlerType: (*metricsServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: exportMethod,
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			req := new(rawRequest)
			if err := dec(req); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(metricsServer).export(ctx, req)
			}
			info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/" + metricsServiceName + "/" + exportMethod}
			return interceptor(ctx, req, info, func(ctx context.Context, r any) (any, error) {
				return srv.(metricsServer).export(ctx, r.(*rawRequest))
			})
		},
	}},
	Metadata: "opentelemetry/proto/collector/metrics/v1/metrics_service.proto",
}

// receiver implements the service on an Aggregator.
type receiver struct {
	agg     *aggregate.Aggregator
	metrics *selfMetrics
	// identities: with mutual TLS, each sender reports only the cluster its
	// certificate names; allowUnbound also takes certificates naming none.
	identities, allowUnbound bool
}

// ClusterIdentityPrefix starts the URI SAN of an agent's client certificate
// that binds it to one member cluster: urn:flowplace:cluster:<kube-system UID>.
const ClusterIdentityPrefix = "urn:flowplace:cluster:"

// ClusterIdentity is the cluster UID a verified client certificate is bound
// to, or "".
func ClusterIdentity(cert *x509.Certificate) string {
	for _, u := range cert.URIs {
		if uid, ok := strings.CutPrefix(u.String(), ClusterIdentityPrefix); ok && uid != "" {
			return uid
		}
	}
	return ""
}

// senderCluster is the cluster the request's sender may report, "" for any.
func (r *receiver) senderCluster(ctx context.Context) (string, error) {
	if !r.identities {
		return "", nil
	}
	p, ok := peer.FromContext(ctx)
	var uid string
	if ok {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.VerifiedChains) > 0 && len(ti.State.VerifiedChains[0]) > 0 {
			uid = ClusterIdentity(ti.State.VerifiedChains[0][0])
		}
	}
	if uid == "" && !r.allowUnbound {
		r.metrics.unbound.Add(1)
		// Not retryable: the sender must be given a bound certificate.
		return "", status.Error(codes.PermissionDenied, "client certificate is bound to no cluster: it needs a URI SAN "+ClusterIdentityPrefix+"<cluster UID> (or run the estimator with --otlp-allow-unbound-clients for a relay)")
	}
	return uid, nil
}

func (r *receiver) export(ctx context.Context, req *rawRequest) (*exportResponse, error) {
	cluster, err := r.senderCluster(ctx)
	if err != nil {
		req.free()
		return nil, err
	}
	res, err := r.agg.IngestFrom(req.b, cluster)
	req.free() // nothing of the request is referenced after Ingest
	if err != nil {
		r.metrics.malformed.Add(1)
		if errors.Is(err, otlpwire.ErrMalformed) {
			// InvalidArgument is not retryable in OTLP: the sender drops it.
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	if res.Rejected > 0 {
		klog.V(4).InfoS("Rejected OTLP data points", "accepted", res.Accepted, "rejected", res.Rejected, "reasons", res.Message())
	}
	return &exportResponse{rejected: res.Rejected, message: res.Message()}, nil
}

// ServerTLS configures TLS on the OTLP listener. Empty CertFile means
// plaintext; ClientCAFile turns on mutual TLS (client certificates are
// required and verified against it).
type ServerTLS struct {
	CertFile, KeyFile string
	ClientCAFile      string
	// AllowUnboundClients, with mutual TLS, also receives client
	// certificates that name no cluster (ClusterIdentity), from any
	// cluster: for a relay such as an OpenTelemetry Collector, which must
	// then be trusted as much as every agent behind it. Otherwise each
	// certificate may report only its own cluster.
	AllowUnboundClients bool
}

// Validate checks the combination of files without reading them.
func (t ServerTLS) Validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		return errors.New("otlp TLS: need both a certificate and a key file")
	}
	if t.ClientCAFile != "" && t.CertFile == "" {
		return errors.New("otlp mTLS: a client CA needs a server certificate and key")
	}
	if t.AllowUnboundClients && t.ClientCAFile == "" {
		return errors.New("otlp mTLS: allowing unbound client certificates needs a client CA")
	}
	return nil
}

func (t ServerTLS) credentials() (credentials.TransportCredentials, error) {
	if t.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("otlp TLS: load server certificate: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if t.ClientCAFile != "" {
		pem, err := os.ReadFile(t.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("otlp mTLS: read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("otlp mTLS: %s holds no PEM certificate", t.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}

// MaxMessageBytesLimit bounds MaxMessageBytes: up to 64 requests are
// decoded at once (MaxConcurrentStreams), so in-flight memory is at most 64
// times it, 4 GiB at this limit.
const MaxMessageBytesLimit = 64 << 20

// NewGRPCServer returns a gRPC server serving the OTLP MetricsService on
// agg. maxMessageBytes bounds one request (and with it the memory a single
// hostile request can claim); <= 0 means 16 MiB, at most
// MaxMessageBytesLimit. meter, when not nil, receives the receiver's and
// the aggregator's metrics, as an Estimator's (its model gauges stay empty:
// only a publishing leader has a model).
func NewGRPCServer(agg *aggregate.Aggregator, t ServerTLS, maxMessageBytes int, meter metric.Meter) (*grpc.Server, error) {
	m := noopMetrics()
	if meter != nil {
		var err error
		if m, err = newSelfMetrics(meter, agg); err != nil {
			return nil, err
		}
	}
	return newGRPCServer(agg, t, maxMessageBytes, m)
}

func newGRPCServer(agg *aggregate.Aggregator, t ServerTLS, maxMessageBytes int, m *selfMetrics) (*grpc.Server, error) {
	if maxMessageBytes <= 0 {
		maxMessageBytes = 16 << 20
	}
	if maxMessageBytes > MaxMessageBytesLimit {
		return nil, fmt.Errorf("estimator: OTLP message limit %d above %d", maxMessageBytes, MaxMessageBytesLimit)
	}
	if m == nil {
		m = noopMetrics()
	}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(maxMessageBytes),
		// Bounds the requests decoded at once, so memory in flight is at
		// most this many times maxMessageBytes.
		grpc.MaxConcurrentStreams(64),
	}
	creds, err := t.credentials()
	if err != nil {
		return nil, err
	}
	if creds != nil {
		opts = append(opts, grpc.Creds(creds))
	}
	s := grpc.NewServer(opts...)
	s.RegisterService(&metricsServiceDesc, &receiver{agg: agg, metrics: m,
		identities: t.ClientCAFile != "", allowUnbound: t.AllowUnboundClients})
	return s, nil
}
