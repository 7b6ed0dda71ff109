// Package latencymatrix is the wire form of the fleet's latency matrix that
// the estimator keeps in a ConfigMap for the agents' routing. Karmada
// propagates an object's data but strips its status, so the ClusterLatency
// objects (whose rows are status) would reach the members empty; the
// ConfigMap carries the same rows, compactly (clusters named once, then
// referred to by index): about 21 bytes a pair, so a full mesh of 200
// clusters fits a ConfigMap's 1 MiB (TestFullMeshOf200Fits).
package latencymatrix

import (
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"
)

// DataKey is the ConfigMap key that holds the matrix.
const DataKey = "matrix.json"

// MaxBytes keeps the encoded matrix under a ConfigMap's 1 MiB, with room
// for the object's metadata.
const MaxBytes = 1000 * 1024

const version = 1

// wire names each cluster once; rows and peers refer to them by index.
type wire struct {
	Version  int      `json:"version"`
	Clusters []string `json:"clusters"`
	Rows     []row    `json:"rows"`
}

type row struct {
	Cluster    int         `json:"cluster"`
	ValidUntil metav1.Time `json:"validUntil"`
	// Peers: [cluster index, p50 µs, samples, expected error µs]; samples 0
	// is an estimate.
	Peers [][4]int64 `json:"peers"`
}

// Encode writes the rows of the ClusterLatency objects, one per source
// cluster (named by the object).
func Encode(rows []flowplacev1alpha1.ClusterLatency) ([]byte, error) {
	w := wire{Version: version}
	index := map[string]int{}
	idx := func(name string) int {
		i, ok := index[name]
		if !ok {
			i = len(w.Clusters)
			index[name] = i
			w.Clusters = append(w.Clusters, name)
		}
		return i
	}
	for _, cl := range rows {
		r := row{Cluster: idx(cl.Name), ValidUntil: cl.Status.ValidUntil}
		for _, p := range cl.Status.Peers {
			r.Peers = append(r.Peers, [4]int64{int64(idx(p.Cluster)), p.P50Microseconds, p.SampleCount, expectedError(p)})
		}
		w.Rows = append(w.Rows, r)
	}
	b, err := json.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("encode latency matrix: %w", err)
	}
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("latency matrix of %d clusters is %d bytes, more than a ConfigMap holds (%d)", len(rows), len(b), MaxBytes)
	}
	return b, nil
}

// Decode reads a matrix into ClusterLatency objects by source cluster
// (name and status only). Bad input is an error and yields nothing.
func Decode(b []byte) (map[string]*flowplacev1alpha1.ClusterLatency, error) {
	// Peers as slices, so a peer of the wrong length is refused rather
	// than zero-filled.
	var w struct {
		Version  int      `json:"version"`
		Clusters []string `json:"clusters"`
		Rows     []struct {
			Cluster    int         `json:"cluster"`
			ValidUntil metav1.Time `json:"validUntil"`
			Peers      [][]int64   `json:"peers"`
		} `json:"rows"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("decode latency matrix: %w", err)
	}
	if w.Version != version {
		return nil, fmt.Errorf("decode latency matrix: version %d, this agent reads %d", w.Version, version)
	}
	name := func(i int64) (string, error) {
		if i < 0 || i >= int64(len(w.Clusters)) || w.Clusters[i] == "" {
			return "", fmt.Errorf("decode latency matrix: cluster index %d of %d", i, len(w.Clusters))
		}
		return w.Clusters[i], nil
	}
	out := map[string]*flowplacev1alpha1.ClusterLatency{}
	for _, r := range w.Rows {
		src, err := name(int64(r.Cluster))
		if err != nil {
			return nil, err
		}
		cl := &flowplacev1alpha1.ClusterLatency{ObjectMeta: metav1.ObjectMeta{Name: src}}
		cl.Status.ValidUntil = r.ValidUntil
		for _, p := range r.Peers {
			if len(p) != 4 {
				return nil, fmt.Errorf("decode latency matrix: row %s: a peer of %d fields, want 4", src, len(p))
			}
			dst, err := name(p[0])
			if err != nil {
				return nil, err
			}
			if p[1] < 0 || p[2] < 0 || p[3] < 0 {
				return nil, fmt.Errorf("decode latency matrix: row %s: negative value in peer %s %v", src, dst, p[1:])
			}
			pl := flowplacev1alpha1.PeerLatency{Cluster: dst, P50Microseconds: p[1], SampleCount: p[2]}
			setExpectedError(&pl, p[3])
			cl.Status.Peers = append(cl.Status.Peers, pl)
		}
		out[src] = cl
	}
	return out, nil
}

// Fresh reports whether a row may still be used at now.
func Fresh(cl *flowplacev1alpha1.ClusterLatency, now time.Time) bool {
	return cl != nil && now.Before(cl.Status.ValidUntil.Time)
}
