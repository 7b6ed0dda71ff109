package lab

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDefaultProfile(t *testing.T) {
	p, err := DefaultProfile(3, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.ClusterNames(), ","); got != "us-east-1,eu-west-1,ap-northeast-1" {
		t.Errorf("clusters %s", got)
	}
	// 212.4 ms published between Ireland and Tokyo, scaled by 0.1.
	if got, want := p.Injected("ap-northeast-1", "eu-west-1"), 21240*time.Microsecond; got != want {
		t.Errorf("eu-west-1 <-> ap-northeast-1 = %v, want %v", got, want)
	}
	if p.Injected("us-east-1", "us-east-1") != 0 {
		t.Error("intra-cluster RTT must be zero")
	}
	for n := 2; n <= MaxClusters; n++ {
		if _, err := DefaultProfile(n, 1); err != nil {
			t.Errorf("%d clusters: %v", n, err)
		}
	}
	for _, n := range []int{0, 1, 7} {
		if _, err := DefaultProfile(n, 1); err == nil {
			t.Errorf("%d clusters accepted", n)
		}
	}
}

func TestLoadProfileRejectsBadFiles(t *testing.T) {
	head := "apiVersion: flowplace.io/v1alpha1\nkind: LabProfile\n"
	for _, tc := range []struct {
		name, body, want string
	}{
		{"not yaml", "{{", "profile"},
		{"unknown field", head + "clusters: [{name: a}, {name: b}]\nrtt: [{a: a, b: b, ms: 5}]\nfoo: 1\n", `unknown field "foo"`},
		{"one cluster", head + "clusters: [{name: a}]\nrtt: []\n", "clusters: 1 clusters, want 2 to 6"},
		{"seven clusters", head + "clusters: [{name: a},{name: b},{name: c},{name: d},{name: e},{name: f},{name: g}]\n", "want 2 to 6"},
		{"missing pair", head + "clusters: [{name: a}, {name: b}, {name: c}]\nrtt: [{a: a, b: b, ms: 5}, {a: a, b: c, ms: 5}]\n", "missing pair b-c"},
		{"negative", head + "clusters: [{name: a}, {name: b}]\nrtt: [{a: a, b: b, ms: -5}]\n", "rtt[0].ms: -5"},
		{"unknown cluster", head + "clusters: [{name: a}, {name: b}]\nrtt: [{a: a, b: z, ms: 5}]\n", "a-z names a cluster not in clusters[]"},
		{"bad name", head + "clusters: [{name: A_1}, {name: b}]\nrtt: [{a: A_1, b: b, ms: 5}]\n", `clusters[0].name: "A_1"`},
		{"bad scale", head + "scale: 3\nclusters: [{name: a}, {name: b}]\nrtt: [{a: a, b: b, ms: 5}]\n", "scale: 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "p.yaml")
			os.WriteFile(path, []byte(tc.body), 0o644)
			_, err := LoadProfile(t.Context(), path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "ok.yaml")
	os.WriteFile(path, []byte(head+"clusters: [{name: a}, {name: b}]\nrtt: [{a: b, b: a, ms: 12.5}]\n"), 0o644)
	p, err := LoadProfile(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Injected("a", "b") != 12500*time.Microsecond {
		t.Errorf("injected %v", p.Injected("a", "b"))
	}
}

// A file that cannot be a profile is refused by its size, at once, with the
// limit in the message, whether its size is known (a 108 MB file, sparse
// here) or not (a device that never ends).
func TestLoadProfileRefusesOversizedFiles(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, []byte("apiVersion: flowplace.io/v1alpha1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(big, 108<<20); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{big, "113246208 bytes (108.0 MiB) is over the 64 KiB limit"},
		{"/dev/zero", "its content is over the 64 KiB limit"},
	} {
		start := time.Now()
		_, err := LoadProfile(t.Context(), tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to say %q", tc.path, err, tc.want)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: refused after %s, want at once", tc.path, d)
		}
	}
}

// Reading a profile that blocks (a FIFO nobody writes) ends when ctx does.
func TestLoadProfileHonoursCancel(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "p.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := LoadProfile(ctx, fifo)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want the context's", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("returned %s after the context ended", d)
	}
	// Let the abandoned open return.
	if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
		w.Close()
	}
}
