package latencymatrix

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
)

func TestRoundTrip(t *testing.T) {
	until := metav1.NewTime(time.Unix(1800000000, 0).UTC())
	in := []flowplacev1alpha1.ClusterLatency{{ObjectMeta: metav1.ObjectMeta{Name: "m1"}}}
	in[0].Status.ValidUntil = until
	in[0].Status.Peers = []flowplacev1alpha1.PeerLatency{{Cluster: "m2", P50Microseconds: 20345, SampleCount: 99}, {Cluster: "m3", P50Microseconds: 50000, Estimated: true, ExpectedErrorMicroseconds: 1500}}
	b, err := Encode(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	r := out["m1"]
	if r == nil || !r.Status.ValidUntil.Equal(&until) || len(r.Status.Peers) != 2 ||
		r.Status.Peers[0] != in[0].Status.Peers[0] || r.Status.Peers[1] != in[0].Status.Peers[1] {
		t.Fatalf("decoded %+v from %s", r, b)
	}
	if !Fresh(r, until.Add(-time.Second)) || Fresh(r, until.Time) {
		t.Error("freshness does not follow validUntil")
	}
}

func TestDecodeRefusesBadInput(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{`, "decode"},
		{`{"version":2,"rows":[]}`, "version 2"},
		{`{"version":1,"clusters":["a"],"rows":[{"cluster":1,"peers":[]}]}`, "cluster index 1 of 1"},
		{`{"version":1,"clusters":["a","b"],"rows":[{"cluster":0,"peers":[[1,1,2]]}]}`, "3 fields"},
		{`{"version":1,"clusters":["a","b"],"rows":[{"cluster":0,"peers":[[1,-1,2,0]]}]}`, "negative value"},
		{`{"version":1,"clusters":["a","b"],"rows":[{"cluster":0,"peers":[[7,1,2,0]]}]}`, "cluster index 7"},
		{`{"version":1,"clusters":["a",""],"rows":[{"cluster":1,"peers":[]}]}`, "cluster index 1"},
	} {
		if _, err := Decode([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%s) = %v, want an error saying %q", c.in, err, c.want)
		}
	}
}

// The bound the package doc promises: a full mesh of 200 clusters fits.
func TestFullMeshOf200Fits(t *testing.T) {
	var rows []flowplacev1alpha1.ClusterLatency
	for i := range 200 {
		cl := flowplacev1alpha1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: name(i)}}
		cl.Status.ValidUntil = metav1.Now()
		for j := range 200 {
			cl.Status.Peers = append(cl.Status.Peers, flowplacev1alpha1.PeerLatency{Cluster: name(j), P50Microseconds: 123456, SampleCount: 12345})
		}
		rows = append(rows, cl)
	}
	b, err := Encode(rows)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("200 x 200 clusters: %d bytes (%.1f a pair)", len(b), float64(len(b))/40000)
}

func name(i int) string {
	return "member-" + string(rune('a'+i/26%26)) + string(rune('a'+i%26)) + "-eu"
}
