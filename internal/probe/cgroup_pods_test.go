package probe

import "testing"

func TestPodsCgroupFrom(t *testing.T) {
	for _, c := range []struct {
		name, in, want string
		fail           bool
	}{
		{"cgroupfs driver, dedicated host", "0::/kubepods/besteffort/pod1/abc\n", "/sys/fs/cgroup", false},
		{"systemd driver", "0::/kubepods.slice/kubepods-burstable.slice/x.scope\n", "/sys/fs/cgroup", false},
		{"shared kernel, own cgroupRoot", "4:memory:/x\n0::/flowplace/ns-a.n1/kubepods/burstable/pod2/def\n", "/sys/fs/cgroup/flowplace/ns-a.n1", false},
		{"not a pod", "0::/user.slice/session-1.scope\n", "", true},
		{"no v2 entry", "1:cpu:/kubepods\n", "", true},
	} {
		got, err := podsCgroupFrom("/sys/fs/cgroup", c.in)
		if (err != nil) != c.fail || got != c.want {
			t.Errorf("%s: got %q, %v; want %q (fail %v)", c.name, got, err, c.want, c.fail)
		}
	}
}
