package main

import (
	"fmt"
	"time"

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

// newLabLoadCommand runs one cluster's client load; flowplace lab
// --kubernetes runs it as a Job in every member cluster.
func newLabLoadCommand() *cobra.Command {
	var target string
	var rate float64
	var duration time.Duration
	cmd := &cobra.Command{
		Use:    "lab-load",
		Short:  "Send the lab's client load to the demo's entry service and print a JSON report (used by flowplace lab --kubernetes)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return lab.RunLoadGenerator(cmd.Context(), target, rate, duration, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "host:port of the entry service")
	cmd.Flags().Float64Var(&rate, "rate", 5, "requests per second")
	cmd.Flags().DurationVar(&duration, "duration", 20*time.Second, "how long to send")
	cmd.MarkFlagRequired("target")
	return cmd
}

// newLabProberCommand connects to a service address at a fixed interval and
// prints one JSON line per connect; the lab runs it inside a cluster to
// time a failover.
func newLabProberCommand() *cobra.Command {
	var target string
	var interval, duration time.Duration
	cmd := &cobra.Command{
		Use:    "lab-prober",
		Short:  "Connect to a service address every interval and print each result as JSON (used by flowplace lab)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 || duration <= 0 {
				return fmt.Errorf("lab-prober: --interval and --duration must be positive")
			}
			return lab.RunProber(cmd.Context(), target, interval, duration, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&target, "target", "", "host:port to connect to")
	cmd.Flags().DurationVar(&interval, "interval", 5*time.Millisecond, "time between connects")
	cmd.Flags().DurationVar(&duration, "duration", 10*time.Second, "how long to probe")
	cmd.MarkFlagRequired("target")
	return cmd
}
