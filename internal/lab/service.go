package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/flowplace/flowplace/internal/lab/demo"
)

// RunService runs one demo service of app until ctx ends: what the
// "lab-service" command does inside a cluster's network namespace.
func RunService(ctx context.Context, app *demo.App, name, listen string, peers []string) error {
	svc, ok := app.Service(name)
	if !ok {
		return fmt.Errorf("lab-service: no service %q in the demo app", name)
	}
	addrs := map[string]string{}
	for _, p := range peers {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return fmt.Errorf("lab-service: --peer %q: want name=host:port", p)
		}
		addrs[k] = v
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("lab-service: --listen %q: %w", listen, err)
	}
	srv, err := demo.NewServer(svc, addrs, ap.Addr())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp4", listen)
	if err != nil {
		return fmt.Errorf("lab-service %s: %w", name, err)
	}
	return srv.Serve(ctx, ln)
}
