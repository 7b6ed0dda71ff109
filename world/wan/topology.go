// Package wan builds a "multi-cluster WAN" out of Linux network
// namespaces for tests and one-machine labs.
//
// Every cluster is a network namespace with a TUN device (fpwan0) that owns
// the cluster's /24 address block. All traffic for the topology's /16 is
// routed into the TUN, where a userspace forwarder (the hub) reads it, holds
// it for half the pair's extra RTT and writes it into the destination
// cluster's TUN. A userspace hub is used because the
// kernels this runs on have neither netem nor fq, so the delay cannot be
// configured in the kernel.
//
// The hub is a Go event loop in a child process of the caller: the same
// binary re-executed, which this package's init turns into the hub (see
// hub.go). Its threads are SCHED_FIFO when permitted and it busy-waits the
// last 300µs before each release, so a measured RTT is the injected one plus
// tens of µs, and neither the caller's goroutines and GC nor other processes
// on a loaded machine disturb it much. The child exits when the topology is
// closed or its parent dies.
//
// Traffic between addresses of the same cluster never leaves the kernel's
// local path and sees no added delay.
package wan

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// MaxClusters bounds the topology: the third address octet encodes the
	// cluster and the hub keeps one queue per directed pair.
	MaxClusters = 16
	// DefaultAddrBase is the second octet of the topology's 10.x.0.0/16.
	DefaultAddrBase = 77
	// MaxExtraRTT is a sanity bound that catches unit mistakes (e.g. a
	// number of seconds passed where milliseconds were meant).
	MaxExtraRTT = time.Minute

	maxPrefixLen  = 15
	maxClusterLen = 16
	// defaultPrefixStem starts every generated prefix; Sweep(defaultPrefixStem)
	// cleans up after any killed test run.
	defaultPrefixStem = "fpt"
)

var (
	// Prefixes may not contain '-': the first '-' of a namespace name separates
	// the topology prefix from the cluster name, which Sweep relies on.
	prefixRE  = regexp.MustCompile(`^[A-Za-z0-9_]+$`)
	clusterRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
)

// Config describes a topology.
type Config struct {
	// Prefix names the topology's namespaces "<Prefix>-<cluster>". It must be
	// unique on the machine, at most 15 characters of [A-Za-z0-9_].
	// Empty means a generated "fpt<pid>x<hex>".
	Prefix string
	// Clusters are 1..16 distinct DNS-label-like names (lowercase letters,
	// digits and inner '-', at most 16 characters), e.g. "us-east-1".
	Clusters []string
	// ExtraRTT is the round-trip time the hub adds between two clusters.
	// It is symmetric: {A,B} and {B,A} are the same pair. Missing pairs get 0.
	ExtraRTT map[Pair]time.Duration
	// AddrBase is the second octet of the topology's 10.<AddrBase>.0.0/16.
	// 0 means DefaultAddrBase.
	AddrBase uint8
	// QuickACK makes every cluster ACK each segment at once (the WAN route
	// carries "quickack 1") instead of delaying ACKs. With delayed ACKs a
	// kernel RTT sample of request/response traffic also contains how long
	// the peer application took to answer, which on a loaded machine can be
	// milliseconds; with QuickACK the samples are the path's RTT. Off by
	// default, as on real hosts.
	QuickACK bool
}

// Pair names two clusters. As a key of Config.ExtraRTT it is unordered; in
// ForwarderStats it is directed from A to B.
type Pair struct{ A, B string }

// Topology is a running set of clusters joined by the delaying hub.
type Topology struct {
	prefix    string
	base      uint8
	quickACK  bool
	statePath string
	clusters  []*Cluster
	byName    map[string]*Cluster
	hub       *hub

	// mgmtMu guards the management network and every cluster's nodes.
	mgmtMu       sync.Mutex
	mgmtBridge   string // "" until the first node or ManagementGateway
	nextMgmtHost int    // last host number given on the management network

	closeOnce sync.Once
	closeErr  error
	closed    atomic.Bool
	// abandoned is set by the test hook that stops the hub but leaves the
	// namespaces behind, as a killed process would.
	abandoned bool
}

// prefixCounter makes generated prefixes unique within a process even when
// the random part collides.
var prefixCounter atomic.Uint32

func defaultPrefix() string {
	n := (prefixCounter.Add(1) + uint32(rand.IntN(1<<16))) & 0xffff
	return fmt.Sprintf("%s%dx%04x", defaultPrefixStem, os.Getpid(), n)
}

// validate checks cfg and returns the normalized per-pair RTTs. It has no side
// effects so a bad config creates nothing.
func validate(cfg *Config) (map[Pair]time.Duration, error) {
	if cfg.Prefix != "" {
		if len(cfg.Prefix) > maxPrefixLen || !prefixRE.MatchString(cfg.Prefix) {
			return nil, fmt.Errorf("invalid prefix %q: want 1..%d characters of [A-Za-z0-9_]", cfg.Prefix, maxPrefixLen)
		}
	}
	if len(cfg.Clusters) == 0 {
		return nil, errors.New("no clusters: need 1..16")
	}
	if len(cfg.Clusters) > MaxClusters {
		return nil, fmt.Errorf("too many clusters: %d, at most %d", len(cfg.Clusters), MaxClusters)
	}
	seen := make(map[string]bool, len(cfg.Clusters))
	for _, name := range cfg.Clusters {
		if len(name) == 0 || len(name) > maxClusterLen || !clusterRE.MatchString(name) {
			return nil, fmt.Errorf("invalid cluster name %q: want 1..%d characters of [a-z0-9-], not starting or ending with '-'", name, maxClusterLen)
		}
		if seen[name] {
			return nil, fmt.Errorf("duplicate cluster name %q", name)
		}
		seen[name] = true
	}
	rtt := make(map[Pair]time.Duration, len(cfg.ExtraRTT))
	// Iterate in a fixed order so the error for a config with several
	// problems is deterministic.
	pairs := make([]Pair, 0, len(cfg.ExtraRTT))
	for p := range cfg.ExtraRTT {
		pairs = append(pairs, p)
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].A != pairs[j].A {
			return pairs[i].A < pairs[j].A
		}
		return pairs[i].B < pairs[j].B
	})
	for _, p := range pairs {
		d := cfg.ExtraRTT[p]
		if err := checkPair(seen, p.A, p.B, d); err != nil {
			return nil, fmt.Errorf("extra RTT {%q, %q}: %w", p.A, p.B, err)
		}
		k := normPair(p.A, p.B)
		if old, ok := rtt[k]; ok && old != d {
			return nil, fmt.Errorf("extra RTT {%q, %q}: conflicting values %v and %v for the same (symmetric) pair", p.A, p.B, old, d)
		}
		rtt[k] = d
	}
	return rtt, nil
}

func checkPair(known map[string]bool, a, b string, d time.Duration) error {
	if !known[a] {
		return fmt.Errorf("unknown cluster %q", a)
	}
	if !known[b] {
		return fmt.Errorf("unknown cluster %q", b)
	}
	if a == b {
		return fmt.Errorf("cluster %q paired with itself (intra-cluster traffic is never delayed)", a)
	}
	if d < 0 {
		return fmt.Errorf("negative RTT %v", d)
	}
	if d > MaxExtraRTT {
		return fmt.Errorf("RTT %v exceeds %v", d, MaxExtraRTT)
	}
	return nil
}

func normPair(a, b string) Pair {
	if a > b {
		a, b = b, a
	}
	return Pair{A: a, B: b}
}

// New creates the namespaces, TUN devices and hub described by cfg. ctx bounds
// the setup only; the topology lives until Close. On any error New tears down
// whatever it had created.
func New(ctx context.Context, cfg Config) (*Topology, error) {
	t, err := build(ctx, cfg)
	if err != nil {
		if t != nil {
			err = errors.Join(err, t.Close())
		}
		return nil, err
	}
	return t, nil
}

// build is New without the teardown on error: it returns whatever it has
// created so far, so that NewForTest can register the cleanup first.
func build(ctx context.Context, cfg Config) (*Topology, error) {
	rtt, err := validate(&cfg)
	if err != nil {
		return nil, fmt.Errorf("topology config: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("topology setup: %w", err)
	}
	base := cfg.AddrBase
	if base == 0 {
		base = DefaultAddrBase
	}

	// The owner record is written before any namespace exists so that Sweep
	// from another process never mistakes a namespace being built for an
	// orphan.
	prefix, record, err := claimPrefix(cfg.Prefix)
	if err != nil {
		return nil, err
	}
	t := &Topology{
		prefix:    prefix,
		base:      base,
		quickACK:  cfg.QuickACK,
		statePath: record,
		byName:    make(map[string]*Cluster, len(cfg.Clusters)),
		// .1 is the host's own address on the management network.
		nextMgmtHost: 1,
	}
	for i, name := range cfg.Clusters {
		if err := ctx.Err(); err != nil {
			return t, fmt.Errorf("topology setup: %w", err)
		}
		c := newCluster(t, i, name)
		if err := c.create(); err != nil {
			// c may have half its resources; teardown releases them.
			t.clusters = append(t.clusters, c)
			return t, fmt.Errorf("cluster %s: %w", name, err)
		}
		t.clusters = append(t.clusters, c)
		t.byName[name] = c
	}

	names := make([]string, len(t.clusters))
	fds := make([]int, len(t.clusters))
	for i, c := range t.clusters {
		names[i], fds[i] = c.Name, c.tunFD
	}
	h, err := startHub(names, fds, base)
	if err != nil {
		return t, err
	}
	t.hub = h
	// The hub starts with every delay 0; nothing can reach it before New
	// returns, so setting them now is in time.
	for p, d := range rtt {
		if err := t.hub.setOneWay(t.byName[p.A].Index, t.byName[p.B].Index, d/2); err != nil {
			return t, err
		}
	}
	return t, nil
}

// Prefix returns the namespace name prefix of the topology.
func (t *Topology) Prefix() string { return t.prefix }

// AddrBase returns the second octet of the topology's 10.x.0.0/16.
func (t *Topology) AddrBase() uint8 { return t.base }

// Network returns the topology's whole address range, 10.<base>.0.0/16.
func (t *Topology) Network() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, t.base, 0, 0}), 16)
}

// Cluster returns the cluster named name.
func (t *Topology) Cluster(name string) (*Cluster, bool) {
	c, ok := t.byName[name]
	return c, ok
}

// Clusters returns the clusters in configuration order.
func (t *Topology) Clusters() []*Cluster {
	out := make([]*Cluster, len(t.clusters))
	copy(out, t.clusters)
	return out
}

// SetExtraRTT changes the extra round-trip time between clusters a and b,
// effective for packets arriving at the hub from now on. Packets already
// queued keep their release time and order, like a real path whose delay
// changes.
func (t *Topology) SetExtraRTT(a, b string, d time.Duration) error {
	if t.closed.Load() || t.hub == nil {
		return errors.New("topology closed")
	}
	known := func(n string) bool { _, ok := t.byName[n]; return ok }
	set := map[string]bool{a: known(a), b: known(b)}
	if err := checkPair(set, a, b, d); err != nil {
		return fmt.Errorf("set extra RTT {%q, %q}: %w", a, b, err)
	}
	if err := t.hub.setOneWay(t.byName[a].Index, t.byName[b].Index, d/2); err != nil {
		return fmt.Errorf("set extra RTT {%q, %q}: %w", a, b, err)
	}
	return nil
}

// ExtraRTT returns the extra round-trip time currently set between a and b.
func (t *Topology) ExtraRTT(a, b string) (time.Duration, error) {
	ca, ok := t.byName[a]
	if !ok {
		return 0, fmt.Errorf("unknown cluster %q", a)
	}
	cb, ok := t.byName[b]
	if !ok {
		return 0, fmt.Errorf("unknown cluster %q", b)
	}
	if ca == cb {
		return 0, nil
	}
	if t.hub == nil {
		return 0, errors.New("topology not running")
	}
	return 2 * t.hub.oneWay(ca.Index, cb.Index), nil
}

// Stats returns the hub's packet counters; after Close, the final ones.
func (t *Topology) Stats() ForwarderStats {
	if t.hub == nil {
		return ForwarderStats{Pairs: map[Pair]PairStats{}}
	}
	return t.hub.stats()
}

// Close stops the hub and deletes every namespace of the topology. It is
// idempotent; later calls return the first call's result.
func (t *Topology) Close() error {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		var errs []error
		if t.hub != nil {
			if err := t.hub.stop(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, c := range t.clusters {
			for _, n := range c.nodes {
				if err := n.teardown(!t.abandoned); err != nil {
					errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
				}
			}
			if err := c.teardown(!t.abandoned); err != nil {
				errs = append(errs, fmt.Errorf("cluster %s: %w", c.Name, err))
			}
		}
		if !t.abandoned {
			if err := t.deleteMgmt(); err != nil {
				errs = append(errs, fmt.Errorf("management network: %w", err))
			}
		}
		if !t.abandoned && t.statePath != "" {
			if err := os.Remove(t.statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove owner record: %w", err))
			}
		}
		t.closeErr = errors.Join(errs...)
	})
	return t.closeErr
}

// abandon stops the hub and releases the process's handles but leaves the
// namespaces and the owner record behind, which is what a killed process
// leaves. Tests use it to exercise Sweep.
func (t *Topology) abandon() error {
	t.abandoned = true
	return t.Close()
}
