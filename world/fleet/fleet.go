// Package fleet starts Karmada member clusters with real nodes on one
// machine: the WAN of world/wan (one region per cluster, the injected RTTs
// between them), the API servers, controller managers and schedulers of
// world/controlplane, and the kubelet nodes of world/nodes in their
// clusters' regions, with locally built images imported into every node.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/flowplace/flowplace/internal/images"
	"github.com/flowplace/flowplace/world/controlplane"
	"github.com/flowplace/flowplace/world/nodes"
	"github.com/flowplace/flowplace/world/wan"
)

// Labels every node carries, as cloud providers set them.
const (
	RegionLabel = "topology.kubernetes.io/region"
	ZoneLabel   = "topology.kubernetes.io/zone"
)

// Config describes a fleet.
type Config struct {
	// Clusters are the member names; each is a region of the WAN.
	Clusters []string
	// ExtraRTT is the WAN's round-trip time between two clusters.
	ExtraRTT map[wan.Pair]time.Duration
	// NodesPerCluster is 1..wan.MaxNodes; 0 means 1.
	NodesPerCluster int
	// QuickACK: see wan.Config.QuickACK; pods' routes get it too.
	QuickACK bool
	// AddrBase: see wan.Config.AddrBase.
	AddrBase uint8
	// Images are imported into every node; one must be images.Pause.
	Images []images.Image
	// CRDDirs: see controlplane.Config.CRDDirs.
	CRDDirs []string
	// Logf receives progress lines; nil discards them.
	Logf func(format string, args ...any)
}

// Fleet is a running set of member clusters with nodes.
type Fleet struct {
	WAN          *wan.Topology
	ControlPlane *controlplane.ControlPlane
	// Nodes are each cluster's nodes, in order.
	Nodes map[string][]*nodes.Node
	// Dir holds the nodes' directories.
	Dir string

	stopOnce sync.Once
	stopErr  error
}

// NodeName is the name of node i (0-based) of a cluster.
func NodeName(cluster string, i int) string { return fmt.Sprintf("%s-n%d", cluster, i+1) }

func (cfg *Config) validate() (pause string, err error) {
	if len(cfg.Clusters) == 0 {
		return "", errors.New("fleet: no clusters")
	}
	if cfg.NodesPerCluster < 0 || cfg.NodesPerCluster > wan.MaxNodes {
		return "", fmt.Errorf("fleet: %d nodes per cluster: want 1..%d", cfg.NodesPerCluster, wan.MaxNodes)
	}
	for _, img := range cfg.Images {
		if img.Name == images.Pause {
			pause = img.Ref
		}
	}
	if pause == "" {
		return "", fmt.Errorf("fleet: Config.Images has no %s image (the pods' sandbox)", images.Pause)
	}
	return pause, nil
}

// Start starts the fleet and waits until every node is Ready. On error it
// stops what it started.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	pause, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	if err := nodes.Check(); err != nil {
		return nil, err
	}
	if cfg.NodesPerCluster == 0 {
		cfg.NodesPerCluster = 1
	}
	logf := cfg.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	f := &Fleet{Nodes: map[string][]*nodes.Node{}}
	if err := f.start(ctx, cfg, pause, logf); err != nil {
		return nil, errors.Join(err, f.Stop())
	}
	return f, nil
}

func (f *Fleet) start(ctx context.Context, cfg Config, pause string, logf func(string, ...any)) error {
	t0 := time.Now()
	bins, err := controlplane.Binaries(ctx, logf)
	if err != nil {
		return err
	}
	if err := nodes.Sweep(); err != nil {
		logf("fleet: sweeping nodes of earlier runs: %v", err)
	}
	if err := wan.Sweep(wan.GeneratedPrefixStem); err != nil {
		logf("fleet: sweeping networks of earlier runs: %v", err)
	}
	f.WAN, err = wan.New(ctx, wan.Config{
		Clusters: cfg.Clusters,
		ExtraRTT: cfg.ExtraRTT,
		QuickACK: cfg.QuickACK,
		AddrBase: cfg.AddrBase,
	})
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	gw, err := f.WAN.ManagementGateway()
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	f.ControlPlane, err = controlplane.Start(ctx, controlplane.Config{
		Members:     cfg.Clusters,
		CRDDirs:     cfg.CRDDirs,
		Logf:        logf,
		BindAddress: gw.String(),
		Nodes:       true,
	})
	if err != nil {
		f.ControlPlane = nil // Start stopped it already
		return err
	}
	f.Dir = f.ControlPlane.Dir + "-nodes"
	tControlPlane := time.Since(t0)

	// Every node's namespace exists before any pod does: a pod namespace
	// created under another node's mounts would make pod deletion hang.
	type pending struct {
		cluster string
		net     *wan.Node
	}
	var all []pending
	for _, c := range cfg.Clusters {
		wc, _ := f.WAN.Cluster(c)
		for i := range cfg.NodesPerCluster {
			n, err := wc.AddNode(NodeName(c, i))
			if err != nil {
				return fmt.Errorf("fleet: %w", err)
			}
			all = append(all, pending{c, n})
		}
	}
	tarballs := make([]string, len(cfg.Images))
	for i, img := range cfg.Images {
		tarballs[i] = img.Tarball
	}
	started := make([]*nodes.Node, len(all))
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, p := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started[i], errs[i] = nodes.Start(ctx, nodes.Config{
				Net:        p.net,
				Cluster:    f.ControlPlane.Members[p.cluster],
				Binaries:   bins,
				Images:     tarballs,
				PauseImage: pause,
				Labels:     map[string]string{RegionLabel: p.cluster, ZoneLabel: p.cluster + "-a"},
				QuickACK:   cfg.QuickACK,
				Dir:        f.Dir,
				// A killed run's directories go with its nodes' sweep.
				RunDirs: []string{f.Dir, f.ControlPlane.Dir},
				Logf:    logf,
			})
		}()
	}
	wg.Wait()
	for i, p := range all {
		if started[i] != nil {
			f.Nodes[p.cluster] = append(f.Nodes[p.cluster], started[i])
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	logf("fleet: %d cluster(s) x %d node(s) Ready in %s (control planes %s)", len(cfg.Clusters), cfg.NodesPerCluster,
		time.Since(t0).Round(time.Millisecond), tControlPlane.Round(time.Millisecond))
	return nil
}

// Member returns a member cluster's API server.
func (f *Fleet) Member(name string) *controlplane.Cluster { return f.ControlPlane.Members[name] }

// Stop stops every node, then the control planes, then the WAN, and removes
// the directories. Idempotent.
func (f *Fleet) Stop() error {
	f.stopOnce.Do(func() {
		var errs []error
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, ns := range f.Nodes {
			for _, n := range ns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := n.Stop(); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}()
			}
		}
		wg.Wait()
		if f.ControlPlane != nil {
			errs = append(errs, f.ControlPlane.Stop())
		}
		if f.WAN != nil {
			errs = append(errs, f.WAN.Close())
		}
		if f.Dir != "" {
			errs = append(errs, os.RemoveAll(f.Dir))
		}
		f.stopErr = errors.Join(errs...)
	})
	return f.stopErr
}
