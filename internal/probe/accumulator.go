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

// NewAccumulator returns an empty Accumulator.
func NewAccumulator() *Accumulator {
	return &Accumulator{flows: map[FlowKey]*accumulated{}}
}

// Add folds a snapshot in.
func (a *Accumulator) Add(s *Snapshot) {
	for i := range s.Flows {
		f := &s.Flows[i]
		e, ok := a.flows[f.Key]
		switch {
		case !ok:
			e = &accumulated{incarnation: f.Incarnation, last: f.Stats, total: f.Stats, seen: s.Time}
			a.flows[f.Key] = e
		case e.incarnation != f.Incarnation:
			e.total.add(&f.Stats)
			e.incarnation, e.last, e.seen = f.Incarnation, f.Stats, s.Time
		default:
			d := f.Stats.sub(&e.last)
			if d != (FlowStats{RTT: d.RTT}) || d.RTT.Count != 0 {
				e.seen = s.Time
			}
			e.total.add(&d)
			e.last = f.Stats
		}
	}
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
