package rebalance

import (
	"math"
	"time"
)

// Accumulator is the ski-rental rule's memory: per workload, the saving
// (bytes/s x ms) integrated over the time the same advice has held. Buying
// (moving) once what renting (staying) has cost equals the price of buying
// is 2-competitive against an adversary that may reverse the traffic right
// after the move: the rule never pays more than twice what an oracle would.
//
// Between two rounds the saving is credited at the lower of its two
// readings: a saving that just appeared is not credited for the time before
// it was seen, and one that shrank is not credited at its old size.
// Elapsed time is capped at MaxGap, so a round missed while the estimator
// was down (or not leading) does not credit time nobody watched.
type Accumulator struct {
	// MaxGap bounds the time credited between two rounds.
	MaxGap  time.Duration
	entries map[string]*accEntry
	round   uint64
}

type accEntry struct {
	advice string // the advice key: target cluster and co-movers
	saving float64
	acc    float64 // bytes/s x ms x s = byte-ms
	rounds int
	last   time.Time
	seen   uint64
}

// Held is what the accumulator knows of one workload's advice.
type Held struct {
	// Accumulated saving in byte-milliseconds (bytes/s x ms x s).
	Accumulated float64
	// Rounds the same advice has held, this one included.
	Rounds int
}

// BeginRound starts a round: entries not observed until the next
// BeginRound (or Sweep) are forgotten, because their advice disappeared.
func (a *Accumulator) BeginRound() {
	if a.entries == nil {
		a.entries = map[string]*accEntry{}
	}
	a.round++
}

// Observe records that workload w is advised (advice, saving rate) at now.
// A different advice than last round's starts over.
func (a *Accumulator) Observe(w, advice string, saving float64, now time.Time) Held {
	if a.entries == nil {
		a.entries = map[string]*accEntry{}
	}
	if math.IsNaN(saving) || math.IsInf(saving, 0) {
		saving = 0
	}
	e := a.entries[w]
	if e == nil || e.advice != advice {
		e = &accEntry{advice: advice, saving: saving, last: now, rounds: 1, seen: a.round}
		a.entries[w] = e
		return Held{Rounds: 1}
	}
	if e.seen == a.round {
		// Observed twice in one round: the first reading stands.
		return Held{Accumulated: e.acc, Rounds: e.rounds}
	}
	dt := now.Sub(e.last)
	if a.MaxGap > 0 && dt > a.MaxGap {
		dt = a.MaxGap
	}
	if dt > 0 {
		e.acc += min(e.saving, saving) * dt.Seconds()
	}
	e.saving, e.last, e.seen = saving, now, a.round
	e.rounds++
	return Held{Accumulated: e.acc, Rounds: e.rounds}
}

// Reset forgets w (after its move was requested or advised).
func (a *Accumulator) Reset(w string) { delete(a.entries, w) }

// Sweep forgets every workload not observed in the current round.
func (a *Accumulator) Sweep() {
	for w, e := range a.entries {
		if e.seen != a.round {
			delete(a.entries, w)
		}
	}
}

// Len is the number of workloads with advice held.
func (a *Accumulator) Len() int { return len(a.entries) }
