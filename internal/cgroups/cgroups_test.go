package cgroups

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
)

func TestPodUIDFromPath(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/kubepods/burstable/pod6b1c2f3e-0a4b-4c5d-8e9f-0123456789ab/8f2d", "6b1c2f3e-0a4b-4c5d-8e9f-0123456789ab"},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6b1c2f3e_0a4b_4c5d_8e9f_0123456789ab.slice/cri-containerd-1a2b.scope",
			"6b1c2f3e-0a4b-4c5d-8e9f-0123456789ab"},
		{"/system.slice/containerd.service", ""},
		{"/", ""},
	} {
		if got := PodUIDFromPath(tc.path); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.path, got, tc.want)
		}
	}
}

// The ID the kernel gives a cgroup (what the probes record) resolves to its
// path and pod.
func TestResolverFindsCgroupByID(t *testing.T) {
	probetest.RequireKernel(t)
	root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "flowplace-test-kubepods", "pod6b1c2f3e-0a4b-4c5d-8e9f-0123456789ab", "c1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(dir)
		os.Remove(filepath.Dir(dir))
		os.Remove(filepath.Dir(filepath.Dir(dir)))
	})
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	r := NewResolver(root)
	if got := r.PodUID(st.Ino); got != "6b1c2f3e-0a4b-4c5d-8e9f-0123456789ab" {
		t.Errorf("pod UID of cgroup %d = %q", st.Ino, got)
	}
	if p, _ := r.Path(st.Ino); p != "/flowplace-test-kubepods/pod6b1c2f3e-0a4b-4c5d-8e9f-0123456789ab/c1" {
		t.Errorf("path %q", p)
	}
	if _, err := r.Path(1 << 62); err == nil {
		t.Error("unknown id resolved")
	}
}
