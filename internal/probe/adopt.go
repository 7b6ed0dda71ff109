package probe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/bpf"
	"github.com/flowplace/flowplace/internal/netns"
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
	p.sizeMaps(spec, opts)
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
	nss, err := netns.OfCgroup(p.cgroup)
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
	rd, err := netns.OpenIterIn(ns, p.adoptIter)
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
