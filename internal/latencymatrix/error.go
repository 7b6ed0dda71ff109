package latencymatrix

import flowplacev1alpha1 "github.com/flowplace/flowplace/api/v1alpha1"

// An estimated entry travels as samples 0 with its expected error; a
// measured one has samples > 0 and error 0, as the API validates.
func expectedError(p flowplacev1alpha1.PeerLatency) int64 {
	if p.Estimated {
		return p.ExpectedErrorMicroseconds
	}
	return 0
}

func setExpectedError(p *flowplacev1alpha1.PeerLatency, us int64) {
	if p.SampleCount == 0 {
		p.Estimated = true
		p.ExpectedErrorMicroseconds = us
	}
}
