// Command karmadactl is Karmada's karmadactl with flowplace registered as an
// addon: `karmadactl addons enable flowplace` installs it from flowplace's
// chart, as `flowplace addons enable` does.
package main

import (
	_ "k8s.io/client-go/plugin/pkg/client/auth/oidc" // as upstream: OIDC auth providers
	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd/util"

	"github.com/karmada-io/karmada/pkg/karmadactl"

	"github.com/flowplace/flowplace/scheduler-plugin/karmada/addon"
)

func main() {
	addon.Register()
	cmd := karmadactl.NewKarmadaCtlCommand("karmadactl", "karmadactl")
	if err := cli.RunNoErrOutput(cmd); err != nil {
		util.CheckErr(err)
	}
}
