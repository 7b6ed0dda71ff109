package wan

import "time"

// The hub as an instrument. Tests that measure RTT across a topology derive
// their tolerances from these bounds (plus the resolution of whatever reads
// the RTT), never from a guess. They are measured by TestHubPrecision and
// TestRTTAccuracy on a 2-vCPU VM, both idle and at a load average of 9 (a
// cold Go build and a fuzzer on both cores), over `make soak` runs; the
// figures in brackets are the worst seen there.
//
// The hub never releases a packet early, so no RTT across a pair is below
// the injected one: that bound is exact and tests may rely on it.
const (
	// MedianBias bounds how much the median RTT of a QuickACK topology's
	// kernel samples (handshakes, srtt, the probes' histograms) exceeds the
	// injected RTT: the hub's release lateness (busy-wait, SCHED_FIFO) plus
	// two TUN traversals and softirq work, and a wake-up from idle when
	// samples are spaced; with both cores busy (CI runs the fleet and
	// install tests, kubelets and containerd beside these) softirq work
	// waits longest. [handshake median +26..+151 µs idle, +358 µs in CI
	// with the install tests in parallel; probe histogram mean +34..+200 µs]
	MedianBias = 500 * time.Microsecond

	// AppMedianBias bounds the same for a median round trip timed by an
	// application (request written, response read): MedianBias plus a
	// goroutine wake-up at each end, which a loaded machine delays most,
	// up to 750 µs each. [+21 µs idle .. +640 µs at load 9, 20..30 round
	// trips; +1.29 ms in CI right after test/e2e, with the hub itself up
	// to 1.1 ms late]
	AppMedianBias = MedianBias + 2*750*time.Microsecond

	// MaxStall bounds how late a single packet can be when the VM stalls
	// the hub (or the reader) altogether. A median over samples taken
	// across more than a stall's duration is immune to it; a mean or an
	// EWMA (TCP's srtt) is moved by it, by MaxStall/n per stalled sample
	// of a mean over n and MaxStall/8 per recent sample of srtt.
	// [hub lateness 4.3 ms, a 3.8 ms stall in CI]
	MaxStall = 5 * time.Millisecond
)

// MeanTolerance bounds how far above the injected RTT the mean of n kernel
// RTT samples across a QuickACK topology may lie: MedianBias for every
// sample plus MaxStall for up to one sample in five (measured: fewer than
// one in a hundred samples is late by more than MedianBias at load 9, but a
// soak with a compile beside the suite's fleet tests moved a mean of 48 by
// 1.23 ms, some 7 stalled samples). A mean is never below the injected RTT.
func MeanTolerance(n int) time.Duration {
	if n <= 0 {
		return MaxStall + MedianBias
	}
	stalled := (n + 4) / 5
	return MedianBias + time.Duration(int64(MaxStall)*int64(stalled)/int64(n))
}

// SRTTTolerance bounds how far TCP's smoothed RTT of a connection across a
// QuickACK topology may lie above the injected RTT: MedianBias, plus
// MaxStall/8 for each of the last two samples (the EWMA weighs the newest
// sample 1/8, the one before 7/64).
const SRTTTolerance = MedianBias + MaxStall/8 + MaxStall*7/64
