package lab

import (
	"os"
	"path/filepath"
	"strings"
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
			_, err := LoadProfile(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "ok.yaml")
	os.WriteFile(path, []byte(head+"clusters: [{name: a}, {name: b}]\nrtt: [{a: b, b: a, ms: 12.5}]\n"), 0o644)
	p, err := LoadProfile(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Injected("a", "b") != 12500*time.Microsecond {
		t.Errorf("injected %v", p.Injected("a", "b"))
	}
}
