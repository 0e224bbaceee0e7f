package placement

import "slices"

// FailoverPlan is what becomes of a dead node's queues (fsm.NodeFailed).
type FailoverPlan struct {
	// Rehome gives classic queues a new owner (they start empty there) and replicated queues
	// the dead node led a new leader.
	Rehome []Move
	// Repair gives every replica set the node was in a node in its place (forget only).
	Repair []Move
}

// Failover plans the hand-over of a dead node's queues to the live nodes (the dead node is not
// one of them even if listed):
//   - a replicated queue it led gets as leader an in-sync replica on a live node (only those
//     hold every confirmed message), the one leading the fewest queues; none when no in-sync
//     replica is live, and the queue waits for the node;
//   - with forget, every replica set it was in gets, in its place, the live node holding the
//     fewest replicas that holds none of this queue (Replacement);
//   - every non-exclusive classic queue it owned that is not durable (with forget: every one)
//     goes to the live node owning the fewest queues. Durable ones otherwise stay: the node may
//     come back with their messages.
//
// Assigned queues count towards later choices, so a dead node's queues are spread. Exclusive
// queues go with their connections, so they are not placed.
func Failover(dead string, live []string, queues []Queue, forget bool) FailoverPlan {
	var plan FailoverPlan
	live = slices.DeleteFunc(slices.Clone(live), func(id string) bool { return id == dead })
	if len(live) == 0 {
		return plan
	}
	owned, replicaLoad := Owned(queues), ReplicaLoad(queues)
	for _, q := range queues {
		if !q.Replicated || !slices.Contains(q.Replicas, dead) {
			continue
		}
		if q.Owner == dead {
			if best := LeastLoaded(inSyncElsewhere(q, dead, live), owned); best != "" {
				owned[best]++
				plan.Rehome = append(plan.Rehome, moveOf(q, best))
			}
		}
		if forget {
			if r := Replacement(q.Replicas, live, replicaLoad); r != "" {
				replicaLoad[r]++
				plan.Repair = append(plan.Repair, moveOf(q, r))
			}
		}
	}
	for _, q := range queues {
		if q.Owner != dead || q.Durable && !forget || !classic(q) {
			continue
		}
		best := LeastLoaded(live, owned)
		owned[best]++
		plan.Rehome = append(plan.Rehome, moveOf(q, best))
	}
	return plan
}

// NeedsFailover reports whether a dead node still has queues a failover would change: a
// non-durable or exclusive queue it owns, an exclusive queue of one of its connections (deleted
// with them), or a replicated queue whose in-sync set still lists it (it is dropped from it, or,
// as leader, replaced by a live in-sync replica when there is one).
func NeedsFailover(dead string, live []string, queues []Queue) bool {
	for _, q := range queues {
		if q.Replicated {
			if slices.Contains(q.InSync, dead) && (q.Owner != dead || len(inSyncElsewhere(q, dead, live)) > 0) {
				return true
			}
			continue
		}
		if q.Owner == dead && (!q.Durable || q.Exclusive) || q.Exclusive && q.ConnNode == dead {
			return true
		}
	}
	return false
}

// inSyncElsewhere lists the in-sync replicas of q on live nodes other than node.
func inSyncElsewhere(q Queue, node string, live []string) []string {
	var out []string
	for _, r := range q.InSync {
		if r != node && slices.Contains(live, r) {
			out = append(out, r)
		}
	}
	return out
}

// Repair gives every replicated queue with fewer replicas than its Size one more: the live node
// holding the fewest replicas among those holding none of the queue's. One per queue per call,
// so a node that joins is filled queue by queue; queues with no such node are left out.
func Repair(live []string, queues []Queue) []Move {
	load := ReplicaLoad(queues)
	var out []Move
	for _, q := range queues {
		if !q.Replicated || len(q.Replicas) >= q.Size {
			continue
		}
		taken := append(slices.Clone(q.Replicas), q.Departed...)
		if add := Replacement(taken, live, load); add != "" {
			load[add]++
			out = append(out, moveOf(q, add))
		}
	}
	return out
}

// HoldsReplicas reports whether node is in the replica set of any replicated queue: a node
// that leaves must then hand them over (Failover with forget) though it owns nothing to move.
func HoldsReplicas(node string, queues []Queue) bool {
	return slices.ContainsFunc(queues, func(q Queue) bool {
		return q.Replicated && slices.Contains(q.Replicas, node)
	})
}
