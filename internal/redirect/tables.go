package redirect

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/flowplace/flowplace/bpf"
)

// MaxTiers is the number of tiers a service can have (route.h
// RT_MAX_TIERS); MaxBackends bounds a service's backends over all tiers.
const (
	MaxTiers    = 8
	MaxBackends = 65535
)

// Backend is one endpoint a service can be routed to.
type Backend struct {
	Addr netip.AddrPort
	// Cluster is the caller's index of the backend's cluster, reported
	// back in Stats.
	Cluster uint16
}

// Service is the routing table of one service address.
type Service struct {
	// Addr is what applications dial (a ClusterIP and port).
	Addr netip.AddrPort
	// Tiers in order of preference: a connect goes to a healthy backend of
	// the first tier that has one, chosen at random within it. Empty tiers
	// are skipped. IPv4 services take IPv4 backends, IPv6 ones IPv6.
	Tiers [][]Backend
}

type serviceState struct {
	id    uint32
	rev   uint8
	tiers [][]Backend // as programmed
}

func (s *serviceState) total() int {
	n := 0
	for _, t := range s.tiers {
		n += len(t)
	}
	return n
}

// tables mirrors what the maps hold, so Apply writes only what changed.
type tables struct {
	services    map[netip.AddrPort]*serviceState
	byID        map[uint32]netip.AddrPort
	backendIDs  map[netip.AddrPort]uint32
	backends    map[uint32]Backend
	refs        map[uint32]int
	nextService uint32
	nextBackend uint32
}

func (t *tables) init() {
	t.services = map[netip.AddrPort]*serviceState{}
	t.byID = map[uint32]netip.AddrPort{}
	t.backendIDs = map[netip.AddrPort]uint32{}
	t.backends = map[uint32]Backend{}
	t.refs = map[uint32]int{}
	t.nextService, t.nextBackend = 1, 1
}

func addr16(a netip.Addr) [16]uint8 { return a.As16() }

func htons(p uint16) uint16 { return p<<8 | p>>8 }

func addrPort(a [16]uint8, bePort uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(a).Unmap(), htons(bePort))
}

func serviceKey(a netip.AddrPort) bpf.RouteConnect4FpRouteServiceKey {
	return bpf.RouteConnect4FpRouteServiceKey{Addr: addr16(a.Addr()), Port: htons(a.Port())}
}

// normalize unmaps v4-mapped addresses, so 10.0.0.1 and ::ffff:10.0.0.1
// are one service and one backend.
func normalize(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// recover rebuilds the mirror from pinned maps an earlier agent left, and
// drops what a crash in the middle of an update left behind: slots of a
// revision that is not live, and backends no service uses.
func (t *tables) recover(m *maps) error {
	var (
		k  bpf.RouteConnect4FpRouteServiceKey
		v  bpf.RouteConnect4FpRouteService
		it = m.services.Iterate()
	)
	type live struct {
		addr netip.AddrPort
		svc  bpf.RouteConnect4FpRouteService
	}
	byID := map[uint32]live{}
	for it.Next(&k, &v) {
		a := addrPort(k.Addr, k.Port)
		byID[v.Id] = live{a, v}
		t.nextService = max(t.nextService, v.Id+1)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read services: %w", err)
	}
	var (
		bid uint32
		bv  bpf.RouteConnect4FpRouteBackend
	)
	bit := m.backends.Iterate()
	for bit.Next(&bid, &bv) {
		b := Backend{Addr: addrPort(bv.Addr, bv.Port), Cluster: bv.Cluster}
		t.backends[bid] = b
		t.backendIDs[b.Addr] = bid
		t.nextBackend = max(t.nextBackend, bid+1)
	}
	if err := bit.Err(); err != nil {
		return fmt.Errorf("read backends: %w", err)
	}
	slots := map[uint32]map[uint16]uint32{}
	var (
		sk    bpf.RouteConnect4FpRouteSlotKey
		sv    bpf.RouteConnect4FpRouteSlot
		stale []bpf.RouteConnect4FpRouteSlotKey
	)
	sit := m.slots.Iterate()
	for sit.Next(&sk, &sv) {
		l, ok := byID[sk.Service]
		if !ok || l.svc.Rev != sk.Rev {
			stale = append(stale, sk)
			continue
		}
		if slots[sk.Service] == nil {
			slots[sk.Service] = map[uint16]uint32{}
		}
		slots[sk.Service][sk.Slot] = sv.Backend
	}
	if err := sit.Err(); err != nil {
		return fmt.Errorf("read slots: %w", err)
	}
	for _, s := range stale {
		if err := m.slots.Delete(&s); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete stale slot: %w", err)
		}
	}
	for id, l := range byID {
		st := &serviceState{id: id, rev: l.svc.Rev}
		slot := uint16(0)
		for ti := 0; ti < int(l.svc.N_tiers) && ti < MaxTiers; ti++ {
			var tier []Backend
			for range l.svc.TierLen[ti] {
				if b, ok := t.backends[slots[id][slot]]; ok {
					tier = append(tier, b)
					t.refs[slots[id][slot]]++
				}
				slot++
			}
			st.tiers = append(st.tiers, tier)
		}
		t.services[l.addr] = st
		t.byID[id] = l.addr
	}
	return t.collect(m)
}

// collect deletes the backends no service references any more.
func (t *tables) collect(m *maps) error {
	var errs []error
	for id, b := range t.backends {
		if t.refs[id] > 0 {
			continue
		}
		if err := m.backends.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete backend %s: %w", b.Addr, err))
			continue
		}
		if err := m.health.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("delete health of %s: %w", b.Addr, err))
		}
		delete(t.backends, id)
		delete(t.backendIDs, b.Addr)
		delete(t.refs, id)
	}
	return errors.Join(errs...)
}

func validate(desired []Service) ([]Service, error) {
	out := make([]Service, 0, len(desired))
	seen := map[netip.AddrPort]bool{}
	for _, s := range desired {
		vip := normalize(s.Addr)
		if !vip.IsValid() || vip.Port() == 0 || vip.Addr().IsUnspecified() {
			return nil, fmt.Errorf("routing: invalid service address %q", s.Addr)
		}
		if seen[vip] {
			return nil, fmt.Errorf("routing: service %s given twice", vip)
		}
		seen[vip] = true
		if len(s.Tiers) > MaxTiers {
			return nil, fmt.Errorf("routing: service %s has %d tiers, at most %d", vip, len(s.Tiers), MaxTiers)
		}
		n := Service{Addr: vip}
		inService := map[netip.AddrPort]bool{}
		total := 0
		for _, tier := range s.Tiers {
			nt := make([]Backend, 0, len(tier))
			for _, b := range tier {
				a := normalize(b.Addr)
				if !a.IsValid() || a.Port() == 0 || a.Addr().IsUnspecified() {
					return nil, fmt.Errorf("routing: service %s: invalid backend %q", vip, b.Addr)
				}
				if a.Addr().Is4() != vip.Addr().Is4() {
					return nil, fmt.Errorf("routing: service %s: backend %s is of the other IP family", vip, a)
				}
				if inService[a] {
					return nil, fmt.Errorf("routing: service %s: backend %s given twice", vip, a)
				}
				inService[a] = true
				nt = append(nt, Backend{Addr: a, Cluster: b.Cluster})
			}
			total += len(nt)
			n.Tiers = append(n.Tiers, nt)
		}
		if total > MaxBackends {
			return nil, fmt.Errorf("routing: service %s has %d backends, at most %d", vip, total, MaxBackends)
		}
		out = append(out, n)
	}
	return out, nil
}

// Apply makes the kernel's tables exactly desired: services not in it stop
// being routed (connects reach the service address again, for kube-proxy).
// Input is checked whole before anything is written, so bad input changes
// nothing. Each service switches from its old table to its new one in one
// map update. It returns how many services it wrote or removed.
func (d *Datapath) Apply(desired []Service) (int, error) {
	want, err := validate(desired)
	if err != nil {
		return 0, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.maps.services == nil {
		return 0, ErrClosed
	}
	t, m := &d.tables, &d.maps
	changed := 0
	var errs []error
	keep := map[netip.AddrPort]bool{}
	for _, s := range want {
		keep[s.Addr] = true
		st := t.services[s.Addr]
		if st != nil && slices.EqualFunc(st.tiers, s.Tiers, slices.Equal) {
			continue
		}
		if err := d.writeService(s, st); err != nil {
			errs = append(errs, err)
			continue
		}
		changed++
	}
	for a, st := range t.services {
		if keep[a] {
			continue
		}
		k := serviceKey(a)
		if err := m.services.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("routing: remove service %s: %w", a, err))
			continue
		}
		d.deleteSlots(st)
		delete(t.services, a)
		delete(t.byID, st.id)
		changed++
	}
	if err := t.collect(m); err != nil {
		errs = append(errs, fmt.Errorf("routing: %w", err))
	}
	return changed, errors.Join(errs...)
}

// writeService writes s's backends and slots under the revision that is not
// live, then switches the service entry to it, then drops the old slots.
func (d *Datapath) writeService(s Service, old *serviceState) error {
	t, m := &d.tables, &d.maps
	st := &serviceState{tiers: s.Tiers}
	if old != nil {
		st.id, st.rev = old.id, old.rev^1
	} else {
		st.id = t.nextService
		t.nextService++
	}
	var ids []uint32
	var slots []bpf.RouteConnect4FpRouteSlot
	for _, tier := range s.Tiers {
		for _, b := range tier {
			id, err := d.backendID(b)
			if err != nil {
				return fmt.Errorf("routing: service %s: %w", s.Addr, err)
			}
			ids = append(ids, id)
			slots = append(slots, bpf.RouteConnect4FpRouteSlot{Backend: id, Be: backendValue(b)})
		}
	}
	for i := range slots {
		k := bpf.RouteConnect4FpRouteSlotKey{Service: st.id, Slot: uint16(i), Rev: st.rev}
		if err := m.slots.Update(&k, &slots[i], ebpf.UpdateAny); err != nil {
			return fmt.Errorf("routing: service %s: write slot %d: %w", s.Addr, i, err)
		}
	}
	v := bpf.RouteConnect4FpRouteService{Id: st.id, Rev: st.rev, N_tiers: uint8(len(s.Tiers)), Total: uint16(len(ids))}
	for i, tier := range s.Tiers {
		v.TierLen[i] = uint16(len(tier))
	}
	k := serviceKey(s.Addr)
	if err := m.services.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("routing: write service %s: %w", s.Addr, err)
	}
	for _, id := range ids {
		t.refs[id]++
	}
	if old != nil {
		d.deleteSlots(old)
	}
	t.services[s.Addr] = st
	t.byID[st.id] = s.Addr
	return nil
}

// deleteSlots removes a table that is no longer live and releases its
// backends. A slot that cannot be deleted only wastes an entry: no service
// entry points at its revision, and the next writer of that revision
// overwrites it.
func (d *Datapath) deleteSlots(st *serviceState) {
	t, m := &d.tables, &d.maps
	slot := uint16(0)
	for _, tier := range st.tiers {
		for _, b := range tier {
			k := bpf.RouteConnect4FpRouteSlotKey{Service: st.id, Slot: slot, Rev: st.rev}
			if err := m.slots.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				d.log.V(2).Info("Stale routing slot left", "slot", slot, "err", err)
			}
			if id, ok := t.backendIDs[b.Addr]; ok {
				t.refs[id]--
			}
			slot++
		}
	}
}

func (d *Datapath) backendID(b Backend) (uint32, error) {
	t, m := &d.tables, &d.maps
	id, ok := t.backendIDs[b.Addr]
	if ok && t.backends[id].Cluster == b.Cluster {
		return id, nil
	}
	if !ok {
		id = t.nextBackend
		t.nextBackend++
	}
	v := backendValue(b)
	if err := m.backends.Update(id, &v, ebpf.UpdateAny); err != nil {
		return 0, fmt.Errorf("write backend %s: %w", b.Addr, err)
	}
	t.backendIDs[b.Addr] = id
	t.backends[id] = b
	return id, nil
}

const (
	afInet  = 2
	afInet6 = 10
)

func backendValue(b Backend) bpf.RouteConnect4FpRouteBackend {
	v := bpf.RouteConnect4FpRouteBackend{Addr: addr16(b.Addr.Addr()), Port: htons(b.Addr.Port()), Cluster: b.Cluster, Family: afInet6}
	if b.Addr.Addr().Is4() {
		v.Family = afInet
	}
	return v
}

// Tables returns what the kernel routes now, by service address.
func (d *Datapath) Tables() map[netip.AddrPort][][]Backend {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[netip.AddrPort][][]Backend, len(d.tables.services))
	for a, st := range d.tables.services {
		out[a] = st.tiers
	}
	return out
}
