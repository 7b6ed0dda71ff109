package probe

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/bpf"
)

// natKey is the IPv4 address:port key of nat_services.
func natKey(a netip.AddrPort) bpf.SockopsFpRedirectKey {
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
	k := natKey(service)
	if err := p.sockops.NatServices.Update(&k, uint8(1), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("mark NAT service %s: %w", service, err)
	}
	return nil
}

// DeleteNATService unmarks a service address; absent ones are not an error.
func (p *Probe) DeleteNATService(service netip.AddrPort) error {
	k := natKey(service)
	if err := p.sockops.NatServices.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("unmark NAT service %s: %w", service, err)
	}
	return nil
}
