package main

import (
	"github.com/spf13/cobra"

	"github.com/flowplace/flowplace/internal/lab"
	"github.com/flowplace/flowplace/internal/lab/demo"
)

// newLabServiceCommand runs one demo service; the lab starts it inside a
// cluster's network namespace and cgroup.
func newLabServiceCommand() *cobra.Command {
	var name, listen string
	var peers []string
	cmd := &cobra.Command{
		Use:    "lab-service",
		Short:  "Run one service of the lab's demo application (used by flowplace lab)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.RunService(cmd.Context(), demo.Shop(), name, listen, peers)
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "service name")
	cmd.Flags().StringVar(&listen, "listen", "", "address to listen on")
	cmd.Flags().StringArrayVar(&peers, "peer", nil, "name=host:port of a service it calls (repeatable)")
	cmd.MarkFlagRequired("name")
	cmd.MarkFlagRequired("listen")
	return cmd
}
