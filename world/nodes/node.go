// Package nodes runs real Kubernetes nodes on one machine: each a kubelet
// with its own containerd, CNI bridge network and kube-proxy, in the
// node's network namespace (world/wan: behind its cluster's region, so
// traffic to other clusters crosses the WAN's injected delay) and in a
// private mount namespace, on cgroup v1 under a cgroup root of its own.
//
// Nodes share the kernel, the PID namespace and the cgroup trees; what they
// change on the host (cgroups, the kubelet's kernel settings) is recorded
// and put back by Stop, or by Sweep after a killed run.
package nodes

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/wan"
)

// DefaultReadyTimeout bounds a node's start until Ready: 3.6-4.5 s on an idle
// 2-core machine, with room for a loaded CI machine.
const DefaultReadyTimeout = 2 * time.Minute

// cniBinDir is where Debian's containernetworking-plugins installs.
const cniBinDir = "/usr/lib/cni"

// Config describes one node.
type Config struct {
	// Net is the node's network (wan.Cluster.AddNode); its name is the
	// node's name.
	Net *wan.Node
	// Cluster is the member the node joins, started with
	// controlplane.Config.Nodes.
	Cluster *controlplane.Cluster
	// Binaries are kubelet and kube-proxy (controlplane.Binaries).
	Binaries controlplane.Paths
	// Images are docker-archive tarballs imported into the node's
	// containerd before the kubelet starts; nothing is ever pulled.
	Images []string
	// PauseImage is the sandbox image's reference; it must be in Images.
	PauseImage string
	// Labels are added to the Node (e.g. topology.kubernetes.io/region).
	Labels map[string]string
	// QuickACK puts "quickack 1" on the pods' routes, as the WAN does with
	// wan.Config.QuickACK.
	QuickACK bool
	// Dir is the parent of the node's directory.
	Dir string
	// RunDirs are more directories of the run the node belongs to (its
	// control plane's, Dir itself), which Stop leaves to their owner: Sweep
	// removes them with the node's own once the process that started the
	// node is gone, so that a killed run leaves no directory behind.
	RunDirs []string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
	// ReadyTimeout overrides DefaultReadyTimeout.
	ReadyTimeout time.Duration
}

// Node is a running node.
type Node struct {
	Name string
	Net  *wan.Node
	// Dir holds the node's configuration, state, logs and containerd.
	Dir string
	// ContainerdSocket is the node's containerd's address.
	ContainerdSocket string
	// CgroupRoot is the node's cgroup root (the kubelet's cgroupRoot).
	CgroupRoot string

	cfg        Config
	cniBinDir  string
	cniConfDir string
	holder     *process // keeps the node's mount namespace alive
	daemons    []*process
	stopOnce   sync.Once
	stopErr    error
}

// Check reports what this machine lacks to run nodes.
func Check() error {
	var missing []string
	for _, bin := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "nsenter", "unshare", "iptables", "conntrack"} {
		if _, err := exec.LookPath(bin); err != nil {
			missing = append(missing, bin)
		}
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			missing = append(missing, cniBinDir+"/"+p)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("nodes: missing %s (Debian: apt-get install containerd runc containernetworking-plugins iptables conntrack util-linux; `make test-deps` does it)", strings.Join(missing, ", "))
	}
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		return errors.New("nodes: no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids: nodes run on cgroup v1 here")
	}
	return nil
}

// Start starts a node and waits until it is Ready. On error it stops what
// it started.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Net == nil || cfg.Cluster == nil {
		return nil, errors.New("nodes: Config.Net and Config.Cluster are required")
	}
	if cfg.Cluster.ClientCAFile() == "" {
		return nil, fmt.Errorf("nodes: cluster %s was not started with controlplane.Config.Nodes", cfg.Cluster.Name)
	}
	if cfg.PauseImage == "" {
		return nil, errors.New("nodes: Config.PauseImage is required")
	}
	if err := Check(); err != nil {
		return nil, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	timeout := cfg.ReadyTimeout
	if timeout <= 0 {
		timeout = DefaultReadyTimeout
	}
	dir := filepath.Join(cfg.Dir, cfg.Net.Name)
	n := &Node{
		Name:             cfg.Net.Name,
		Net:              cfg.Net,
		Dir:              dir,
		ContainerdSocket: filepath.Join(dir, "containerd.sock"),
		// The namespace name is unique on the machine and names its owner.
		CgroupRoot: "/flowplace/" + cfg.Net.NetNS,
		cfg:        cfg,
		cniBinDir:  filepath.Join(dir, "cni", "bin"),
		cniConfDir: filepath.Join(dir, "cni", "net.d"),
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := n.start(ctx); err != nil {
		return nil, errors.Join(err, n.Stop())
	}
	return n, nil
}

func (n *Node) start(ctx context.Context) error {
	t0 := time.Now()
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	st, err := procStart(os.Getpid())
	if err != nil {
		return fmt.Errorf("nodes: own start time: %w", err)
	}
	// Recorded before the first change so a killed run is swept whole.
	if err := writeRecord(record{PID: os.Getpid(), Start: st, Name: n.Name, CgroupRoot: n.CgroupRoot, Dir: n.Dir, RunDirs: n.cfg.RunDirs}); err != nil {
		return err
	}
	if err := saveSysctls(); err != nil {
		return err
	}
	if err := createCgroups(n.CgroupRoot); err != nil {
		return err
	}
	if err := n.writeConfig(); err != nil {
		return err
	}
	if err := n.startHolder(ctx); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return err
	}
	tContainerd := time.Since(t0)
	if err := n.importImages(ctx); err != nil {
		return err
	}
	tImages := time.Since(t0) - tContainerd
	if err := n.startKubelet(); err != nil {
		return err
	}
	if err := n.startKubeProxy(); err != nil {
		return err
	}
	if err := n.waitReady(ctx); err != nil {
		return err
	}
	n.cfg.Logf("nodes: %s Ready in %s (containerd %s, %d images %s) at %s, pods %s",
		n.Name, time.Since(t0).Round(time.Millisecond), tContainerd.Round(time.Millisecond),
		len(n.cfg.Images), tImages.Round(time.Millisecond), n.Net.MgmtAddr, n.Net.PodCIDR)
	return nil
}

func (n *Node) writeConfig() error {
	// The node's CNI directory: Debian's plugins, and this executable as
	// the quickack plugin.
	if err := os.MkdirAll(n.cniBinDir, 0o755); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		if err := os.Symlink(filepath.Join(cniBinDir, p), filepath.Join(n.cniBinDir, p)); err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
	}
	if n.cfg.QuickACK {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("nodes: finding this executable for the quickack CNI plugin: %w", err)
		}
		if err := os.Symlink(exe, filepath.Join(n.cniBinDir, quickACKPlugin)); err != nil {
			return fmt.Errorf("nodes: %w", err)
		}
	}
	cni, err := n.cniConfig()
	if err != nil {
		return fmt.Errorf("nodes: CNI config: %w", err)
	}
	kubeletKC := filepath.Join(n.Dir, "kubelet.kubeconfig")
	if err := n.cfg.Cluster.WriteKubeconfig(kubeletKC, "system:node:"+n.Name, "system:nodes"); err != nil {
		return err
	}
	proxyKC := filepath.Join(n.Dir, "kube-proxy.kubeconfig")
	if err := n.cfg.Cluster.WriteKubeconfig(proxyKC, "system:kube-proxy"); err != nil {
		return err
	}
	return writeFiles(map[string]string{
		filepath.Join(n.Dir, "containerd.toml"):              n.containerdConfig(),
		filepath.Join(n.cniConfDir, "10-flowplace.conflist"): string(cni),
		filepath.Join(n.Dir, "kubelet.yaml"):                 n.kubeletConfig(),
		filepath.Join(n.Dir, "kube-proxy.yaml"):              n.kubeProxyConfig(proxyKC),
	})
}

// holderScript prepares the node's mount namespace: fresh tmpfs over the
// trees node daemons write under fixed paths (/run: containerd, runc and
// the CNI's pod namespaces; /var/lib: the kubelet's sockets; /var/log: pod
// logs), so nothing lands on the host and no directory has to be created
// there, and a bpffs of its own; then it holds the namespace until killed.
const holderScript = `set -e
hostname "$1"
for d in /run /var/lib /var/log; do
	mount -t tmpfs -o mode=0755 tmpfs "$d"
done
mkdir -p /run/containerd /run/netns /var/lib/kubelet /var/log/pods /var/log/containers
mount -t bpf bpf /sys/fs/bpf
touch "$2"
exec sleep infinity
`

func (n *Node) startHolder(ctx context.Context) error {
	ready := filepath.Join(n.Dir, "holder.ready")
	// nsenter --net, not `ip netns exec`: that one remounts /sys and hides
	// the cgroup v1 mounts.
	p, err := startProcess("holder "+n.Name, "nsenter",
		[]string{"--net=" + n.Net.NetNSPath(), "--", "unshare", "--mount", "--uts", "--propagation", "private",
			"--", "sh", "-c", holderScript, "holder", n.Name, ready},
		filepath.Join(n.Dir, "holder.log"))
	if err != nil {
		return err
	}
	n.holder = p
	return poll(ctx, 10*time.Millisecond, p, func() bool {
		_, err := os.Stat(ready)
		return err == nil
	})
}

// inNode runs bin inside the node's namespaces.
func (n *Node) inNode(name, bin string, args []string, intoCgroup bool) (*process, error) {
	full := append([]string{"--target", fmt.Sprint(n.holder.pid()), "--mount", "--uts", "--net", "--"}, bin)
	full = append(full, args...)
	if intoCgroup {
		// Joins the node's system cgroup in every hierarchy before exec,
		// so that containerd's shims (which outlive it) are found there.
		script := `for m in $(awk '$9 ~ /^cgroup2?$/ {print $5}' /proc/self/mountinfo); do echo $$ > "$m$1/cgroup.procs"; done; shift; exec "$@"`
		full = append([]string{"--target", fmt.Sprint(n.holder.pid()), "--mount", "--uts", "--net", "--", "sh", "-c", script, "join", n.CgroupRoot + "/system", bin}, args...)
	}
	p, err := startProcess(name+" "+n.Name, "nsenter", full, filepath.Join(n.Dir, name+".log"))
	if err != nil {
		return nil, err
	}
	n.daemons = append(n.daemons, p)
	return p, nil
}

func (n *Node) startContainerd(ctx context.Context) error {
	p, err := n.inNode("containerd", "containerd", []string{"--config", filepath.Join(n.Dir, "containerd.toml")}, true)
	if err != nil {
		return err
	}
	err = poll(ctx, 20*time.Millisecond, p, func() bool {
		return exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket, "version").Run() == nil
	})
	if err != nil {
		return fmt.Errorf("nodes: %s: containerd not serving on %s: %w\n--- tail of %s ---\n%s", n.Name, n.ContainerdSocket, err, p.log, tailFile(p.log, 20))
	}
	return nil
}

func (n *Node) importImages(ctx context.Context) error {
	for _, tarball := range n.cfg.Images {
		if err := n.Import(ctx, tarball); err != nil {
			return err
		}
	}
	return nil
}

// Import imports a docker-archive tarball into the node's containerd, in the
// namespace the kubelet uses.
func (n *Node) Import(ctx context.Context, tarball string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.ContainerdSocket, "-n", "k8s.io", "images", "import", "--no-unpack=false", tarball).CombinedOutput()
	if err != nil {
		return fmt.Errorf("nodes: %s: importing %s: %w: %s", n.Name, tarball, err, bytes.TrimSpace(out))
	}
	return nil
}

func (n *Node) startKubelet() error {
	args := []string{
		"--config=" + filepath.Join(n.Dir, "kubelet.yaml"),
		"--kubeconfig=" + filepath.Join(n.Dir, "kubelet.kubeconfig"),
		"--root-dir=" + filepath.Join(n.Dir, "kubelet"),
		"--hostname-override=" + n.Name,
		// The management address: the API server reaches the kubelet
		// there, outside the measured WAN.
		"--node-ip=" + n.Net.MgmtAddr.String(),
		// cadvisor's own flag: without it it looks for /run/containerd.
		"--containerd=" + n.ContainerdSocket,
		"--v=1",
	}
	if len(n.cfg.Labels) > 0 {
		var kv []string
		for k, v := range n.cfg.Labels {
			kv = append(kv, k+"="+v)
		}
		args = append(args, "--node-labels="+strings.Join(kv, ","))
	}
	_, err := n.inNode("kubelet", n.cfg.Binaries.Kubelet, args, false)
	return err
}

func (n *Node) startKubeProxy() error {
	_, err := n.inNode("kube-proxy", n.cfg.Binaries.KubeProxy, []string{"--config=" + filepath.Join(n.Dir, "kube-proxy.yaml")}, false)
	return err
}

func (n *Node) waitReady(ctx context.Context) error {
	var last string
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range append([]*process{n.holder}, n.daemons...) {
			if p.exited() {
				return false, fmt.Errorf("%s exited: %v\n--- tail of %s ---\n%s", p.name, p.exitErr(), p.log, tailFile(p.log, 30))
			}
		}
		node, err := n.cfg.Cluster.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				last = fmt.Sprintf("Ready=%s: %s", c.Status, c.Message)
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		kubelet := filepath.Join(n.Dir, "kubelet.log")
		return fmt.Errorf("nodes: %s not Ready (%s): %w\n--- tail of %s ---\n%s", n.Name, last, err, kubelet, tailFile(kubelet, 30))
	}
	return nil
}

// PIDs are the node's own processes (holder, containerd, kubelet,
// kube-proxy); containers are in CgroupRoot.
func (n *Node) PIDs() []int {
	var out []int
	for _, p := range append([]*process{n.holder}, n.daemons...) {
		if p != nil {
			out = append(out, p.pid())
		}
	}
	return out
}

// Stop stops the kubelet first (so nothing restarts), then kills every
// process of the node's cgroups (containers, shims, containerd), the rest
// of the daemons and the namespace holder, and removes the cgroups, the
// directory and the record; the kubelet's kernel settings are restored
// once no node runs. Idempotent.
func (n *Node) Stop() error {
	n.stopOnce.Do(func() {
		var errs []error
		for _, p := range n.daemons {
			if strings.HasPrefix(p.name, "kubelet ") {
				errs = append(errs, p.stop(5*time.Second))
			}
		}
		errs = append(errs, killCgroups(n.CgroupRoot, 10*time.Second))
		for _, p := range append(n.daemons, n.holder) {
			if p != nil {
				errs = append(errs, p.stop(5*time.Second))
			}
		}
		errs = append(errs, undo(record{Name: n.Name, CgroupRoot: n.CgroupRoot, Dir: n.Dir}))
		errs = append(errs, restoreSysctls())
		n.stopErr = errors.Join(errs...)
	})
	return n.stopErr
}

// process is a node daemon: its own process group, killed with us.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProcess(name, bin string, args []string, logPath string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("nodes: %s: log file: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nodes: starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) exitErr() error {
	if p.exited() {
		return p.err
	}
	return nil
}

func (p *process) stop(grace time.Duration) error {
	if !p.exited() {
		_ = syscall.Kill(-p.pid(), syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(grace):
		}
	}
	if err := syscall.Kill(-p.pid(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("nodes: SIGKILL to %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		return fmt.Errorf("nodes: %s (pid %d) did not exit after SIGKILL", p.name, p.pid())
	}
}

// poll calls cond every interval until it holds, ctx ends or p exits.
func poll(ctx context.Context, interval time.Duration, p *process, cond func() bool) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return fmt.Errorf("%s exited: %v\n--- tail of %s ---\n%s", p.name, p.err, p.log, tailFile(p.log, 20))
		case <-t.C:
		}
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
