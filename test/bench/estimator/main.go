// Command estimator replays realistic OTLP export requests from many
// synthetic agents through the estimator's real gRPC receiver on loopback and
// measures sustained ingest and memory per active series. Run by
// `make bench-estimator`; its last line is
//
//	estimator-bench: points_per_s=<n> bytes_per_series=<n>
//
// Requests are shaped like the agents' (telemetry.Recorder through the OTel
// SDK): one resource per agent (k8s.cluster.uid, k8s.node.name), cumulative
// int sums for bytes (per direction) and connections, and base-2
// exponential RTT histograms with ~100 buckets, every point carrying the ten
// flowplace attributes. They are encoded once with the generated OTLP types;
// each round then patches the timestamps and advances the cumulative values
// in place (at fixed-width positions), so the sender's CPU goes to gRPC, not
// to encoding, and the receiver sees a new, valid cumulative point of every
// series each round.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/expfmt"
	"go.opentelemetry.io/otel/metric"
	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	respb "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flowplace/flowplace/estimator"
	"github.com/flowplace/flowplace/estimator/aggregate"
	"github.com/flowplace/flowplace/telemetry"
	"github.com/flowplace/flowplace/test/bench/benchenv"
	"github.com/flowplace/flowplace/test/collectortest"
)

var (
	agents    = flag.Int("agents", 1000, "synthetic agents (one resource each)")
	series    = flag.Int("series", 500, "series per agent (a quarter each: bytes tx, bytes rx, connections, RTT)")
	clusters  = flag.Int("clusters", 20, "member clusters the agents are spread over")
	duration  = flag.Duration("duration", 15*time.Second, "measured duration after the warm-up round")
	senders   = flag.Int("senders", 8, "concurrent senders")
	conns     = flag.Int("conns", 4, "gRPC connections")
	verifyAll = flag.Bool("verify", true, "fail if any point is rejected")
	cpuProf   = flag.String("cpuprofile", "", "write a CPU profile of the measured rounds")
)

// patch is a fixed-width field to advance each round.
type patch struct {
	off  int
	kind byte // 't' time (fixed64), 'i' int value (sfixed64), 'c' count (fixed64), 'v' varint bucket (5 bytes), 's' sum (double)
	step uint64
}

type agentReq struct {
	buf     []byte
	patches []patch
	points  int
}

func kv(k, v string) *common.KeyValue {
	return &common.KeyValue{Key: k, Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: v}}}
}

// markers hands out unique values to find fields in the encoded bytes.
type markers struct{ r *rand.Rand }

func (m *markers) fixed() uint64 { return m.r.Uint64() | 1<<62 }

// varint5 returns a value whose varint takes exactly 5 bytes and that stays
// 5 bytes long after many increments.
func (m *markers) varint5() uint64 { return 1<<28 + m.r.Uint64N(1<<33) }

func clusterUID(c int) string { return fmt.Sprintf("7d4b3c2a-0000-4000-8000-%012d", c) }

// buildAgent encodes agent a's export request and locates its patch points.
func buildAgent(a int, rng *rand.Rand, t0 uint64) agentReq {
	mk := &markers{r: rng}
	c := a % *clusters
	node := fmt.Sprintf("node-%d", a)
	type want struct {
		val  uint64
		kind byte
		step uint64
	}
	var wants []want
	fixed := func(kind byte, step uint64) uint64 {
		v := mk.fixed()
		wants = append(wants, want{v, kind, step})
		return v
	}
	keys := *series / 4
	var sums, conn []*metricspb.NumberDataPoint
	var rtts []*metricspb.ExponentialHistogramDataPoint
	for k := range keys {
		// Each node runs a few workloads, each calling a few services
		// whose replicas are spread over clusters.
		w := (a*7 + k/8) % 200
		svc := (w*13 + k) % 300
		peerC := (c + 1 + k%3) % *clusters
		attrs := []*common.KeyValue{
			kv(string(telemetry.AttrRole), telemetry.RoleClient),
			kv(string(telemetry.AttrNamespace), fmt.Sprintf("team-%d", w%20)),
			kv(string(telemetry.AttrWorkloadKind), "Deployment"),
			kv(string(telemetry.AttrWorkloadName), fmt.Sprintf("frontend-%d", w)),
			kv(string(telemetry.AttrServiceNamespace), fmt.Sprintf("team-%d", svc%20)),
			kv(string(telemetry.AttrServiceName), fmt.Sprintf("backend-%d", svc)),
			{Key: string(telemetry.AttrServerPort), Value: &common.AnyValue{Value: &common.AnyValue_IntValue{IntValue: 8080}}},
			kv(string(telemetry.AttrPeerClusterUID), clusterUID(peerC)),
			kv(string(telemetry.AttrPeerClusterName), fmt.Sprintf("member-%d", peerC)),
			kv(string(telemetry.AttrPeerNamespace), fmt.Sprintf("team-%d", svc%20)),
			kv(string(telemetry.AttrPeerWorkloadKind), "Deployment"),
			kv(string(telemetry.AttrPeerWorkloadName), fmt.Sprintf("backend-%d", svc)),
		}
		for _, dir := range []string{"transmit", "receive"} {
			sums = append(sums, &metricspb.NumberDataPoint{
				Attributes:        append(attrs[:len(attrs):len(attrs)], kv(string(telemetry.AttrDirection), dir)),
				StartTimeUnixNano: t0, TimeUnixNano: fixed('t', 0),
				Value: &metricspb.NumberDataPoint_AsInt{AsInt: int64(fixed('i', 15_000) >> 20)},
			})
		}
		conn = append(conn, &metricspb.NumberDataPoint{
			Attributes: attrs, StartTimeUnixNano: t0, TimeUnixNano: fixed('t', 0),
			Value: &metricspb.NumberDataPoint_AsInt{AsInt: int64(fixed('i', 7) >> 20)},
		})
		// ~100 buckets at scale 5 around 2-20 ms, as the SDK keeps them
		// (MaxSize 160): two of them advance each round.
		counts := make([]uint64, 100)
		var total uint64
		b1, b2 := 30+k%20, 60+k%20
		for i := range counts {
			switch i {
			case b1, b2:
				counts[i] = mk.varint5()
				wants = append(wants, want{counts[i], 'v', 3})
			default:
				counts[i] = 1 + uint64(i%7)
			}
			total += counts[i]
		}
		hp := &metricspb.ExponentialHistogramDataPoint{
			Attributes: attrs, StartTimeUnixNano: t0, TimeUnixNano: fixed('t', 0),
			Scale: 5, Positive: &metricspb.ExponentialHistogramDataPoint_Buckets{Offset: -280, BucketCounts: counts},
		}
		// Count and sum: markers are placeholders replaced below, as the
		// count must equal the buckets' total.
		cm := fixed('c', 6)
		hp.Count = cm
		sum := math.Float64frombits(fixed('s', 0))
		hp.Sum = &sum
		rtts = append(rtts, hp)
		countFix = append(countFix, countFixup{marker: cm, value: total})
	}
	// Fix the sfixed64 int values: markers were shifted to stay positive;
	// find them by their encoded value.
	for i := range wants {
		if wants[i].kind == 'i' {
			wants[i].val >>= 20
		}
	}
	req := &colmetrics.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: &respb.Resource{Attributes: []*common.KeyValue{
			kv(string(telemetry.AttrClusterUID), clusterUID(c)),
			kv(string(telemetry.AttrClusterName), fmt.Sprintf("member-%d", c)),
			kv(string(telemetry.AttrNodeName), node),
			kv("service.name", "flowplace-agent"),
		}},
		ScopeMetrics: []*metricspb.ScopeMetrics{{
			Scope: &common.InstrumentationScope{Name: telemetry.ScopeName},
			Metrics: []*metricspb.Metric{
				{Name: telemetry.MetricBytes, Unit: telemetry.UnitBytes, Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
					AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, IsMonotonic: true, DataPoints: sums}}},
				{Name: telemetry.MetricConnections, Unit: telemetry.UnitConnections, Data: &metricspb.Metric_Sum{Sum: &metricspb.Sum{
					AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, IsMonotonic: true, DataPoints: conn}}},
				{Name: telemetry.MetricRTT, Unit: telemetry.UnitSeconds, Data: &metricspb.Metric_ExponentialHistogram{ExponentialHistogram: &metricspb.ExponentialHistogram{
					AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE, DataPoints: rtts}}},
			},
		}},
	}}}
	buf, err := proto.Marshal(req)
	if err != nil {
		panic(err)
	}
	out := agentReq{buf: buf, points: len(sums) + len(conn) + len(rtts)}
	for _, w := range wants {
		var enc []byte
		switch w.kind {
		case 'v':
			enc = protowire.AppendVarint(nil, w.val)
			if len(enc) != 5 {
				panic("varint marker not 5 bytes")
			}
		default:
			enc = binary.LittleEndian.AppendUint64(nil, w.val)
		}
		off := bytes.Index(buf, enc)
		if off < 0 || bytes.Index(buf[off+1:], enc) >= 0 {
			panic(fmt.Sprintf("marker %c not found exactly once", w.kind))
		}
		out.patches = append(out.patches, patch{off: off, kind: w.kind, step: w.step})
	}
	// Initial values: time t0+1s, counts consistent with the buckets, sums
	// plausible.
	for _, p := range out.patches {
		switch p.kind {
		case 't':
			binary.LittleEndian.PutUint64(buf[p.off:], t0+uint64(time.Second))
		case 's':
			binary.LittleEndian.PutUint64(buf[p.off:], math.Float64bits(1.0))
		}
	}
	for _, f := range countFix {
		off := bytes.Index(buf, binary.LittleEndian.AppendUint64(nil, f.marker))
		binary.LittleEndian.PutUint64(buf[off:], f.value)
	}
	countFix = countFix[:0]
	return out
}

type countFixup struct{ marker, value uint64 }

var countFix []countFixup

// roundClock is the replayed agent time: the time stamped on round's
// points (advance), read by the aggregator as its now.
type roundClock struct{ ns atomic.Int64 }

func (c *roundClock) set(round, t0 uint64) {
	at := t0 + uint64(time.Second) // round 0, as buildAgent stamps it
	if round > 0 {
		at = t0 + (round+1)*uint64(10*time.Second)
	}
	c.ns.Store(int64(at))
}

func (c *roundClock) now() time.Time { return time.Unix(0, c.ns.Load()) }

// advance moves a request one round on: timestamps +10 s, cumulative values
// up (bytes, connections, two buckets and the count by 6).
func (r *agentReq) advance(round uint64, t0 uint64) {
	b := r.buf
	for _, p := range r.patches {
		switch p.kind {
		case 't':
			binary.LittleEndian.PutUint64(b[p.off:], t0+(round+1)*uint64(10*time.Second))
		case 'i', 'c':
			binary.LittleEndian.PutUint64(b[p.off:], binary.LittleEndian.Uint64(b[p.off:])+p.step)
		case 's':
			binary.LittleEndian.PutUint64(b[p.off:], math.Float64bits(math.Float64frombits(binary.LittleEndian.Uint64(b[p.off:]))+0.03))
		case 'v':
			v, n := protowire.ConsumeVarint(b[p.off:])
			if n != 5 {
				panic("bucket varint changed length")
			}
			enc := protowire.AppendVarint(b[p.off:p.off:p.off+5], v+p.step)
			if len(enc) != 5 {
				panic("bucket varint grew")
			}
		}
	}
}

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "estimator-bench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	t0 := uint64(time.Now().Add(time.Second).UnixNano()) // agents started after the receiver
	rng := rand.New(rand.NewPCG(1, 2))
	reqs := make([]agentReq, *agents)
	var reqBytes, points int
	for a := range reqs {
		reqs[a] = buildAgent(a, rng, t0)
		reqBytes += len(reqs[a].buf)
		points += reqs[a].points
	}
	fmt.Println(benchenv.Machine())
	fmt.Printf("workload: %d agents x %d series = %d series over %d clusters; %d points, %.1f MiB per round (%.0f bytes/point)\n",
		*agents, *series, points, *clusters, points, float64(reqBytes)/(1<<20), float64(reqBytes)/float64(points))

	// Baseline in the same run: what decoding alone costs with the
	// generated OTLP types (proto.Unmarshal), one core, vs the estimator's
	// whole ingest (decode + series + aggregation), one core.
	base := baseline(reqs[:min(50, len(reqs))])

	// Rounds replay 10 s of agent time each, faster than real time: the
	// aggregator's clock follows the replayed time (roundClock), so its
	// plausibility bound on timestamps (a point may not be from the
	// future) judges them as it would live.
	var clock roundClock
	clock.ns.Store(time.Now().UnixNano()) // the receiver starts before the agents (t0)
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{MaxSeries: 4 * points, MaxFlows: 4 * points, Now: clock.now})
	srv, err := estimator.NewGRPCServer(agg, estimator.ServerTLS{}, 64<<20, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	// Not `defer srv.Stop()`: that would bind srv, and with it the
	// aggregator, until run returns, and spoil the memory measurement.
	defer func() {
		if srv != nil {
			srv.Stop()
		}
	}()
	d, err := newDriver(ln.Addr().String(), reqs, &clock, t0)
	if err != nil {
		return err
	}
	roundOf, rejected := d.round, &d.rejected
	// Warm-up: the first round creates every series.
	start := time.Now()
	if err := roundOf(0); err != nil {
		return err
	}
	fmt.Printf("warm-up round (creates %d series): %s\n", agg.Stats().Series, time.Since(start).Round(time.Millisecond))
	debug.FreeOSMemory()

	ingested0 := agg.Stats().Ingested
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	start = time.Now()
	rounds := uint64(0)
	for time.Since(start) < *duration {
		rounds++
		if err := roundOf(rounds); err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	st := agg.Stats()
	pps := float64(st.Ingested-ingested0) / elapsed.Seconds()
	if *verifyAll && (rejected.Load() != 0 || len(st.Rejected) != 0) {
		return fmt.Errorf("rejected points: %d (%v)", rejected.Load(), st.Rejected)
	}
	snapStart := time.Now()
	snap := agg.Snapshot()
	snapTook := time.Since(snapStart)

	// Memory: everything the estimator holds for these series (series
	// state, aggregates, interned names), measured as the live heap with
	// the aggregator minus the live heap once it is dropped.
	srv.Stop()
	d.close()
	heapWith := heap()
	runtime.KeepAlive(agg)
	agg, srv = nil, nil
	heapWithout := heap()
	runtime.KeepAlive(reqs) // alive in both measurements
	perSeries := float64(int64(heapWith)-int64(heapWithout)) / float64(st.Series)
	fmt.Printf("heap: %d with the aggregator, %d without\n", heapWith, heapWithout)
	fmt.Printf("state: %d series, %d flows, %d cluster pairs; snapshot of %d workloads in %s\n",
		st.Series, st.Flows, st.Pairs, len(snap.Traffic), snapTook.Round(time.Millisecond))
	fmt.Printf("measured: %d rounds in %s, %d points, rejected %d\n", rounds, elapsed.Round(time.Millisecond), st.Ingested-ingested0, rejected.Load())
	fmt.Printf("baseline (one core, same requests): proto.Unmarshal alone %.0f points/s; estimator ingest %.0f points/s (%.1fx)\n",
		base.unmarshal, base.ingest, base.ingest/base.unmarshal)
	fmt.Printf("goal: >= 1000000 points/s (%.2fx of goal), <= 1024 bytes/series\n", pps/1e6)

	// The same requests in the same run: the estimator with its metrics
	// exported and scraped, the real OpenTelemetry Collector's OTLP
	// receiver to a no-op exporter (what a user would put there instead),
	// and the estimator without exports again (the spread of two equal
	// runs is the noise the ratios stand against).
	round := rounds
	on, round, err := estimatorRun(reqs, t0, round, true)
	if err != nil {
		return fmt.Errorf("estimator with exports: %w", err)
	}
	col, round, err := collectorRun(reqs, t0, round)
	if err != nil {
		return fmt.Errorf("collector: %w", err)
	}
	off, _, err := estimatorRun(reqs, t0, round, false)
	if err != nil {
		return fmt.Errorf("estimator without exports: %w", err)
	}
	offMean := (pps + off) / 2
	fmt.Printf("exports: estimator %.0f points/s with its metrics exported (Prometheus, gathered and encoded every %s), %.0f and %.0f without (runs 1 and 4; spread %.1f%%): %.3fx\n",
		on, scrapeEvery, pps, off, 100*math.Abs(pps-off)/offMean, on/offMean)
	fmt.Printf("collector: OpenTelemetry Collector (collector/, v0.165) otlp receiver -> nop exporter, no processors: %.0f points/s; the estimator with exports decodes, validates and aggregates at %.2fx its rate\n",
		col, on/col)
	fmt.Printf("estimator-bench: points_per_s=%.0f bytes_per_series=%.0f exports_on_ratio=%.3f collector_points_per_s=%.0f vs_collector=%.2f\n",
		pps, perSeries, on/offMean, col, on/col)
	return nil
}

// scrapeEvery is how often the exports-on run gathers the estimator's
// metrics (a Prometheus scraping every 15 s costs 15 times less).
const scrapeEvery = time.Second

// estimatorRun measures a fresh estimator receiver on the requests, after
// a warm-up round that creates the series, with or without its metrics.
func estimatorRun(reqs []agentReq, t0, round uint64, exports bool) (float64, uint64, error) {
	points := 0
	for _, r := range reqs {
		points += r.points
	}
	var clock roundClock
	clock.set(round, t0)
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{MaxSeries: 4 * points, MaxFlows: 4 * points, Now: clock.now})
	var meter metric.Meter
	stop := make(chan struct{})
	defer close(stop)
	if exports {
		prov, err := telemetry.NewProvider(context.Background(), telemetry.Config{Prometheus: true})
		if err != nil {
			return 0, round, err
		}
		defer prov.Shutdown(context.Background())
		meter = prov.MeterProvider.Meter(estimator.ScopeName)
		go func() {
			t := time.NewTicker(scrapeEvery)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					mfs, _ := prov.Gatherer().Gather()
					enc := expfmt.NewEncoder(io.Discard, expfmt.NewFormat(expfmt.TypeTextPlain))
					for _, mf := range mfs {
						_ = enc.Encode(mf)
					}
				}
			}
		}()
	}
	srv, err := estimator.NewGRPCServer(agg, estimator.ServerTLS{}, 64<<20, meter)
	if err != nil {
		return 0, round, err
	}
	defer srv.Stop()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, round, err
	}
	go func() { _ = srv.Serve(ln) }()
	return drive(ln.Addr().String(), reqs, &clock, t0, round)
}

// collectorRun measures the real collector's receiver on the requests.
func collectorRun(reqs []agentReq, t0, round uint64) (float64, uint64, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "flowplace-bench-collector")
	if err != nil {
		return 0, round, err
	}
	defer os.RemoveAll(dir)
	bin, err := collectortest.Build(ctx, dir)
	if err != nil {
		return 0, round, err
	}
	otlp, err := collectortest.FreeAddr()
	if err != nil {
		return 0, round, err
	}
	health, err := collectortest.FreeAddr()
	if err != nil {
		return 0, round, err
	}
	p, err := collectortest.Start(ctx, bin, collectortest.NopConfig(otlp, health), health, dir)
	if err != nil {
		return 0, round, err
	}
	defer p.Stop()
	var clock roundClock
	return drive(otlp, reqs, &clock, t0, round)
}

// drive sends a warm-up round, then sustains rounds for *duration.
func drive(addr string, reqs []agentReq, clock *roundClock, t0, round uint64) (float64, uint64, error) {
	d, err := newDriver(addr, reqs, clock, t0)
	if err != nil {
		return 0, round, err
	}
	defer d.close()
	round++
	if err := d.round(round); err != nil {
		return 0, round, err
	}
	pps, round, err := d.sustain(round)
	if err != nil {
		return 0, round, err
	}
	if *verifyAll && d.rejected.Load() != 0 {
		return 0, round, fmt.Errorf("%d points rejected", d.rejected.Load())
	}
	return pps, round, nil
}

type baselineResult struct{ unmarshal, ingest float64 }

// baseline measures, single-threaded on copies of some requests, the
// generated types' decoding alone against the estimator's full ingest.
func baseline(sample []agentReq) baselineResult {
	var pts int
	bufs := make([][]byte, len(sample))
	for i, r := range sample {
		bufs[i] = bytes.Clone(r.buf)
		pts += r.points
	}
	const reps = 5
	start := time.Now()
	for range reps {
		for _, b := range bufs {
			var m colmetrics.ExportMetricsServiceRequest
			if err := proto.Unmarshal(b, &m); err != nil {
				panic(err)
			}
		}
	}
	unm := float64(reps*pts) / time.Since(start).Seconds()
	t0 := uint64(time.Now().UnixNano())
	var clock roundClock
	clock.set(0, t0)
	agg := aggregate.NewAggregator(aggregate.AggregatorConfig{Now: clock.now})
	for _, b := range bufs { // create the series first: measure the steady path
		if _, err := agg.Ingest(b); err != nil {
			panic(err)
		}
	}
	start = time.Now()
	for rep := range uint64(reps) {
		clock.set(100+rep, t0)
		for i := range sample {
			r := agentReq{buf: bufs[i], patches: sample[i].patches}
			r.advance(100+rep, t0)
			if _, err := agg.Ingest(bufs[i]); err != nil {
				panic(err)
			}
		}
	}
	ing := float64(reps*pts) / time.Since(start).Seconds()
	return baselineResult{unmarshal: unm, ingest: ing}
}

// driver sends rounds of the agents' requests to one OTLP receiver.
type driver struct {
	cc       []*grpc.ClientConn
	reqs     []agentReq
	clock    *roundClock
	t0       uint64
	rejected atomic.Int64
}

func newDriver(addr string, reqs []agentReq, clock *roundClock, t0 uint64) (*driver, error) {
	d := &driver{reqs: reqs, clock: clock, t0: t0}
	for range *conns {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallSendMsgSize(64<<20)))
		if err != nil {
			d.close()
			return nil, err
		}
		d.cc = append(d.cc, c)
	}
	return d, nil
}

func (d *driver) close() {
	for _, c := range d.cc {
		c.Close()
	}
}

const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// round: every agent exports once, senders in parallel. Round numbers only
// grow (the requests' cumulative values and times advance with them).
func (d *driver) round(round uint64) error {
	d.clock.set(round, d.t0)
	var wg sync.WaitGroup
	errs := make(chan error, *senders)
	for s := range *senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for a := s; a < len(d.reqs); a += *senders {
				if round > 0 {
					d.reqs[a].advance(round, d.t0)
				}
				var resp colmetrics.ExportMetricsServiceResponse
				if err := d.cc[s%len(d.cc)].Invoke(context.Background(), exportMethod, d.reqs[a].buf, &resp); err != nil {
					errs <- fmt.Errorf("export of agent %d: %w", a, err)
					return
				}
				d.rejected.Add(resp.GetPartialSuccess().GetRejectedDataPoints())
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// sustain sends rounds first+1, first+2, ... for at least *duration and
// returns the points acknowledged per second and the last round.
func (d *driver) sustain(first uint64) (float64, uint64, error) {
	points := 0
	for _, r := range d.reqs {
		points += r.points
	}
	start := time.Now()
	round := first
	for time.Since(start) < *duration {
		round++
		if err := d.round(round); err != nil {
			return 0, round, err
		}
	}
	return float64(points) * float64(round-first) / time.Since(start).Seconds(), round, nil
}
