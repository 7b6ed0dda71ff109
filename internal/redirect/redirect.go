// Package redirect is the kernel half of flowplace's routing: it loads the
// socket-level load balancer (cgroup connect4/6 and getpeername4/6, a
// sock_ops program for passive health, an iter/tcp program that closes
// connections to departed backends), pins its maps and links under bpffs so
// routing outlives the agent, and writes the per-service backend tables that
// package routing computes.
//
// Pinning: with Options.PinDir set, every map and every link is pinned
// there. A restarted agent (even after kill -9) opens the pinned maps, keeps
// their contents, and swaps its freshly loaded programs into the pinned
// links with one BPF_LINK_UPDATE each, so a connect is routed by the old
// programs or the new ones, never by none. Remove detaches and unpins all of
// it.
package redirect

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"k8s.io/klog/v2"

	"github.com/flowplace/flowplace/bpf"
	"github.com/flowplace/flowplace/internal/probe"
)

// Health configures passive outlier detection in the kernel.
type Health struct {
	// FailThreshold consecutive failed connects (SYN unanswered for one
	// retransmission timeout, reset, or abandoned before established) eject
	// a backend.
	FailThreshold uint32
	// BaseEjection is the first ejection's length; each further ejection of
	// the same backend doubles it, up to MaxEjection.
	BaseEjection time.Duration
	MaxEjection  time.Duration
}

// DefaultHealth ejects after 3 consecutive failures for 10 s, doubling up
// to 5 min. Istio's outlier detection ejects after 5 errors for 30 s x the
// ejection count; a failed connect here is already a SYN that went
// unanswered for a full second (or a reset), so 3 is enough evidence, and a
// shorter first ejection brings a recovered backend back sooner.
var DefaultHealth = Health{FailThreshold: 3, BaseEjection: 10 * time.Second, MaxEjection: 5 * time.Minute}

// Validate checks the values are in range.
func (h Health) Validate() error {
	switch {
	case h.FailThreshold == 0 || h.FailThreshold > 1000:
		return fmt.Errorf("routing: failure threshold %d out of range [1, 1000]", h.FailThreshold)
	case h.BaseEjection < 100*time.Millisecond:
		return fmt.Errorf("routing: base ejection %s shorter than 100ms", h.BaseEjection)
	case h.MaxEjection < h.BaseEjection:
		return fmt.Errorf("routing: max ejection %s shorter than base ejection %s", h.MaxEjection, h.BaseEjection)
	}
	return nil
}

// Options configure Open.
type Options struct {
	// Cgroup is the cgroup v2 directory whose sockets are routed.
	Cgroup string
	// PinDir is a directory on a bpffs (e.g. /sys/fs/bpf/flowplace/routing)
	// where maps and links are pinned; empty pins nothing, so routing ends
	// with Close.
	PinDir string
	// Health configures ejection; the zero value means DefaultHealth.
	Health Health
}

// Datapath is the loaded, attached routing programs and their maps.
type Datapath struct {
	opts    Options
	log     klog.Logger
	maps    maps
	progs   programs
	links   []link.Link
	iter    *link.Iter
	adopted bool // pinned state from an earlier agent was kept

	mu     sync.Mutex // the tables (tables.go)
	tables tables
}

// maps are shared by every routing object; the names are route.h's.
type maps struct {
	services, slots, backends, health, stats, config, ejecting, socks, doomed *ebpf.Map
}

func (m *maps) all() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		bpf.RouteConnect4MapRouteServices: &m.services,
		bpf.RouteConnect4MapRouteSlots:    &m.slots,
		bpf.RouteConnect4MapRouteBackends: &m.backends,
		bpf.RouteConnect4MapRouteHealth:   &m.health,
		bpf.RouteConnect4MapRouteStats:    &m.stats,
		bpf.RouteConnect4MapRouteConfig:   &m.config,
		bpf.RouteConnect4MapRouteEjecting: &m.ejecting,
		bpf.RouteConnect4MapRouteSocks:    &m.socks,
		bpf.RouteDestroyMapRouteDoomed:    &m.doomed,
	}
}

type programs struct {
	connect4, connect6, peer4, peer6, sockops, destroy *ebpf.Program
}

// hook is one cgroup attachment, named for its pin.
type hook struct {
	pin    string
	attach ebpf.AttachType
	prog   func(*programs) *ebpf.Program
}

var hooks = []hook{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(p *programs) *ebpf.Program { return p.connect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(p *programs) *ebpf.Program { return p.connect6 }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(p *programs) *ebpf.Program { return p.peer4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(p *programs) *ebpf.Program { return p.peer6 }},
	{"sockops", ebpf.AttachCGroupSockOps, func(p *programs) *ebpf.Program { return p.sockops }},
}

// ErrClosed is returned by a Datapath's methods after Close.
var ErrClosed = errors.New("routing: datapath closed")

// ErrForeignLoadBalancer says another socket-level load balancer already
// rewrites connects on this node; match with errors.Is.
var ErrForeignLoadBalancer = errors.New("another socket-level load balancer is active")

// Open checks the kernel and the node, loads the programs, adopts pinned
// state or creates it, and attaches. On error nothing new stays loaded,
// attached or pinned, and what an earlier agent pinned is left as it was.
func Open(log klog.Logger, opts Options) (_ *Datapath, err error) {
	if opts.Cgroup == "" {
		return nil, errors.New("routing: no cgroup given")
	}
	if opts.Health == (Health{}) {
		opts.Health = DefaultHealth
	}
	if err := opts.Health.Validate(); err != nil {
		return nil, err
	}
	if err := probe.CheckKernel(); err != nil {
		return nil, err
	}
	if err := probe.IsCgroup2Dir(opts.Cgroup); err != nil {
		return nil, err
	}
	if err := checkForeign(opts.Cgroup); err != nil {
		return nil, err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("%w: raise RLIMIT_MEMLOCK: %v", probe.ErrNotPermitted, err)
	}
	if opts.PinDir != "" {
		if err := checkBPFFS(opts.PinDir); err != nil {
			return nil, err
		}
	}
	d := &Datapath{opts: opts, log: log.WithName("redirect")}
	d.tables.init()
	var created []string // pins this call made, removed again on error
	defer func() {
		if err != nil {
			d.closeFDs()
			for _, p := range created {
				_ = os.Remove(p)
			}
		}
	}()
	if created, err = d.openMaps(); err != nil {
		return nil, err
	}
	if err := d.loadPrograms(); err != nil {
		return nil, err
	}
	if err := d.writeConfig(); err != nil {
		return nil, err
	}
	if err := d.tables.recover(&d.maps); err != nil {
		return nil, fmt.Errorf("routing: read pinned tables: %w", err)
	}
	linkPins, err := d.attach()
	created = append(created, linkPins...)
	if err != nil {
		return nil, err
	}
	d.iter, err = link.AttachIter(link.IterOptions{Program: d.progs.destroy})
	if err != nil {
		return nil, fmt.Errorf("routing: attach iter/tcp: %w", err)
	}
	d.log.Info("Routing datapath ready", "cgroup", opts.Cgroup, "pinDir", opts.PinDir, "adoptedPinnedState", d.adopted,
		"services", len(d.tables.services), "backends", len(d.tables.backendIDs))
	return d, nil
}

func checkBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("routing: create pin directory %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "links"), 0o700); err != nil {
		return fmt.Errorf("routing: create pin directory: %w", err)
	}
	ok, err := isBPFFS(dir)
	if err != nil {
		return fmt.Errorf("routing: pin directory %s: %w", dir, err)
	}
	if !ok {
		return fmt.Errorf("routing: pin directory %s is not on a bpffs: mount one (mount -t bpf bpf /sys/fs/bpf) or mount the host's /sys/fs/bpf into the agent", dir)
	}
	return nil
}

// openMaps opens the pinned maps, or creates (and pins) them. A pinned map
// whose layout differs from this build's (an upgrade changed it) is
// replaced: its contents cannot be read by these programs anyway, and the
// tables are rewritten by the first Apply. It returns the pins it created.
func (d *Datapath) openMaps() ([]string, error) {
	spec, err := bpf.LoadRouteConnect4()
	if err != nil {
		return nil, fmt.Errorf("routing: parse connect4 object: %w", err)
	}
	dspec, err := bpf.LoadRouteDestroy()
	if err != nil {
		return nil, fmt.Errorf("routing: parse iter/tcp object: %w", err)
	}
	specs := map[string]*ebpf.MapSpec{}
	for name, m := range spec.Maps {
		specs[name] = m
	}
	specs[bpf.RouteDestroyMapRouteDoomed] = dspec.Maps[bpf.RouteDestroyMapRouteDoomed]
	var created []string
	d.adopted = d.opts.PinDir != ""
	for name, dst := range d.maps.all() {
		ms, ok := specs[name]
		if !ok {
			return created, fmt.Errorf("routing: object has no map %s", name)
		}
		ms = ms.Copy()
		if d.opts.PinDir == "" {
			if *dst, err = ebpf.NewMap(ms); err != nil {
				return created, fmt.Errorf("routing: create map %s: %w", name, err)
			}
			continue
		}
		pin := filepath.Join(d.opts.PinDir, name)
		_, statErr := os.Stat(pin)
		existed := statErr == nil
		ms.Pinning = ebpf.PinByName
		m, err := ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: d.opts.PinDir})
		if errors.Is(err, ebpf.ErrMapIncompatible) {
			d.log.Info("Pinned routing map has another layout; replacing it", "map", pin, "reason", err.Error())
			if rerr := os.Remove(pin); rerr != nil {
				return created, fmt.Errorf("routing: replace incompatible map %s: %w", pin, rerr)
			}
			existed = false
			m, err = ebpf.NewMapWithOptions(ms, ebpf.MapOptions{PinPath: d.opts.PinDir})
		}
		if err != nil {
			return created, fmt.Errorf("routing: open map %s: %w", pin, err)
		}
		*dst = m
		if !existed {
			created = append(created, pin)
			d.adopted = false
		}
	}
	return created, nil
}

func (d *Datapath) loadPrograms() error {
	repl := map[string]*ebpf.Map{}
	for name, m := range d.maps.all() {
		repl[name] = *m
	}
	load := func(what string, spec *ebpf.CollectionSpec, err error, assign any) error {
		if err != nil {
			return fmt.Errorf("routing: parse %s object: %w", what, err)
		}
		mine := map[string]*ebpf.Map{}
		for name := range spec.Maps {
			if repl[name] == nil {
				return fmt.Errorf("routing: %s object declares unknown map %s", what, name)
			}
			mine[name] = repl[name]
		}
		if err := spec.LoadAndAssign(assign, &ebpf.CollectionOptions{MapReplacements: mine}); err != nil {
			var ve *ebpf.VerifierError
			if errors.As(err, &ve) {
				return fmt.Errorf("%w: load %s program: %w", probe.ErrUnsupportedProg, what, err)
			}
			return fmt.Errorf("routing: load %s program: %w", what, err)
		}
		return nil
	}
	var c4 struct {
		P *ebpf.Program `ebpf:"flowplace_route_connect4"`
	}
	var c6 struct {
		P *ebpf.Program `ebpf:"flowplace_route_connect6"`
	}
	var g4 struct {
		P *ebpf.Program `ebpf:"flowplace_route_getpeername4"`
	}
	var g6 struct {
		P *ebpf.Program `ebpf:"flowplace_route_getpeername6"`
	}
	var so struct {
		P *ebpf.Program `ebpf:"flowplace_route_sockops"`
	}
	var de struct {
		P *ebpf.Program `ebpf:"flowplace_route_destroy"`
	}
	steps := []struct {
		what string
		load func() (*ebpf.CollectionSpec, error)
		dst  any
		prog **ebpf.Program
		got  **ebpf.Program
	}{
		{"connect4", bpf.LoadRouteConnect4, &c4, &d.progs.connect4, &c4.P},
		{"connect6", bpf.LoadRouteConnect6, &c6, &d.progs.connect6, &c6.P},
		{"getpeername4", bpf.LoadRouteGetpeername4, &g4, &d.progs.peer4, &g4.P},
		{"getpeername6", bpf.LoadRouteGetpeername6, &g6, &d.progs.peer6, &g6.P},
		{"sock_ops", bpf.LoadRouteSockops, &so, &d.progs.sockops, &so.P},
		{"iter/tcp (bpf_sock_destroy, Linux 6.5+)", bpf.LoadRouteDestroy, &de, &d.progs.destroy, &de.P},
	}
	for _, s := range steps {
		spec, err := s.load()
		if err := load(s.what, spec, err, s.dst); err != nil {
			return err
		}
		*s.prog = *s.got
	}
	return nil
}

func (d *Datapath) writeConfig() error {
	h := d.opts.Health
	cfg := bpf.RouteConnect4FpRouteConfig{
		FailThreshold:  h.FailThreshold,
		BaseEjectionNs: uint64(h.BaseEjection),
		MaxEjectionNs:  uint64(h.MaxEjection),
	}
	if err := d.maps.config.Update(uint32(0), &cfg, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("routing: write health config: %w", err)
	}
	return nil
}

// attach swaps the programs into pinned links, or attaches (and pins) new
// ones. A pinned link of another cgroup (the agent's cgroup option
// changed) is replaced. It returns the link pins it created.
func (d *Datapath) attach() ([]string, error) {
	var created []string
	cgroupID, err := probe.CgroupID(d.opts.Cgroup)
	if err != nil {
		return nil, err
	}
	for _, h := range hooks {
		prog := h.prog(&d.progs)
		pin := ""
		if d.opts.PinDir != "" {
			pin = filepath.Join(d.opts.PinDir, "links", h.pin)
			if l, err := link.LoadPinnedLink(pin, nil); err == nil {
				info, ierr := l.Info()
				if ierr == nil && info.Cgroup() != nil && info.Cgroup().CgroupId == cgroupID {
					if err := l.Update(prog); err != nil {
						l.Close()
						return created, fmt.Errorf("routing: swap program into pinned %s link: %w", h.pin, err)
					}
					d.links = append(d.links, l)
					continue
				}
				d.log.Info("Pinned routing link is attached elsewhere; replacing it", "link", pin)
				_ = l.Unpin()
				l.Close()
			} else if !errors.Is(err, os.ErrNotExist) {
				return created, fmt.Errorf("routing: open pinned link %s: %w", pin, err)
			}
			d.adopted = false
		}
		l, err := link.AttachCgroup(link.CgroupOptions{Path: d.opts.Cgroup, Attach: h.attach, Program: prog})
		if err != nil {
			return created, fmt.Errorf("routing: attach %s to %s: %w", h.pin, d.opts.Cgroup, err)
		}
		d.links = append(d.links, l)
		if pin != "" {
			if err := l.Pin(pin); err != nil {
				return created, fmt.Errorf("routing: pin %s link: %w", h.pin, err)
			}
			created = append(created, pin)
		}
	}
	return created, nil
}

// AdoptedPinnedState reports whether Open found every map and link pinned
// by an earlier agent and kept them (routing had no gap).
func (d *Datapath) AdoptedPinnedState() bool { return d.adopted }

// RoutedSockets is the map of sockets routing redirected, for
// probe.Options.RoutedSockets. It stays valid until Close.
func (d *Datapath) RoutedSockets() *ebpf.Map { return d.maps.socks }

// Programs returns the loaded programs by name, for run-time statistics.
func (d *Datapath) Programs() map[string]*ebpf.Program {
	return map[string]*ebpf.Program{
		"route_connect4": d.progs.connect4, "route_connect6": d.progs.connect6,
		"route_getpeername4": d.progs.peer4, "route_getpeername6": d.progs.peer6,
		"route_sockops": d.progs.sockops, "route_destroy": d.progs.destroy,
	}
}

// Close releases this process's handles. Pinned links and maps stay, and
// keep routing, until Remove; without PinDir routing ends here.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.closeFDs()
}

func (d *Datapath) closeFDs() error {
	var errs []error
	if d.iter != nil {
		errs = append(errs, d.iter.Close())
		d.iter = nil
	}
	for _, l := range d.links {
		errs = append(errs, l.Close())
	}
	d.links = nil
	for _, p := range []**ebpf.Program{&d.progs.connect4, &d.progs.connect6, &d.progs.peer4, &d.progs.peer6, &d.progs.sockops, &d.progs.destroy} {
		if *p != nil {
			errs = append(errs, (*p).Close())
			*p = nil
		}
	}
	for _, m := range d.maps.all() {
		if *m != nil {
			errs = append(errs, (*m).Close())
			*m = nil
		}
	}
	return errors.Join(errs...)
}

// Remove detaches and deletes everything routing pinned under pinDir, so
// that disabling routing leaves no program or map behind. Connections
// already routed keep their backend. An absent pinDir is no error.
func Remove(pinDir string) error {
	if pinDir == "" {
		return errors.New("routing: no pin directory given")
	}
	var errs []error
	for _, h := range hooks {
		pin := filepath.Join(pinDir, "links", h.pin)
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("open pinned link %s: %w", pin, err))
			continue
		}
		// Unpinned, the link's last reference is this fd: closing it detaches.
		if err := l.Unpin(); err != nil {
			errs = append(errs, fmt.Errorf("unpin %s: %w", pin, err))
		}
		errs = append(errs, l.Close())
	}
	var m maps
	for name := range m.all() {
		if err := os.Remove(filepath.Join(pinDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("unpin map %s: %w", name, err))
		}
	}
	for _, dir := range []string{filepath.Join(pinDir, "links"), pinDir} {
		if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove %s: %w", dir, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("routing: remove pinned state: %w", err)
	}
	return nil
}
