package routing

import (
	"slices"
	"testing"
	"time"
)

func ms(v float64) RTT {
	return RTT{Value: time.Duration(v * float64(time.Millisecond)), Source: Matrix}
}

func TestOrdererHysteresis(t *testing.T) {
	t0 := time.Unix(1000, 0)
	hold := 10 * time.Second
	type step struct {
		at   time.Duration
		rtt  map[string]RTT
		want []string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"first order is the ideal one", []step{
			{0, map[string]RTT{"a": ms(30), "b": ms(10), "c": {}}, []string{"b", "a", "c"}},
		}},
		{"noise within the margin never reorders", []step{
			{0, map[string]RTT{"a": ms(20), "b": ms(21)}, []string{"a", "b"}},
			{time.Minute, map[string]RTT{"a": ms(21.5), "b": ms(20.5)}, []string{"a", "b"}}, // 1 ms < max(1ms, 2.15ms)
		}},
		{"a real change waits for the hold, then switches", []step{
			{0, map[string]RTT{"a": ms(20), "b": ms(40)}, []string{"a", "b"}},
			{time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"a", "b"}},
			{9 * time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"a", "b"}},
			{11 * time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"b", "a"}},
		}},
		{"a change that does not hold is forgotten", []step{
			{0, map[string]RTT{"a": ms(20), "b": ms(40)}, []string{"a", "b"}},
			{time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"a", "b"}},
			{5 * time.Second, map[string]RTT{"a": ms(20), "b": ms(40)}, []string{"a", "b"}},
			{12 * time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"a", "b"}}, // timer restarted at 12 s
			{21 * time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"a", "b"}},
			{23 * time.Second, map[string]RTT{"a": ms(60), "b": ms(40)}, []string{"b", "a"}},
		}},
		{"a new cluster takes its place at once", []step{
			{0, map[string]RTT{"a": ms(20), "c": ms(60)}, []string{"a", "c"}},
			{time.Second, map[string]RTT{"a": ms(20), "b": ms(40), "c": ms(60)}, []string{"a", "b", "c"}},
		}},
		{"a cluster that leaves is dropped at once", []step{
			{0, map[string]RTT{"a": ms(20), "b": ms(40)}, []string{"a", "b"}},
			{time.Second, map[string]RTT{"b": ms(40)}, []string{"b"}},
		}},
		{"a measured cluster beats an unknown one after the hold", []step{
			{0, map[string]RTT{"a": {}, "b": {}}, []string{"a", "b"}},
			{time.Second, map[string]RTT{"a": {}, "b": ms(40)}, []string{"a", "b"}},
			{12 * time.Second, map[string]RTT{"a": {}, "b": ms(40)}, []string{"b", "a"}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var o orderer
			for i, s := range c.steps {
				var clusters []string
				for cl := range s.rtt {
					clusters = append(clusters, cl)
				}
				slices.Sort(clusters)
				if got := o.next(clusters, s.rtt, t0.Add(s.at), hold); !slices.Equal(got, s.want) {
					t.Fatalf("step %d at %s: order %v, want %v", i, s.at, got, s.want)
				}
			}
		})
	}
}

func TestSignificantMargin(t *testing.T) {
	cases := []struct {
		a, b RTT
		want bool
	}{
		{ms(5), ms(4.1), false}, // 0.9 ms < 1 ms floor
		{ms(5), ms(3.9), true},
		{ms(100), ms(91), false}, // 9 ms < 10%
		{ms(100), ms(89), true},
		{RTT{}, ms(100), true},
		{ms(1), RTT{}, false},
		{RTT{}, RTT{}, false},
	}
	for _, c := range cases {
		if got := significant(c.a, c.b); got != c.want {
			t.Errorf("significant(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
