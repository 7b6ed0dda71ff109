// Package lab builds flowplace's one-machine multi-cluster world: clusters
// named after cloud regions, far apart by published inter-region RTTs, a demo
// application with a known call graph, and the flowplace loop running on it.
package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"time"

	"sigs.k8s.io/yaml"
)

// MaxClusters is the most clusters a lab runs: each cluster is a network
// namespace with its own agent and demo processes on a 2-core machine.
const MaxClusters = 6

// Profile is the lab's world: clusters and the round-trip time between each
// pair. The hub injects RTT x Scale between them.
type Profile struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Source     string           `json:"source,omitempty"` // where the numbers come from
	Scale      float64          `json:"scale,omitempty"`  // 0 means 1
	Clusters   []ProfileCluster `json:"clusters"`
	RTT        []ProfileRTT     `json:"rtt"`
}

type ProfileCluster struct {
	Name   string `json:"name"`
	Region string `json:"region,omitempty"`
}

type ProfileRTT struct {
	A        string  `json:"a"`
	B        string  `json:"b"`
	Millisec float64 `json:"ms"`
}

const (
	ProfileAPIVersion = "flowplace.io/v1alpha1"
	ProfileKind       = "LabProfile"
)

// defaultRegions are in the order the default profile takes them.
var defaultRegions = []string{"us-east-1", "eu-west-1", "ap-northeast-1", "us-west-2", "eu-central-1", "ap-southeast-1"}

// publishedRTT are average inter-region round-trip times in milliseconds
// between AWS regions, from the table "Latency Between AWS Global Regions"
// (EC2-to-EC2 pings, 2017), as reproduced in "AWS Regions",
// acomputerscientistlearnsaws.blogspot.com/2017/04/aws-regions.html.
// Where the two directions differ the mean is used.
var publishedRTT = map[[2]string]float64{
	{"us-east-1", "us-west-2"}:           87.8,
	{"us-east-1", "eu-west-1"}:           80.5,
	{"us-east-1", "eu-central-1"}:        88.6,
	{"us-east-1", "ap-northeast-1"}:      145.3,
	{"us-east-1", "ap-southeast-1"}:      216.7,
	{"us-west-2", "eu-west-1"}:           137.0,
	{"us-west-2", "eu-central-1"}:        159.5,
	{"us-west-2", "ap-northeast-1"}:      89.1,
	{"us-west-2", "ap-southeast-1"}:      161.4,
	{"eu-west-1", "eu-central-1"}:        19.6,
	{"eu-west-1", "ap-northeast-1"}:      212.4,
	{"eu-west-1", "ap-southeast-1"}:      238.6,
	{"eu-central-1", "ap-northeast-1"}:   236.5,
	{"eu-central-1", "ap-southeast-1"}:   325.9,
	{"ap-northeast-1", "ap-southeast-1"}: 73.8,
}

// DefaultProfile returns n clusters named after AWS regions with their
// published RTTs, scaled by scale (the lab runs faster with smaller delays;
// relative distances are what placement uses).
func DefaultProfile(n int, scale float64) (*Profile, error) {
	if n < 2 || n > MaxClusters {
		return nil, fmt.Errorf("clusters: %d, want 2 to %d", n, MaxClusters)
	}
	if scale <= 0 || scale > 1 {
		return nil, fmt.Errorf("scale: %g, want (0, 1]", scale)
	}
	p := &Profile{APIVersion: ProfileAPIVersion, Kind: ProfileKind, Scale: scale,
		Source: "AWS inter-region average RTT (Latency Between AWS Global Regions, 2017)"}
	regions := defaultRegions[:n]
	for _, r := range regions {
		p.Clusters = append(p.Clusters, ProfileCluster{Name: r, Region: r})
	}
	for i, a := range regions {
		for _, b := range regions[i+1:] {
			ms, ok := publishedRTT[[2]string{a, b}]
			if !ok {
				ms = publishedRTT[[2]string{b, a}]
			}
			p.RTT = append(p.RTT, ProfileRTT{A: a, B: b, Millisec: ms})
		}
	}
	return p, p.Validate()
}

// MaxProfileBytes bounds a profile file. A six-cluster profile is under 2 KiB;
// the bound keeps a wrong file (a log, a disk image, /dev/zero) from being
// read and parsed into gigabytes before anything is checked.
const MaxProfileBytes = 64 << 10

// LoadProfile reads and validates a profile file. It returns when ctx is
// done even if reading blocks (a FIFO without a writer, a hung network
// mount); the abandoned read then ends with the process.
func LoadProfile(ctx context.Context, path string) (*Profile, error) {
	type result struct {
		p   *Profile
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := loadProfile(path)
		done <- result{p, err}
	}()
	select {
	case r := <-done:
		return r.p, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("profile %s: %w", path, context.Cause(ctx))
	}
}

func loadProfile(path string) (*Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	defer f.Close()
	tooBig := func(size string) error {
		return fmt.Errorf("profile %s: %s is over the %d KiB limit for a LabProfile (is it the right file?)", path, size, MaxProfileBytes>>10)
	}
	// A regular file is refused by its size alone; anything else (a pipe, a
	// device) by reading one byte past the limit.
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > MaxProfileBytes {
		return nil, tooBig(humanBytes(st.Size()))
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxProfileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	if len(b) > MaxProfileBytes {
		return nil, tooBig("its content")
	}
	var p Profile
	if err := yaml.UnmarshalStrict(b, &p); err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	if p.Scale == 0 {
		p.Scale = 1
	}
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	return &p, nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%d bytes (%.1f GiB)", n, float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%d bytes (%.1f MiB)", n, float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d bytes", n)
	}
}

var clusterName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$`)

// Validate checks the profile; errors name the field.
func (p *Profile) Validate() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if p.APIVersion != ProfileAPIVersion {
		fail("apiVersion", "%q, want %q", p.APIVersion, ProfileAPIVersion)
	}
	if p.Kind != ProfileKind {
		fail("kind", "%q, want %q", p.Kind, ProfileKind)
	}
	if p.Scale <= 0 || p.Scale > 1 {
		fail("scale", "%g, want (0, 1]", p.Scale)
	}
	if n := len(p.Clusters); n < 2 || n > MaxClusters {
		fail("clusters", "%d clusters, want 2 to %d", n, MaxClusters)
	}
	names := map[string]bool{}
	for i, c := range p.Clusters {
		if !clusterName.MatchString(c.Name) {
			fail(fmt.Sprintf("clusters[%d].name", i), "%q: want a DNS label of at most 16 characters", c.Name)
		}
		if names[c.Name] {
			fail(fmt.Sprintf("clusters[%d].name", i), "duplicate %q", c.Name)
		}
		names[c.Name] = true
	}
	seen := map[[2]string]bool{}
	for i, r := range p.RTT {
		f := fmt.Sprintf("rtt[%d]", i)
		if !names[r.A] || !names[r.B] {
			fail(f, "%s-%s names a cluster not in clusters[]", r.A, r.B)
			continue
		}
		if r.A == r.B {
			fail(f, "a cluster's RTT to itself is not configurable")
		}
		if r.Millisec < 0 || r.Millisec > 1000 {
			fail(f+".ms", "%g, want 0 to 1000", r.Millisec)
		}
		k := pairKey(r.A, r.B)
		if seen[k] {
			fail(f, "duplicate pair %s-%s", r.A, r.B)
		}
		seen[k] = true
	}
	for i, a := range p.Clusters {
		for _, b := range p.Clusters[i+1:] {
			if !seen[pairKey(a.Name, b.Name)] && names[a.Name] && names[b.Name] && a.Name != b.Name {
				fail("rtt", "missing pair %s-%s", a.Name, b.Name)
			}
		}
	}
	return errors.Join(errs...)
}

func pairKey(a, b string) [2]string {
	s := []string{a, b}
	slices.Sort(s)
	return [2]string{s[0], s[1]}
}

// ClusterNames returns the clusters in profile order.
func (p *Profile) ClusterNames() []string {
	out := make([]string, len(p.Clusters))
	for i, c := range p.Clusters {
		out[i] = c.Name
	}
	return out
}

// Injected returns the RTT the hub injects between a and b (scaled).
func (p *Profile) Injected(a, b string) time.Duration {
	if a == b {
		return 0
	}
	k := pairKey(a, b)
	for _, r := range p.RTT {
		if pairKey(r.A, r.B) == k {
			return time.Duration(r.Millisec * p.Scale * float64(time.Millisecond))
		}
	}
	return 0
}
