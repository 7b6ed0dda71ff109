package rebalance

import (
	"testing"
	"time"
)

func TestAccumulator(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type obs struct {
		at     time.Duration // since t0
		advice string        // "": not observed this round
		saving float64
	}
	for _, tc := range []struct {
		name       string
		maxGap     time.Duration
		rounds     []obs
		wantAcc    float64
		wantRounds int // 0: forgotten after the last round
	}{
		{"first sighting credits nothing", 0, []obs{{0, "b", 100}}, 0, 1},
		{"held three rounds", 0, []obs{{0, "b", 100}, {time.Minute, "b", 100}, {2 * time.Minute, "b", 100}}, 100 * 120, 3},
		{"credited at the lower reading", 0, []obs{{0, "b", 100}, {time.Minute, "b", 40}, {2 * time.Minute, "b", 80}}, 40*60 + 40*60, 3},
		{"new target starts over", 0, []obs{{0, "b", 100}, {time.Minute, "b", 100}, {2 * time.Minute, "c", 100}}, 0, 1},
		{"gone for a round starts over", 0, []obs{{0, "b", 100}, {time.Minute, "", 0}, {2 * time.Minute, "b", 100}}, 0, 1},
		{"disappearing forgets", 0, []obs{{0, "b", 100}, {time.Minute, "b", 100}, {2 * time.Minute, "", 0}}, 0, 0},
		{"a long gap is capped", 2 * time.Minute, []obs{{0, "b", 10}, {time.Hour, "b", 10}}, 10 * 120, 2},
		{"NaN saving counts as none", 0, []obs{{0, "b", 100}, {time.Minute, "b", nan()}}, 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := Accumulator{MaxGap: tc.maxGap}
			var h Held
			for _, o := range tc.rounds {
				a.BeginRound()
				if o.advice != "" {
					h = a.Observe("ns/w", o.advice, o.saving, t0.Add(o.at))
				}
				a.Sweep()
			}
			if tc.wantRounds == 0 {
				if a.Len() != 0 {
					t.Fatalf("entries = %d, want the advice forgotten", a.Len())
				}
				return
			}
			if h.Accumulated != tc.wantAcc || h.Rounds != tc.wantRounds {
				t.Errorf("held = %+v, want accumulated %g over %d rounds", h, tc.wantAcc, tc.wantRounds)
			}
		})
	}
}

// Two workloads are independent; resetting one leaves the other.
func TestAccumulatorPerWorkload(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var a Accumulator
	for i := range 3 {
		a.BeginRound()
		a.Observe("ns/a", "x", 10, t0.Add(time.Duration(i)*time.Minute))
		a.Observe("ns/b", "y", 20, t0.Add(time.Duration(i)*time.Minute))
		a.Sweep()
	}
	a.Reset("ns/a")
	a.BeginRound()
	ha := a.Observe("ns/a", "x", 10, t0.Add(3*time.Minute))
	hb := a.Observe("ns/b", "y", 20, t0.Add(3*time.Minute))
	if ha != (Held{Rounds: 1}) || hb != (Held{Accumulated: 20 * 180, Rounds: 4}) {
		t.Errorf("a %+v (want reset), b %+v (want 3600 over 4 rounds)", ha, hb)
	}
}
