package probe

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// DefaultCgroup2Mount is where the probes mount cgroup v2 when the host has
// no cgroup2 mount (hosts still on the v1 layout).
const DefaultCgroup2Mount = "/run/flowplace/cgroup2"

// FindCgroup2 returns the mount point of the cgroup v2 hierarchy, or "" if
// none is mounted.
func FindCgroup2() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, fl := range fields {
			if fl == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		if fields[sep+1] == "cgroup2" && fields[3] == "/" {
			return fields[4], nil
		}
	}
	return "", sc.Err()
}

// Cgroup2 returns the cgroup v2 mount point, mounting the hierarchy at
// mountAt when none is mounted and mountAt is not empty.
func Cgroup2(mountAt string) (string, error) {
	mnt, err := FindCgroup2()
	if err != nil {
		return "", err
	}
	if mnt != "" {
		return mnt, nil
	}
	if mountAt == "" {
		return "", fmt.Errorf("%w: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) or let flowplace mount it", ErrNoCgroup2)
	}
	if err := os.MkdirAll(mountAt, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup2 mount point %s: %w", mountAt, err)
	}
	if err := unix.Mount("none", mountAt, "cgroup2", 0, ""); err != nil {
		return "", fmt.Errorf("%w: mount cgroup2 at %s: %v", ErrNoCgroup2, mountAt, err)
	}
	return mountAt, nil
}

// IsCgroup2Dir reports whether path is a directory of a cgroup v2 hierarchy.
func IsCgroup2Dir(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNoCgroup2, path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("%w: %s is not on a cgroup2 filesystem", ErrNoCgroup2, path)
	}
	return nil
}

// ProcessCgroup returns the cgroup v2 directory (under the mount root) that
// process pid belongs to; 0 means this process.
func ProcessCgroup(root string, pid int) (string, error) {
	path := "/proc/self/cgroup"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/cgroup", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read cgroup of process: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(root, rest), nil
		}
	}
	return root, nil
}

// JoinCgroup moves process pid (0: this one) with all its threads into the
// cgroup v2 directory dir. Sockets it creates afterwards belong to dir.
func JoinCgroup(dir string, pid int) error {
	if pid == 0 {
		pid = os.Getpid()
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("move process %d into cgroup %s: %w", pid, dir, err)
	}
	return nil
}

// PodsCgroupValue is the --cgroup value that selects PodsCgroup.
const PodsCgroupValue = "pods"

// PodsCgroup returns the cgroup v2 directory that holds this node's pods:
// the parent of the kubelet's "kubepods" cgroup (kubepods or
// kubepods.slice) that this process runs in, under the cgroup v2 mount
// mnt. On a dedicated host that is the root; where several kubelets share
// a kernel, each with its own cgroupRoot, it is that node's root, so an
// agent never measures another node's pods.
func PodsCgroup(mnt string) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("read /proc/self/cgroup: %w", err)
	}
	return podsCgroupFrom(mnt, string(b))
}

func podsCgroupFrom(mnt, procCgroup string) (string, error) {
	for _, line := range strings.Split(procCgroup, "\n") {
		path, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		parts := strings.Split(path, "/")
		for i, p := range parts {
			if p == "kubepods" || p == "kubepods.slice" {
				return filepath.Join(append([]string{mnt}, parts[:i]...)...), nil
			}
		}
		return "", fmt.Errorf("--cgroup=%s: this process's cgroup v2 path %q has no kubepods cgroup: run the agent as a pod, or give --cgroup a directory", PodsCgroupValue, path)
	}
	return "", fmt.Errorf("--cgroup=%s: no cgroup v2 entry (0::) in /proc/self/cgroup", PodsCgroupValue)
}

// CgroupID is the cgroup v2 ID of dir: its inode number, what the kernel
// reports as a socket's or a link's cgroup.
func CgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}
