// Package modeltest has realistic inputs for tests and benchmarks of the
// placement logic: a published inter-region RTT matrix and helpers that
// build model inputs from it.
package modeltest

import (
	"time"

	"github.com/flowplace/flowplace/scheduler-plugin/model"
)

// AWSRegions are five AWS regions, one member cluster each.
var AWSRegions = []string{"us-east-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-northeast-1"}

// AWSRTTMs is the average inter-region RTT in milliseconds, from -> to, as
// published in "Latency Between AWS Global Regions" (EC2-to-EC2 pings), in
// the table reproduced at
// https://acomputerscientistlearnsaws.blogspot.com/2017/04/aws-regions.html
// (rows US East (N. Virginia), US West (Oregon), EU (Ireland), EU
// (Frankfurt), Asia Pacific (Tokyo)). The diagonal is an intra-region
// figure of 0.5 ms (cross-AZ pings are 0.25-3.4 ms per
// https://www.xkyle.com/Measuring-AWS-Region-and-AZ-Latency/).
var AWSRTTMs = [][]float64{
	// us-east-1 us-west-2 eu-west-1 eu-central-1 ap-northeast-1
	{0.5, 86.98, 80.55, 88.66, 145.3},
	{88.68, 0.5, 137, 159.5, 89.1},
	{80.52, 137, 0.5, 19.56, 212.4},
	{88.62, 159.5, 19.55, 0.5, 236.5},
	{145.3, 89.16, 212.4, 236.6, 0.5},
}

// Cluster names for the regions, "member-<region>".
func ClusterName(region string) string { return "member-" + region }

// AWSClusters returns ClusterInfo for the five regions (provider aws).
func AWSClusters() []model.ClusterInfo {
	out := make([]model.ClusterInfo, len(AWSRegions))
	for i, r := range AWSRegions {
		out[i] = model.ClusterInfo{Name: ClusterName(r), Provider: "aws", Region: r}
	}
	return out
}

// LatencyRows turns a ms matrix over names into ClusterLatency rows valid
// until validUntil, with p90 = 1.1 x p50, p99 = 1.3 x p50, min = 0.95 x p50
// (a typical WAN shape) and 1000 samples per pair.
func LatencyRows(names []string, ms [][]float64, validUntil time.Time) []model.LatencyRow {
	rows := make([]model.LatencyRow, len(names))
	for i, src := range names {
		rows[i] = model.LatencyRow{Source: src, ValidUntil: validUntil}
		for j, dst := range names {
			if ms[i][j] < 0 {
				continue // unmeasured pair
			}
			p50 := int64(ms[i][j] * 1000)
			rows[i].Peers = append(rows[i].Peers, model.PairLatency{
				Cluster: dst, MinUs: p50 * 95 / 100, P50Us: p50, P90Us: p50 * 110 / 100, P99Us: p50 * 130 / 100, Samples: 1000,
			})
		}
	}
	return rows
}

// AWSLatency is LatencyRows for the AWS matrix.
func AWSLatency(validUntil time.Time) []model.LatencyRow {
	names := make([]string, len(AWSRegions))
	for i, r := range AWSRegions {
		names[i] = ClusterName(r)
	}
	return LatencyRows(names, AWSRTTMs, validUntil)
}

// Binding is a BindingInput for key with replicas per cluster name.
func Binding(k model.Key, replicas map[string]int32) model.BindingInput {
	b := model.BindingInput{Workload: k}
	for c, r := range replicas {
		b.Clusters = append(b.Clusters, model.ClusterReplicas{Name: c, Replicas: r})
	}
	return b
}

// Peer is a PeerInput to workload peer at rate bytes/s, observed in dst.
func Peer(peer model.Key, rate float64, from, dst string) model.PeerInput {
	return model.PeerInput{Workload: &peer, BytesPerSecond: rate, Pairs: []model.PairRate{{From: from, To: dst, BytesPerSecond: rate}}}
}
