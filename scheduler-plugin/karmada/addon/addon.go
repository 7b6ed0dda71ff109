// Package addon registers flowplace in karmadactl's addon map, so that a
// karmadactl built from this module runs `addons enable|disable|list
// flowplace` with the same code as `flowplace addons` (internal/addon): this
// file only converts karmadactl's options.
package addon

import (
	"context"
	"os"
	"time"

	addonsinit "github.com/karmada-io/karmada/pkg/karmadactl/addons/init"

	"github.com/flowplace/flowplace/internal/addon"
)

// Register adds flowplace to karmadactl's addons; call it from main, after
// karmadactl's own addons registered themselves in their package init.
func Register() {
	addonsinit.Addons[addon.Name] = &addonsinit.Addon{
		Name:    addon.Name,
		Status:  status,
		Enable:  enable,
		Disable: disable,
	}
}

func global(g addonsinit.GlobalCommandOptions) addon.GlobalOptions {
	return addon.GlobalOptions{
		Namespace:      g.Namespace,
		KubeConfig:     g.KubeConfig,
		Context:        g.Context,
		KarmadaConfig:  g.KarmadaConfig,
		KarmadaContext: g.KarmadaContext,
		Cluster:        g.Cluster,
		Out:            os.Stdout,
	}
}

func enable(o *addonsinit.CommandAddonsEnableOption) error {
	g := global(o.GlobalCommandOptions)
	g.MemberKubeConfig, g.MemberContext = o.MemberKubeConfig, o.MemberContext
	return addon.Enable(context.Background(), addon.EnableOptions{
		GlobalOptions:        g,
		PrivateImageRegistry: o.ImageRegistry,
		PodTimeout:           time.Duration(o.WaitComponentReadyTimeout) * time.Second,
	})
}

func disable(o *addonsinit.CommandAddonsDisableOption) error {
	return addon.Disable(context.Background(), addon.DisableOptions{GlobalOptions: global(o.GlobalCommandOptions)})
}

// status maps flowplace's report to karmadactl's addon statuses (the same
// four words).
func status(o *addonsinit.CommandAddonsListOption) (string, error) {
	g := global(o.GlobalCommandOptions)
	g.Out = nil
	r, err := addon.Status(context.Background(), g)
	if err != nil {
		return addonsinit.AddonUnknownStatus, err
	}
	return r.Status(), nil
}
