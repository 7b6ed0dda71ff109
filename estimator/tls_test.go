package estimator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/telemetry"
)

// writeCert issues a certificate signed by parent (self-signed if nil) and
// writes cert and key PEM files into dir.
func writeCert(t *testing.T, dir, name string, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, uris ...string) (*x509.Certificate, *ecdsa.PrivateKey, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: isCA, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key, certFile, keyFile
}

// TestMutualTLS: with a client CA, agents with a certificate from it that
// names their cluster are received; agents without a certificate, without
// TLS, or with one bound to no cluster are refused; an agent bound to one
// cluster cannot report another (no placement poisoning), unless the server
// allows unbound relays, and then only unbound ones speak for any cluster.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey, caFile, _ := writeCert(t, dir, "ca", true, nil, nil)
	_, _, srvCert, srvKey := writeCert(t, dir, "server", false, ca, caKey)
	_, _, cliCert, cliKey := writeCert(t, dir, "agent-a", false, ca, caKey, ClusterIdentityPrefix+uidA)
	_, _, otherCert, otherKey := writeCert(t, dir, "agent-b", false, ca, caKey, ClusterIdentityPrefix+uidB)
	_, _, relayCert, relayKey := writeCert(t, dir, "relay", false, ca, caKey)

	serve := func(allowUnbound bool) (*aggregate.Aggregator, string) {
		agg := aggregate.NewAggregator(aggregate.AggregatorConfig{})
		srv, err := NewGRPCServer(agg, ServerTLS{CertFile: srvCert, KeyFile: srvKey, ClientCAFile: caFile, AllowUnboundClients: allowUnbound}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(srv.Stop)
		return agg, ln.Addr().String()
	}
	// export reports web's traffic as cluster uidA.
	export := func(addr string, o telemetry.OTLPConfig) error {
		o.Endpoint, o.Interval, o.Timeout = addr, time.Hour, 2*time.Second
		p, err := telemetry.NewProvider(context.Background(), telemetry.Config{
			Resource: []attribute.KeyValue{telemetry.AttrClusterUID.String(uidA)}, OTLP: o,
		})
		if err != nil {
			return err
		}
		rec, err := telemetry.NewRecorder(p.Meter(), 0)
		if err != nil {
			t.Fatal(err)
		}
		rec.Record(context.Background(), webToDB, telemetry.Delta{BytesSent: 10})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		err = p.ForceFlush(ctx)
		_ = p.Shutdown(ctx)
		return err
	}
	foreign := func(agg *aggregate.Aggregator) int64 { return agg.RejectedByReason()[aggregate.ReasonForeignCluster] }

	agg, addr := serve(false)
	if err := export(addr, telemetry.OTLPConfig{CAFile: caFile, CertFile: cliCert, KeyFile: cliKey}); err != nil {
		t.Fatalf("agent of cluster A with its certificate: %v", err)
	}
	got := agg.Stats().Ingested // the flush and the final export at shutdown
	if got == 0 {
		t.Fatal("nothing ingested from the agent with a client certificate")
	}
	if err := export(addr, telemetry.OTLPConfig{CAFile: caFile}); err == nil {
		t.Error("agent without a client certificate was received")
	}
	if err := export(addr, telemetry.OTLPConfig{Insecure: true}); err == nil {
		t.Error("plaintext agent was received")
	}
	err := export(addr, telemetry.OTLPConfig{CAFile: caFile, CertFile: relayCert, KeyFile: relayKey})
	if err == nil || !strings.Contains(err.Error(), "bound to no cluster") {
		t.Errorf("a certificate bound to no cluster: %v, want a refusal saying it is bound to no cluster", err)
	}
	// Cluster B's agent claiming to be A: its points are rejected, counted.
	_ = export(addr, telemetry.OTLPConfig{CAFile: caFile, CertFile: otherCert, KeyFile: otherKey})
	if n := agg.Stats().Ingested; n != got {
		t.Errorf("ingested %d points after refused exports, want still %d", n, got)
	}
	if foreign(agg) == 0 {
		t.Error("B's points about A were not counted as foreign_cluster")
	}

	// A relay (OpenTelemetry Collector) when the server allows it.
	agg, addr = serve(true)
	if err := export(addr, telemetry.OTLPConfig{CAFile: caFile, CertFile: relayCert, KeyFile: relayKey}); err != nil || agg.Stats().Ingested == 0 {
		t.Errorf("unbound relay with --otlp-allow-unbound-clients: %v, ingested %d", err, agg.Stats().Ingested)
	}
	got = agg.Stats().Ingested
	_ = export(addr, telemetry.OTLPConfig{CAFile: caFile, CertFile: otherCert, KeyFile: otherKey})
	if n := agg.Stats().Ingested; n != got || foreign(agg) == 0 {
		t.Errorf("a bound agent still may not speak for another cluster when relays are allowed: ingested %d (was %d), foreign %d", n, got, foreign(agg))
	}
}

func TestServerTLSValidate(t *testing.T) {
	for _, bad := range []ServerTLS{{CertFile: "c"}, {KeyFile: "k"}, {ClientCAFile: "ca"}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := NewGRPCServer(aggregate.NewAggregator(aggregate.AggregatorConfig{}), ServerTLS{CertFile: "/nonexistent", KeyFile: "/nonexistent"}, 0, nil); err == nil {
		t.Error("missing certificate files accepted")
	}
}
