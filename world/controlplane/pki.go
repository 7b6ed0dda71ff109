package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// clientCA issues the client certificates of a cluster with nodes: kubelets
// (system:node:<name> in system:nodes, which the Node authorizer needs),
// kube-proxy, the controller manager and the scheduler, and the API server's
// own certificate towards the kubelets. Static tokens cannot do this: the
// API server reads its token file once, before any node exists.
type clientCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CertPEM []byte
	File    string // CertPEM on disk, for --client-ca-file and the kubelets
}

func newClientCA(dir string) (*clientCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("controlplane: client CA key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flowplace-world-client-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("controlplane: client CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("controlplane: client CA certificate: %w", err)
	}
	ca := &clientCA{cert: cert, key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.File = filepath.Join(dir, "client-ca.crt")
	if err := os.WriteFile(ca.File, ca.CertPEM, 0o644); err != nil {
		return nil, fmt.Errorf("controlplane: writing client CA: %w", err)
	}
	return ca, nil
}

// issue returns a client certificate and key for user in groups.
func (ca *clientCA) issue(user string, groups ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("controlplane: key for %s: %w", user, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("controlplane: certificate for %s: %w", user, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// writeKeyPair writes an issued certificate and key as <base>.crt and <base>.key.
func (ca *clientCA) writeKeyPair(base, user string, groups ...string) (certFile, keyFile string, err error) {
	certPEM, keyPEM, err := ca.issue(user, groups...)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = base+".crt", base+".key"
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("controlplane: writing %s: %w", certFile, err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("controlplane: writing %s: %w", keyFile, err)
	}
	return certFile, keyFile, nil
}

// WriteKubeconfig writes a kubeconfig for user in groups, authenticated by a
// client certificate of the control plane's client CA, to path. Only
// clusters started with Config.Nodes accept it.
func (c *Cluster) WriteKubeconfig(path, user string, groups ...string) error {
	if c.ca == nil {
		return fmt.Errorf("controlplane: %s has no client CA: start it with Config.Nodes", c.Name)
	}
	certPEM, keyPEM, err := c.ca.issue(user, groups...)
	if err != nil {
		return err
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: c.ServingCAPEM}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	kc.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: user}
	kc.CurrentContext = c.Name
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		return fmt.Errorf("controlplane: writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// ClientCAFile is the CA that signs the cluster's client certificates (the
// kubelets' clientCAFile), or "" without Config.Nodes.
func (c *Cluster) ClientCAFile() string {
	if c.ca == nil {
		return ""
	}
	return c.ca.File
}

// ClientCA returns the PEM certificate and key of the CA whose client
// certificates every API server of a Config.Nodes control plane accepts (as
// karmada-cert's ca.crt and ca.key), or an error without Config.Nodes.
func (cp *ControlPlane) ClientCA() (certPEM, keyPEM []byte, err error) {
	if cp.ca == nil {
		return nil, nil, fmt.Errorf("controlplane: no client CA: start it with Config.Nodes")
	}
	der, err := x509.MarshalECPrivateKey(cp.ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("controlplane: client CA key: %w", err)
	}
	return cp.ca.CertPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}
