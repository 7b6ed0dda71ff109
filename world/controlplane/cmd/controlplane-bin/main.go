// Command controlplane-bin builds (or finds in the cache) the kube-apiserver,
// kube-proxy and etcd binaries that world/controlplane runs, and prints the
// directory holding them. hack/build-controlplane.sh and `make
// controlplane-bin` run it; tests call controlplane.Binaries directly, which
// uses the same cache key (from the embedded copy of the tools module), so a
// prebuilt cache makes the first test run and every flowplace binary warm.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/flowplace/flowplace/world/controlplane"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	p, err := controlplane.Binaries(ctx, logf)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(p.Dir)
}
