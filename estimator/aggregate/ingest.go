package aggregate

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"math"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/flowplace/flowplace/estimator/otlpwire"
)

// Reason says why a data point was rejected. Values are metric attribute
// values and appear in the OTLP partial-success message.
type Reason uint8

const (
	ReasonNone Reason = iota
	ReasonWrongType
	ReasonTemporality
	ReasonNotMonotonic
	ReasonBadUnit
	ReasonInvalidValue
	ReasonInconsistentHistogram
	ReasonNegativeBuckets
	ReasonBadAttribute
	ReasonMissingCluster
	ReasonNoTimestamp
	ReasonOutOfOrder
	ReasonSeriesLimit
	ReasonFlowLimit
	// ReasonImplausibleTime: a point stamped further from the receiver's
	// clock than MaxClockSkew ahead or SeriesTTL behind, or starting after
	// it ends.
	ReasonImplausibleTime
	// ReasonImplausibleRate: more bytes, connections or RTT samples over
	// the point's interval than one node's NIC can carry (see
	// MaxBytesPerSecond).
	ReasonImplausibleRate
	// ReasonImplausibleRTT: RTT samples beyond MaxRTTSeconds (or below
	// MinRTTSeconds).
	ReasonImplausibleRTT
	// ReasonForeignCluster: a resource reports a cluster other than the
	// one its sender's identity is bound to (IngestFrom).
	ReasonForeignCluster
	NumReasons
)

var reasonNames = [NumReasons]string{
	"", "wrong_type", "temporality", "not_monotonic", "bad_unit", "invalid_value",
	"inconsistent_histogram", "negative_buckets", "bad_attribute", "missing_cluster",
	"no_timestamp", "out_of_order", "series_limit", "flow_limit",
	"implausible_time", "implausible_rate", "implausible_rtt", "foreign_cluster",
}

func (r Reason) String() string { return reasonNames[r] }

// metricID identifies the metrics the estimator uses.
type metricID uint8

const (
	metricOther metricID = iota
	metricBytes
	metricConnections
	metricRTT
)

var (
	nameBytes       = []byte(MetricBytes)
	nameConnections = []byte(MetricConnections)
	nameRTT         = []byte(MetricRTT)
)

// AggregatorConfig bounds and shapes the aggregation.
type AggregatorConfig struct {
	// Window is the time constant of the exponential decay.
	Window time.Duration
	// MaxSeries bounds the input series tracked (each costs a few hundred
	// bytes); points of new series beyond it are rejected.
	MaxSeries int
	// MaxFlows bounds the (workload, peer, cluster pair) aggregates and
	// MaxPairs the (source, destination cluster) RTT aggregates.
	MaxFlows, MaxPairs int
	// SeriesTTL forgets input series not reported for this long; a point
	// older than that is refused (ReasonImplausibleTime).
	SeriesTTL time.Duration
	// MaxClockSkew is how far ahead of the receiver's clock a point may
	// be stamped; further is refused (ReasonImplausibleTime), so that one
	// point from the future cannot make every later point out of order.
	MaxClockSkew time.Duration
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// PeerClusterUID resolves a peer cluster that a series names but whose
	// UID it lacks: an agent learns a remote endpoint's cluster from the
	// EndpointSlice Karmada dispatched to it, which names the provider
	// cluster only. The estimator answers from Karmada's Cluster objects
	// (spec.id). A series is resolved when first seen; nil leaves such
	// series unattributed.
	PeerClusterUID func(name string) (string, bool)
}

func (c *AggregatorConfig) setDefaults() {
	if c.Window <= 0 {
		c.Window = 5 * time.Minute
	}
	if c.MaxSeries <= 0 {
		c.MaxSeries = 2_000_000
	}
	if c.MaxFlows <= 0 {
		c.MaxFlows = 500_000
	}
	if c.MaxPairs <= 0 {
		c.MaxPairs = 100_000
	}
	if c.SeriesTTL <= 0 {
		c.SeriesTTL = 10 * time.Minute
	}
	if c.MaxClockSkew <= 0 {
		c.MaxClockSkew = DefaultMaxClockSkew
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// resource holds the series of one OTLP resource (one agent). Its lock is
// held for the whole of a request's points for that resource, so one
// agent's requests are applied one after the other.
type resource struct {
	mu     sync.Mutex
	series map[uint64]*series
	// order is the series of the previous request's points, in order: an
	// agent sends the same series in the same order every time, so the
	// i-th point is nearly always order[i], found without a map lookup
	// (which, over hundreds of thousands of series, is a cache miss).
	order []*series
	// peak is the most series held since the map was last rebuilt (Go
	// maps never shrink; see shrinkMap).
	peak int
}

// Aggregator turns OTLP data points into decayed aggregates. It is safe for
// concurrent use: input series live in per-resource maps, aggregates carry
// their own locks.
type Aggregator struct {
	cfg     AggregatorConfig
	tau     float64 // seconds
	seed    maphash.Seed
	startNs uint64 // cumulative series that started after this count from their start

	resMu     sync.RWMutex
	resources map[uint64]*resource
	resPeak   int
	nSeries   atomic.Int64

	mu     sync.RWMutex // flows, pairs, intern
	flows  map[flowKey]*flowAgg
	pairs  map[pairKey]*pairAgg
	intern map[string]string
	// Peak sizes of flows and pairs since their maps were rebuilt.
	flowsPeak, pairsPeak int

	ingested      atomic.Int64
	unattributed  atomic.Int64
	ignoredMetric atomic.Int64
	rejected      [NumReasons]atomic.Int64

	sinks sync.Pool
}

// NewAggregator returns an empty aggregator.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	cfg.setDefaults()
	a := &Aggregator{
		cfg:     cfg,
		tau:     cfg.Window.Seconds(),
		seed:    maphash.MakeSeed(),
		startNs: uint64(cfg.Now().UnixNano()),
		flows:   map[flowKey]*flowAgg{},
		pairs:   map[pairKey]*pairAgg{},
		intern:  map[string]string{},
	}
	a.resources = map[uint64]*resource{}
	a.sinks.New = func() any {
		s := &sink{a: a}
		s.hash.SetSeed(a.seed)
		return s
	}
	return a
}

// flowKey is one (local workload, role, peer, cluster pair). Strings are
// interned: thousands of keys share a few distinct names.
type flowKey struct {
	Role                  string // client | server
	ClusterUID            string // local cluster
	Namespace, Kind, Name string // local workload
	ServiceNamespace      string
	ServiceName           string
	PeerClusterUID        string
	PeerNamespace         string
	PeerKind, PeerName    string
}

type pairKey struct{ Src, Dst string }

// decayed is a set of exponentially decayed sums. Values are stored
// "inflated" by exp((t-epoch)/tau) at the time t they were added, so adding
// is O(1) and never touches old data; reading divides by exp((now-epoch)/tau).
// The epoch moves forward (rescaling the values) before the factor could
// overflow.
type decayed struct {
	epoch    float64 // unix seconds
	lastSeen float64 // unix seconds of the last data
}

// weight returns the inflation factor for data at now, rescaling vals first
// if the epoch is too old.
func (d *decayed) weight(now, tau float64, rescale func(f float64)) float64 {
	if d.epoch == 0 {
		d.epoch = now
	}
	x := (now - d.epoch) / tau
	if x > 40 {
		rescale(math.Exp(-x))
		d.epoch, x = now, 0
	}
	return math.Exp(x)
}

// factor converts inflated values to their value at now.
func (d *decayed) factor(now, tau float64) float64 {
	if d.epoch == 0 {
		return 0
	}
	return math.Exp(-(now - d.epoch) / tau)
}

type flowAgg struct {
	mu    sync.Mutex
	refs  int // series feeding it (under Aggregator.mu)
	d     decayed
	first float64 // start of the earliest interval folded in, unix seconds
	bytes float64
	conns float64
	rtt   hist
}

func (f *flowAgg) rescale(x float64) {
	f.bytes *= x
	f.conns *= x
	f.rtt.scale(x)
}

type pairAgg struct {
	mu   sync.Mutex
	refs int
	d    decayed
	h    hist
}

func (p *pairAgg) rescale(x float64) { p.h.scale(x) }

// series is the state of one input stream (resource + metric + attributes).
type series struct {
	hash   uint64 // identity within its resource
	metric metricID
	init   bool
	// implausible counts consecutive points refused as implausible
	// against this series' state (see rebase).
	implausible uint8
	start       uint64 // start_time_unix_nano of the current cumulative run
	last        uint64 // time_unix_nano of the last accepted point
	lastRecv    int64  // receive time, unix seconds, for expiry
	prevVal     float64
	prev        hist // previous cumulative RTT histogram (internal buckets)
	flow        *flowAgg
	pair        *pairAgg
}

// Result is the outcome of one export request.
type Result struct {
	Accepted, Rejected int64
	// Reasons counts rejected points by reason.
	Reasons [NumReasons]int64
}

// Message summarizes the rejections for the OTLP partial-success field.
func (r *Result) Message() string {
	if r.Rejected == 0 {
		return ""
	}
	var b bytes.Buffer
	b.WriteString("rejected data points:")
	for i, n := range r.Reasons {
		if n > 0 {
			fmt.Fprintf(&b, " %s=%d", Reason(i), n)
		}
	}
	return b.String()
}

// Ingest decodes one ExportMetricsServiceRequest and folds its points in.
// A wire-format error returns otlpwire.ErrMalformed (the points decoded
// before it were whole and valid, and stay); invalid points are rejected
// one by one and counted in the Result.
func (a *Aggregator) Ingest(req []byte) (Result, error) { return a.IngestFrom(req, "") }

// IngestFrom is Ingest for a sender whose identity is bound to one
// cluster: only resources reporting that cluster's UID are taken, the rest
// are rejected (ReasonForeignCluster), so that one member's agent cannot
// speak for another. An empty cluster takes every resource.
func (a *Aggregator) IngestFrom(req []byte, cluster string) (Result, error) {
	s := a.sinks.Get().(*sink)
	s.res = Result{}
	s.only = nil
	if cluster != "" {
		s.only = []byte(cluster)
	}
	s.now = a.cfg.Now()
	s.nowSec = float64(s.now.UnixNano()) / 1e9
	s.minTime = uint64(max(s.now.Add(-a.cfg.SeriesTTL).UnixNano(), 0))
	s.maxTime = uint64(s.now.Add(a.cfg.MaxClockSkew).UnixNano())
	err := s.dec.Decode(req, s)
	s.release()
	res := s.res
	a.sinks.Put(s)
	a.ingested.Add(res.Accepted)
	for i, n := range res.Reasons {
		if n > 0 {
			a.rejected[i].Add(n)
		}
	}
	return res, err
}

// sink receives one request's content from the decoder.
type sink struct {
	a      *Aggregator
	dec    otlpwire.Decoder
	res    Result
	now    time.Time
	nowSec float64
	// Points must be stamped within [minTime, maxTime] (unix ns).
	minTime, maxTime uint64

	resHash    uint64
	clusterUID []byte // resource's k8s.cluster.uid, aliasing the request
	only       []byte // the only cluster UID this request may report, or nil
	resReason  Reason
	curRes     *resource // locked while its points are decoded
	pos        int       // index of the next point within the resource

	metric       metricID
	metricReason Reason
	unitScale    float64

	cur, delta hist // scratch
	hash       maphash.Hash
}

func (s *sink) reject(r Reason) {
	s.res.Rejected++
	s.res.Reasons[r]++
}

var keyClusterUID = []byte(AttrClusterUID)

func (s *sink) Resource(attrs otlpwire.Attrs) error {
	s.resHash, s.clusterUID, s.resReason = 0, nil, ReasonNone
	var h maphash.Hash
	h.SetSeed(s.a.seed)
	err := attrs.Each(func(key, raw []byte, v otlpwire.Value) bool {
		// Order-independent: the sum of each attribute's hash.
		h.Reset()
		h.Write(raw)
		s.resHash += h.Sum64()
		if bytes.Equal(key, keyClusterUID) {
			if v.Type != otlpwire.ValueString || len(v.Str) == 0 || len(v.Str) > 128 {
				s.resReason = ReasonBadAttribute
			}
			s.clusterUID = v.Str
		}
		return true
	})
	if err != nil {
		return err
	}
	if s.clusterUID == nil && s.resReason == ReasonNone {
		s.resReason = ReasonMissingCluster
	}
	if s.only != nil && s.resReason == ReasonNone && !bytes.Equal(s.clusterUID, s.only) {
		s.resReason = ReasonForeignCluster
	}
	s.release()
	if s.resReason != ReasonNone {
		return nil
	}
	a := s.a
	a.resMu.RLock()
	r := a.resources[s.resHash]
	a.resMu.RUnlock()
	if r == nil {
		a.resMu.Lock()
		if r = a.resources[s.resHash]; r == nil {
			// Every resource holds at least one series once its points
			// are in, so MaxSeries bounds resources too (a flood of
			// distinct resources with only rejected points is cut here,
			// not only at the next Expire).
			if len(a.resources) >= a.cfg.MaxSeries {
				a.resMu.Unlock()
				s.resReason = ReasonSeriesLimit
				return nil
			}
			r = &resource{series: map[uint64]*series{}}
			a.resources[s.resHash] = r
			a.resPeak = max(a.resPeak, len(a.resources))
		}
		a.resMu.Unlock()
	}
	r.mu.Lock()
	s.curRes, s.pos = r, 0
	return nil
}

// release ends the current resource: the positions seen become the order
// the next request is expected in.
func (s *sink) release() {
	r := s.curRes
	if r == nil {
		return
	}
	if s.pos < len(r.order) {
		clear(r.order[s.pos:])
		r.order = r.order[:s.pos]
	}
	r.mu.Unlock()
	s.curRes = nil
}

func (s *sink) Metric(m *otlpwire.Metric) bool {
	s.metricReason = ReasonNone
	s.unitScale = 1
	switch {
	case bytes.Equal(m.Name, nameBytes):
		s.metric = metricBytes
	case bytes.Equal(m.Name, nameConnections):
		s.metric = metricConnections
	case bytes.Equal(m.Name, nameRTT):
		s.metric = metricRTT
	default:
		s.a.ignoredMetric.Add(1)
		return false
	}
	switch s.metric {
	case metricBytes, metricConnections:
		switch {
		case m.Kind != otlpwire.KindSum:
			s.metricReason = ReasonWrongType
		case !m.Monotonic:
			s.metricReason = ReasonNotMonotonic
		case m.Temporality != otlpwire.TemporalityDelta && m.Temporality != otlpwire.TemporalityCumulative:
			s.metricReason = ReasonTemporality
		case s.metric == metricBytes && len(m.Unit) > 0 && string(m.Unit) != UnitBytes:
			s.metricReason = ReasonBadUnit
		}
	case metricRTT:
		switch string(m.Unit) {
		case "s":
		case "ms":
			s.unitScale = 1e-3
		case "us", "µs":
			s.unitScale = 1e-6
		default:
			s.metricReason = ReasonBadUnit
		}
		switch {
		case m.Kind != otlpwire.KindHistogram && m.Kind != otlpwire.KindExponentialHistogram:
			s.metricReason = ReasonWrongType
		case m.Temporality != otlpwire.TemporalityDelta && m.Temporality != otlpwire.TemporalityCumulative:
			s.metricReason = ReasonTemporality
		}
	}
	return true
}

// lookup finds or creates the series of a point, in the current resource
// (locked), or returns a rejection reason.
func (s *sink) lookup(m *otlpwire.Metric, pc *otlpwire.PointCommon) (*series, Reason, error) {
	if s.resReason != ReasonNone {
		return nil, s.resReason, nil
	}
	if s.metricReason != ReasonNone {
		return nil, s.metricReason, nil
	}
	if pc.Time == 0 {
		return nil, ReasonNoTimestamp, nil
	}
	// The series identity hashes the attributes' bytes in their order on
	// the wire: the SDK encodes a series' attributes the same way every
	// time. (A sender that reorders them starts a new series, which costs
	// one interval's delta, not correctness.) Malformed attribute bytes
	// fail the new-series path below, which decodes them.
	h := &s.hash
	h.Reset()
	err := pc.Attrs.EachRaw(func(raw []byte) {
		h.Write(raw)
	})
	if err != nil {
		return nil, ReasonNone, err
	}
	sum := h.Sum64() ^ uint64(s.metric)*0x9e3779b97f4a7c15
	r := s.curRes
	pos := s.pos
	if pos < len(r.order) && r.order[pos] != nil && r.order[pos].hash == sum {
		s.pos++
		return r.order[pos], ReasonNone, nil
	}
	se := r.series[sum]
	if se == nil {
		var reason Reason
		if se, reason = s.newSeries(m, pc); reason != ReasonNone {
			return nil, reason, nil
		}
		se.hash = sum
		r.series[sum] = se
		r.peak = max(r.peak, len(r.series))
	}
	if pos < len(r.order) {
		r.order[pos] = se
	} else if pos < maxOrder {
		r.order = append(r.order, se)
	}
	s.pos++
	return se, ReasonNone, nil
}

// maxOrder bounds the positional cache of one resource.
const maxOrder = 1 << 16

// Attribute checks: the values end up in API objects whose schema would
// reject them, so they are refused here, at the source, with a reason.
var kindPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]*$`)

func validKind(v string) bool  { return len(v) <= 63 && kindPattern.MatchString(v) }
func validName(v string) bool  { return len(validation.IsDNS1123Subdomain(v)) == 0 }
func validLabel(v string) bool { return len(validation.IsDNS1123Label(v)) == 0 }

var (
	keyRole      = []byte(AttrRole)
	keyNamespace = []byte(AttrNamespace)
	keyKind      = []byte(AttrWorkloadKind)
	keyName      = []byte(AttrWorkloadName)
	keySvcNS     = []byte(AttrServiceNamespace)
	keySvcName   = []byte(AttrServiceName)
	keyPeerUID   = []byte(AttrPeerClusterUID)
	keyPeerCName = []byte(AttrPeerClusterName)
	keyPeerNS    = []byte(AttrPeerNamespace)
	keyPeerKind  = []byte(AttrPeerWorkloadKind)
	keyPeerName  = []byte(AttrPeerWorkloadName)
	keyDirection = []byte(AttrDirection)
)

// newSeries parses and checks a new series' attributes and links it to its
// aggregates. Called with the resource locked.
func (s *sink) newSeries(m *otlpwire.Metric, pc *otlpwire.PointCommon) (*series, Reason) {
	a := s.a
	if a.nSeries.Load() >= int64(a.cfg.MaxSeries) {
		return nil, ReasonSeriesLimit
	}
	var k struct {
		role, ns, kind, name, svcNS, svcName, peerUID, peerCluster, peerNS, peerKind, peerName, dir []byte
	}
	bad := false
	err := pc.Attrs.Each(func(key, _ []byte, v otlpwire.Value) bool {
		var dst *[]byte
		switch {
		case bytes.Equal(key, keyRole):
			dst = &k.role
		case bytes.Equal(key, keyNamespace):
			dst = &k.ns
		case bytes.Equal(key, keyKind):
			dst = &k.kind
		case bytes.Equal(key, keyName):
			dst = &k.name
		case bytes.Equal(key, keySvcNS):
			dst = &k.svcNS
		case bytes.Equal(key, keySvcName):
			dst = &k.svcName
		case bytes.Equal(key, keyPeerUID):
			dst = &k.peerUID
		case bytes.Equal(key, keyPeerCName):
			dst = &k.peerCluster
		case bytes.Equal(key, keyPeerNS):
			dst = &k.peerNS
		case bytes.Equal(key, keyPeerKind):
			dst = &k.peerKind
		case bytes.Equal(key, keyPeerName):
			dst = &k.peerName
		case bytes.Equal(key, keyDirection):
			dst = &k.dir
		default:
			return true
		}
		if v.Type != otlpwire.ValueString || *dst != nil {
			bad = true // wrong type or the key twice
			return false
		}
		*dst = v.Str
		return true
	})
	if err != nil || bad {
		return nil, ReasonBadAttribute
	}
	str := func(b []byte) string { return string(b) } // not interned yet
	// Constants, so that a flow key does not hold a copy of its role.
	var role string
	switch string(k.role) {
	case RoleClient:
		role = RoleClient
	case RoleServer:
		role = RoleServer
	default:
		return nil, ReasonBadAttribute
	}
	if s.metric == metricBytes {
		if d := str(k.dir); d != "transmit" && d != "receive" {
			return nil, ReasonBadAttribute
		}
	}
	se := &series{metric: s.metric}
	// A series without a local workload is valid agent output (a process
	// outside any workload) but says nothing about placement: it is tracked
	// so that its next points take the fast path, and counted as
	// unattributed.
	if len(k.ns) == 0 || len(k.kind) == 0 || len(k.name) == 0 {
		a.nSeries.Add(1)
		return se, ReasonNone
	}
	if !validLabel(str(k.ns)) || !validKind(str(k.kind)) || !validName(str(k.name)) ||
		len(k.peerUID) > 128 ||
		(k.svcNS != nil && !validLabel(str(k.svcNS))) || (k.svcName != nil && !validLabel(str(k.svcName))) ||
		(k.peerNS != nil && !validLabel(str(k.peerNS))) || (k.peerKind != nil && !validKind(str(k.peerKind))) ||
		(k.peerName != nil && !validName(str(k.peerName))) ||
		(len(k.svcNS) == 0) != (len(k.svcName) == 0) ||
		(len(k.peerKind) == 0) != (len(k.peerName) == 0) || (len(k.peerKind) > 0 && len(k.peerNS) == 0) {
		return nil, ReasonBadAttribute
	}
	if len(k.peerUID) == 0 && len(k.peerCluster) > 0 && a.cfg.PeerClusterUID != nil {
		if uid, ok := a.cfg.PeerClusterUID(str(k.peerCluster)); ok && len(uid) <= 128 {
			k.peerUID = []byte(uid)
		}
	}
	if len(k.peerUID) == 0 || (len(k.svcName) == 0 && len(k.peerName) == 0) {
		// No peer cluster or no peer at all: unattributed, as above.
		a.nSeries.Add(1)
		return se, ReasonNone
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	in := func(b []byte) string {
		if v, ok := a.intern[string(b)]; ok {
			return v
		}
		v := string(b)
		a.intern[v] = v
		return v
	}
	fk := flowKey{
		Role: role, ClusterUID: in(s.clusterUID),
		Namespace: in(k.ns), Kind: in(k.kind), Name: in(k.name),
		ServiceNamespace: in(k.svcNS), ServiceName: in(k.svcName),
		PeerClusterUID: in(k.peerUID), PeerNamespace: in(k.peerNS),
		PeerKind: in(k.peerKind), PeerName: in(k.peerName),
	}
	f := a.flows[fk]
	if f == nil {
		if len(a.flows) >= a.cfg.MaxFlows {
			return nil, ReasonFlowLimit
		}
		f = &flowAgg{}
		a.flows[fk] = f
		a.flowsPeak = max(a.flowsPeak, len(a.flows))
	}
	se.flow = f
	f.refs++
	// Cluster RTT comes from the client side: it dialed, its RTT is the
	// path to where the peer runs.
	if s.metric == metricRTT && role == RoleClient {
		pk := pairKey{Src: fk.ClusterUID, Dst: fk.PeerClusterUID}
		p := a.pairs[pk]
		if p == nil && len(a.pairs) < a.cfg.MaxPairs {
			p = &pairAgg{}
			a.pairs[pk] = p
			a.pairsPeak = max(a.pairsPeak, len(a.pairs))
		}
		if p != nil {
			p.refs++
			se.pair = p
		}
	}
	a.nSeries.Add(1)
	return se, ReasonNone
}

func (s *sink) NumberPoint(m *otlpwire.Metric, p *otlpwire.NumberPoint) error {
	// Values are checked before the series is looked up, so that invalid
	// points neither create state nor take series slots.
	if s.metricReason == ReasonNone && s.resReason == ReasonNone {
		reason := s.checkTime(&p.PointCommon)
		if v := p.Float(); !p.HasVal || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			reason = ReasonInvalidValue
		}
		if reason != ReasonNone {
			s.reject(reason)
			return nil
		}
	}
	se, reason, err := s.lookup(m, &p.PointCommon)
	if err != nil || reason != ReasonNone {
		if reason != ReasonNone {
			s.reject(reason)
		}
		return err
	}
	reason = s.updateSum(m, se, p)
	s.count(se, reason)
	return nil
}

func (s *sink) count(se *series, reason Reason) {
	switch {
	case reason != ReasonNone:
		s.reject(reason)
	default:
		s.res.Accepted++
		if se.flow == nil {
			s.a.unattributed.Add(1)
		}
	}
}

// interval is the time a delta covers, in seconds, capped at the window (a
// longer one only means the series was quiet).
func (s *sink) interval(from, to uint64) float64 {
	if from == 0 || from >= to {
		return 0
	}
	return math.Min(float64(to-from)/1e9, s.a.tau)
}

func (s *sink) updateSum(m *otlpwire.Metric, se *series, p *otlpwire.NumberPoint) Reason {
	v := p.Float()
	if !p.HasVal || math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return ReasonInvalidValue
	}
	// The series' next state is computed first and kept only if the point
	// is plausible: a refused point changes nothing.
	next := *se
	next.prev = hist{}
	var delta, iv float64
	counted := true
	switch {
	case m.Temporality == otlpwire.TemporalityDelta:
		if p.Time <= se.last {
			return ReasonOutOfOrder
		}
		from := p.StartTime
		if from == 0 {
			from = se.last
		}
		// The first point of a delta series without a start time covers
		// an unknown interval: it only sets the time baseline.
		counted = from != 0
		delta, iv = v, s.interval(from, p.Time)
		next.last = p.Time
	case !se.init:
		next.init, next.start, next.last, next.prevVal = true, p.StartTime, p.Time, v
		// A series that began after this estimator started is counted from
		// its start; an older one only sets the baseline.
		counted = p.StartTime != 0 && p.StartTime >= s.a.startNs
		delta, iv = v, s.interval(p.StartTime, p.Time)
	case p.StartTime != 0 && p.StartTime < se.start:
		return ReasonOutOfOrder // a point from a previous run of the agent
	case (p.StartTime != 0 && p.StartTime > se.start) || v < se.prevVal:
		// The agent restarted (new start time) or the counter reset:
		// everything since the new start is new.
		from := p.StartTime
		if from == 0 {
			from = se.last
		}
		delta, iv = v, s.interval(from, p.Time)
		next.start, next.last, next.prevVal = p.StartTime, p.Time, v
	case p.Time <= se.last:
		return ReasonOutOfOrder // a duplicate (a retried export)
	default:
		delta, iv = v-se.prevVal, s.interval(se.last, p.Time)
		next.last, next.prevVal = p.Time, v
	}
	if counted && !plausibleRate(se.metric, delta, iv) {
		return s.implausible(m, se, &next, ReasonImplausibleRate)
	}
	next.prev = se.prev
	next.implausible = 0
	next.lastRecv = s.now.Unix()
	*se = next
	if f := se.flow; counted && f != nil && (delta > 0 || iv > 0) {
		// A delta is what accrued over its interval, not at its end: weigh
		// it as a constant rate over the interval would be (the integral
		// of the decay over it), or a steady rate would read high by about
		// interval/(2 tau).
		if iv > 0 {
			delta *= s.a.tau * -math.Expm1(-iv/s.a.tau) / iv
		}
		f.mu.Lock()
		w := f.d.weight(s.nowSec, s.a.tau, f.rescale)
		if se.metric == metricBytes {
			f.bytes += delta * w
		} else {
			f.conns += delta * w
		}
		f.touch(s.nowSec, iv)
		f.mu.Unlock()
	}
	return ReasonNone
}

// implausible refuses a point whose delta against the series' state is
// more than a NIC carries. One such point is refused alone and the state
// kept, so the next true point counts as if it had not come. A second in a
// row means the state, not the points, is wrong (a lying baseline, or a
// gap longer than the window at line rate): the cumulative series rebases
// on this point, counting nothing, so that no state can refuse a series'
// points for ever.
func (s *sink) implausible(m *otlpwire.Metric, se, next *series, reason Reason) Reason {
	se.implausible++
	if m.Temporality == otlpwire.TemporalityCumulative && se.implausible >= 2 {
		prev := se.prev
		if se.metric == metricRTT {
			prev.copyFrom(&s.cur)
		}
		*se = *next
		se.prev, se.implausible, se.init = prev, 0, true
		se.lastRecv = s.now.Unix()
	}
	return reason
}

func (f *flowAgg) touch(now, interval float64) {
	if start := now - interval; f.first == 0 || start < f.first {
		f.first = start
	}
	f.d.lastSeen = now
}

func validFloat(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func (s *sink) HistogramPoint(m *otlpwire.Metric, p *otlpwire.HistogramPoint) error {
	if s.metricReason == ReasonNone && s.resReason == ReasonNone {
		if reason := s.checkExplicit(p); reason != ReasonNone || s.checkTime(&p.PointCommon) != ReasonNone {
			if reason == ReasonNone {
				reason = ReasonImplausibleTime
			}
			s.reject(reason)
			return nil
		}
	}
	se, reason, err := s.lookup(m, &p.PointCommon)
	if err != nil || reason != ReasonNone {
		if reason != ReasonNone {
			s.reject(reason)
		}
		return err
	}
	s.cur.reset()
	s.cur.addExplicit(p.Bounds, p.Counts, p.Min, p.Max, p.HasMin, p.HasMax, s.unitScale)
	reason = s.updateHist(m, se, &p.PointCommon, p.Count)
	s.count(se, reason)
	return nil
}

func (s *sink) checkExplicit(p *otlpwire.HistogramPoint) Reason {
	if (p.HasSum && (!validFloat(p.Sum) || p.Sum < 0)) || (p.HasMin && (!validFloat(p.Min) || p.Min < 0)) || (p.HasMax && !validFloat(p.Max)) {
		return ReasonInvalidValue
	}
	if len(p.Counts) != len(p.Bounds)+1 && !(len(p.Counts) == 0 && p.Count == 0) {
		return ReasonInconsistentHistogram
	}
	for i, b := range p.Bounds {
		if !validFloat(b) || (i > 0 && b <= p.Bounds[i-1]) {
			return ReasonInconsistentHistogram
		}
	}
	var total uint64
	first, last := -1, -1 // populated buckets
	for k, c := range p.Counts {
		if total+c < total {
			return ReasonInconsistentHistogram // overflow
		}
		total += c
		if c != 0 {
			if first < 0 {
				first = k
			}
			last = k
		}
	}
	if total != p.Count {
		return ReasonInconsistentHistogram
	}
	// A max above the highest populated finite bucket, or a min below the
	// lowest, contradicts the buckets (it would steer the open-ended
	// buckets' spread).
	if n := len(p.Bounds); n > 0 && last >= 0 &&
		((p.HasMax && last < n && p.Max > p.Bounds[last]) || (p.HasMin && first > 0 && p.Min < p.Bounds[first-1])) {
		return ReasonInconsistentHistogram
	}
	return ReasonNone
}

func (s *sink) ExpHistogramPoint(m *otlpwire.Metric, p *otlpwire.ExpHistogramPoint) error {
	if s.metricReason == ReasonNone && s.resReason == ReasonNone {
		if reason := s.checkExponential(p); reason != ReasonNone || s.checkTime(&p.PointCommon) != ReasonNone {
			if reason == ReasonNone {
				reason = ReasonImplausibleTime
			}
			s.reject(reason)
			return nil
		}
	}
	se, reason, err := s.lookup(m, &p.PointCommon)
	if err != nil || reason != ReasonNone {
		if reason != ReasonNone {
			s.reject(reason)
		}
		return err
	}
	s.cur.reset()
	s.cur.addExponential(p.Scale, p.PositiveOffset, p.Positive, p.ZeroCount, s.unitScale) // scale checked above
	reason = s.updateHist(m, se, &p.PointCommon, p.Count)
	s.count(se, reason)
	return nil
}

func (s *sink) checkExponential(p *otlpwire.ExpHistogramPoint) Reason {
	if (p.HasSum && (!validFloat(p.Sum) || p.Sum < 0)) || (p.HasMin && (!validFloat(p.Min) || p.Min < 0)) ||
		(p.HasMax && !validFloat(p.Max)) || !validFloat(p.ZeroThreshold) || p.ZeroThreshold < 0 {
		return ReasonInvalidValue
	}
	if p.NegativeCount > 0 {
		return ReasonNegativeBuckets // an RTT is never negative
	}
	if p.Scale < -10 || p.Scale > 20 {
		return ReasonInconsistentHistogram
	}
	// Bucket indexes beyond what an int32 offset plus the bucket count can
	// reach are nonsense, not just out of our range.
	if int64(p.PositiveOffset)+int64(len(p.Positive)) > math.MaxInt32 {
		return ReasonInconsistentHistogram
	}
	total := p.ZeroCount
	for _, c := range p.Positive {
		if total+c < total {
			return ReasonInconsistentHistogram
		}
		total += c
	}
	if total != p.Count {
		return ReasonInconsistentHistogram
	}
	if !plausibleExponential(p.Scale, p.PositiveOffset, p.Positive, s.unitScale) {
		return ReasonImplausibleRTT
	}
	return ReasonNone
}

// updateHist folds the point's histogram (already in s.cur, internal
// buckets) into the series' aggregates.
func (s *sink) updateHist(m *otlpwire.Metric, se *series, p *otlpwire.PointCommon, count uint64) Reason {
	d := &s.cur
	next := *se
	next.prev = hist{}
	var iv, n float64 // interval, new samples
	counted, keepCur := true, false
	switch {
	case m.Temporality == otlpwire.TemporalityDelta:
		if p.Time <= se.last {
			return ReasonOutOfOrder
		}
		from := p.StartTime
		if from == 0 {
			from = se.last
		}
		counted = from != 0
		iv, n = s.interval(from, p.Time), float64(count)
		next.last = p.Time
	case !se.init:
		next.init, next.start, next.last, next.prevVal = true, p.StartTime, p.Time, float64(count)
		keepCur = true
		counted = p.StartTime != 0 && p.StartTime >= s.a.startNs
		iv, n = s.interval(p.StartTime, p.Time), float64(count)
	case p.StartTime != 0 && p.StartTime < se.start:
		return ReasonOutOfOrder
	case p.StartTime != 0 && p.StartTime > se.start, float64(count) < se.prevVal:
		from := p.StartTime
		if from == 0 {
			from = se.last
		}
		iv, n = s.interval(from, p.Time), float64(count)
		next.start, next.last, next.prevVal = p.StartTime, p.Time, float64(count)
		keepCur = true
	case p.Time <= se.last:
		return ReasonOutOfOrder
	default:
		if s.delta.sub(&s.cur, &se.prev) {
			// A bucket went down while the count did not: a reset that
			// happened to refill past the old count. Count it all.
			s.delta.copyFrom(&s.cur)
		}
		d = &s.delta
		iv, n = s.interval(se.last, p.Time), d.total()
		next.last, next.prevVal = p.Time, float64(count)
		keepCur = true
	}
	if beyondMaxRTT(d) {
		return s.implausible(m, se, &next, ReasonImplausibleRTT)
	}
	if counted && !plausibleRate(metricRTT, n, iv) {
		return s.implausible(m, se, &next, ReasonImplausibleRate)
	}
	next.prev = se.prev
	if keepCur {
		next.prev.copyFrom(&s.cur)
	}
	next.implausible = 0
	next.lastRecv = s.now.Unix()
	*se = next
	if !counted {
		return ReasonNone
	}
	if f := se.flow; f != nil {
		f.mu.Lock()
		w := f.d.weight(s.nowSec, s.a.tau, f.rescale)
		f.rtt.addScaled(d, w)
		f.touch(s.nowSec, iv)
		f.mu.Unlock()
	}
	if pa := se.pair; pa != nil {
		pa.mu.Lock()
		w := pa.d.weight(s.nowSec, s.a.tau, pa.rescale)
		pa.h.addScaled(d, w)
		pa.d.lastSeen = s.nowSec
		pa.mu.Unlock()
	}
	return ReasonNone
}

// Stats are the aggregator's counters since it was created.
type Stats struct {
	Series, Flows, Pairs int64
	Ingested             int64
	Unattributed         int64
	IgnoredMetrics       int64
	Rejected             map[string]int64
}

// Stats returns the current counters.
func (a *Aggregator) Stats() Stats {
	st := Stats{
		Series:         a.nSeries.Load(),
		Ingested:       a.ingested.Load(),
		Unattributed:   a.unattributed.Load(),
		IgnoredMetrics: a.ignoredMetric.Load(),
		Rejected:       map[string]int64{},
	}
	for i := range a.rejected {
		if n := a.rejected[i].Load(); n > 0 {
			st.Rejected[Reason(i).String()] = n
		}
	}
	a.mu.RLock()
	st.Flows, st.Pairs = int64(len(a.flows)), int64(len(a.pairs))
	a.mu.RUnlock()
	return st
}

// Expire forgets input series not reported within SeriesTTL and aggregates
// that no series feeds and whose data has decayed below any visible rate.
// Maps that emptied substantially are rebuilt, and interned names no key
// uses are dropped: Go maps never shrink, so without that a flood's peak
// would stay allocated after its series are gone.
func (a *Aggregator) Expire() (expired, flows int) {
	now := a.cfg.Now()
	cutoff := now.Add(-a.cfg.SeriesTTL).Unix()
	// Resources first, then the aggregate maps: newSeries holds a resource
	// lock while it takes a.mu, so the opposite order could deadlock.
	var gone []*series
	a.resMu.Lock()
	for k, r := range a.resources {
		r.mu.Lock()
		for h, se := range r.series {
			if se.lastRecv < cutoff {
				delete(r.series, h)
				a.nSeries.Add(-1)
				gone = append(gone, se)
			}
		}
		r.series, r.peak = shrinkMap(r.series, r.peak)
		// Positions may name deleted series: start the order afresh, in
		// storage no larger than the series left need.
		if cap(r.order) > 2*len(r.series)+64 {
			r.order = nil
		} else {
			clear(r.order)
			r.order = r.order[:0]
		}
		empty := len(r.series) == 0
		r.mu.Unlock()
		if empty {
			delete(a.resources, k)
		}
	}
	a.resources, a.resPeak = shrinkMap(a.resources, a.resPeak)
	a.resMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, se := range gone {
		if se.flow != nil {
			se.flow.refs--
		}
		if se.pair != nil {
			se.pair.refs--
		}
	}
	nowSec := float64(now.UnixNano()) / 1e9
	// Ten windows: exp(-10) leaves 0.005% of any value.
	old := nowSec - 10*a.tau
	for k, f := range a.flows {
		f.mu.Lock()
		dead := f.refs <= 0 && f.d.lastSeen < old
		f.mu.Unlock()
		if dead {
			delete(a.flows, k)
			flows++
		}
	}
	pairsGone := 0
	for k, p := range a.pairs {
		p.mu.Lock()
		dead := p.refs <= 0 && p.d.lastSeen < old
		p.mu.Unlock()
		if dead {
			delete(a.pairs, k)
			pairsGone++
		}
	}
	var rebuilt bool
	oldFlows, oldPairs := a.flowsPeak, a.pairsPeak
	a.flows, a.flowsPeak = shrinkMap(a.flows, a.flowsPeak)
	a.pairs, a.pairsPeak = shrinkMap(a.pairs, a.pairsPeak)
	rebuilt = a.flowsPeak != oldFlows || a.pairsPeak != oldPairs
	if (flows > 0 || pairsGone > 0) && (rebuilt || len(a.flows)+len(a.pairs) == 0) {
		a.reintern()
	}
	return len(gone), flows
}

// shrinkMap returns m, or a copy of it in a new map once it holds less
// than a quarter of its peak (and the peak was worth a rebuild), with the
// new peak. Copying costs O(len), paid at most once per halving of the
// peak, so amortized O(1) per deletion.
func shrinkMap[K comparable, V any](m map[K]V, peak int) (map[K]V, int) {
	peak = max(peak, len(m))
	if peak < 1024 || len(m) > peak/4 {
		return m, peak
	}
	n := make(map[K]V, len(m))
	for k, v := range m {
		n[k] = v
	}
	return n, len(n)
}

// reintern keeps only the interned names that a flow or pair key uses.
// Called with a.mu held.
func (a *Aggregator) reintern() {
	n := map[string]string{} // sized by what is kept, not by the old peak
	keep := func(s string) {
		if s != "" {
			n[s] = s
		}
	}
	for k := range a.flows {
		keep(k.ClusterUID)
		keep(k.Namespace)
		keep(k.Kind)
		keep(k.Name)
		keep(k.ServiceNamespace)
		keep(k.ServiceName)
		keep(k.PeerClusterUID)
		keep(k.PeerNamespace)
		keep(k.PeerKind)
		keep(k.PeerName)
	}
	for k := range a.pairs {
		keep(k.Src)
		keep(k.Dst)
	}
	a.intern = n
}
