// Package cgroups maps a cgroup v2 ID, as the probes record it, to the
// Kubernetes pod whose container runs in that cgroup: the way to attribute
// sockets of host-network pods, which share the node's address.
package cgroups

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
)

// podUID matches the pod segment of kubelet's cgroup paths, for both cgroup
// drivers: cgroupfs ".../pod<uid>/<container>" and systemd
// ".../kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope".
var podUID = regexp.MustCompile(`pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)

// PodUIDFromPath returns the pod UID in a kubelet cgroup path, or "".
func PodUIDFromPath(path string) string {
	m := podUID.FindAllStringSubmatch(path, -1)
	if len(m) == 0 {
		return ""
	}
	// The innermost pod segment wins.
	return strings.ReplaceAll(m[len(m)-1][1], "_", "-")
}

// Resolver finds cgroup paths by ID under a cgroup v2 mount. On cgroup v2 a
// cgroup's ID is its directory's inode number.
type Resolver struct {
	root string
	mu   sync.Mutex
	ids  map[uint64]string
}

// NewResolver resolves under the cgroup v2 mount root.
func NewResolver(root string) *Resolver {
	return &Resolver{root: root, ids: map[uint64]string{}}
}

// Path returns the cgroup directory (relative to the mount) with the given
// ID. Unknown IDs rescan the hierarchy once; new pods create new cgroups.
func (r *Resolver) Path(id uint64) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.ids[id]; ok {
		return p, nil
	}
	if err := r.scanLocked(); err != nil {
		return "", err
	}
	if p, ok := r.ids[id]; ok {
		return p, nil
	}
	return "", fmt.Errorf("no cgroup with id %d under %s", id, r.root)
}

// PodUID returns the UID of the pod whose cgroup has the given ID, or "".
func (r *Resolver) PodUID(id uint64) string {
	p, err := r.Path(id)
	if err != nil {
		return ""
	}
	return PodUIDFromPath(p)
}

func (r *Resolver) scanLocked() error {
	ids := map[uint64]string{}
	err := filepath.WalkDir(r.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			// Cgroups come and go while we walk.
			return fs.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			rel, _ := filepath.Rel(r.root, path)
			ids[st.Ino] = "/" + strings.TrimPrefix(rel, ".")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("scan cgroups under %s: %w", r.root, err)
	}
	r.ids = ids
	return nil
}
