package lab

import (
	"strings"
	"testing"

	"github.com/flowplace/flowplace/internal/lab/demo"
)

func TestOrderPutsCallersFirst(t *testing.T) {
	got := strings.Join(Order(demo.Shop()), ",")
	if got != "frontend,catalog,cart,recommend,checkout,pricing,inventory" {
		t.Errorf("order %s", got)
	}
}

func TestKarmadaDefaultSpreadsByAvailabilityThenName(t *testing.T) {
	clusters := []string{"us-east-1", "eu-west-1", "ap-northeast-1"}
	place, err := KarmadaDefault(demo.Shop(), clusters, Capacity{"us-east-1": 3, "eu-west-1": 3, "ap-northeast-1": 3})
	if err != nil {
		t.Fatal(err)
	}
	// Equal availability: name order (ap < eu < us); then the most free.
	want := map[string]string{"frontend": "ap-northeast-1", "catalog": "eu-west-1", "cart": "us-east-1",
		"recommend": "ap-northeast-1", "checkout": "eu-west-1", "pricing": "us-east-1", "inventory": "ap-northeast-1"}
	for s, c := range want {
		if place[s] != c {
			t.Errorf("%s placed in %s, want %s (%v)", s, place[s], c, place)
		}
	}
	if _, err := KarmadaDefault(demo.Shop(), clusters, Capacity{"us-east-1": 2, "eu-west-1": 2, "ap-northeast-1": 2}); err == nil {
		t.Error("7 services fit in 6 slots")
	}
}

func TestPlaceInOrderFollowsScores(t *testing.T) {
	clusters := []string{"us-east-1", "eu-west-1"}
	place, err := PlaceInOrder(demo.Shop(), clusters, Capacity{"us-east-1": 4, "eu-west-1": 4}, func(string, []string, map[string]string) map[string]int64 {
		return map[string]int64{"us-east-1": 100, "eu-west-1": 10}
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range place {
		if c == "us-east-1" {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d services in the preferred cluster, want its capacity 4: %v", n, place)
	}
}
