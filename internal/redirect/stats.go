package redirect

import (
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/bpf"
)

// FallbackTier is Stat.Tier of connects made while every backend of the
// service was ejected (any backend was used).
const FallbackTier = -1

// Stat counts the connects routed to one cluster from one tier of one
// service since the counters were created (they survive agent restarts).
type Stat struct {
	Service  netip.AddrPort
	Cluster  uint16
	Tier     int // FallbackTier when chosen from all backends
	Connects uint64
	// Failed connects (unanswered SYN, reset, abandoned): what ejects.
	Failed uint64
}

// Stats reads the per-service, tier and cluster counters. Counters of a
// service that is no longer routed are left out.
func (d *Datapath) Stats() ([]Stat, error) {
	d.mu.Lock()
	stats := d.maps.stats
	byID := make(map[uint32]netip.AddrPort, len(d.tables.byID))
	for id, a := range d.tables.byID {
		byID[id] = a
	}
	d.mu.Unlock()
	if stats == nil {
		return nil, ErrClosed
	}
	var (
		k   bpf.RouteConnect4FpRouteStatsKey
		per []bpf.RouteConnect4FpRouteStats
		out []Stat
	)
	it := stats.Iterate()
	for it.Next(&k, &per) {
		a, ok := byID[k.Service]
		if !ok {
			continue
		}
		s := Stat{Service: a, Cluster: k.Cluster, Tier: int(k.Tier)}
		if k.Fallback != 0 {
			s.Tier = FallbackTier
		}
		for _, c := range per {
			s.Connects += c.Connects
			s.Failed += c.Failed
		}
		out = append(out, s)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("routing: read statistics: %w", err)
	}
	return out, nil
}

// BackendHealth is the kernel's passive health of one backend.
type BackendHealth struct {
	Failures  uint32 // consecutive failed connects since the last success
	Ejections uint32 // times ejected so far
	// EjectedUntil is when the current ejection ends; zero when never
	// ejected.
	EjectedUntil time.Time
}

// Ejected reports whether the backend is ejected at now.
func (h BackendHealth) Ejected(now time.Time) bool { return now.Before(h.EjectedUntil) }

// Health reads the health of every backend that has failed at least once.
func (d *Datapath) Health() (map[netip.AddrPort]BackendHealth, error) {
	d.mu.Lock()
	health := d.maps.health
	backends := make(map[uint32]netip.AddrPort, len(d.tables.backends))
	for id, b := range d.tables.backends {
		backends[id] = b.Addr
	}
	d.mu.Unlock()
	if health == nil {
		return nil, ErrClosed
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return nil, fmt.Errorf("routing: read monotonic clock: %w", err)
	}
	wall, mono := time.Now(), time.Duration(ts.Nano())
	var (
		id  uint32
		v   bpf.RouteConnect4FpRouteHealth
		out = map[netip.AddrPort]BackendHealth{}
	)
	it := health.Iterate()
	for it.Next(&id, &v) {
		a, ok := backends[id]
		if !ok {
			continue
		}
		h := BackendHealth{Failures: v.Failures, Ejections: v.Ejections}
		if v.EjectedUntilNs != 0 {
			// bpf_ktime_get_ns is CLOCK_MONOTONIC.
			h.EjectedUntil = wall.Add(time.Duration(v.EjectedUntilNs) - mono)
		}
		out[a] = h
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("routing: read health: %w", err)
	}
	return out, nil
}
