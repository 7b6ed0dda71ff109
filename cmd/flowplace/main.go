// Command flowplace is the flowplace CLI: observe the datapath on this host
// (and, as later issues land, run the lab and manage the Karmada addon).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	// SIGINT or SIGTERM cancels ctx and every command tears down; after the
	// first, the default action is back, so a second one ends the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	if err := newRootCommand().ExecuteContext(ctx); err != nil {
		// One line a user can act on; usage only when asked for.
		fmt.Fprintf(os.Stderr, "flowplace: %s\n", oneLine(err.Error()))
		os.Exit(1)
	}
}

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "flowplace",
		Short:         "Traffic- and latency-aware placement for Karmada",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fmt.Errorf("%s: %w (see '%s --help')", c.Name(), err, c.CommandPath())
	})
	root.AddCommand(newLabCommand(), newObserveCommand(), newAddonsCommand(), newLabServiceCommand(), newLabLoadCommand(), newLabProberCommand())
	return root
}

// oneLine folds a multi-line message (cobra's suggestions) into one line.
func oneLine(msg string) string {
	var parts []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, " ")
}
