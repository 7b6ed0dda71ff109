package otlpwire

import "testing"

type nopSink struct{ points int }

func (s *nopSink) Resource(a Attrs) error {
	return a.Each(func(_, _ []byte, _ Value) bool { return true })
}
func (s *nopSink) Metric(*Metric) bool { return true }
func (s *nopSink) NumberPoint(_ *Metric, p *NumberPoint) error {
	s.points++
	return p.Attrs.Each(func(_, _ []byte, _ Value) bool { return true })
}
func (s *nopSink) HistogramPoint(_ *Metric, p *HistogramPoint) error {
	s.points++
	return p.Attrs.Each(func(_, _ []byte, _ Value) bool { return true })
}
func (s *nopSink) ExpHistogramPoint(_ *Metric, p *ExpHistogramPoint) error {
	s.points++
	return p.Attrs.Each(func(_, _ []byte, _ Value) bool { return true })
}

// FuzzDecode: the decoder never panics, whatever the bytes. Seeds (valid
// requests of every kind) are in testdata/fuzz/FuzzDecode, copied from
// ../aggregate's FuzzIngest corpus.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Decoder
		_ = d.Decode(b, &nopSink{})
	})
}
