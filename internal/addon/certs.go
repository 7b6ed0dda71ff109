package addon

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/flowplace/flowplace/estimator"
)

// Certificate lifetimes. Reused certificates are renewed once less than
// renewBefore of their life is left, on the next enable.
const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	renewBefore  = 30 * 24 * time.Hour
)

// authority is a CA that signs certificates: the OTLP CA (flowplace's own)
// or Karmada's (karmada-cert), for the components' client certificates.
type authority struct {
	cert    *x509.Certificate
	key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

func newAuthority(cn string, now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"flowplace"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("creating CA %s: %w", cn, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return parseAuthority(pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", kder))
}

// parseAuthority reads a CA certificate and its key (PKCS#1, PKCS#8 or EC).
func parseAuthority(certPEM, keyPEM []byte) (*authority, error) {
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certificate %q is not a CA", cert.Subject.CommonName)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("the key does not belong to CA %q", cert.Subject.CommonName)
	}
	return &authority{cert: cert, key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// leafRequest describes a certificate to issue or to keep.
type leafRequest struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	URIs         []string
	Server       bool // serverAuth, else clientAuth
}

// issue signs a new leaf for req.
func (a *authority) issue(req leafRequest, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	uris, err := parseURIs(req.URIs)
	if err != nil {
		return nil, nil, err
	}
	usage := x509.ExtKeyUsageClientAuth
	if req.Server {
		usage = x509.ExtKeyUsageServerAuth
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		DNSNames:     req.DNSNames,
		URIs:         uris,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing %s: %w", req.CommonName, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", kder), nil
}

// keepOrIssue returns the installed certificate and key when they still
// fit req (same CA, subject, names, usage; not due for renewal), so that a
// second enable changes nothing; else a new pair.
func (a *authority) keepOrIssue(req leafRequest, certPEM, keyPEM []byte, now time.Time) (cert, key []byte, err error) {
	if a.fits(req, certPEM, keyPEM, now) {
		return certPEM, keyPEM, nil
	}
	return a.issue(req, now)
}

func (a *authority) fits(req leafRequest, certPEM, keyPEM []byte, now time.Time) bool {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return false
	}
	c, err := parseCert(certPEM)
	if err != nil || c.CheckSignatureFrom(a.cert) != nil {
		return false
	}
	k, err := parseKey(keyPEM)
	if err != nil || !publicKeysEqual(c.PublicKey, k.Public()) {
		return false
	}
	if now.Before(c.NotBefore) || now.Add(renewBefore).After(c.NotAfter) {
		return false
	}
	if c.Subject.CommonName != req.CommonName || !equalStrings(c.Subject.Organization, req.Organization) || !equalStrings(c.DNSNames, req.DNSNames) {
		return false
	}
	var uris []string
	for _, u := range c.URIs {
		uris = append(uris, u.String())
	}
	if !equalStrings(uris, req.URIs) {
		return false
	}
	want := x509.ExtKeyUsageClientAuth
	if req.Server {
		want = x509.ExtKeyUsageServerAuth
	}
	return len(c.ExtKeyUsage) == 1 && c.ExtKeyUsage[0] == want
}

// clusterIdentityURI is the URI SAN the estimator binds a client to.
func clusterIdentityURI(clusterID string) string { return estimator.ClusterIdentityPrefix + clusterID }

func parseURIs(in []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range in {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("URI SAN %q: %w", s, err)
		}
		out = append(out, u)
	}
	return out, nil
}

func parseCert(p []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(p)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKey(p []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(p)
	if b == nil {
		return nil, errors.New("no PEM key")
	}
	if k, err := x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s, nil
		}
		return nil, errors.New("PKCS#8 key is not a signer")
	}
	if k, err := x509.ParseECPrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(b.Bytes); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("unsupported %s key", b.Type)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	switch k := a.(type) {
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case *rsa.PublicKey:
		return k.Equal(b)
	}
	return false
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
