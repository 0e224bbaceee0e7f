// Package placement decides where queues and their replicas live: which node owns a new queue,
// where a dead or leaving node's queues go, which in-sync replica leads a replicated queue in
// its leader's place, which node takes a lost replica's place, and how `node rebalance` evens
// out owners and leaders. Every rule is a pure function of plain inputs (the live nodes and a
// description of the queues), with no I/O, so each is table-tested; the node gathers the inputs
// from the FSM and gossip and applies the answers through Raft commands.
package placement

import (
	"cmp"
	"slices"
)

// Queue is what the rules need to know of a queue.
type Queue struct {
	Vhost, Name string
	// Owner is the node serving the queue: a replicated queue's leader.
	Owner              string
	Durable, Exclusive bool
	// ConnNode is, for an exclusive queue, the node its declaring connection is on.
	ConnNode string

	// Replicated (quorum) queues only.
	Replicated bool
	Replicas   []string // every node holding a copy, the leader included
	InSync     []string // replicas known to hold every committed message
	Size       int      // how many replicas it should have
	Epoch      uint64   // the leader epoch seen: an election is refused once it changed
	// Departed are nodes that left or were forgotten: not given a replica again until they
	// start again (the FSM refuses to add one).
	Departed []string
}

// Move gives a queue a node: a new owner (or leader), or one more replica (Repair).
type Move struct {
	Vhost, Name string
	From        string // the queue's owner when the move was planned
	To          string
	Epoch       uint64 // the queue's leader epoch when the move was planned
}

func moveOf(q Queue, to string) Move {
	return Move{Vhost: q.Vhost, Name: q.Name, From: q.Owner, To: to, Epoch: q.Epoch}
}

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

// DeclareOwner picks the owner of a new queue placed by load (x-queue-leader-locator:
// balanced, RabbitMQ's "balanced"): the live node owning the fewest queues of any kind (ties:
// the smallest id); "" when no node is live.
func DeclareOwner(live []string, queues []Queue) string {
	return LeastLoaded(live, Owned(queues))
}

// Owned counts the queues each node owns (leads, for replicated queues).
func Owned(queues []Queue) map[string]int {
	owned := map[string]int{}
	for _, q := range queues {
		owned[q.Owner]++
	}
	return owned
}

// ReplicaLoad counts the replicas each node holds.
func ReplicaLoad(queues []Queue) map[string]int {
	load := map[string]int{}
	for _, q := range queues {
		for _, r := range q.Replicas {
			load[r]++
		}
	}
	return load
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

// classic reports whether a queue is one that moves between owners: neither exclusive (it goes
// with its connection) nor replicated (its leadership changes instead).
func classic(q Queue) bool { return !q.Exclusive && !q.Replicated }
