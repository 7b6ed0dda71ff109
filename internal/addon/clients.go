package addon

import (
	"context"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
)

// apiServer is one API server the addon writes to or reads from.
type apiServer struct {
	name   string // for messages: "host cluster", "karmada-apiserver", a member
	rest   *rest.Config
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapper
}

// restConfig loads kubeconfig (default loading rules when empty) at context.
func restConfig(kubeconfig, context string) (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if kubeconfig != "" {
		if _, err := os.Stat(kubeconfig); err != nil {
			return nil, err
		}
		rules.ExplicitPath = kubeconfig
	}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context}).ClientConfig()
}

// connect builds the clients and checks that the API server answers, so
// that an unreachable server stops enable before anything changed.
func connect(ctx context.Context, name, kubeconfig, kubecontext string) (*apiServer, error) {
	rc, err := restConfig(kubeconfig, kubecontext)
	if err != nil {
		return nil, fmt.Errorf("%s: kubeconfig %q context %q: %w", name, kubeconfig, kubecontext, err)
	}
	return connectConfig(ctx, name, rc)
}

func connectConfig(ctx context.Context, name string, rc *rest.Config) (*apiServer, error) {
	rc = rest.CopyConfig(rc)
	rc.UserAgent = "flowplace-addon"
	if rc.QPS == 0 {
		rc.QPS, rc.Burst = 50, 100
	}
	kube, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if _, err := kube.Discovery().ServerVersion(); err != nil {
		return nil, fmt.Errorf("%s at %s is not reachable: %w", name, rc.Host, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(kube.Discovery()))
	return &apiServer{name: name, rest: rc, kube: kube, dyn: dyn, mapper: mapper}, nil
}

// caPEM is the CA bundle the rest config verifies the server with.
func caPEM(rc *rest.Config) ([]byte, error) {
	if len(rc.TLSClientConfig.CAData) > 0 {
		return rc.TLSClientConfig.CAData, nil
	}
	if rc.TLSClientConfig.CAFile != "" {
		return os.ReadFile(rc.TLSClientConfig.CAFile)
	}
	return nil, nil
}

// connectBoth reaches the Karmada host cluster and the karmada-apiserver.
func (o *GlobalOptions) connectBoth(ctx context.Context) (host, karmada *apiServer, err error) {
	if host, err = connect(ctx, "host cluster", o.KubeConfig, o.Context); err != nil {
		return nil, nil, err
	}
	if karmada, err = connect(ctx, "karmada-apiserver", o.KarmadaConfig, o.KarmadaContext); err != nil {
		return nil, nil, err
	}
	return host, karmada, nil
}
