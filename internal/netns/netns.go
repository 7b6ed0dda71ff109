// Package netns finds and enters the network namespaces that a cgroup's
// processes use: the socket iterators (iter/tcp) walk only the namespace
// they are opened in, so every walk over pods' sockets goes through here.
package netns

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// OpenIterIn opens the iterator from a thread inside ns: iter/tcp walks the
// network namespace it is opened in, whoever reads it later.
func OpenIterIn(ns *os.File, it *link.Iter) (io.ReadCloser, error) {
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
		same, err := Same(orig, ns)
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: err}
			return
		}
		if same {
			rd, err := it.Open()
			runtime.UnlockOSThread()
			if err != nil {
				err = fmt.Errorf("open iterator: %w", err)
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
			err = fmt.Errorf("open iterator in %s: %w", ns.Name(), err)
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

// Same reports whether two open namespace files are the same namespace.
func Same(a, b *os.File) (bool, error) {
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

// OfCgroup opens, once each, the network namespaces used by the
// processes of cgroup dir and its descendants (cgroup.procs, read
// recursively; PIDs as this process's PID namespace sees them). Processes
// that exit meanwhile are skipped.
func OfCgroup(dir string) ([]*os.File, error) {
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
