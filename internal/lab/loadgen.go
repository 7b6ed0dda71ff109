package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// LoadReport is what a load generator running as a pod prints when it is
// done (one JSON line): the lab reads it from the pod's log.
type LoadReport struct {
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	LatenciesUs []int64 `json:"latencies_us"`
	FirstError  string  `json:"first_error,omitempty"`
}

// RunLoadGenerator is the "lab-load" command: rate entry requests per second
// to target for d, then the report on out.
func RunLoadGenerator(ctx context.Context, target string, rate float64, d time.Duration, out io.Writer) error {
	if rate <= 0 || d <= 0 {
		return fmt.Errorf("lab-load: --rate %g and --duration %s must be positive", rate, d)
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	defer client.CloseIdleConnections()
	rep := LoadReport{LatenciesUs: []int64{}}
	ch := make(chan struct{}, 1)
	ch <- struct{}{}
	runLoad(ctx, client, target, d, rate, func(lat time.Duration, err error) {
		<-ch
		defer func() { ch <- struct{}{} }()
		rep.Requests++
		if err != nil {
			if rep.Errors == 0 {
				rep.FirstError = err.Error()
			}
			rep.Errors++
			return
		}
		rep.LatenciesUs = append(rep.LatenciesUs, lat.Microseconds())
	})
	return json.NewEncoder(out).Encode(rep)
}
