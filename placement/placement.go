// Package placement decides where queues and their replicas live: pure functions of the live
// nodes and how much each already holds, with no I/O, so every rule is table-tested and the
// node only wires them to the cluster's view.
package placement

import (
	"cmp"
	"slices"
)

// LeastLoaded returns the candidate holding the fewest (ties: the smallest id), "" for none.
func LeastLoaded(candidates []string, load map[string]int) string {
	best := ""
	for _, c := range candidates {
		if best == "" || load[c] < load[best] || load[c] == load[best] && c < best {
			best = c
		}
	}
	return best
}

// Replicas returns the replica set of a new replicated queue led by leader: the leader first,
// then the size-1 other live nodes holding the fewest replicas (ties: smallest id). Fewer when
// fewer nodes are live; size < 1 means 1.
func Replicas(leader string, live []string, load map[string]int, size int) []string {
	out := []string{leader}
	others := make([]string, 0, len(live))
	for _, id := range live {
		if id != leader && !slices.Contains(others, id) {
			others = append(others, id)
		}
	}
	slices.SortFunc(others, func(a, b string) int {
		if c := cmp.Compare(load[a], load[b]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, id := range others {
		if len(out) >= max(size, 1) {
			break
		}
		out = append(out, id)
	}
	return out
}

// Replacement picks the live node that takes a lost replica's place: not already a replica,
// holding the fewest replicas; "" when every live node already holds one.
func Replacement(replicas, live []string, load map[string]int) string {
	var candidates []string
	for _, id := range live {
		if !slices.Contains(replicas, id) {
			candidates = append(candidates, id)
		}
	}
	return LeastLoaded(candidates, load)
}
