package nodes

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// What a node changes on the shared host, and how it is put back: cgroups
// under the node's own root in every hierarchy, and the kernel settings the
// kubelet writes at start. A record per node under stateDir lets the next
// run sweep what a killed one left.

// stateDir is on /run: it vanishes at reboot with everything it describes.
var stateDir = "/run/flowplace/nodes"

// kubeletSysctls are the machine-wide settings the kubelet sets at start
// (setupKernelTunables); they are restored once no node runs.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

const sysctlFile = "sysctls.json"

// hostMu serializes this process's nodes saving and restoring the kernel
// settings (they start and stop in parallel); lockHost also serializes
// them with other processes' nodes.
var hostMu sync.Mutex

// lockHost takes hostMu and an exclusive flock on stateDir's lock file.
// Without the flock, a process whose last node restores the settings
// (records read: none alive) and one whose first node saves them (record
// written, file still there: not saved) could interleave so that the file
// is removed under the second: its kubelets' settings would then never be
// restored.
func lockHost() (unlock func(), err error) {
	hostMu.Lock()
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		hostMu.Unlock()
		return nil, fmt.Errorf("nodes: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(stateDir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		hostMu.Unlock()
		return nil, fmt.Errorf("nodes: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		hostMu.Unlock()
		return nil, fmt.Errorf("nodes: locking %s: %w", f.Name(), err)
	}
	return func() {
		f.Close() // releases the flock
		hostMu.Unlock()
	}, nil
}

// record is what Sweep needs to undo one node.
type record struct {
	PID        int    `json:"pid"`
	Start      uint64 `json:"start"` // the owner's start time, against pid reuse
	Name       string `json:"name"`
	CgroupRoot string `json:"cgroupRoot"`
	Dir        string `json:"dir"`
	// RunDirs are Config.RunDirs: Sweep removes them too, Stop does not.
	RunDirs []string `json:"runDirs,omitempty"`
}

func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Field 22, counted after the parenthesized command name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

func (r record) alive() bool {
	st, err := procStart(r.PID)
	return err == nil && st == r.Start
}

func recordPath(cgroupRoot string) string {
	return filepath.Join(stateDir, strings.Trim(strings.ReplaceAll(cgroupRoot, "/", "_"), "_")+".json")
}

func writeRecord(r record) error {
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	b, _ := json.Marshal(r)
	if err := os.WriteFile(recordPath(r.CgroupRoot), b, 0o644); err != nil {
		return fmt.Errorf("nodes: writing record: %w", err)
	}
	return nil
}

func readRecords() ([]record, error) {
	entries, err := os.ReadDir(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	var out []record
	for _, e := range entries {
		if e.Name() == sysctlFile || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(stateDir, e.Name()))
		if err != nil {
			continue // raced with its owner's Stop
		}
		var r record
		if err := json.Unmarshal(b, &r); err != nil || r.CgroupRoot == "" {
			return nil, fmt.Errorf("nodes: record %s is malformed (left alone)", e.Name())
		}
		out = append(out, r)
	}
	return out, nil
}

// saveSysctls records the kubelet's settings before the first node of the
// machine starts; a file that exists already holds the values from before
// any node.
func saveSysctls() error {
	unlock, err := lockHost()
	if err != nil {
		return err
	}
	defer unlock()
	path := filepath.Join(stateDir, sysctlFile)
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	vals := map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return fmt.Errorf("nodes: reading sysctl %s: %w", k, err)
		}
		vals[k] = strings.TrimSpace(string(b))
	}
	if err := os.MkdirAll(stateDir, 0o755); err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	b, _ := json.Marshal(vals)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("nodes: saving sysctls: %w", err)
	}
	return os.Rename(tmp, path)
}

// restoreSysctls puts the saved settings back when no node of any live
// process remains.
func restoreSysctls() error {
	unlock, err := lockHost()
	if err != nil {
		return err
	}
	defer unlock()
	recs, err := readRecords()
	if err != nil {
		return err
	}
	for _, r := range recs {
		if r.alive() {
			return nil
		}
	}
	path := filepath.Join(stateDir, sysctlFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("nodes: %w", err)
	}
	var vals map[string]string
	if err := json.Unmarshal(b, &vals); err != nil {
		return fmt.Errorf("nodes: %s is malformed: %w", path, err)
	}
	var errs []error
	for k, v := range vals {
		if !slices.Contains(kubeletSysctls, k) {
			continue // never write what we did not save
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0); err != nil {
			errs = append(errs, fmt.Errorf("nodes: restoring sysctl %s=%s: %w", k, v, err))
		}
	}
	if len(errs) == 0 {
		errs = append(errs, os.Remove(path))
	}
	return errors.Join(errs...)
}

// ReadSysctls returns the current values of the settings the kubelet
// changes, for teardown tests.
func ReadSysctls() (map[string]string, error) {
	vals := map[string]string{}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + k)
		if err != nil {
			return nil, fmt.Errorf("nodes: reading sysctl %s: %w", k, err)
		}
		vals[k] = strings.TrimSpace(string(b))
	}
	return vals, nil
}

// cgroupMounts returns the mount points of every cgroup hierarchy (v1 and
// the unified one).
func cgroupMounts() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "... mountpoint opts ... - fstype source superopts"
		fields := strings.Fields(sc.Text())
		sep := slices.Index(fields, "-")
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if t := fields[sep+1]; t == "cgroup" || t == "cgroup2" {
			out = append(out, fields[4])
		}
	}
	return out, sc.Err()
}

// createCgroups makes root (and root/system) in every hierarchy. cpuset
// needs its cpus and mems set before a task may join.
func createCgroups(root string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		for _, dir := range []string{filepath.Join(m, root), filepath.Join(m, root, "system")} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("nodes: creating cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if err := os.WriteFile(filepath.Join(dir, f), parent, 0); err != nil {
					return fmt.Errorf("nodes: %s/%s: %w", dir, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupProcs lists the pids in root's subtree of every hierarchy.
func cgroupProcs(root string) (map[int]bool, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	pids := map[int]bool{}
	for _, m := range mounts {
		filepath.WalkDir(filepath.Join(m, root), func(path string, d os.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
			if err != nil {
				return nil
			}
			for _, l := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(l); err == nil {
					pids[pid] = true
				}
			}
			return nil
		})
	}
	return pids, nil
}

// killCgroups SIGKILLs every process in root's subtree until none is left:
// containers, their shims and containerd, which are not our children and
// survive their parents.
func killCgroups(root string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		pids, err := cgroupProcs(root)
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nodes: %d processes still in cgroup %s after %s: %v", len(pids), root, timeout, slices.Sorted(maps.Keys(pids)))
		}
		for pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroups removes root's subtree, deepest first, in every hierarchy.
func removeCgroups(root string) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		top := filepath.Join(m, root)
		var dirs []string
		filepath.WalkDir(top, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, d := range dirs {
			if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("nodes: removing cgroup %s: %w", d, err))
			}
		}
		// The common parent goes with its last node; another node's
		// children keep it (EBUSY, ENOTEMPTY).
		_ = syscall.Rmdir(filepath.Dir(top))
	}
	return errors.Join(errs...)
}

// Sweep undoes the nodes of processes that died without stopping them:
// their processes, cgroups, directories (with Config.RunDirs), and the
// kernel settings once no node is left. Nodes of live processes are left
// alone. Their network namespaces are wan.Sweep's.
func Sweep() error {
	recs, err := readRecords()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range recs {
		if r.alive() {
			continue
		}
		if err := undo(r); err != nil {
			errs = append(errs, fmt.Errorf("sweeping node %s: %w", r.Name, err))
			continue
		}
	}
	errs = append(errs, restoreSysctls())
	return errors.Join(errs...)
}

// undo removes what a node left on the host, then its record.
func undo(r record) error {
	if err := killCgroups(r.CgroupRoot, 10*time.Second); err != nil {
		return err
	}
	if err := removeCgroups(r.CgroupRoot); err != nil {
		return err
	}
	for _, dir := range append([]string{r.Dir}, r.RunDirs...) {
		if dir == "" {
			continue
		}
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("nodes: removing %s: %w", dir, err)
		}
	}
	if err := os.Remove(recordPath(r.CgroupRoot)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("nodes: removing record: %w", err)
	}
	return nil
}
