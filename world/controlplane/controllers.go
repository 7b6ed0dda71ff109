package controlplane

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// startControllers starts the member's kube-controller-manager and
// kube-scheduler, each with its own client certificate (the default RBAC
// roles bind system:kube-controller-manager and system:kube-scheduler), and
// waits until the controller manager has created the default namespace's
// ServiceAccount, which the ServiceAccount admission plugin requires of
// every pod.
func (c *Cluster) startControllers(ctx context.Context, bins Paths) error {
	kcmConfig := filepath.Join(c.dir, "kube-controller-manager.kubeconfig")
	if err := c.WriteKubeconfig(kcmConfig, "system:kube-controller-manager"); err != nil {
		return err
	}
	schedConfig := filepath.Join(c.dir, "kube-scheduler.kubeconfig")
	if err := c.WriteKubeconfig(schedConfig, "system:kube-scheduler"); err != nil {
		return err
	}
	kcm, err := startProcess("kube-controller-manager "+c.Name, bins.KubeControllerManager, c.controllerManagerArgs(kcmConfig),
		filepath.Join(c.dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	c.controllers = append(c.controllers, kcm)
	sched, err := startProcess("kube-scheduler "+c.Name, bins.KubeScheduler, []string{
		"--kubeconfig=" + schedConfig,
		"--authentication-kubeconfig=" + schedConfig,
		"--authorization-kubeconfig=" + schedConfig,
		"--leader-elect=false",
		"--secure-port=0",
		"--profiling=false",
	}, filepath.Join(c.dir, "kube-scheduler.log"))
	if err != nil {
		return err
	}
	c.controllers = append(c.controllers, sched)

	err = wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range c.controllers {
			if err := p.exitErr(); err != nil || isDone(p) {
				return false, fmt.Errorf("%s exited: %v\n--- tail of %s ---\n%s", p.name, err, p.log, tailFile(p.log, 30))
			}
		}
		_, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		return fmt.Errorf("controlplane: %s: waiting for the controller manager's default ServiceAccount: %w\n--- tail of %s ---\n%s",
			c.Name, err, kcm.log, tailFile(kcm.log, 20))
	}
	return nil
}

// startKarmadaControllers starts the kube-controller-manager that Karmada
// runs beside the karmada-apiserver, with Karmada's controllers (no
// scheduler, no node or workload controllers): namespaces are finalized and
// dependents collected there as in a real Karmada control plane.
func (c *Cluster) startKarmadaControllers(bins Paths) error {
	kcmConfig := filepath.Join(c.dir, "kube-controller-manager.kubeconfig")
	if err := c.WriteKubeconfig(kcmConfig, "system:kube-controller-manager"); err != nil {
		return err
	}
	// Karmada's list (its operator and chart).
	args := append(c.controllerManagerArgs(kcmConfig),
		"--controllers=namespace,garbagecollector,serviceaccount-token,ttl-after-finished,bootstrapsigner,csrapproving,csrcleaner,csrsigning,clusterrole-aggregation")
	kcm, err := startProcess("kube-controller-manager "+c.Name, bins.KubeControllerManager, args,
		filepath.Join(c.dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	c.controllers = append(c.controllers, kcm)
	return nil
}

// controllerManagerArgs are kube-controller-manager's flags for this cluster.
func (c *Cluster) controllerManagerArgs(kubeconfig string) []string {
	return []string{
		"--kubeconfig=" + kubeconfig,
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		// One identity per controller, as in production: each is bound
		// to its own role, and a pod-creating controller's requests are
		// authorized as that controller.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.SAKeyFile,
		"--root-ca-file=" + c.ServingCAFile,
		"--cluster-name=" + c.Name,
		"--leader-elect=false",
		// Nothing scrapes it; a port per cluster would only collide.
		"--secure-port=0",
		"--profiling=false",
	}
}

func isDone(p *process) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ControllerPIDs are the pids of the member's controller manager and
// scheduler (none without Config.Nodes).
func (c *Cluster) ControllerPIDs() []int {
	var out []int
	for _, p := range c.controllers {
		out = append(out, p.pid())
	}
	return out
}
