package wan

import (
	"errors"
	"math"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// bufSize holds any packet the TUN can hand out: without IFF_VNET_HDR the
	// kernel segments to the MTU before the TUN.
	bufSize = 2048
	// queueCap bounds each directed pair's queue (packets).
	queueCap = 4096
	// spinWindow is how long before a release time the hub stops sleeping
	// and busy-waits. Even a timerfd wake-up is tens to hundreds of µs late
	// when the CPU has gone idle (more on a VM); busy-waiting the last
	// stretch makes releases µs-accurate at a small CPU cost per packet.
	spinWindow = 300 * time.Microsecond
	// drainEvery is how often the busy-waiting hub reads the TUNs, so that
	// packets arriving meanwhile are stamped on time.
	drainEvery = 10 * time.Microsecond
	// drainBurst bounds the packets read from one TUN per round so a busy
	// cluster cannot delay releases.
	drainBurst = 64
	// stopCheckEvery is how often a busy hub looks at its stop fd.
	stopCheckEvery = 5 * time.Millisecond
)

type packet struct {
	n       int
	release time.Duration // on the forwarder's clock
	buf     [bufSize]byte
}

// pairQueue is the FIFO of one directed pair. Release times are arrival plus
// a per-pair constant, so FIFO order is release order (except briefly after
// SetExtraRTT lowers the delay, where order is kept as on a real path).
type pairQueue struct {
	dst        int
	shared     *pairShared
	ring       []*packet // allocated on first use; len is queueCap
	head, size int
}

// forwarder is the hub's event loop. It runs alone in the hub process (see
// hub.go): it reads every cluster's TUN, stamps and queues each packet on
// its directed pair and writes it to the destination TUN at its release
// time. Everything happens on one goroutine with raw non-blocking syscalls
// and a blocking ppoll, so neither the runtime poller nor other goroutines
// sit between a packet and its timing.
type forwarder struct {
	epoch  time.Time
	n      int
	base   uint8
	fds    []int // TUN fds, non-blocking
	pairs  []*pairQueue
	shared *hubShared
	pool   sync.Pool

	tfd  int // timerfd: wakes the loop shortly before the next release
	stop int // readable (data or hang-up) when the loop must end
}

func newForwarder(fds []int, base uint8, shared *hubShared, stopFD int) (*forwarder, error) {
	tfd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	n := len(fds)
	f := &forwarder{
		epoch:  time.Now(),
		n:      n,
		base:   base,
		fds:    fds,
		pairs:  make([]*pairQueue, n*n),
		shared: shared,
		tfd:    tfd,
		stop:   stopFD,
	}
	f.pool.New = func() any { return new(packet) }
	for s := 0; s < n; s++ {
		for d := 0; d < n; d++ {
			if s != d {
				f.pairs[s*n+d] = &pairQueue{dst: d, shared: shared.pair(s, d)}
			}
		}
	}
	return f, nil
}

// now is the forwarder's monotonic clock.
func (f *forwarder) now() time.Duration { return time.Since(f.epoch) }

// arm makes the timer fire after d; d is clamped to 1ns because 0 disarms.
func (f *forwarder) arm(d time.Duration) {
	its := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(max(d, 1)))}
	_ = unix.TimerfdSettime(f.tfd, 0, &its, nil)
}

func (f *forwarder) disarm() {
	_ = unix.TimerfdSettime(f.tfd, 0, &unix.ItimerSpec{}, nil)
}

// run forwards until the stop fd becomes readable or hangs up.
func (f *forwarder) run() {
	pfds := make([]unix.PollFd, 2+f.n)
	pfds[0] = unix.PollFd{Fd: int32(f.stop), Events: unix.POLLIN}
	pfds[1] = unix.PollFd{Fd: int32(f.tfd), Events: unix.POLLIN}
	for i, fd := range f.fds {
		pfds[2+i] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
	}
	dead := make([]bool, f.n) // TUNs that failed; not polled again
	p := f.pool.Get().(*packet)
	stopPoll := []unix.PollFd{pfds[0]}
	var lastStopCheck time.Duration

	for {
		f.drain(&p, dead, pfds)
		next := f.release()
		now := f.now()
		// Under constant traffic the loop may never block in ppoll, where the
		// stop fd is watched, so look at it now and then.
		if now-lastStopCheck >= stopCheckEvery {
			if f.stopping(stopPoll) {
				return
			}
			lastStopCheck = now
		}
		if next-now <= spinWindow {
			// Busy-wait. Keep stamping arrivals meanwhile; a new packet may
			// be due earlier, so rescan after one.
			last := now
			for now < next {
				if now-last >= drainEvery {
					if f.drain(&p, dead, pfds) {
						break
					}
					last = now
				}
				now = f.now()
			}
			continue
		}
		if next == math.MaxInt64 {
			f.disarm()
		} else {
			f.arm(next - spinWindow - now)
		}
		if _, err := unix.Poll(pfds, -1); err != nil && !errors.Is(err, unix.EINTR) {
			// Only EFAULT/EINVAL/ENOMEM; avoid a hot loop if it happens.
			f.shared.readErrors.Add(1)
			time.Sleep(time.Millisecond)
		}
		if pfds[0].Revents != 0 {
			return
		}
	}
}

// stopping checks the stop fd without blocking.
func (f *forwarder) stopping(pfd []unix.PollFd) bool {
	n, err := unix.Poll(pfd, 0)
	return err == nil && n > 0 && pfd[0].Revents != 0
}

// drain reads what the TUNs hold, without blocking, and reports whether
// anything was queued (which may move the next release earlier).
func (f *forwarder) drain(p **packet, dead []bool, pfds []unix.PollFd) bool {
	queuedAny := false
	for src, fd := range f.fds {
		if dead[src] {
			continue
		}
		for k := 0; k < drainBurst; k++ {
			n, err := unix.Read(fd, (*p).buf[:])
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if !errors.Is(err, unix.EAGAIN) {
					// E.g. the device was deleted under us: stop polling it
					// rather than spinning on its error.
					f.shared.readErrors.Add(1)
					dead[src] = true
					pfds[2+src].Fd = -1
				}
				break
			}
			if f.handle(src, *p, n, f.now()) {
				queuedAny = true
				*p = f.pool.Get().(*packet)
			}
		}
	}
	return queuedAny
}

// dstIndex maps an IPv4 destination to a cluster, or -1: the cluster's /24
// (hosts and nodes) or one of its nodes' pod /24s (see node.go).
func (f *forwarder) dstIndex(b []byte) int {
	if b[0] != 10 || b[1] != f.base || b[2] == 0 {
		return -1
	}
	if int(b[2]) <= f.n {
		return int(b[2]) - 1
	}
	if b[2] >= podBlockStart && int(b[2]) < podBlockStart+MaxNodes*f.n {
		return (int(b[2]) - podBlockStart) / MaxNodes
	}
	return -1
}

// handle routes one packet read from cluster src's TUN. It reports whether
// the packet was queued, i.e. p now belongs to the queue; otherwise it was
// forwarded or dropped and the caller reuses p.
func (f *forwarder) handle(src int, p *packet, n int, arrival time.Duration) bool {
	if n < 20 || p.buf[0]>>4 != 4 {
		f.shared.nonIPv4.Add(1)
		return false
	}
	dst := f.dstIndex(p.buf[16:20])
	if dst < 0 || dst == src {
		f.shared.unknownDst.Add(1)
		return false
	}
	p.n = n
	q := f.pairs[src*f.n+dst]
	ow := time.Duration(q.shared.oneWay.Load())
	if ow == 0 && q.size == 0 {
		// Zero delay and nothing queued ahead: no need to queue.
		f.write(q, p)
		return false
	}
	if q.size == queueCap {
		q.shared.droppedFull.Add(1)
		return false
	}
	if q.ring == nil {
		q.ring = make([]*packet, queueCap)
	}
	p.release = arrival + ow
	q.ring[(q.head+q.size)%queueCap] = p
	q.size++
	q.shared.queued.Store(int64(q.size))
	return true
}

// release writes every due packet and returns the earliest pending release
// time (MaxInt64 if nothing is queued).
func (f *forwarder) release() time.Duration {
	next := time.Duration(math.MaxInt64)
	now := f.now()
	for _, q := range f.pairs {
		if q == nil || q.size == 0 {
			continue
		}
		for q.size > 0 {
			p := q.ring[q.head]
			if p.release > now {
				next = min(next, p.release)
				break
			}
			if late := int64(now - p.release); late > f.shared.maxLate.Load() {
				f.shared.maxLate.Store(late)
			}
			q.ring[q.head] = nil
			q.head = (q.head + 1) % queueCap
			q.size--
			f.write(q, p)
			f.pool.Put(p)
			now = f.now() // a write runs the receiver's stack and takes µs
		}
		q.shared.queued.Store(int64(q.size))
	}
	return next
}

func (f *forwarder) write(q *pairQueue, p *packet) {
	for {
		_, err := unix.Write(f.fds[q.dst], p.buf[:p.n])
		if err == nil {
			q.shared.forwarded.Add(1)
			return
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		q.shared.droppedWrite.Add(1)
		f.shared.writeErrors.Add(1)
		return
	}
}
