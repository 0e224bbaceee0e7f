package placement

import (
	"cmp"
	"slices"
)

// Leave plans a live node's graceful departure: each of its classic, non-exclusive queues goes
// (with its messages) to the target owning the fewest queues, counting the ones already given
// (ties: the smallest id). Exclusive queues go with their connections and replicated queues
// hand their leadership over instead (Failover), so neither is moved. Nil without targets.
func Leave(self string, targets []string, queues []Queue) []Move {
	targets = slices.DeleteFunc(slices.Clone(targets), func(id string) bool { return id == self })
	owned := Owned(queues)
	var out []Move
	for _, q := range queues {
		if q.Owner != self || !classic(q) {
			continue
		}
		best := LeastLoaded(targets, owned)
		if best == "" {
			return nil
		}
		owned[best]++
		out = append(out, moveOf(q, best))
	}
	return out
}

// Rebalance evens out the classic, non-exclusive queues of the live nodes (`node rebalance`):
// queues above a node's share, ceil(total/len(live)), are taken off it and given first to nodes
// below floor(total/len(live)), then to nodes below the ceiling; what is left stays where it
// was. Queues of dead nodes stay put. Queues are taken in vhost and name order and nodes in id
// order, so the plan is the same whichever node computes it. The moves are grouped by the node
// they leave (one fsm.MoveQueues each); nil with fewer than two live nodes.
func Rebalance(live []string, queues []Queue) map[string][]Move {
	live = sortedSet(live)
	if len(live) < 2 {
		return nil
	}
	owned := map[string][]Queue{}
	total := 0
	for _, q := range queues {
		if slices.Contains(live, q.Owner) && classic(q) {
			owned[q.Owner] = append(owned[q.Owner], q)
			total++
		}
	}
	low, high := share(total, len(live))
	var spare []Queue // queues taken off loaded nodes, in a stable order
	for _, id := range live {
		qs := owned[id]
		slices.SortFunc(qs, byName)
		for len(qs) > high {
			spare = append(spare, qs[len(qs)-1])
			qs = qs[:len(qs)-1]
		}
		owned[id] = qs
	}
	plans := map[string][]Move{}
	for _, limit := range []int{low, high} {
		for _, id := range live {
			for len(owned[id]) < limit && len(spare) > 0 {
				q := spare[0]
				spare = spare[1:]
				plans[q.Owner] = append(plans[q.Owner], moveOf(q, id))
				owned[id] = append(owned[id], q)
			}
		}
	}
	return plans
}

// Leaders spreads the leadership of replicated queues over the live nodes (`node rebalance`):
// a queue led by a node above the even share, ceil(total/len(live)), gets as leader an in-sync
// replica on a live node below floor(total/len(live)), or else below the ceiling, the one
// leading the fewest (ties: the first in the in-sync set). Its messages stay where they are, on
// every replica (fsm.ElectLeader, against the epoch seen). Queues led by dead nodes are left to
// Failover. Queues are taken in vhost and name order, so the plan is the same whichever node
// computes it; nil with fewer than two live nodes.
func Leaders(live []string, queues []Queue) []Move {
	live = sortedSet(live)
	if len(live) < 2 {
		return nil
	}
	led := map[string]int{}
	var replicated []Queue
	for _, q := range queues {
		if q.Replicated && slices.Contains(live, q.Owner) {
			replicated = append(replicated, q)
			led[q.Owner]++
		}
	}
	slices.SortFunc(replicated, byName)
	low, high := share(len(replicated), len(live))
	var out []Move
	for _, q := range replicated {
		if led[q.Owner] <= high {
			continue
		}
		best := ""
		for _, limit := range []int{low, high} {
			for _, r := range inSyncElsewhere(q, q.Owner, live) {
				if led[r] < limit && (best == "" || led[r] < led[best]) {
					best = r
				}
			}
			if best != "" {
				break
			}
		}
		if best == "" {
			continue
		}
		led[q.Owner]--
		led[best]++
		out = append(out, moveOf(q, best))
	}
	return out
}

// share is the even share of total queues over nodes: at least low, at most high each.
func share(total, nodes int) (low, high int) {
	return total / nodes, (total + nodes - 1) / nodes
}

func byName(a, b Queue) int {
	return cmp.Or(cmp.Compare(a.Vhost, b.Vhost), cmp.Compare(a.Name, b.Name))
}

// sortedSet returns ids sorted, without duplicates, leaving the caller's slice alone.
func sortedSet(ids []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(ids)))
}
