// Package controlplane runs a real Kubernetes control plane for tests: one
// etcd and one kube-apiserver per cluster (the "karmada-host" plus any number
// of member clusters), built from Go modules (see binaries.go) and started as
// child processes on loopback ports. The host gets Karmada's CRDs installed
// so that tests read and write Karmada objects through the same schema a real
// Karmada control plane serves.
//
// There is no kubelet, controller-manager or Karmada controller: tests create
// the objects those would (Pods, EndpointSlices, Nodes, Cluster objects)
// themselves.
package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// HostName is the name of the cluster that plays the Karmada control plane
// (karmada-apiserver) and holds Karmada's CRDs.
const HostName = "karmada-host"

// DefaultReadyTimeout bounds the wait for etcd, every API server and the CRDs.
// An API server is ready in about 4 s on an idle 2-core machine; the margin is
// for CI machines busy with other test packages.
const DefaultReadyTimeout = 2 * time.Minute

// Config says which clusters to start.
type Config struct {
	// Members are the member cluster names (DNS labels, e.g. "member1").
	Members []string
	// CRDDirs are extra directories whose *.yaml, *.yml and *.json files are
	// CRDs to install in the host, after Karmada's and the test Cluster CRD.
	CRDDirs []string
	// Logf receives progress lines; nil discards them.
	Logf Logf
	// ReadyTimeout overrides DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// BindAddress is the host address every API server listens on and
	// advertises; empty means 127.0.0.1. Clusters with nodes need one their
	// nodes reach (wan.Topology.ManagementGateway).
	BindAddress string
	// Nodes makes the members real clusters that kubelets can join: each
	// also runs kube-controller-manager and kube-scheduler, authenticates
	// client certificates of the control plane's CA (Cluster.WriteKubeconfig),
	// authorizes kubelets with the Node authorizer and admits pods with their
	// ServiceAccounts. The host, as Karmada's karmada-apiserver, accepts the
	// same client certificates (the CA is karmada-cert's, ControlPlane.ClientCA)
	// and runs a kube-controller-manager with Karmada's controllers only
	// (namespace, garbage collector, tokens); no kubelets, no scheduler.
	Nodes bool
}

// ControlPlane is a running etcd plus one API server per cluster.
type ControlPlane struct {
	Host    *Cluster
	Members map[string]*Cluster
	// Binaries are the executables in use.
	Binaries Paths
	// Dir is this run's temporary directory (etcd data, certificates, logs);
	// Stop removes it.
	Dir string
	// Marker is unique to this run and appears in the command line of every
	// process it starts (through Dir), so leaks can be found by it.
	Marker string
	// EtcdURL is the client URL of the shared etcd.
	EtcdURL string

	memberOrder []string
	bindAddr    string
	ca          *clientCA
	etcd        *process
	stopOnce    sync.Once
	stopErr     error
}

// Cluster is one API server and clients for it.
type Cluster struct {
	Name string
	// URL is the API server's https URL on 127.0.0.1.
	URL        string
	RESTConfig *rest.Config
	// Kubeconfig is the path of a kubeconfig file for this cluster (admin
	// token, CA embedded) inside ControlPlane.Dir.
	Kubeconfig string
	Client     kubernetes.Interface
	Dynamic    dynamic.Interface
	// EtcdPrefix isolates this cluster's data in the shared etcd.
	EtcdPrefix string
	// ServiceCIDR is --service-cluster-ip-range; distinct per cluster so that
	// ClusterIPs never collide across members.
	ServiceCIDR string
	// LogFile holds the API server's stdout and stderr.
	LogFile string
	// ServingCAPEM verifies the API server's (self-signed) serving
	// certificate; ServingCAFile is the same on disk.
	ServingCAPEM  []byte
	ServingCAFile string
	// SAKeyFile signs service account tokens (the controller manager's
	// --service-account-private-key-file).
	SAKeyFile string

	dir       string
	token     string
	apiserver *process
	// With Config.Nodes (members only):
	ca          *clientCA
	controllers []*process // kube-controller-manager, kube-scheduler
}

// Cluster returns the cluster called name (HostName or a member), or nil.
func (cp *ControlPlane) Cluster(name string) *Cluster {
	if name == HostName {
		return cp.Host
	}
	return cp.Members[name]
}

// Clusters returns the host followed by the members in Config order.
func (cp *ControlPlane) Clusters() []*Cluster {
	var out []*Cluster
	if cp.Host != nil {
		out = append(out, cp.Host)
	}
	return append(out, cp.members()...)
}

// members returns the started members in Config order.
func (cp *ControlPlane) members() []*Cluster {
	out := make([]*Cluster, 0, len(cp.memberOrder))
	for _, name := range cp.memberOrder {
		if c := cp.Members[name]; c != nil {
			out = append(out, c)
		}
	}
	return out
}

// PIDs maps "etcd" and each cluster name to the process id it runs as.
func (cp *ControlPlane) PIDs() map[string]int {
	out := map[string]int{}
	if cp.etcd != nil {
		out["etcd"] = cp.etcd.pid()
	}
	for _, c := range cp.Clusters() {
		if c.apiserver != nil {
			out[c.Name] = c.apiserver.pid()
		}
		for _, p := range c.controllers {
			out[p.name] = p.pid()
		}
	}
	return out
}

// maxMembers keeps service CIDRs (10.96+i.0.0/16) inside 10.0.0.0/8 with room
// to spare; nobody runs this many API servers on a test machine anyway.
const maxMembers = 64

func (cfg *Config) validate() error {
	if len(cfg.Members) > maxMembers {
		return fmt.Errorf("controlplane: %d members, at most %d", len(cfg.Members), maxMembers)
	}
	if cfg.BindAddress != "" {
		if ip := net.ParseIP(cfg.BindAddress); ip == nil || ip.To4() == nil {
			return fmt.Errorf("controlplane: bind address %q: want an IPv4 address", cfg.BindAddress)
		}
	}
	seen := map[string]bool{HostName: true}
	for _, m := range cfg.Members {
		if errs := validation.IsDNS1123Label(m); len(errs) > 0 {
			return fmt.Errorf("controlplane: member name %q: %v", m, errs)
		}
		if seen[m] {
			return fmt.Errorf("controlplane: member name %q used twice (or equal to the host's)", m)
		}
		seen[m] = true
	}
	return nil
}

// Start builds or finds the binaries, starts etcd and one API server per
// cluster, waits until all are ready, and installs the CRDs into the host.
// On error everything it started is stopped again and its directory removed;
// the returned ControlPlane may then be non-nil, and Stop on it is a no-op.
func Start(ctx context.Context, cfg Config) (*ControlPlane, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	bins, err := Binaries(ctx, logf)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "flowplace-cp-")
	if err != nil {
		return nil, fmt.Errorf("controlplane: creating run directory: %w", err)
	}
	cp := &ControlPlane{
		Binaries:    bins,
		Dir:         dir,
		Marker:      filepath.Base(dir),
		Members:     map[string]*Cluster{},
		memberOrder: slices.Clone(cfg.Members),
		bindAddr:    cfg.BindAddress,
	}
	if cp.bindAddr == "" {
		cp.bindAddr = "127.0.0.1"
	}
	if err := cp.start(ctx, cfg, timeout, logf); err != nil {
		if stopErr := cp.Stop(); stopErr != nil {
			err = errors.Join(err, fmt.Errorf("cleaning up after the failed start: %w", stopErr))
		}
		return cp, err
	}
	return cp, nil
}

func (cp *ControlPlane) start(ctx context.Context, cfg Config, timeout time.Duration, logf Logf) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	// Read the CRD files first: a missing directory should not cost a start.
	files, err := crdFiles(cfg.CRDDirs)
	if err != nil {
		return err
	}
	// One port for etcd clients, one for etcd peers, one per API server.
	ports, err := freePorts(cp.bindAddr, 3+len(cfg.Members))
	if err != nil {
		return err
	}
	if err := cp.startEtcd(ctx, ports[0], ports[1]); err != nil {
		return err
	}
	if cfg.Nodes {
		if cp.ca, err = newClientCA(cp.Dir); err != nil {
			return err
		}
	}
	tEtcd := time.Since(start)

	// Host first, then members in Config order: Members[i] gets 10.(96+i).0.0/16.
	names := append([]string{HostName}, cfg.Members...)
	for i, name := range names {
		cidr := "10.95.0.0/16" // the host's own services never meet the members'
		if i > 0 {
			cidr = fmt.Sprintf("10.%d.0.0/16", 96+i-1)
		}
		c, err := cp.startAPIServer(name, cidr, ports[2+i], cfg.Nodes && i > 0)
		if err != nil {
			return err
		}
		if name == HostName {
			cp.Host = c
		} else {
			cp.Members[name] = c
		}
	}
	// The API servers start in parallel; wait for all of them together, and
	// install the CRDs as soon as the host is ready, while members still boot.
	var tAPI, tCRD time.Duration
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, c := range cp.Clusters() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = c.waitReady(ctx); errs[i] != nil {
				return
			}
			if c.ca != nil && c != cp.Host {
				errs[i] = c.startControllers(ctx, cp.Binaries)
				return
			}
			if c != cp.Host {
				return
			}
			t0 := time.Now()
			tAPI = t0.Sub(start)
			if err := installCRDs(ctx, c.Dynamic, files); err != nil {
				errs[i] = fmt.Errorf("controlplane: installing CRDs into %s: %w", HostName, err)
			}
			tCRD = time.Since(t0)
			if errs[i] == nil && c.ca != nil {
				errs[i] = c.startKarmadaControllers(cp.Binaries)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logf("controlplane: %s + %d member(s) ready in %s (etcd %s, host API server %s, %d CRD files %s); run dir %s",
		HostName, len(cfg.Members), time.Since(start).Round(time.Millisecond), tEtcd.Round(time.Millisecond),
		(tAPI - tEtcd).Round(time.Millisecond), len(files), tCRD.Round(time.Millisecond), cp.Dir)
	return nil
}

func (cp *ControlPlane) startEtcd(ctx context.Context, clientPort, peerPort int) error {
	clientURL := "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := []string{
		"--name=flowplace",
		"--data-dir=" + filepath.Join(cp.Dir, "etcd"),
		"--listen-client-urls=" + clientURL,
		"--advertise-client-urls=" + clientURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=flowplace=" + peerURL,
		"--initial-cluster-state=new",
		// Test data is thrown away: fsync only costs time.
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	p, err := startProcess("etcd", cp.Binaries.Etcd, args, filepath.Join(cp.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	cp.etcd = p
	cp.EtcdURL = clientURL

	hc := &http.Client{Timeout: 2 * time.Second}
	err = poll(ctx, 50*time.Millisecond, p, func() (bool, error) {
		resp, err := hc.Get(clientURL + "/health")
		if err != nil {
			return false, nil // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("controlplane: etcd not healthy at %s: %w\n--- tail of %s ---\n%s", clientURL, err, p.log, tailFile(p.log, 30))
	}
	return nil
}

// startAPIServer writes the cluster's credentials and starts its API server;
// it does not wait for it (see waitReady).
func (cp *ControlPlane) startAPIServer(name, cidr string, port int, nodes bool) (*Cluster, error) {
	dir := filepath.Join(cp.Dir, name)
	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, fmt.Errorf("controlplane: %s: %w", name, err)
	}
	token, err := randomHex(32)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %s: admin token: %w", name, err)
	}
	// Static token file: token,user,uid,"groups". system:masters bypasses RBAC.
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(token+`,admin,admin,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("controlplane: %s: token file: %w", name, err)
	}
	saKey, saPub, err := writeServiceAccountKey(dir)
	if err != nil {
		return nil, fmt.Errorf("controlplane: %s: service account key: %w", name, err)
	}
	c := &Cluster{
		Name:        name,
		URL:         "https://" + net.JoinHostPort(cp.bindAddr, strconv.Itoa(port)),
		EtcdPrefix:  "/flowplace/" + name,
		ServiceCIDR: cidr,
		LogFile:     filepath.Join(dir, "apiserver.log"),
		SAKeyFile:   saKey,
		dir:         dir,
		token:       token,
	}
	args := []string{
		"--etcd-servers=" + cp.EtcdURL,
		"--etcd-prefix=" + c.EtcdPrefix,
		"--bind-address=" + cp.bindAddr,
		// Also puts the address in the self-signed certificate's SANs.
		"--advertise-address=" + cp.bindAddr,
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + certDir,
		"--token-auth-file=" + tokenFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub,
		"--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=" + cidr,
		"--allow-privileged=true",
		"--profiling=false",
	}
	if nodes {
		c.ca = cp.ca
		kubeletCert, kubeletKey, err := cp.ca.writeKeyPair(filepath.Join(dir, "apiserver-kubelet-client"), "kube-apiserver-kubelet-client", "system:masters")
		if err != nil {
			return nil, err
		}
		args = append(args,
			"--client-ca-file="+cp.ca.File,
			"--authorization-mode=Node,RBAC",
			"--enable-admission-plugins=NodeRestriction",
			"--kubelet-client-certificate="+kubeletCert,
			"--kubelet-client-key="+kubeletKey,
			// Node names do not resolve here; `kubectl logs` and exec
			// fail without it.
			"--kubelet-preferred-address-types=InternalIP",
		)
	} else {
		if cp.ca != nil {
			// The Karmada API server of a fleet with nodes trusts the same
			// client CA, as karmada-cert's CA signs Karmada's components.
			c.ca = cp.ca
			args = append(args, "--client-ca-file="+cp.ca.File)
		}
		args = append(args,
			"--authorization-mode=RBAC",
			// No controller-manager creates the "default" ServiceAccount,
			// and this plugin would reject every Pod without it.
			"--disable-admission-plugins=ServiceAccount",
		)
	}
	p, err := startProcess("kube-apiserver "+name, cp.Binaries.KubeAPIServer, args, c.LogFile)
	if err != nil {
		return nil, err
	}
	c.apiserver = p
	return c, nil
}

// waitReady polls /readyz, then builds the clients and writes the kubeconfig.
// The self-signed certificate only exists once the API server has written it
// into --cert-dir, so the CA is read inside the poll.
func (c *Cluster) waitReady(ctx context.Context) error {
	certFile := filepath.Join(c.dir, "certs", "apiserver.crt")
	var caPEM []byte
	var hc *http.Client
	err := poll(ctx, 100*time.Millisecond, c.apiserver, func() (bool, error) {
		if hc == nil {
			data, err := os.ReadFile(certFile)
			if err != nil {
				return false, nil // not written yet
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(data) {
				return false, nil // partially written
			}
			caPEM = data
			hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool},
			}}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.URL+"/readyz", nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := hc.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return c.errorWithLog(fmt.Errorf("not ready at %s/readyz: %w", c.URL, err))
	}
	if err := c.makeClients(caPEM); err != nil {
		return c.errorWithLog(err)
	}
	// kube-system and default are created by controllers that /readyz does
	// not wait for; KubeSystemUID, Cluster registration and most tests need
	// them.
	for _, ns := range []string{metav1.NamespaceSystem, metav1.NamespaceDefault} {
		err = wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			return c.errorWithLog(fmt.Errorf("waiting for namespace %s: %w", ns, err))
		}
	}
	return nil
}

func (c *Cluster) errorWithLog(err error) error {
	return fmt.Errorf("controlplane: kube-apiserver %s: %w\n--- tail of %s ---\n%s", c.Name, err, c.LogFile, tailFile(c.LogFile, 30))
}

func (c *Cluster) makeClients(caPEM []byte) error {
	c.ServingCAPEM = caPEM
	c.ServingCAFile = filepath.Join(c.dir, "certs", "apiserver.crt")
	c.RESTConfig = &rest.Config{
		Host:            c.URL,
		BearerToken:     c.token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caPEM},
		// Tests create objects in bursts; client-side throttling would only
		// slow them down against an API server nobody else uses.
		QPS:   200,
		Burst: 400,
	}
	var err error
	if c.Client, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return fmt.Errorf("clientset: %w", err)
	}
	if c.Dynamic, err = dynamic.NewForConfig(c.RESTConfig); err != nil {
		return fmt.Errorf("dynamic client: %w", err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters[c.Name] = &clientcmdapi.Cluster{Server: c.URL, CertificateAuthorityData: caPEM}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: c.token}
	kc.Contexts[c.Name] = &clientcmdapi.Context{Cluster: c.Name, AuthInfo: "admin"}
	kc.CurrentContext = c.Name
	c.Kubeconfig = filepath.Join(c.dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, c.Kubeconfig); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}

// KubeSystemUID is the UID of the cluster's kube-system namespace, which
// Karmada uses as the cluster's unique id (Cluster spec.id).
func (c *Cluster) KubeSystemUID(ctx context.Context) (string, error) {
	ns, err := c.Client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("controlplane: %s: reading namespace kube-system: %w", c.Name, err)
	}
	return string(ns.UID), nil
}

// Stop stops the API servers, then etcd (an API server whose etcd vanished
// first can hang for tens of seconds), kills their process groups and removes
// Dir. It is idempotent: later calls return the first call's result.
func (cp *ControlPlane) Stop() error {
	cp.stopOnce.Do(func() {
		var errs []error
		var mu sync.Mutex
		var wg sync.WaitGroup
		// Controllers first: they would only log the API servers going away.
		for _, c := range cp.Clusters() {
			for _, p := range c.controllers {
				if err := p.stop(10 * time.Second); err != nil {
					errs = append(errs, err)
				}
			}
		}
		for _, c := range cp.Clusters() {
			if c.apiserver == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := c.apiserver.stop(10 * time.Second); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if cp.etcd != nil {
			if err := cp.etcd.stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if cp.Dir != "" {
			if err := os.RemoveAll(cp.Dir); err != nil {
				errs = append(errs, fmt.Errorf("controlplane: removing %s: %w", cp.Dir, err))
			}
		}
		cp.stopErr = errors.Join(errs...)
	})
	return cp.stopErr
}

// poll calls cond every interval until it returns true or an error, ctx ends,
// or the process p exits (then waiting longer is pointless).
func poll(ctx context.Context, interval time.Duration, p *process, cond func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("process exited: %v", p.exitErr())
		case <-t.C:
		}
	}
}

// freePorts asks the kernel for n distinct free loopback ports. All listeners
// stay open until every port is chosen so that no port is handed out twice;
// another process could still take one before our child binds it, which on a
// test machine is rare enough to surface as a start error rather than retry.
func freePorts(addr string, n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
		if err != nil {
			return nil, fmt.Errorf("controlplane: finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// writeServiceAccountKey writes an ECDSA P-256 key pair for signing and
// verifying service account tokens. ECDSA rather than RSA: generating it is
// instant, and the API server accepts both.
func writeServiceAccountKey(dir string) (keyFile, pubFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", "", err
	}
	keyFile = filepath.Join(dir, "sa.key")
	pubFile = filepath.Join(dir, "sa.pub")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		return "", "", err
	}
	return keyFile, pubFile, nil
}
