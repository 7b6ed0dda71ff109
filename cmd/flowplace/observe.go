package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/flowplace/flowplace/internal/probe"
)

type observeOptions struct {
	duration time.Duration
	interval time.Duration
	output   string
	cgroup   string
	maxFlows uint32
	top      int
}

func newObserveCommand() *cobra.Command {
	o := observeOptions{}
	cmd := &cobra.Command{
		Use:   "observe",
		Short: "Show TCP destinations seen on this host: connections, bytes, RTT",
		Long: `Attaches flowplace's eBPF probes to the host's cgroup v2 root (mounting
cgroup v2 under ` + probe.DefaultCgroup2Mount + ` if the host has none) and shows
every TCP destination dialed from this host, and every local service accepting
connections: connections, bytes each way, RTT min/p50/p99. Connections opened
before the probes attached are not seen. Needs root.

--output json writes one JSON object per interval (one per line).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.validate(); err != nil {
				return err
			}
			return runObserve(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.duration, "duration", 0, "stop after this long (0: until interrupted)")
	f.DurationVar(&o.interval, "interval", 2*time.Second, "refresh interval")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.StringVar(&o.cgroup, "cgroup", "", "cgroup v2 directory to observe (default: the cgroup v2 root)")
	f.Uint32Var(&o.maxFlows, "max-flows", probe.DefaultMaxFlows, "size of the kernel flow table")
	f.IntVar(&o.top, "top", 25, "rows to show, busiest first (0: all)")
	return cmd
}

func (o *observeOptions) validate() error {
	switch {
	case o.output != "table" && o.output != "json":
		return fmt.Errorf("observe: --output %q: must be table or json", o.output)
	case o.duration < 0:
		return fmt.Errorf("observe: --duration %s: must not be negative", o.duration)
	case o.interval < 100*time.Millisecond:
		return fmt.Errorf("observe: --interval %s: must be at least 100ms", o.interval)
	case o.top < 0:
		return fmt.Errorf("observe: --top %d: must not be negative", o.top)
	case o.maxFlows < 16 || o.maxFlows > 1<<20:
		return fmt.Errorf("observe: --max-flows %d: must be between 16 and 1048576", o.maxFlows)
	}
	return nil
}

func runObserve(ctx context.Context, out io.Writer, o observeOptions) error {
	if err := probe.CheckKernel(); err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	cg := o.cgroup
	if cg == "" {
		mounted, _ := probe.FindCgroup2()
		root, err := probe.Cgroup2(probe.DefaultCgroup2Mount)
		if err != nil {
			return fmt.Errorf("observe: %w", err)
		}
		if mounted == "" {
			defer unix.Unmount(root, 0)
		}
		cg = root
	}
	p, err := probe.Load(probe.Options{Cgroup: cg, MaxFlows: o.maxFlows})
	if err != nil {
		return fmt.Errorf("observe: %w", err)
	}
	defer p.Close()

	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	tty := false
	if f, ok := out.(*os.File); ok && o.output == "table" {
		tty = term.IsTerminal(int(f.Fd()))
	}
	acc := probe.NewAccumulator()
	start := time.Now()
	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	var lastRender time.Time
	for {
		done := false
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		s, err := p.Poll()
		if err != nil {
			return fmt.Errorf("observe: %w", err)
		}
		acc.Add(s)
		// The end of --duration often coincides with a tick: one final
		// snapshot is enough.
		if !done || s.Time.Sub(lastRender) > o.interval/2 {
			view := buildView(acc.Totals(), s.Counters, s.Time.Sub(start), o.top)
			if err := render(out, view, o.output, tty); err != nil {
				return err
			}
			lastRender = s.Time
		}
		if done {
			return nil // the deadline passed or the user interrupted
		}
	}
}

// destination is one row: traffic to (or, inbound, at) one address.
type destination struct {
	Direction     string  `json:"direction"` // "out": dialed from here; "in": accepted here
	Address       string  `json:"address"`
	Peers         int     `json:"peers"` // distinct real peers (backends or clients)
	Connections   uint64  `json:"connections"`
	Active        uint64  `json:"active"`
	BytesOut      uint64  `json:"bytes_out"`
	BytesIn       uint64  `json:"bytes_in"`
	Retransmits   uint64  `json:"retransmits"`
	RTTSamples    uint64  `json:"rtt_samples"`
	RTTMinMicros  float64 `json:"rtt_min_us"`
	RTTP50Micros  float64 `json:"rtt_p50_us"`
	RTTP99Micros  float64 `json:"rtt_p99_us"`
	RTTMeanMicros float64 `json:"rtt_mean_us"`
}

type view struct {
	Time         time.Time      `json:"time"`
	Elapsed      float64        `json:"elapsed_s"`
	Destinations []destination  `json:"destinations"`
	Datapath     probe.Counters `json:"datapath"`
}

func buildView(totals map[probe.FlowKey]probe.FlowStats, c probe.Counters, elapsed time.Duration, top int) view {
	type agg struct {
		dir   string
		addr  netip.AddrPort
		peers map[netip.AddrPort]bool
		st    probe.FlowStats
	}
	rows := map[string]*agg{}
	for k, st := range totals {
		dir := "out"
		if k.Role == probe.RoleServer {
			dir = "in"
		}
		id := dir + " " + k.Dialed.String()
		a := rows[id]
		if a == nil {
			a = &agg{dir: dir, addr: k.Dialed, peers: map[netip.AddrPort]bool{}}
			rows[id] = a
		}
		a.peers[k.Peer] = true
		a.st.Add(&st)
	}
	v := view{Time: time.Now().UTC(), Elapsed: elapsed.Seconds(), Datapath: c}
	for _, a := range rows {
		d := destination{
			Direction: a.dir, Address: a.addr.String(), Peers: len(a.peers),
			Connections: a.st.Opened, Active: a.st.Active(),
			BytesOut: a.st.BytesSent, BytesIn: a.st.BytesReceived, Retransmits: a.st.Retransmits,
			RTTSamples: a.st.RTT.Count,
		}
		if a.st.RTT.Count > 0 {
			d.RTTMinMicros = float64(a.st.RTT.Min)
			d.RTTP50Micros = round1(a.st.RTT.Quantile(0.5))
			d.RTTP99Micros = round1(a.st.RTT.Quantile(0.99))
			d.RTTMeanMicros = round1(a.st.RTT.Mean())
		}
		v.Destinations = append(v.Destinations, d)
	}
	slices.SortFunc(v.Destinations, func(a, b destination) int {
		ta, tb := a.BytesIn+a.BytesOut, b.BytesIn+b.BytesOut
		if ta != tb {
			if ta > tb {
				return -1
			}
			return 1
		}
		if a.Connections != b.Connections {
			if a.Connections > b.Connections {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Direction+a.Address, b.Direction+b.Address)
	})
	if top > 0 && len(v.Destinations) > top {
		v.Destinations = v.Destinations[:top]
	}
	if v.Destinations == nil {
		v.Destinations = []destination{}
	}
	return v
}

func round1(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*10) / 10
}

func render(out io.Writer, v view, format string, tty bool) error {
	if format == "json" {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("observe: encode json: %w", err)
		}
		_, err = fmt.Fprintf(out, "%s\n", b)
		return err
	}
	var sb strings.Builder
	if tty {
		sb.WriteString("\x1b[H\x1b[2J") // redraw in place
	}
	fmt.Fprintf(&sb, "flowplace observe  %s  elapsed %s  flows %d/%d  evicted %d\n\n",
		v.Time.Format(time.TimeOnly), time.Duration(v.Elapsed*float64(time.Second)).Round(time.Second),
		v.Datapath.Flows, v.Datapath.MaxFlows, v.Datapath.Evicted)
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "DIR\tDESTINATION\tPEERS\tCONNS\tACTIVE\tBYTES OUT\tBYTES IN\tRETRANS\tRTT MIN\tRTT P50\tRTT P99\t")
	for _, d := range v.Destinations {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t\n", d.Direction, d.Address, d.Peers,
			d.Connections, d.Active, bytesHuman(d.BytesOut), bytesHuman(d.BytesIn), d.Retransmits,
			micros(d.RTTMinMicros, d.RTTSamples), micros(d.RTTP50Micros, d.RTTSamples), micros(d.RTTP99Micros, d.RTTSamples))
	}
	tw.Flush()
	if len(v.Destinations) == 0 {
		sb.WriteString("(no TCP connections yet)\n")
	}
	if !tty {
		sb.WriteString("\n")
	}
	_, err := io.WriteString(out, sb.String())
	return err
}

func bytesHuman(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}

func micros(us float64, samples uint64) string {
	if samples == 0 {
		return "-"
	}
	d := time.Duration(us * float64(time.Microsecond))
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
