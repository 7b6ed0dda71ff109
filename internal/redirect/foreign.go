package redirect

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// knownSocketLBs are name prefixes of other projects' connect programs
// that translate service addresses at socket level (program names are cut
// to 15 characters by the kernel).
var knownSocketLBs = []struct{ prefix, who string }{
	{"cil_sock", "Cilium's socket LB (kube-proxy replacement)"},
	{"calico_connect", "Calico's eBPF connect-time load balancer"},
	{"cali_ctlb", "Calico's eBPF connect-time load balancer"},
	{"cgroup_connect", "Kmesh"},
	{"kmesh", "Kmesh"},
}

// ownPrefix names flowplace's programs.
const ownPrefix = "flowplace_"

// checkForeign refuses when another socket-level load balancer rewrites
// connects of cgroup's sockets: two rewriters of the same connect would
// each undo the other's choice. It looks at the programs that effectively
// run on connect4/connect6 of cgroup (its own and its ancestors').
func checkForeign(cgroup string) error {
	f, err := os.Open(cgroup)
	if err != nil {
		return fmt.Errorf("routing: open cgroup %s: %w", cgroup, err)
	}
	defer f.Close()
	var found []string
	for _, at := range []ebpf.AttachType{ebpf.AttachCGroupInet4Connect, ebpf.AttachCGroupInet6Connect} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at, QueryFlags: 1 /* BPF_F_QUERY_EFFECTIVE */})
		if err != nil {
			return fmt.Errorf("routing: list connect programs of %s: %w", cgroup, err)
		}
		for _, ap := range res.Programs {
			id := ap.ID
			p, err := ebpf.NewProgramFromID(id)
			if err != nil {
				if errors.Is(err, os.ErrNotExist) {
					continue // detached meanwhile
				}
				return fmt.Errorf("routing: inspect connect program %d: %w", id, err)
			}
			info, err := p.Info()
			p.Close()
			if err != nil {
				return fmt.Errorf("routing: inspect connect program %d: %w", id, err)
			}
			if who := socketLB(info.Name); who != "" {
				found = append(found, fmt.Sprintf("%s (program %q, id %d)", who, info.Name, id))
			}
		}
	}
	if len(found) > 0 {
		return fmt.Errorf("%w on %s: %s; flowplace routing would fight it over every connect. Disable routing (agent --routing=false) or that load balancer's socket LB",
			ErrForeignLoadBalancer, cgroup, strings.Join(found, ", "))
	}
	return nil
}

func socketLB(name string) string {
	if strings.HasPrefix(name, ownPrefix) {
		return ""
	}
	for _, k := range knownSocketLBs {
		if strings.HasPrefix(name, k.prefix) {
			return k.who
		}
	}
	return ""
}
