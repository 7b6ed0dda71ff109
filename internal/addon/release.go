package addon

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	applycorev1 "k8s.io/client-go/applyconfigurations/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/flowplace/flowplace/charts"
)

// ReleaseSecret records, in the host cluster, the values the last enable was
// given, as Helm's release Secret does: an enable without -f or --set (as
// karmadactl's, which has no such flags) upgrades with them. It is the
// addon's state, not a manifest: it carries no chart labels.
const ReleaseSecret = "flowplace-addon-release"

const releaseValuesKey = "values.yaml"

func readRelease(ctx context.Context, host *apiServer, ns string) (map[string]any, error) {
	s, err := host.kube.CoreV1().Secrets(ns).Get(ctx, ReleaseSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("host cluster: reading secret %s/%s: %w", ns, ReleaseSecret, err)
	}
	var v map[string]any
	if err := yaml.Unmarshal(s.Data[releaseValuesKey], &v); err != nil {
		return nil, fmt.Errorf("host cluster: secret %s/%s: %w", ns, ReleaseSecret, err)
	}
	if v == nil {
		v = map[string]any{}
	}
	return v, nil
}

func writeRelease(ctx context.Context, host *apiServer, ns string, user map[string]any) error {
	b, err := yaml.Marshal(user)
	if err != nil {
		return err
	}
	c, err := charts.Load()
	if err != nil {
		return err
	}
	cfg := applycorev1.Secret(ReleaseSecret, ns).
		WithLabels(map[string]string{"app.kubernetes.io/managed-by": FieldManager}).
		WithAnnotations(map[string]string{"flowplace.io/chart-version": c.Metadata.Version, "flowplace.io/app-version": c.Metadata.AppVersion}).
		WithType(corev1.SecretTypeOpaque).
		WithData(map[string][]byte{releaseValuesKey: b})
	if _, err := host.kube.CoreV1().Secrets(ns).Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: FieldManager, Force: true}); err != nil {
		return fmt.Errorf("host cluster: recording the release in secret %s/%s: %w", ns, ReleaseSecret, err)
	}
	return nil
}

func deleteRelease(ctx context.Context, host *apiServer, ns string) error {
	err := host.kube.CoreV1().Secrets(ns).Delete(ctx, ReleaseSecret, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("host cluster: deleting secret %s/%s: %w", ns, ReleaseSecret, err)
	}
	return nil
}
