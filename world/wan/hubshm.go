package wan

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// hubShared is the memory the topology and its hub process share (a memfd
// mapped by both). The topology writes the per-pair delays; the hub writes
// the counters. Only fixed-size atomics: no pointers, no locks.
type hubShared struct {
	unknownDst  atomic.Uint64
	nonIPv4     atomic.Uint64
	readErrors  atomic.Uint64
	writeErrors atomic.Uint64
	maxLate     atomic.Int64 // ns
	_           [3]uint64
	pairs       [MaxClusters * MaxClusters]pairShared // [src*MaxClusters+dst]
}

// pairShared is one directed pair. 64 bytes, so pairs do not share cache
// lines.
type pairShared struct {
	oneWay       atomic.Int64 // ns; written by the topology
	forwarded    atomic.Uint64
	droppedFull  atomic.Uint64
	droppedWrite atomic.Uint64
	queued       atomic.Int64
	_            [3]uint64
}

const hubSharedSize = int(unsafe.Sizeof(hubShared{}))

func (s *hubShared) pair(src, dst int) *pairShared { return &s.pairs[src*MaxClusters+dst] }

// sharedMem is a mapping of a hubShared.
type sharedMem struct {
	mem []byte
	*hubShared
}

// newSharedMem creates the memfd and maps it. The caller passes fd to the
// hub process and closes it afterwards.
func newSharedMem() (*sharedMem, int, error) {
	fd, err := unix.MemfdCreate("flowplace-topology-hub", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, -1, fmt.Errorf("memfd: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(hubSharedSize)); err != nil {
		unix.Close(fd)
		return nil, -1, fmt.Errorf("size memfd: %w", err)
	}
	m, err := mapShared(fd)
	if err != nil {
		unix.Close(fd)
		return nil, -1, err
	}
	return m, fd, nil
}

func mapShared(fd int) (*sharedMem, error) {
	mem, err := unix.Mmap(fd, 0, hubSharedSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap shared hub state: %w", err)
	}
	// The mapping is page-aligned and outside the Go heap; hubShared holds
	// no pointers, so the GC has nothing to track in it.
	return &sharedMem{mem: mem, hubShared: (*hubShared)(unsafe.Pointer(&mem[0]))}, nil
}

func (m *sharedMem) unmap() error {
	if m == nil || m.mem == nil {
		return nil
	}
	err := unix.Munmap(m.mem)
	m.mem, m.hubShared = nil, nil
	return err
}
