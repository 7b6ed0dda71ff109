package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/flowplace/flowplace/internal/addon"
)

// newAddonsCommand is `flowplace addons`, with karmadactl addons' verbs and
// flags; karmadactl built from scheduler-plugin/karmada registers the same
// functions as its `flowplace` addon.
func newAddonsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "addons",
		Short: "Enable, disable, check or list flowplace as a Karmada addon",
		Long: `Install flowplace on a Karmada fleet from its Helm chart (charts/flowplace):
the estimator and the flowplace karmada-scheduler in the host cluster, the CRDs,
RBAC and the agent (propagated to the members) in the karmada-apiserver.`,
	}
	cmd.AddCommand(newAddonsEnableCommand(), newAddonsDisableCommand(), newAddonsStatusCommand(), newAddonsListCommand())
	return cmd
}

// onlyFlowplace accepts no argument or "flowplace" (karmadactl's form).
func onlyFlowplace(_ *cobra.Command, args []string) error {
	for _, a := range args {
		if a != addon.Name && a != "all" {
			return fmt.Errorf("unknown addon %q: this command manages %q", a, addon.Name)
		}
	}
	return nil
}

func newAddonsEnableCommand() *cobra.Command {
	var o addon.EnableOptions
	cmd := &cobra.Command{
		Use:   "enable [flowplace]",
		Short: "Install or upgrade flowplace (idempotent)",
		Example: `  flowplace addons enable --kubeconfig ~/.kube/karmada-host.config \
    --karmada-kubeconfig /etc/karmada/karmada-apiserver.config \
    -C member1,member2 --set estimator.otlp.service.type=NodePort`,
		Args: onlyFlowplace,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Out = c.OutOrStdout()
			return addon.Enable(c.Context(), o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newAddonsDisableCommand() *cobra.Command {
	var o addon.DisableOptions
	cmd := &cobra.Command{
		Use:   "disable [flowplace]",
		Short: "Remove everything enable created (CRDs and their objects stay unless --purge)",
		Args:  onlyFlowplace,
		RunE: func(c *cobra.Command, _ []string) error {
			o.Out = c.OutOrStdout()
			return addon.Disable(c.Context(), o)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newAddonsStatusCommand() *cobra.Command {
	var o addon.GlobalOptions
	cmd := &cobra.Command{
		Use:   "status [flowplace]",
		Short: "Per component and member: installed, ready, data fresh; exit 0 only when all are",
		Args:  onlyFlowplace,
		RunE: func(c *cobra.Command, _ []string) error {
			r, err := addon.Status(c.Context(), o)
			if err != nil {
				return err
			}
			r.Print(c.OutOrStdout())
			if s := r.Status(); s != addon.StatusEnabled {
				return fmt.Errorf("%w: %s", addon.ErrUnhealthy, s)
			}
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

func newAddonsListCommand() *cobra.Command {
	var o addon.GlobalOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List flowplace's addon status, as karmadactl addons list",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			_, err := addon.List(c.Context(), o, c.OutOrStdout())
			return err
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
