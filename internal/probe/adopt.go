package probe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/bpf"
)

// AdoptResult counts what a walk over existing TCP sockets found.
type AdoptResult struct {
	Netns          int // network namespaces walked
	Adopted        int // connections open before the probes, measured from now on
	Tracked        int // already measured: connected since attach, or adopted before
	OtherCgroup    int // established sockets outside the observed cgroup, left alone
	NotEstablished int // listeners, handshakes, closing and TIME_WAIT sockets
	Failed         int // established in the observed cgroup but not measurable (see the error)
}

func (r *AdoptResult) add(o AdoptResult) {
	r.Netns += o.Netns
	r.Adopted += o.Adopted
	r.Tracked += o.Tracked
	r.OtherCgroup += o.OtherCgroup
	r.NotEstablished += o.NotEstablished
	r.Failed += o.Failed
}

// adoptObjects is bpf.AdoptObjects without its global variables: loading
// those memory-maps their sections, and the mapping would keep the maps
// alive after Close until Go's garbage collector ran.
type adoptObjects struct {
	bpf.AdoptPrograms
	bpf.AdoptMaps
}

func (o *adoptObjects) Close() error {
	return errors.Join(o.AdoptPrograms.Close(), o.AdoptMaps.Close())
}

// loadAdopt loads the iter/tcp program that adopts existing connections. It
// shares the flow and connection tables with sock_ops, so an adopted
// connection is keyed, attributed and counted like one sock_ops saw open.
func (p *Probe) loadAdopt(opts Options, shared map[string]*ebpf.Map) error {
	var st unix.Stat_t
	if err := unix.Stat(opts.Cgroup, &st); err != nil {
		return fmt.Errorf("cgroup id of %s: %w", opts.Cgroup, err)
	}
	spec, err := bpf.LoadAdopt()
	if err != nil {
		return fmt.Errorf("parse adoption object: %w", err)
	}
	spec.Maps[bpf.SockopsMapFlows].MaxEntries = opts.MaxFlows
	spec.Maps[bpf.SockopsMapConns].MaxEntries = opts.MaxConns
	// On cgroup v2 a cgroup's ID is its directory's inode number.
	if err := spec.Variables[bpf.AdoptVarObservedCgroupId].Set(st.Ino); err != nil {
		return fmt.Errorf("set observed cgroup of adoption program: %w", err)
	}
	repl := map[string]*ebpf.Map{bpf.SockopsMapStatsZero: p.sockops.StatsZero}
	for k, v := range shared {
		repl[k] = v
	}
	if err := spec.LoadAndAssign(&p.adopt, &ebpf.CollectionOptions{MapReplacements: repl}); err != nil {
		return fmt.Errorf("load iter/tcp adoption program: %w", verifierOrUnsupported(err))
	}
	l, err := link.AttachIter(link.IterOptions{Program: p.adopt.FlowplaceAdopt})
	if err != nil {
		p.adopt.Close()
		p.adopt = adoptObjects{}
		return fmt.Errorf("%w: attach iter/tcp: %v", ErrUnsupportedProg, err)
	}
	p.adoptIter = l
	return nil
}

// verifierOrUnsupported marks a refused program as a missing kernel feature.
func verifierOrUnsupported(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) || errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("%w: %w", ErrUnsupportedProg, err)
	}
	return err
}

// AdoptExisting measures the TCP connections that were established before
// the probes were attached, in every network namespace a process of the
// observed cgroup subtree uses (the agent needs the host PID namespace to
// see them). Sockets outside the observed cgroup are left alone, as are
// those already measured, so calling it again counts nothing twice. Bytes
// count from the walk on; the kernel's current smoothed RTT of each adopted
// connection is one RTT sample. Errors of single namespaces or sockets do
// not stop the walk; they are returned together with what was adopted.
func (p *Probe) AdoptExisting() (AdoptResult, error) {
	if p.adoptErr != nil {
		return AdoptResult{}, p.adoptUnavailable()
	}
	nss, err := cgroupNetns(p.cgroup)
	defer func() {
		for _, f := range nss {
			f.Close()
		}
	}()
	if err != nil {
		return AdoptResult{}, err
	}
	return p.adoptIn(nss)
}

// Adopt is AdoptExisting for the network namespaces at the given paths
// (/proc/<pid>/ns/net, /run/netns/<name>); none means this thread's own.
func (p *Probe) Adopt(netnsPaths ...string) (AdoptResult, error) {
	if p.adoptErr != nil {
		return AdoptResult{}, p.adoptUnavailable()
	}
	if len(netnsPaths) == 0 {
		netnsPaths = []string{"/proc/thread-self/ns/net"}
	}
	var nss []*os.File
	defer func() {
		for _, f := range nss {
			f.Close()
		}
	}()
	for _, path := range netnsPaths {
		f, err := os.Open(path)
		if err != nil {
			return AdoptResult{}, fmt.Errorf("open network namespace: %w", err)
		}
		nss = append(nss, f)
	}
	return p.adoptIn(nss)
}

func (p *Probe) adoptUnavailable() error {
	if p.adoptErr != nil {
		return fmt.Errorf("adopt existing connections: %w", p.adoptErr)
	}
	return errors.New("adopt existing connections: probe is closed")
}

func (p *Probe) adoptIn(nss []*os.File) (AdoptResult, error) {
	p.adoptMu.Lock()
	defer p.adoptMu.Unlock()
	if p.adoptIter == nil {
		return AdoptResult{}, p.adoptUnavailable()
	}
	var (
		total AdoptResult
		errs  []error
	)
	for _, ns := range nss {
		r, err := p.walk(ns)
		total.add(r)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return total, errors.Join(errs...)
}

// walk runs the adoption iterator over one network namespace.
func (p *Probe) walk(ns *os.File) (AdoptResult, error) {
	// A fresh generation per walk: listeners recorded by earlier walks may
	// have closed since and must not make a client look like a server.
	p.walkGen++
	if err := p.adopt.WalkGen.Update(uint32(0), p.walkGen, ebpf.UpdateAny); err != nil {
		return AdoptResult{}, fmt.Errorf("start adoption walk: %w", err)
	}
	rd, err := openIterIn(ns, p.adoptIter)
	if err != nil {
		return AdoptResult{}, err
	}
	defer rd.Close()
	r := AdoptResult{Netns: 1}
	var (
		rec      [16]byte
		firstErr error
		br       = bufio.NewReaderSize(rd, 32<<10)
	)
	for {
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			return r, fmt.Errorf("read adoption walk of %s: %w", ns.Name(), err)
		}
		// struct fp_adopt_record: cookie u64, err s32, status u8, state u8, role u8, pad u8.
		errno := int32(binary.LittleEndian.Uint32(rec[8:12]))
		switch bpf.AdoptFpAdoptStatus(rec[12]) {
		case bpf.AdoptFpAdoptStatusADOPT_ADOPTED:
			r.Adopted++
		case bpf.AdoptFpAdoptStatusADOPT_TRACKED:
			r.Tracked++
		case bpf.AdoptFpAdoptStatusADOPT_OTHER_CGROUP:
			r.OtherCgroup++
		case bpf.AdoptFpAdoptStatusADOPT_NOT_ESTABLISHED:
			r.NotEstablished++
		case bpf.AdoptFpAdoptStatusADOPT_NO_STORAGE:
			r.Failed++
			if firstErr == nil {
				firstErr = errors.New("per-connection state table is full (raise the connection limit)")
			}
		case bpf.AdoptFpAdoptStatusADOPT_NO_CALLBACKS:
			r.Failed++
			if firstErr == nil {
				firstErr = fmt.Errorf("%w: enable RTT and state callbacks from iter/tcp (bpf_setsockopt TCP_BPF_SOCK_OPS_CB_FLAGS): %w",
					ErrUnsupportedProg, syscall.Errno(-errno))
			}
		default:
			return r, fmt.Errorf("adoption walk of %s: unknown record status %d", ns.Name(), rec[12])
		}
	}
	if r.Failed > 0 {
		return r, fmt.Errorf("%d connections in %s not adopted: %w", r.Failed, ns.Name(), firstErr)
	}
	return r, nil
}

// openIterIn opens the iterator from a thread inside ns: iter/tcp walks the
// network namespace it is opened in, whoever reads it later.
func openIterIn(ns *os.File, it *link.Iter) (io.ReadCloser, error) {
	type result struct {
		rd  io.ReadCloser
		err error
	}
	resc := make(chan result, 1)
	// A goroutine of its own: if the thread cannot be switched back it
	// stays locked, and the runtime ends it with the goroutine instead of
	// reusing a thread in a foreign namespace.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("open current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		same, err := sameFile(orig, ns)
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: err}
			return
		}
		if same {
			rd, err := it.Open()
			runtime.UnlockOSThread()
			if err != nil {
				err = fmt.Errorf("open adoption iterator: %w", err)
			}
			resc <- result{rd, err}
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("enter network namespace %s: %w", ns.Name(), err)}
			return
		}
		rd, err := it.Open()
		if err != nil {
			err = fmt.Errorf("open adoption iterator in %s: %w", ns.Name(), err)
		}
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			if rd != nil {
				rd.Close()
			}
			resc <- result{err: errors.Join(err, fmt.Errorf("return from network namespace %s: %w", ns.Name(), rerr))}
			return
		}
		runtime.UnlockOSThread()
		resc <- result{rd, err}
	}()
	r := <-resc
	return r.rd, r.err
}

func sameFile(a, b *os.File) (bool, error) {
	ka, err := fileKey(a)
	if err != nil {
		return false, err
	}
	kb, err := fileKey(b)
	if err != nil {
		return false, err
	}
	return ka == kb, nil
}

type nsKey struct{ dev, ino uint64 }

func fileKey(f *os.File) (nsKey, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nsKey{}, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return nsKey{st.Dev, st.Ino}, nil
}

// cgroupNetns opens, once each, the network namespaces used by the
// processes of cgroup dir and its descendants (cgroup.procs, read
// recursively; PIDs as this process's PID namespace sees them). Processes
// that exit meanwhile are skipped.
func cgroupNetns(dir string) ([]*os.File, error) {
	seen := map[nsKey]bool{}
	var out []*os.File
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path != dir && errors.Is(err, fs.ErrNotExist) {
				return nil // a cgroup removed during the walk
			}
			return err
		}
		if !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENODEV) {
				return nil
			}
			return fmt.Errorf("processes of cgroup %s: %w", path, err)
		}
		for _, line := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(line)
			if err != nil {
				continue
			}
			nsPath := "/proc/" + strconv.Itoa(pid) + "/ns/net"
			var st unix.Stat_t
			if err := unix.Stat(nsPath, &st); err != nil {
				continue // exited, or a kernel thread
			}
			k := nsKey{st.Dev, st.Ino}
			if seen[k] {
				continue
			}
			f, err := os.Open(nsPath)
			if err != nil {
				continue
			}
			// The PID may have been reused between stat and open: key by
			// what was opened.
			if k, err = fileKey(f); err != nil || seen[k] {
				f.Close()
				continue
			}
			seen[k] = true
			out = append(out, f)
		}
		return nil
	})
	if err != nil {
		return out, fmt.Errorf("network namespaces of cgroup %s: %w", dir, err)
	}
	return out, nil
}
