// Package probe loads flowplace's eBPF socket programs, attaches them to a
// cgroup v2, and reads the per-flow aggregates they keep in the kernel.
package probe

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"

	"github.com/flowplace/flowplace/bpf"
)

// DefaultMaxFlows bounds the kernel's flow table. An entry is ~1.5 KiB (it
// carries its RTT histogram), so 4096 flows cost ~6 MiB of kernel memory.
const DefaultMaxFlows = 4096

// Options configure Load.
type Options struct {
	// Cgroup is the cgroup v2 directory whose sockets (and its
	// descendants') are observed.
	Cgroup string
	// MaxFlows is the size of the LRU flow table; 0 means DefaultMaxFlows.
	MaxFlows uint32
	// RoutedSockets is routing's map of the sockets it redirected
	// (redirect.Datapath.RoutedSockets), so that a connection routed before
	// the measurement programs ran is attributed to the service address it
	// dialed. Nil when routing is off.
	RoutedSockets *ebpf.Map
}

// Probe is a loaded and attached set of programs. Close releases all of it.
type Probe struct {
	cgroup   string
	sockops  bpf.SockopsObjects
	connect4 bpf.Connect4Objects
	connect6 bpf.Connect6Objects
	// routed is opts.RoutedSockets, or a one-entry stand-in owned here.
	routed    *ebpf.Map
	ownRouted bool
	links     []link.Link
	// Adoption of connections open before attach (adopt.go). Optional: a
	// kernel that refuses it still measures new connections; adoptErr says
	// why it is unavailable.
	adopt     adoptObjects
	adoptIter *link.Iter
	adoptErr  error
	adoptMu   sync.Mutex // one walk at a time (walkGen, the listener table)
	walkGen   uint32
	evicted   uint64 // highest eviction estimate reported so far
	deleted   uint64 // entries removed by userspace (not evictions)
}

// Load checks the kernel, loads the programs and attaches them to
// opts.Cgroup. On error nothing stays loaded or attached. Connections that
// were open before are measured once AdoptExisting has found them; a kernel
// that cannot adopt them is no error here (AdoptExisting reports it).
func Load(opts Options) (_ *Probe, err error) {
	if opts.Cgroup == "" {
		return nil, errors.New("probe: no cgroup given")
	}
	if opts.MaxFlows == 0 {
		opts.MaxFlows = DefaultMaxFlows
	}
	if opts.MaxFlows < 16 || opts.MaxFlows > 1<<20 {
		return nil, fmt.Errorf("probe: max flows %d out of range [16, 1048576]", opts.MaxFlows)
	}
	if err := CheckKernel(); err != nil {
		return nil, err
	}
	if err := IsCgroup2Dir(opts.Cgroup); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("%w: raise RLIMIT_MEMLOCK: %v", ErrNotPermitted, err)
	}

	p := &Probe{cgroup: opts.Cgroup}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()

	sockopsSpec, err := bpf.LoadSockops()
	if err != nil {
		return nil, fmt.Errorf("parse sock_ops object: %w", err)
	}
	sockopsSpec.Maps[bpf.SockopsMapFlows].MaxEntries = opts.MaxFlows
	if err := sockopsSpec.LoadAndAssign(&p.sockops, nil); err != nil {
		return nil, fmt.Errorf("load sock_ops program: %w", verifierDetail(err))
	}
	connectSpec, err := bpf.LoadConnect4()
	if err != nil {
		return nil, fmt.Errorf("parse connect4 object: %w", err)
	}
	p.routed = opts.RoutedSockets
	if p.routed == nil {
		// Socket storage: empty, and costing nothing, without routing.
		spec := connectSpec.Maps[bpf.Connect4MapRouteSocks].Copy()
		if p.routed, err = ebpf.NewMap(spec); err != nil {
			return nil, fmt.Errorf("create routed-socket stand-in: %w", err)
		}
		p.ownRouted = true
	}
	shared := map[string]*ebpf.Map{
		bpf.SockopsMapFlows:       p.sockops.Flows,
		bpf.SockopsMapConns:       p.sockops.Conns,
		bpf.SockopsMapCounters:    p.sockops.Counters,
		bpf.SockopsMapNatServices: p.sockops.NatServices,
		bpf.Connect4MapRouteSocks: p.routed,
	}
	p.sizeMaps(connectSpec, opts)
	if err := connectSpec.LoadAndAssign(&p.connect4, &ebpf.CollectionOptions{MapReplacements: shared}); err != nil {
		return nil, fmt.Errorf("load connect4 program: %w", verifierDetail(err))
	}
	connect6Spec, err := bpf.LoadConnect6()
	if err != nil {
		return nil, fmt.Errorf("parse connect6 object: %w", err)
	}
	p.sizeMaps(connect6Spec, opts)
	if err := connect6Spec.LoadAndAssign(&p.connect6, &ebpf.CollectionOptions{MapReplacements: shared}); err != nil {
		return nil, fmt.Errorf("load connect6 program: %w", verifierDetail(err))
	}

	// connect4/6 first: a socket must have its dialed address recorded before
	// sock_ops sees it established.
	attach := []struct {
		name string
		typ  ebpf.AttachType
		prog *ebpf.Program
	}{
		{"cgroup/connect4", ebpf.AttachCGroupInet4Connect, p.connect4.FlowplaceConnect4},
		{"cgroup/connect6", ebpf.AttachCGroupInet6Connect, p.connect6.FlowplaceConnect6},
		{"sock_ops", ebpf.AttachCGroupSockOps, p.sockops.FlowplaceSockops},
	}
	for _, a := range attach {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: opts.Cgroup, Attach: a.typ, Program: a.prog})
		if err != nil {
			return nil, fmt.Errorf("attach %s to %s: %w", a.name, opts.Cgroup, err)
		}
		p.links = append(p.links, l)
	}
	// After sock_ops is attached: a connection established from now on is
	// seen by sock_ops, one established before by the walk (AdoptExisting).
	if err := p.loadAdopt(opts, shared); err != nil {
		p.adoptErr = err
	}
	return p, nil
}

// sizeMaps gives an object's copies of the shared maps the sizes of the
// maps that replace them: a replacement must match its spec.
func (p *Probe) sizeMaps(spec *ebpf.CollectionSpec, opts Options) {
	sizes := map[string]uint32{
		bpf.SockopsMapFlows:       opts.MaxFlows,
		bpf.Connect4MapRouteSocks: p.routed.MaxEntries(),
	}
	for name, n := range sizes {
		if m, ok := spec.Maps[name]; ok {
			m.MaxEntries = n
		}
	}
}

func verifierDetail(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w: %w", ErrUnsupportedProg, err)
	}
	return err
}

// Cgroup is the cgroup the programs are attached to.
func (p *Probe) Cgroup() string { return p.cgroup }

// Programs returns the loaded programs by section name, for run-time
// statistics and inspection.
func (p *Probe) Programs() map[string]*ebpf.Program {
	m := map[string]*ebpf.Program{}
	if p.sockops.FlowplaceSockops != nil {
		m["sock_ops"] = p.sockops.FlowplaceSockops
	}
	if p.connect4.FlowplaceConnect4 != nil {
		m["connect4"] = p.connect4.FlowplaceConnect4
	}
	if p.connect6.FlowplaceConnect6 != nil {
		m["connect6"] = p.connect6.FlowplaceConnect6
	}
	if p.adopt.FlowplaceAdopt != nil {
		m["adopt"] = p.adopt.FlowplaceAdopt
	}
	return m
}

// Close detaches every program and releases every map. It is safe to call
// more than once.
func (p *Probe) Close() error {
	var errs []error
	for i := len(p.links) - 1; i >= 0; i-- {
		if err := p.links[i].Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach: %w", err))
		}
	}
	p.links = nil
	p.adoptMu.Lock() // not while a walk runs
	defer p.adoptMu.Unlock()
	if p.adoptIter != nil {
		if err := p.adoptIter.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach iter/tcp: %w", err))
		}
		p.adoptIter = nil
	}
	for _, c := range []interface{ Close() error }{&p.adopt, &p.connect6, &p.connect4, &p.sockops} {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if p.ownRouted && p.routed != nil {
		if err := p.routed.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	p.routed, p.ownRouted = nil, false
	p.adopt, p.connect6, p.connect4, p.sockops = adoptObjects{}, bpf.Connect6Objects{}, bpf.Connect4Objects{}, bpf.SockopsObjects{}
	return errors.Join(errs...)
}
