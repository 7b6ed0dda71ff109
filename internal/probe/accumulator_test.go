package probe

import (
	"net/netip"
	"testing"
	"time"
)

func TestAccumulatorSurvivesEviction(t *testing.T) {
	k := FlowKey{Local: netip.MustParseAddr("10.0.0.1"), Dialed: netip.MustParseAddrPort("10.0.0.2:80"), Peer: netip.MustParseAddrPort("10.0.0.2:80"), Role: RoleClient}
	snap := func(inc uint64, opened, closed, sent uint64) *Snapshot {
		return &Snapshot{Time: time.Now(), Flows: []Flow{{Key: k, Incarnation: inc, Stats: FlowStats{Opened: opened, Closed: closed, BytesSent: sent}}}}
	}
	a := NewAccumulator()
	steps := []struct {
		s         *Snapshot
		wantDelta uint64 // bytes
		wantTotal uint64
	}{
		{snap(1, 2, 0, 100), 100, 100},
		{snap(1, 3, 1, 250), 150, 250},
		{snap(1, 3, 1, 250), 0, 250}, // nothing moved: no delta
		{snap(7, 1, 0, 40), 40, 290}, // evicted and re-created: counts restart
		{snap(7, 1, 1, 90), 50, 340},
	}
	for i, st := range steps {
		ds := a.Add(st.s)
		var got uint64
		for _, d := range ds {
			got += d.Delta.BytesSent
		}
		if got != st.wantDelta {
			t.Errorf("step %d: delta %d, want %d", i, got, st.wantDelta)
		}
		if st.wantDelta == 0 && len(ds) != 0 {
			t.Errorf("step %d: %d deltas for an unchanged flow", i, len(ds))
		}
		if tot, _ := a.Total(k); tot.BytesSent != st.wantTotal {
			t.Errorf("step %d: total %d, want %d", i, tot.BytesSent, st.wantTotal)
		}
	}
	if tot, _ := a.Total(k); tot.Opened != 4 || tot.Closed != 2 {
		t.Errorf("connections opened %d closed %d, want 4 and 2", tot.Opened, tot.Closed)
	}
	if n := a.Forget(time.Now().Add(time.Hour)); n != 0 {
		t.Errorf("forgot a flow with open connections")
	}
	a.Drop(k)
	if _, ok := a.Total(k); ok {
		t.Error("dropped flow still there")
	}
}
