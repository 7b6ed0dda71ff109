package probe

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/bpf"
)

// SetRedirect makes connects to service go to backend instead, at socket
// level; the application still sees service as its peer. IPv4 only.
func (p *Probe) SetRedirect(service, backend netip.AddrPort) error {
	if !service.Addr().Is4() || !backend.Addr().Is4() {
		return fmt.Errorf("redirect %s -> %s: only IPv4 is supported", service, backend)
	}
	k, v := redirectKey(service), bpf.SockopsFpRedirectTarget{Addr: be32(backend.Addr()), Port: htons(backend.Port())}
	if err := p.sockops.Redirects.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("program redirect %s -> %s: %w", service, backend, err)
	}
	return nil
}

// DeleteRedirect removes a redirect; absent ones are not an error.
func (p *Probe) DeleteRedirect(service netip.AddrPort) error {
	k := redirectKey(service)
	if err := p.sockops.Redirects.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove redirect for %s: %w", service, err)
	}
	return nil
}

func redirectKey(a netip.AddrPort) bpf.SockopsFpRedirectKey {
	return bpf.SockopsFpRedirectKey{Addr: be32(a.Addr()), Port: htons(a.Port())}
}

// be32 returns the address as the kernel stores a __be32 read on a
// little-endian host.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func htons(p uint16) uint16 { return p<<8 | p>>8 }

// SetNATService marks a service address that is translated outside the
// socket (a kube-proxy ClusterIP:port). Connections to it are kept one flow
// per connection so their real backend can be looked up in conntrack.
func (p *Probe) SetNATService(service netip.AddrPort) error {
	if !service.Addr().Is4() {
		return fmt.Errorf("NAT service %s: only IPv4 is supported", service)
	}
	k := redirectKey(service)
	if err := p.sockops.NatServices.Update(&k, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("mark NAT service %s: %w", service, err)
	}
	return nil
}

// DeleteNATService unmarks a service address; absent ones are not an error.
func (p *Probe) DeleteNATService(service netip.AddrPort) error {
	k := redirectKey(service)
	if err := p.sockops.NatServices.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unmark NAT service %s: %w", service, err)
	}
	return nil
}
