package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowplace/flowplace/internal/loghist"
	"github.com/flowplace/flowplace/internal/probe"
	"github.com/flowplace/flowplace/internal/probe/probetest"
	"github.com/flowplace/flowplace/world/wan"
)

// serve answers fixed-size requests with fixed-size responses until EOF and
// reports the bytes it moved once the client is gone.
func serve(t *testing.T, ln net.Listener, reqSize, respSize int, moved chan<- [2]int) {
	t.Helper()
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var in, out int
				req, resp := make([]byte, reqSize), bytes.Repeat([]byte{'s'}, respSize)
				for {
					n, err := io.ReadFull(c, req)
					in += n
					if err != nil {
						break
					}
					n, err = c.Write(resp)
					out += n
					if err != nil {
						break
					}
				}
				moved <- [2]int{in, out}
			}()
		}
	}()
}

// TestInjectedRTTPerDestination checks that the RTT the probes aggregate per
// destination matches the RTT injected between clusters, and that bytes per
// destination are exactly what client and server moved. The topology ACKs at
// once (QuickACK), so every kernel sample is the path's RTT rather than the
// server's think time plus a delayed ACK: what is measured is the probe.
func TestInjectedRTTPerDestination(t *testing.T) {
	probetest.RequireKernel(t)
	injected := map[string]time.Duration{"b": 5 * time.Millisecond, "c": 20 * time.Millisecond, "d": 50 * time.Millisecond}
	rtt := map[wan.Pair]time.Duration{}
	for dst, d := range injected {
		rtt[wan.Pair{A: "a", B: dst}] = d
	}
	topo := wan.NewForTestConfig(t, wan.Config{Clusters: []string{"a", "b", "c", "d"}, ExtraRTT: rtt, QuickACK: true})
	p := probetest.Attach(t, probe.Options{})

	const conns, rounds, reqSize, respSize = 3, 30, 200, 3000
	src, _ := topo.Cluster("a")
	type result struct {
		dialed   netip.AddrPort
		sent     int
		received int
		server   chan [2]int
	}
	results := map[string]*result{}
	for dst := range injected {
		c, _ := topo.Cluster(dst)
		ln, err := c.Listen("tcp4", netip.AddrPortFrom(c.NodeAddr, 0).String())
		if err != nil {
			t.Fatalf("listen in %s: %v", dst, err)
		}
		r := &result{dialed: netip.MustParseAddrPort(ln.Addr().String()), server: make(chan [2]int, conns)}
		serve(t, ln, reqSize, respSize, r.server)
		results[dst] = r
	}

	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := make(chan error, len(injected)*conns)
	for _, r := range results {
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, err := src.Dial(context.Background(), "tcp4", r.dialed.String())
				if err != nil {
					errs <- err
					return
				}
				defer c.Close()
				req, resp := bytes.Repeat([]byte{'c'}, reqSize), make([]byte, respSize)
				for range rounds {
					if _, err := c.Write(req); err != nil {
						errs <- err
						return
					}
					if _, err := io.ReadFull(c, resp); err != nil {
						errs <- err
						return
					}
					mu.Lock()
					r.sent += reqSize
					r.received += respSize
					mu.Unlock()
				}
				// The probe's smoothed RTT of this very socket equals the
				// kernel's own (TCP_INFO), across the injected delay too.
				if err := sameRTT(p, c); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("client: %v", err)
	}
	if t.Failed() {
		t.FailNow()
	}
	serverMoved := map[string][2]int{}
	for dst, r := range results {
		for range conns {
			select {
			case m := <-r.server:
				s := serverMoved[dst]
				serverMoved[dst] = [2]int{s[0] + m[0], s[1] + m[1]}
			case <-time.After(10 * time.Second):
				t.Fatalf("server in %s did not finish", dst)
			}
		}
	}

	// Wait until every connection's close has been folded in.
	var snap *probe.Snapshot
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if snap, err = p.Poll(); err != nil {
			t.Fatal(err)
		}
		closed := 0
		for _, f := range snap.Flows {
			closed += int(f.Stats.Closed)
		}
		// Both ends of every connection: the server's close completes an
		// RTT after the client's.
		if closed >= 2*conns*len(injected) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	for dst, want := range injected {
		r := results[dst]
		var client, server probe.FlowStats
		var hist loghist.Histogram
		for _, f := range snap.Flows {
			if f.Key.Dialed != r.dialed {
				continue
			}
			switch f.Key.Role {
			case probe.RoleClient:
				if f.Key.Peer != r.dialed {
					t.Errorf("%s: client flow peer %s, want %s", dst, f.Key.Peer, r.dialed)
				}
				client = f.Stats
				hist.Merge(&f.Stats.RTT)
			case probe.RoleServer:
				server.BytesSent += f.Stats.BytesSent
				server.BytesReceived += f.Stats.BytesReceived
				server.Closed += f.Stats.Closed
			}
		}
		t.Run(fmt.Sprintf("%s-%s", dst, want), func(t *testing.T) {
			if client.Opened != conns || client.Closed != conns {
				t.Errorf("client flow opened %d closed %d, want %d", client.Opened, client.Closed, conns)
			}
			if hist.Count < conns*rounds/2 {
				t.Fatalf("only %d RTT samples for %d round trips", hist.Count, conns*rounds)
			}
			// Tolerances from the instruments (world/wan/precision.go and
			// loghist.Resolution): nothing arrives before the injected RTT
			// (less srtt's 1 µs truncation); the median lies within the
			// hub's MedianBias above it plus one histogram bucket (256 µs
			// at 5 ms, 2 ms at 50 ms) either side; the exact mean within
			// MeanTolerance, which allows for VM stalls.
			wantUs := float64(want.Microseconds())
			bucket := loghist.Resolution(wantUs)
			bias := float64(wan.MedianBias.Microseconds())
			mean, p50 := hist.Mean(), hist.Quantile(0.5)
			if float64(hist.Min) < wantUs-1 {
				t.Errorf("min RTT %d µs is below the injected %.0f µs: the hub never releases early", hist.Min, wantUs)
			}
			if lo, hi := wantUs-bucket, wantUs+bias+bucket; p50 < lo || p50 > hi {
				t.Errorf("p50 RTT %.0f µs, injected %.0f µs: want within [%.0f, %.0f] (one %.0f µs bucket, hub bias %.0f µs)", p50, wantUs, lo, hi, bucket, bias)
			}
			if hi := wantUs + float64(wan.MeanTolerance(int(hist.Count)).Microseconds()); mean < wantUs-1 || mean > hi {
				t.Errorf("mean RTT %.0f µs, injected %.0f µs: want within [%.0f, %.0f]", mean, wantUs, wantUs, hi)
			}
			t.Logf("injected %v: mean %.0f µs, p50 %.0f µs, p99 %.0f µs, min %d µs over %d samples",
				want, mean, p50, hist.Quantile(0.99), hist.Min, hist.Count)

			moved := serverMoved[dst]
			for _, c := range []struct {
				name      string
				got, want int
			}{
				{"client bytes sent", int(client.BytesSent), r.sent},
				{"client bytes received", int(client.BytesReceived), r.received},
				{"server bytes received", int(server.BytesReceived), moved[0]},
				{"server bytes sent", int(server.BytesSent), moved[1]},
				{"what the server read vs the client wrote", moved[0], r.sent},
			} {
				if c.got != c.want {
					t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
				}
			}
		})
	}
}

func sameRTT(p *probe.Probe, c net.Conn) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return fmt.Errorf("connection is a %T, not TCP", c)
	}
	info, err := p.Conn(tc)
	if err != nil {
		return err
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var ti *unix.TCPInfo
	var gerr error
	raw.Control(func(fd uintptr) { ti, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if gerr != nil {
		return fmt.Errorf("TCP_INFO: %w", gerr)
	}
	if got := info.SRTT.Microseconds(); got != int64(ti.Rtt) {
		return fmt.Errorf("to %s: probe srtt %d µs, TCP_INFO rtt %d µs", c.RemoteAddr(), got, ti.Rtt)
	}
	return nil
}
