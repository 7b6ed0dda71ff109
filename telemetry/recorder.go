package telemetry

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/flowplace/flowplace/internal/loghist"
)

// DefaultMaxSeries bounds the series one agent exports. A series is one
// (role, local workload, service, port, peer cluster, peer workload); on a
// node the count is bounded by local workloads x the services they use x the
// clusters serving them, which 2000 covers for ~50 pods talking to ~10
// services each across 4 clusters. Beyond it updates go to one overflow series
// and are counted, so memory stays bounded whatever the traffic.
const DefaultMaxSeries = 2000

// Delta is what one flow moved since the previous report.
type Delta struct {
	Opened        uint64
	Adopted       uint64 // already open when the agent started: open, not established
	Closed        uint64
	BytesSent     uint64
	BytesReceived uint64
	Retransmits   uint64
	RTT           *loghist.Histogram // samples since the previous report; may be nil
}

// Recorder records flow deltas on the flowplace instruments. Attribute sets
// are built once per series and reused for every update.
type Recorder struct {
	rtt         metric.Float64Histogram
	bytes       metric.Int64Counter
	conns       metric.Int64Counter
	active      metric.Int64UpDownCounter
	retransmits metric.Int64Counter
	overflowed  metric.Int64Counter

	mu        sync.Mutex
	maxSeries int
	series    map[SeriesKey]*series
	overflow  *series
}

type series struct {
	all, tx, rx metric.MeasurementOption
	lastUpdate  time.Time
	active      int64
}

func newSeries(kv []attribute.KeyValue) *series {
	// attribute.NewSet sorts its argument in place: each set gets its own
	// copy, or the sorting of one would reorder (and, through append's
	// shared backing array, clobber) the attributes of the next.
	return &series{
		all: metric.WithAttributeSet(attribute.NewSet(slices.Clone(kv)...)),
		tx:  metric.WithAttributeSet(attribute.NewSet(slices.Concat(kv, []attribute.KeyValue{directionTransmit})...)),
		rx:  metric.WithAttributeSet(attribute.NewSet(slices.Concat(kv, []attribute.KeyValue{directionReceive})...)),
	}
}

// NewRecorder creates the instruments on meter. maxSeries <= 0 means
// DefaultMaxSeries.
func NewRecorder(meter metric.Meter, maxSeries int) (*Recorder, error) {
	if maxSeries <= 0 {
		maxSeries = DefaultMaxSeries
	}
	r := &Recorder{maxSeries: maxSeries, series: map[SeriesKey]*series{}}
	var err error
	if r.rtt, err = meter.Float64Histogram(MetricRTT, metric.WithUnit(UnitSeconds),
		metric.WithDescription("Smoothed TCP round-trip time, one sample per RTT measurement of a connection")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricRTT, err)
	}
	if r.bytes, err = meter.Int64Counter(MetricBytes, metric.WithUnit(UnitBytes),
		metric.WithDescription("TCP payload bytes, by direction as seen by the local socket")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricBytes, err)
	}
	if r.conns, err = meter.Int64Counter(MetricConnections, metric.WithUnit(UnitConnections),
		metric.WithDescription("TCP connections established")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricConnections, err)
	}
	if r.active, err = meter.Int64UpDownCounter(MetricConnectionsActive, metric.WithUnit(UnitConnections),
		metric.WithDescription("TCP connections open")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricConnectionsActive, err)
	}
	if r.retransmits, err = meter.Int64Counter(MetricRetransmits, metric.WithUnit(UnitSegments),
		metric.WithDescription("TCP segments retransmitted")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricRetransmits, err)
	}
	if r.overflowed, err = meter.Int64Counter(MetricSeriesOverflow, metric.WithUnit(UnitUpdates),
		metric.WithDescription("Flow updates recorded in the overflow series because the series limit was reached")); err != nil {
		return nil, fmt.Errorf("create %s: %w", MetricSeriesOverflow, err)
	}
	r.overflow = newSeries([]attribute.KeyValue{AttrOverflow.Bool(true)})
	// 0 until the limit is reached: an alert on its rate sees 0, not
	// no data.
	r.overflowed.Add(context.Background(), 0)
	return r, nil
}

// Record adds one flow's delta to its series.
func (r *Recorder) Record(ctx context.Context, key SeriesKey, d Delta) {
	r.mu.Lock()
	s, ok := r.series[key]
	if !ok {
		if len(r.series) >= r.maxSeries {
			s = r.overflow
			r.overflowed.Add(ctx, 1)
		} else {
			s = newSeries(key.attributes())
			r.series[key] = s
		}
	}
	s.lastUpdate = time.Now()
	open := int64(d.Opened) + int64(d.Adopted) - int64(d.Closed)
	s.active += open
	r.mu.Unlock()

	if d.Opened > 0 {
		r.conns.Add(ctx, int64(d.Opened), s.all)
	}
	if open != 0 {
		r.active.Add(ctx, open, s.all)
	}
	if d.BytesSent > 0 {
		r.bytes.Add(ctx, int64(d.BytesSent), s.tx)
	}
	if d.BytesReceived > 0 {
		r.bytes.Add(ctx, int64(d.BytesReceived), s.rx)
	}
	if d.Retransmits > 0 {
		r.retransmits.Add(ctx, int64(d.Retransmits), s.all)
	}
	if d.RTT != nil && d.RTT.Count > 0 {
		recordRTT(ctx, r.rtt, d.RTT, s.all)
	}
}

// recordRTT replays the kernel's per-bucket sample counts into the histogram.
// Values are bucket midpoints scaled so that their sum equals the exact sum
// the kernel kept: the exported sum and count (the mean) are exact, and each
// value stays within its bucket's width (<= 6.25%) of the true sample.
func recordRTT(ctx context.Context, h metric.Float64Histogram, d *loghist.Histogram, opt metric.MeasurementOption) {
	var midSum float64
	var n uint64
	for i, c := range d.Counts {
		if c > 0 {
			midSum += float64(c) * midpoint(i)
			n += c
		}
	}
	if n == 0 || midSum == 0 {
		return
	}
	// The kernel adds a sample to its bucket and then to sum/count: a read
	// between the two can see one more in either; the sum is scaled by the
	// bucket total so the ratio stays right.
	scale := float64(d.Sum) / float64(d.Count) * float64(n) / midSum
	for i, c := range d.Counts {
		if c == 0 {
			continue
		}
		v := midpoint(i) * scale / 1e6 // µs -> s
		for range c {
			h.Record(ctx, v, opt)
		}
	}
}

func midpoint(bucket int) float64 {
	lo, hi := loghist.Bounds(bucket)
	if math.IsInf(hi, 1) {
		return lo
	}
	return (lo + hi) / 2
}

// Series returns the number of distinct series (not counting overflow).
func (r *Recorder) Series() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.series)
}

// Forget drops series with no open connection and no update since cutoff, so
// that workloads that went away free their slots.
func (r *Recorder) Forget(cutoff time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, s := range r.series {
		if s.active <= 0 && s.lastUpdate.Before(cutoff) {
			delete(r.series, k)
			n++
		}
	}
	return n
}
