package wan

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The hub runs in a child process: the binary that uses this package,
// re-executed with hubEnv set, which init turns into the hub instead of the
// program. Measured on a loaded 2-CPU VM, a hub goroutine inside the test
// process was held up for 10-100 ms now and then by the Go scheduler (the
// 10 ms forced preemption of a busy goroutine, P hand-offs through ordinary
// threads, GC pauses of the test's heap) even with a SCHED_FIFO thread; a
// process that does nothing else, with every thread SCHED_FIFO, stayed
// within about 2 ms worst case and µs typically.
//
// File descriptors of the hub process.
const (
	hubFDShared = 3 + iota // memfd holding hubShared
	hubFDStop              // read end of a pipe: hang-up means stop
	hubFDStatus            // write end of a pipe: one status line at start-up
	hubFDTUN0              // first of the clusters' TUN fds
)

const (
	hubEnv = "FLOWPLACE_TOPOLOGY_HUB"
	// hubRTPriority is the SCHED_FIFO priority of the hub's threads: low
	// among real-time tasks, above every ordinary one.
	hubRTPriority   = 10
	hubStartTimeout = 10 * time.Second
	hubStopTimeout  = 5 * time.Second
)

func init() {
	spec, ok := os.LookupEnv(hubEnv)
	if !ok {
		return
	}
	os.Unsetenv(hubEnv)
	os.Exit(hubMain(spec))
}

// hubMain is the hub process. spec is "<clusters>,<addr base>".
func hubMain(spec string) int {
	status := os.NewFile(hubFDStatus, "hub-status")
	fail := func(err error) int {
		fmt.Fprintf(status, "error: %v\n", err)
		return 1
	}
	nStr, baseStr, _ := strings.Cut(spec, ",")
	n, err1 := strconv.Atoi(nStr)
	base, err2 := strconv.ParseUint(baseStr, 10, 8)
	if err := errors.Join(err1, err2); err != nil || n < 1 || n > MaxClusters {
		return fail(fmt.Errorf("bad hub spec %q", spec))
	}
	shm, err := mapShared(hubFDShared)
	if err != nil {
		return fail(err)
	}
	sched := raiseAllThreads()
	fds := make([]int, n)
	for i := range fds {
		fds[i] = hubFDTUN0 + i
	}
	f, err := newForwarder(fds, uint8(base), shm.hubShared, hubFDStop)
	if err != nil {
		return fail(fmt.Errorf("hub timerfd: %w", err))
	}
	fmt.Fprintf(status, "ok %s\n", sched)
	status.Close()
	f.run()
	return 0
}

// raiseAllThreads makes every thread of the process SCHED_FIFO (threads the
// runtime starts later inherit it), or failing that nice -10, so that
// ordinary tasks cannot delay the hub by a scheduler slice. Only sensible in
// the hub process, which runs nothing else.
func raiseAllThreads() string {
	set := func(apply func(tid int) error) bool {
		// Twice: a thread cloned during the first pass from a thread not yet
		// changed would be missed.
		for pass := 0; pass < 2; pass++ {
			ents, err := os.ReadDir("/proc/self/task")
			if err != nil {
				return false
			}
			for _, e := range ents {
				tid, err := strconv.Atoi(e.Name())
				if err != nil {
					continue
				}
				if err := apply(tid); err != nil && !errors.Is(err, unix.ESRCH) {
					return false
				}
			}
		}
		return true
	}
	if set(func(tid int) error {
		attr := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: hubRTPriority}
		return unix.SchedSetAttr(tid, &attr, 0)
	}) {
		return fmt.Sprintf("SCHED_FIFO/%d", hubRTPriority)
	}
	if set(func(tid int) error { return unix.Setpriority(unix.PRIO_PROCESS, tid, -10) }) {
		return "nice -10"
	}
	return "default"
}

// hub is the topology's handle on its hub process.
type hub struct {
	names []string
	// mu guards shm against use after stop unmapped it.
	mu     sync.RWMutex
	shm    *sharedMem
	final  ForwarderStats // counters as the hub stopped
	cmd    *exec.Cmd
	stopW  *os.File // closing it stops the hub
	sched  string
	exited chan struct{}
	// waitErr is set before exited is closed.
	waitErr  error
	stopping atomic.Bool
}

// startHub starts the hub process for the TUN fds (in cluster order).
func startHub(names []string, fds []int, base uint8) (h *hub, err error) {
	shm, memfd, err := newSharedMem()
	if err != nil {
		return nil, fmt.Errorf("start hub: %w", err)
	}
	// Everything the child inherits is closed in the parent once it started.
	childFiles := []*os.File{os.NewFile(uintptr(memfd), "hub-shared")}
	defer func() {
		for _, f := range childFiles {
			f.Close()
		}
		if err != nil {
			shm.unmap()
		}
	}()
	stopR, stopW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start hub: %w", err)
	}
	childFiles = append(childFiles, stopR)
	statusR, statusW, err := os.Pipe()
	if err != nil {
		stopW.Close()
		return nil, fmt.Errorf("start hub: %w", err)
	}
	defer statusR.Close()
	childFiles = append(childFiles, statusW)
	for _, fd := range fds {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			stopW.Close()
			return nil, fmt.Errorf("start hub: dup tun fd: %w", err)
		}
		childFiles = append(childFiles, os.NewFile(uintptr(dup), "tun"))
	}

	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{os.Args[0] + " [flowplace topology hub]"},
		Env:        append(os.Environ(), fmt.Sprintf("%s=%d,%d", hubEnv, len(fds), base)),
		ExtraFiles: childFiles,
		Stderr:     os.Stderr, // panics only; the hub prints nothing else
		// Its own process group: a terminal's Ctrl-C goes to the caller,
		// which tears the topology down in order; the hub must not die
		// first. It still exits with its parent (the stop pipe's EOF).
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		stopW.Close()
		return nil, fmt.Errorf("start hub process: %w", err)
	}
	h = &hub{names: names, shm: shm, cmd: cmd, stopW: stopW, exited: make(chan struct{})}
	go func() {
		h.waitErr = cmd.Wait()
		close(h.exited)
	}()
	for _, f := range childFiles {
		f.Close()
	}
	childFiles = nil

	// The status pipe's only writer is now the child: EOF means it died.
	statusR.SetReadDeadline(time.Now().Add(hubStartTimeout))
	line, rerr := bufio.NewReader(statusR).ReadString('\n')
	line = strings.TrimSpace(line)
	if sched, ok := strings.CutPrefix(line, "ok "); ok && rerr == nil {
		h.sched = sched
		return h, nil
	}
	serr := h.stop()
	switch {
	case strings.HasPrefix(line, "error: "):
		err = errors.New(strings.TrimPrefix(line, "error: "))
	case rerr != nil:
		err = fmt.Errorf("no status: %w", rerr)
	default:
		err = fmt.Errorf("bad status %q", line)
	}
	return nil, errors.Join(fmt.Errorf("start hub process: %w", err), serr)
}

func (h *hub) setOneWay(a, b int, d time.Duration) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.shm.hubShared == nil {
		return errors.New("hub stopped")
	}
	h.shm.pair(a, b).oneWay.Store(int64(d))
	h.shm.pair(b, a).oneWay.Store(int64(d))
	return nil
}

func (h *hub) oneWay(a, b int) time.Duration {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.shm.hubShared == nil {
		return 0
	}
	return time.Duration(h.shm.pair(a, b).oneWay.Load())
}

// stop ends the hub process and waits for it; idempotent.
func (h *hub) stop() error {
	if h.stopping.Swap(true) {
		<-h.exited
		return nil
	}
	h.stopW.Close()
	var err error
	select {
	case <-h.exited:
	case <-time.After(hubStopTimeout):
		h.cmd.Process.Kill()
		<-h.exited
		err = fmt.Errorf("hub process did not stop within %v; killed", hubStopTimeout)
	}
	if h.waitErr != nil && err == nil {
		err = fmt.Errorf("hub process: %w", h.waitErr)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.final = h.read()
	return errors.Join(err, h.shm.unmap())
}

// ForwarderStats are the hub's packet counters since New.
type ForwarderStats struct {
	Forwarded         uint64 // packets written to a destination TUN
	DroppedUnknownDst uint64 // IPv4 packets for no other cluster of the topology
	DroppedQueueFull  uint64 // packets refused by a full pair queue
	DroppedNonIPv4    uint64 // non-IPv4 or truncated packets
	DroppedWriteError uint64 // destination TUN write failed
	ReadErrors        uint64 // failed TUN reads
	// MaxLateness is the largest delay between a queued packet's release
	// time and its write, a measure of the hub's own timing error.
	MaxLateness time.Duration
	// HubScheduling is the scheduling the hub process got, e.g.
	// "SCHED_FIFO/10"; "default" when raising it was not permitted.
	HubScheduling string
	// HubError is set when the hub process has exited before Close.
	HubError string
	// Pairs holds the per-direction counters, keyed {source, destination}.
	// Only pairs that saw traffic are present.
	Pairs map[Pair]PairStats
}

// PairStats are one direction's counters.
type PairStats struct {
	Forwarded         uint64
	DroppedQueueFull  uint64
	DroppedWriteError uint64
	Queued            int // packets waiting for their release time now
}

// Dropped is the total of all drop counters.
func (s ForwarderStats) Dropped() uint64 {
	return s.DroppedUnknownDst + s.DroppedQueueFull + s.DroppedNonIPv4 + s.DroppedWriteError
}

// stats returns the current counters, or the final ones after stop.
func (h *hub) stats() ForwarderStats {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.shm.hubShared == nil {
		return h.final
	}
	s := h.read()
	select {
	case <-h.exited:
		if !h.stopping.Load() {
			s.HubError = fmt.Sprintf("hub process exited: %v", h.waitErr)
		}
	default:
	}
	return s
}

// read copies the counters out of the shared memory; h.mu must be held.
func (h *hub) read() ForwarderStats {
	s := ForwarderStats{HubScheduling: h.sched, Pairs: make(map[Pair]PairStats)}
	sh := h.shm.hubShared
	s.DroppedUnknownDst = sh.unknownDst.Load()
	s.DroppedNonIPv4 = sh.nonIPv4.Load()
	s.DroppedWriteError = sh.writeErrors.Load()
	s.ReadErrors = sh.readErrors.Load()
	s.MaxLateness = time.Duration(sh.maxLate.Load())
	for src := range h.names {
		for dst := range h.names {
			if src == dst {
				continue
			}
			q := sh.pair(src, dst)
			ps := PairStats{
				Forwarded:         q.forwarded.Load(),
				DroppedQueueFull:  q.droppedFull.Load(),
				DroppedWriteError: q.droppedWrite.Load(),
				Queued:            int(q.queued.Load()),
			}
			s.Forwarded += ps.Forwarded
			s.DroppedQueueFull += ps.DroppedQueueFull
			if ps != (PairStats{}) {
				s.Pairs[Pair{A: h.names[src], B: h.names[dst]}] = ps
			}
		}
	}
	return s
}
