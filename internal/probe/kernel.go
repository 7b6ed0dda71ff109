package probe

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Errors that say which prerequisite is missing; match with errors.Is.
var (
	ErrNotPermitted    = errors.New("missing privilege")
	ErrNoBTF           = errors.New("kernel has no BTF")
	ErrNoCgroup2       = errors.New("no cgroup v2 hierarchy")
	ErrUnsupportedProg = errors.New("kernel refuses a required eBPF feature")
)

const (
	capNetAdmin = 12
	capSysAdmin = 21
	capBPF      = 39
	capPerfmon  = 38
)

// CheckKernel verifies, before anything is loaded, that this process and
// kernel can run the probes, and says precisely what is missing.
func CheckKernel() error {
	if err := checkCapabilities(); err != nil {
		return err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("%w: /sys/kernel/btf/vmlinux not found (needs CONFIG_DEBUG_INFO_BTF=y)", ErrNoBTF)
	}
	progs := []struct {
		t    ebpf.ProgramType
		name string
	}{
		{ebpf.SockOps, "sock_ops"},
		{ebpf.CGroupSockAddr, "cgroup_sock_addr (connect4/getpeername4)"},
	}
	for _, p := range progs {
		if err := features.HaveProgramType(p.t); err != nil {
			return fmt.Errorf("%w: program type %s: %v", ErrUnsupportedProg, p.name, err)
		}
	}
	maps := []struct {
		t    ebpf.MapType
		name string
	}{
		{ebpf.LRUHash, "lru_hash"},
		{ebpf.PerCPUArray, "percpu_array"},
	}
	for _, m := range maps {
		if err := features.HaveMapType(m.t); err != nil {
			return fmt.Errorf("%w: map type %s: %v", ErrUnsupportedProg, m.name, err)
		}
	}
	helpers := []struct {
		t  ebpf.ProgramType
		fn asm.BuiltinFunc
	}{
		{ebpf.SockOps, asm.FnGetSocketCookie},
		{ebpf.SockOps, asm.FnGetNetnsCookie},
		{ebpf.SockOps, asm.FnSkcToTcpSock},
		{ebpf.CGroupSockAddr, asm.FnGetSocketCookie},
	}
	for _, h := range helpers {
		if err := features.HaveProgramHelper(h.t, h.fn); err != nil {
			return fmt.Errorf("%w: helper %s in %s programs: %v", ErrUnsupportedProg, h.fn, h.t, err)
		}
	}
	return nil
}

func checkCapabilities() error {
	missing, err := MissingCapabilities(false)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s: run as root, or add them to the pod's securityContext.capabilities", ErrNotPermitted, strings.Join(missing, "; "))
	}
	return nil
}

// MissingCapabilities says which capabilities the agent lacks, each with
// what it is for; adopt adds what adopting existing connections needs.
// Each is asked for by name even where CAP_SYS_ADMIN would let the kernel
// do without (loading and attaching): the agent's pod grants exactly
// these, so a missing one is a configuration error to report, not to mask.
func MissingCapabilities(adopt bool) ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	var missing []string
	for _, c := range []struct {
		cap  uint
		name string
		why  string
		need bool
	}{
		{capBPF, "CAP_BPF", "load the eBPF programs and create their maps", true},
		{capPerfmon, "CAP_PERFMON", "let the programs read kernel memory (socket fields, iterators)", true},
		{capNetAdmin, "CAP_NET_ADMIN", "attach to a cgroup and read conntrack", true},
		{capSysAdmin, "CAP_SYS_ADMIN", "enter the pods' network namespaces to adopt connections opened before the agent (or --adopt-existing=false)", adopt},
	} {
		if c.need && !has(c.cap) {
			missing = append(missing, fmt.Sprintf("%s is needed to %s", c.name, c.why))
		}
	}
	return missing, nil
}
