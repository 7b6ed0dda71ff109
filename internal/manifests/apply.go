package manifests

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Apply creates the objects, or updates those that exist, in order.
func Apply(ctx context.Context, c kubernetes.Interface, objs []any) error {
	for _, o := range objs {
		if err := apply(ctx, c, o); err != nil {
			return err
		}
	}
	return nil
}

func apply(ctx context.Context, c kubernetes.Interface, o any) error {
	var err error
	var what string
	switch o := o.(type) {
	case *corev1.Namespace:
		what = "namespace " + o.Name
		_, err = c.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil // nothing of ours to change in an existing namespace
		}
	case *corev1.ServiceAccount:
		what = "serviceaccount " + o.Namespace + "/" + o.Name
		_, err = c.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil
		}
	case *rbacv1.ClusterRole:
		what = "clusterrole " + o.Name
		_, err = c.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var cur *rbacv1.ClusterRole
			if cur, err = c.RbacV1().ClusterRoles().Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Rules = o.Rules
				_, err = c.RbacV1().ClusterRoles().Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	case *rbacv1.ClusterRoleBinding:
		what = "clusterrolebinding " + o.Name
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil // roleRef is immutable; subjects are ours
		}
	case *rbacv1.Role:
		what = "role " + o.Namespace + "/" + o.Name
		_, err = c.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var cur *rbacv1.Role
			if cur, err = c.RbacV1().Roles(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Rules = o.Rules
				_, err = c.RbacV1().Roles(o.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	case *rbacv1.RoleBinding:
		what = "rolebinding " + o.Namespace + "/" + o.Name
		_, err = c.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			err = nil // roleRef is immutable; subjects are ours
		}
	case *appsv1.DaemonSet:
		what = "daemonset " + o.Namespace + "/" + o.Name
		_, err = c.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			var cur *appsv1.DaemonSet
			if cur, err = c.AppsV1().DaemonSets(o.Namespace).Get(ctx, o.Name, metav1.GetOptions{}); err == nil {
				cur.Spec = o.Spec
				_, err = c.AppsV1().DaemonSets(o.Namespace).Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
	default:
		return fmt.Errorf("manifests: cannot apply %T", o)
	}
	if err != nil {
		return fmt.Errorf("manifests: applying %s: %w", what, err)
	}
	return nil
}
