package main

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/flowplace/flowplace/scheduler-plugin/config"
	"github.com/flowplace/flowplace/scheduler-plugin/model/modeltest"
)

// cloudRegion is a region of a public cloud, located at its metro area.
type cloudRegion struct {
	provider, name string
	lat, lon       float64
}

// regionPool: regions of three clouds, at the metro areas the providers
// publish for them (AWS "Regions and Availability Zones", Google Cloud
// "Cloud locations", Azure "Azure geographies"), rounded to 0.1 degree.
var regionPool = []cloudRegion{
	{"aws", "us-east-1", 38.9, -77.4},
	{"aws", "us-east-2", 40.0, -83.0},
	{"aws", "us-west-1", 37.4, -121.9},
	{"aws", "us-west-2", 45.8, -119.7},
	{"aws", "ca-central-1", 45.5, -73.6},
	{"aws", "sa-east-1", -23.5, -46.6},
	{"aws", "eu-west-1", 53.3, -6.3},
	{"aws", "eu-west-2", 51.5, -0.1},
	{"aws", "eu-central-1", 50.1, 8.7},
	{"aws", "eu-north-1", 59.3, 18.1},
	{"aws", "ap-northeast-1", 35.7, 139.7},
	{"aws", "ap-southeast-1", 1.4, 103.8},
	{"aws", "ap-southeast-2", -33.9, 151.2},
	{"aws", "ap-south-1", 19.1, 72.9},
	{"gcp", "us-central1", 41.3, -95.9},
	{"gcp", "us-east4", 39.0, -77.5},
	{"gcp", "us-west1", 45.6, -121.2},
	{"gcp", "europe-west1", 50.4, 3.8},
	{"gcp", "europe-west4", 53.4, 6.8},
	{"gcp", "asia-east1", 24.1, 120.5},
	{"gcp", "asia-northeast1", 35.7, 139.7},
	{"gcp", "australia-southeast1", -33.9, 151.2},
	{"gcp", "southamerica-east1", -23.5, -46.6},
	{"azure", "eastus", 37.4, -79.8},
	{"azure", "westus2", 47.2, -119.9},
	{"azure", "northeurope", 53.3, -6.3},
	{"azure", "westeurope", 52.4, 4.9},
	{"azure", "southeastasia", 1.4, 103.8},
	{"azure", "japaneast", 35.7, 139.7},
	{"azure", "australiaeast", -33.9, 151.2},
	{"azure", "centralindia", 18.5, 73.9},
}

// awsCoordinates locate the five regions of modeltest.AWSRTTMs.
var awsCoordinates = map[string][2]float64{
	"us-east-1": {38.9, -77.4}, "us-west-2": {45.8, -119.7}, "eu-west-1": {53.3, -6.3},
	"eu-central-1": {50.1, 8.7}, "ap-northeast-1": {35.7, 139.7},
}

// greatCircleKm is the distance between two points on the Earth.
func greatCircleKm(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}

// rttModel is RTT = inflation x the great-circle round trip in fibre
// (light in fibre: 1 ms of round trip per 100 km), with the inflation the
// median over the published average EC2 inter-region pings
// (modeltest.AWSRTTMs, "Latency Between AWS Global Regions"): real paths
// are longer than great circles, by a factor the median summarises and
// minRatio..maxRatio bound. Azure's published statistics (Azure network
// round-trip latency statistics, October 2019: 5-72 ms within North
// America, 3-28 ms within Europe, 4-134 ms within Asia) are the check that
// the same model fits a second cloud: printed by the benchmark.
type rttModel struct {
	inflation, minRatio, maxRatio float64
}

func fitRTTModel() rttModel {
	var ratios []float64
	for i, a := range modeltest.AWSRegions {
		for j, b := range modeltest.AWSRegions {
			if i >= j {
				continue
			}
			ca, cb := awsCoordinates[a], awsCoordinates[b]
			fibre := greatCircleKm(ca[0], ca[1], cb[0], cb[1]) / 100
			ratios = append(ratios, (modeltest.AWSRTTMs[i][j]+modeltest.AWSRTTMs[j][i])/2/fibre)
		}
	}
	slices.Sort(ratios)
	return rttModel{inflation: ratios[len(ratios)/2], minRatio: ratios[0], maxRatio: ratios[len(ratios)-1]}
}

// azureCheck is the model's RTT range within each continent over the
// pool's Azure regions, to compare with Azure's published ranges.
func (m rttModel) azureCheck() string {
	groups := map[string][]string{"North America": {"eastus", "westus2"}, "Europe": {"northeurope", "westeurope"}, "Asia": {"southeastasia", "japaneast", "centralindia"}}
	var out []string
	for _, g := range []string{"North America", "Europe", "Asia"} {
		lo, hi := math.Inf(1), 0.0
		for _, a := range groups[g] {
			for _, b := range groups[g] {
				if a < b {
					v := m.between(poolRegion("azure", a), poolRegion("azure", b))
					lo, hi = math.Min(lo, v), math.Max(hi, v)
				}
			}
		}
		out = append(out, fmt.Sprintf("%s %.0f-%.0f ms", g, lo, hi))
	}
	return strings.Join(out, ", ")
}

func poolRegion(provider, name string) cloudRegion {
	for _, r := range regionPool {
		if r.provider == provider && r.name == name {
			return r
		}
	}
	panic("no region " + provider + "/" + name)
}

// intraRegionMs is the RTT inside one region (cross-AZ pings are 0.25-3.4
// ms; modeltest uses 0.5).
const intraRegionMs = 0.5

// crossProviderMs is added between providers: traffic leaves one backbone
// for the other at an exchange.
const crossProviderMs = 2

func (m rttModel) rtt(km float64) float64 { return max(m.inflation*km/100, 1) }

func (m rttModel) between(a, b cloudRegion) float64 {
	km := greatCircleKm(a.lat, a.lon, b.lat, b.lon)
	if km < 50 && a.provider == b.provider && a.name == b.name {
		return intraRegionMs
	}
	v := m.rtt(km)
	if km < 50 {
		// Two providers' regions in one metro: a few ms through an
		// exchange, not the model's intercept.
		v = intraRegionMs * 2
	}
	if a.provider != b.provider {
		v += crossProviderMs
	}
	return v
}

// Egress prices per GiB (list prices, 2024-2025): data sent between
// regions of one provider (AWS "Data transfer" between regions $0.02;
// Google Cloud inter-region within a continent $0.02; Azure "Bandwidth
// pricing" inter-region within a continent $0.02) and to the internet,
// i.e. to another provider (AWS first 10 TB $0.09, Google Cloud premium
// tier $0.12, Azure first 10 TB $0.087).
var internetEgress = map[string]float64{"aws": 0.09, "gcp": 0.12, "azure": 0.087}

const interRegionEgress = 0.02

// egressRules are the TrafficLocality egress rules for the pool's
// providers: first match wins, as the plugin reads them.
func egressRules() []config.EgressRule {
	same := true
	var rules []config.EgressRule
	for _, p := range []string{"aws", "azure", "gcp"} {
		rules = append(rules, config.EgressRule{FromProvider: p, ToProvider: p, SameRegion: &same, CostPerGiB: 0})
		rules = append(rules, config.EgressRule{FromProvider: p, ToProvider: p, CostPerGiB: interRegionEgress})
		rules = append(rules, config.EgressRule{FromProvider: p, CostPerGiB: internetEgress[p]})
	}
	return rules
}
