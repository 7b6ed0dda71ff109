// Package benchenv is what a kernel benchmark needs around it: the facts of
// the machine it ran on (results are ratios, but a reader must know what
// they were measured on) and a cgroup of its own, so that only its sockets
// run through the programs under test.
package benchenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/internal/probe"
)

// Machine describes the CPU, kernel, Go and load, on one line.
func Machine() string {
	var uts unix.Utsname
	unix.Uname(&uts)
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	load := "unknown"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("machine: %s, %d CPUs, kernel %s, %s, load average %s",
		model, runtime.NumCPU(), unix.ByteSliceToString(uts.Release[:]), runtime.Version(), load)
}

// Cgroup is a fresh child of the cgroup v2 root that this process can move
// into and out of.
type Cgroup struct {
	Dir  string
	orig string
}

// NewCgroup creates root/name-<pid>.
func NewCgroup(root, name string) (*Cgroup, error) {
	dir := filepath.Join(root, fmt.Sprintf("%s-%d", name, os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("create bench cgroup: %w", err)
	}
	orig, err := probe.ProcessCgroup(root, 0)
	if err != nil {
		return nil, err
	}
	return &Cgroup{Dir: dir, orig: orig}, nil
}

// Enter moves this process (all its threads) into the cgroup: sockets
// created from now on belong to it.
func (c *Cgroup) Enter() error { return probe.JoinCgroup(c.Dir, 0) }

// Remove moves the process back where it was and removes the cgroup once
// the kernel has let go of it (sockets still closing pin it briefly).
func (c *Cgroup) Remove() {
	probe.JoinCgroup(c.orig, 0)
	for range 50 {
		if os.Remove(c.Dir) == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Median of v (v is not changed).
func Median(v []float64) float64 {
	return Quantile(v, 0.5)
}

// Quantile of v by linear interpolation between order statistics.
func Quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	pos := q * float64(len(s)-1)
	i := int(pos)
	if i+1 >= len(s) {
		return s[len(s)-1]
	}
	return s[i] + (pos-float64(i))*(s[i+1]-s[i])
}
