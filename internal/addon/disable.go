package addon

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/flowplace/flowplace/charts"
)

var runtimeConverter = runtime.DefaultUnstructuredConverter

// Disable deletes every object enable created: the host cluster's and the
// karmada-apiserver's (Karmada then removes the agents from the members).
// CRDs, and the ClusterLatency and WorkloadTraffic objects in them, stay
// unless Purge.
func Disable(ctx context.Context, o DisableOptions) error {
	host, karmada, err := o.connectBoth(ctx)
	if err != nil {
		return err
	}
	timeout := o.PodTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	for _, t := range []struct {
		s    *apiServer
		mode string
	}{{host, charts.ModeHost}, {karmada, charts.ModeKarmada}} {
		n, err := t.s.prune(ctx, t.mode, charts.DefaultReleaseName, nil)
		if err != nil {
			return err
		}
		o.logf("flowplace: %s: deleting %d object(s)", t.s.name, n)
		if err := waitGone(ctx, t.s, t.mode, timeout); err != nil {
			return err
		}
	}
	if err := deleteRelease(ctx, host, o.Namespace); err != nil {
		return err
	}
	if o.Purge {
		crds, err := karmada.dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{LabelSelector: partOfLabel + "=flowplace"})
		if err != nil {
			return fmt.Errorf("karmada-apiserver: listing CRDs: %w", err)
		}
		for i := range crds.Items {
			if err := karmada.delete(ctx, crdGVR, &crds.Items[i]); err != nil {
				return err
			}
		}
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
			l, err := karmada.dyn.Resource(crdGVR).List(ctx, metav1.ListOptions{LabelSelector: partOfLabel + "=flowplace"})
			return err == nil && len(l.Items) == 0, nil
		})
		if err != nil {
			return fmt.Errorf("karmada-apiserver: flowplace's CRDs not gone within %s", timeout)
		}
		o.logf("flowplace: purged %d CRD(s) and their objects", len(crds.Items))
	}
	o.logf("flowplace: disabled")
	return nil
}

func waitGone(ctx context.Context, s *apiServer, mode string, timeout time.Duration) error {
	var left int
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		owned, _, err := s.listOwned(ctx, mode, charts.DefaultReleaseName)
		if err != nil && !apierrors.IsNotFound(err) {
			return false, nil
		}
		left = len(owned)
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%s: %d object(s) still there after %s", s.name, left, timeout)
	}
	return nil
}

// List prints flowplace's status the way `karmadactl addons list` prints
// Karmada's addons.
func List(ctx context.Context, o GlobalOptions, w io.Writer) (string, error) {
	status := StatusUnknown
	r, err := Status(ctx, o)
	if err == nil {
		status = r.Status()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "Addon Name\tStatus")
	fmt.Fprintf(tw, "%s\t%s\n", Name, status)
	tw.Flush()
	return status, err
}
