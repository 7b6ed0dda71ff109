package probe

import "time"

// Accumulator turns successive snapshots into totals that survive LRU
// evictions: when a kernel entry is evicted and re-created its counters
// restart, and the accumulator keeps adding from there.
type Accumulator struct {
	flows map[FlowKey]*accumulated
}

type accumulated struct {
	incarnation uint64
	last        FlowStats // last kernel reading of this incarnation
	total       FlowStats
	seen        time.Time // last reading that changed the totals
}

func (s *FlowStats) isZero() bool {
	return s.Opened == 0 && s.Adopted == 0 && s.Closed == 0 && s.BytesSent == 0 && s.BytesReceived == 0 &&
		s.SegsIn == 0 && s.SegsOut == 0 && s.Retransmits == 0 && s.RTT.Count == 0
}

// NewAccumulator returns an empty Accumulator.
func NewAccumulator() *Accumulator {
	return &Accumulator{flows: map[FlowKey]*accumulated{}}
}

// FlowDelta is what one flow moved between two snapshots.
type FlowDelta struct {
	Key   FlowKey
	Delta FlowStats
}

// Add folds a snapshot in and returns, per flow that changed, what it moved
// since the previous snapshot.
func (a *Accumulator) Add(s *Snapshot) []FlowDelta {
	var out []FlowDelta
	for i := range s.Flows {
		f := &s.Flows[i]
		e, ok := a.flows[f.Key]
		var d FlowStats
		switch {
		case !ok:
			d = f.Stats
			e = &accumulated{incarnation: f.Incarnation, last: f.Stats, total: f.Stats}
			a.flows[f.Key] = e
		case e.incarnation != f.Incarnation:
			// Evicted and re-created: the kernel restarted from zero.
			d = f.Stats
			e.total.Add(&d)
			e.incarnation, e.last = f.Incarnation, f.Stats
		default:
			d = f.Stats.sub(&e.last)
			e.total.Add(&d)
			e.last = f.Stats
		}
		if !d.isZero() {
			e.seen = s.Time
			out = append(out, FlowDelta{Key: f.Key, Delta: d})
		}
	}
	return out
}

// Totals returns the accumulated totals per flow.
func (a *Accumulator) Totals() map[FlowKey]FlowStats {
	out := make(map[FlowKey]FlowStats, len(a.flows))
	for k, e := range a.flows {
		out[k] = e.total
	}
	return out
}

// Forget drops flows with no open connection and no change since before
// cutoff, bounding memory on a long run.
func (a *Accumulator) Forget(cutoff time.Time) int {
	n := 0
	for k, e := range a.flows {
		if e.seen.Before(cutoff) && e.total.Active() == 0 {
			delete(a.flows, k)
			n++
		}
	}
	return n
}

// Drop forgets one flow, e.g. a finished per-connection flow that has been
// reported.
func (a *Accumulator) Drop(k FlowKey) { delete(a.flows, k) }

// Total returns the accumulated totals of one flow.
func (a *Accumulator) Total(k FlowKey) (FlowStats, bool) {
	e, ok := a.flows[k]
	if !ok {
		return FlowStats{}, false
	}
	return e.total, true
}
