package lab

import (
	"fmt"
	"slices"

	"github.com/flowplace/flowplace/internal/lab/demo"
)

// Order returns the services in the order a rollout creates them, callers
// before callees (breadth-first from the entry, so a service's callers'
// locations are known when it is scheduled), then any unreachable ones.
func Order(app *demo.App) []string {
	seen := map[string]bool{app.Entry: true}
	order := []string{app.Entry}
	for i := 0; i < len(order); i++ {
		s, _ := app.Service(order[i])
		for _, c := range s.Calls {
			if !seen[c.To] {
				seen[c.To] = true
				order = append(order, c.To)
			}
		}
	}
	for _, s := range app.Services {
		if !seen[s.Name] {
			order = append(order, s.Name)
		}
	}
	return order
}

// Capacity is how many demo services each cluster can run.
type Capacity map[string]int

// KarmadaDefault places each service (one replica, maxGroups: 1) the way
// Karmada's scheduler does when every score is equal: among clusters with
// room, the one with the most available replicas, then by name.
func KarmadaDefault(app *demo.App, clusters []string, capacity Capacity) (map[string]string, error) {
	return PlaceInOrder(app, clusters, capacity, func(string, []string, map[string]string) map[string]int64 { return nil })
}

// PlaceInOrder places services in Order, choosing for each the cluster
// Karmada's SelectClusters would pick from the scores score returns: highest
// score, then most available replicas, then name. score sees the candidate
// clusters with room; a nil map means all scores are equal.
func PlaceInOrder(app *demo.App, clusters []string, capacity Capacity, score func(service string, candidates []string, placed map[string]string) map[string]int64) (map[string]string, error) {
	free := map[string]int{}
	for _, c := range clusters {
		free[c] = capacity[c]
	}
	place := map[string]string{}
	for _, svc := range Order(app) {
		var cands []string
		for _, c := range clusters {
			if free[c] > 0 {
				cands = append(cands, c)
			}
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("lab: no cluster has room for %s", svc)
		}
		scores := score(svc, cands, place)
		slices.SortFunc(cands, func(a, b string) int {
			if scores[a] != scores[b] {
				if scores[a] > scores[b] {
					return -1
				}
				return 1
			}
			if free[a] != free[b] {
				return free[b] - free[a]
			}
			if a < b {
				return -1
			}
			return 1
		})
		place[svc] = cands[0]
		free[cands[0]]--
	}
	return place, nil
}
