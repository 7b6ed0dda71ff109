package redirect

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/bpf"
	"github.com/flowplace/flowplace/internal/netns"
)

// Route is a service address and one of its backends.
type Route struct {
	Service, Backend netip.AddrPort
}

// maxDoomed is route_doomed's size: larger batches go in several walks.
const maxDoomed = 4096

// CloseRouted closes the open connections that routing sent from a service
// to a backend, for every pair given, in every network namespace the routed
// cgroup's processes use; their applications see a reset and reconnect,
// and are routed afresh. Only connections routing redirected are touched.
// It returns how many it closed.
func (d *Datapath) CloseRouted(pairs []Route) (int, error) {
	if len(pairs) == 0 {
		return 0, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.maps.services == nil {
		return 0, ErrClosed
	}
	if d.iter == nil {
		return 0, errors.New("routing: datapath is closed")
	}
	nss, err := netns.OfCgroup(d.opts.Cgroup)
	defer func() {
		for _, f := range nss {
			f.Close()
		}
	}()
	if err != nil {
		return 0, fmt.Errorf("routing: %w", err)
	}
	closed := 0
	for len(pairs) > 0 {
		batch := pairs[:min(len(pairs), maxDoomed)]
		pairs = pairs[len(batch):]
		n, err := d.closeBatch(batch, nss)
		closed += n
		if err != nil {
			return closed, err
		}
	}
	return closed, nil
}

func (d *Datapath) closeBatch(batch []Route, nss []*os.File) (int, error) {
	keys := make([]bpf.RouteDestroyFpRoutePair, 0, len(batch))
	for _, p := range batch {
		s, b := normalize(p.Service), normalize(p.Backend)
		keys = append(keys, bpf.RouteDestroyFpRoutePair{
			Vip: addr16(s.Addr()), VipPort: htons(s.Port()),
			Backend: addr16(b.Addr()), BackendPort: htons(b.Port()),
		})
	}
	defer func() {
		for i := range keys {
			_ = d.maps.doomed.Delete(&keys[i])
		}
	}()
	for i := range keys {
		if err := d.maps.doomed.Update(&keys[i], uint8(1), ebpf.UpdateAny); err != nil {
			return 0, fmt.Errorf("routing: mark %s -> %s for closing: %w", batch[i].Service, batch[i].Backend, err)
		}
	}
	closed := 0
	var errs []error
	for _, ns := range nss {
		rd, err := netns.OpenIterIn(ns, d.iter)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out, err := io.ReadAll(rd)
		rd.Close()
		closed += len(out) / 8 // one u64 per closed socket
		if err != nil {
			errs = append(errs, fmt.Errorf("walk sockets of %s: %w", ns.Name(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return closed, fmt.Errorf("routing: close routed connections: %w", err)
	}
	return closed, nil
}
