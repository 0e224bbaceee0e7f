package fsm

import (
	"slices"
)

// Replicated ("quorum") queues keep their configuration here, in the metadata Raft log, as
// Kafka keeps a partition's under KRaft: the replica set, the leader (Queue.Owner), the leader
// epoch and the in-sync set. The messages themselves travel leader → followers over the data
// links (package replica, broker/quorum*.go); see docs/replication.md for the protocol and its
// invariants. The FSM enforces the parts of those invariants that are about configuration:
//
//   - the leader is always a member of the in-sync set, and the in-sync set a subset of the
//     replicas;
//   - only an in-sync replica can become leader, and every leader change bumps the epoch;
//   - the in-sync set is changed only by the current leader of the current epoch (SetInSync
//     with a stale epoch or leader is refused), or by NodeFailed removing a dead node.
//
// Slices of a Queue are never modified in place once stored (they are replaced), so copies
// handed out by Queue/Queues and events may share them.

// Queue types (x-queue-type).
const (
	QueueTypeClassic = "classic"
	QueueTypeQuorum  = "quorum"
)

// DefaultReplicas is the replica count of a replicated queue declared without
// x-quorum-initial-group-size (fewer when the cluster has fewer live nodes).
const DefaultReplicas = 3

// Majority is how many replicas of n must hold a message before it is confirmed.
func Majority(n int) int { return n/2 + 1 }

// SetInSync replaces a replicated queue's in-sync set. Only the leader of the current epoch
// proposes it: to add a follower that caught up, or drop one that fell behind or went away.
type SetInSync struct {
	Vhost, Name string
	Leader      string
	Epoch       uint64
	InSync      []string
}

// ElectLeader makes Leader, an in-sync replica, lead the queue in a new epoch (Epoch is the
// epoch the proposer saw; a stale one is refused). A leader that restarted proposes it for
// itself, so it never numbers messages again within an epoch it may have used before.
type ElectLeader struct {
	Vhost, Name string
	Leader      string
	Epoch       uint64
}

// AddReplica gives a replicated queue one more replica (out of sync: its leader fills it), to
// bring a queue that lost one back to its size once a node is there to take it.
type AddReplica struct {
	Vhost, Name string
	Node        string
}

// validateTypedProperties refuses the declare properties a replicated queue cannot have, with
// RabbitMQ 3.10's texts (DecodeQueueArgs has checked its arguments).
func validateTypedProperties(c DeclareQueue, typ string) *Error {
	if typ != QueueTypeQuorum {
		return nil
	}
	what := resourceName("queue", c.Name, c.Vhost)
	switch {
	case c.AutoDelete:
		return refuse(CodePreconditionFailed, "invalid property 'auto-delete' for %s", what)
	case c.Exclusive:
		return refuse(CodePreconditionFailed, "invalid property 'exclusive-owner' for %s", what)
	case !c.Durable:
		return refuse(CodePreconditionFailed, "invalid property 'non-durable' for %s", what)
	}
	return nil
}

// compareQueueType refuses a redeclare that names another queue type (absent = classic).
func compareQueueType(what string, typ, curType string, args, curArgs map[string]any) *Error {
	if typ == curType {
		return nil
	}
	return compareArgKeys(what, []string{"x-queue-type"}, args, curArgs)
}

// quorumEquivalenceKeys are compared on a redeclare of a replicated queue, besides the classic ones.
var quorumEquivalenceKeys = []string{"x-quorum-initial-group-size", "x-delivery-limit"}

// initialReplicas is the replica set a new replicated queue starts with: the proposer's
// choice, the leader first, without duplicates. Every replica is in sync (all are empty).
func initialReplicas(owner string, proposed []string) []string {
	out := []string{owner}
	for _, r := range proposed {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

func without(set []string, node string) []string {
	out := make([]string, 0, len(set))
	for _, s := range set {
		if s != node {
			out = append(out, s)
		}
	}
	return out
}

func replicasChanged(ctx *applyCtx, q *Queue, from string) {
	ctx.events = append(ctx.events, Event{Kind: QueueReplicasChanged, Queue: *q, From: from})
}

// replicatedQueue finds a replicated queue for a command that changes its configuration.
func (f *FSM) replicatedQueue(vhost, name string) (*Queue, *Error) {
	vh := f.vhosts[vhost]
	if vh == nil {
		return nil, NoVhost(vhost)
	}
	q := vh.queues[name]
	switch {
	case q == nil:
		return nil, NoQueue(vhost, name)
	case q.Type != QueueTypeQuorum:
		return nil, refuse(CodePreconditionFailed, "queue '%s' in vhost '%s' is not replicated", name, vhost)
	}
	return q, nil
}

func (f *FSM) setInSync(ctx *applyCtx, c SetInSync) *Error {
	q, refusal := f.replicatedQueue(c.Vhost, c.Name)
	if refusal != nil {
		return refusal
	}
	switch {
	case q.Epoch != c.Epoch || q.Owner != c.Leader:
		return refuse(CodePreconditionFailed, "stale leader epoch %d of %s for queue '%s' in vhost '%s' (now %d of %s)",
			c.Epoch, c.Leader, c.Name, c.Vhost, q.Epoch, q.Owner)
	case !slices.Contains(c.InSync, c.Leader):
		return refuse(CodePreconditionFailed, "the in-sync set of queue '%s' must contain its leader", c.Name)
	}
	var set []string
	for _, r := range q.Replicas { // keep replica order, drop strangers and duplicates
		if slices.Contains(c.InSync, r) {
			set = append(set, r)
		}
	}
	if slices.Equal(set, q.InSync) {
		return nil
	}
	q.InSync = set
	replicasChanged(ctx, q, q.Owner)
	return nil
}

func (f *FSM) electLeader(ctx *applyCtx, c ElectLeader) *Error {
	q, refusal := f.replicatedQueue(c.Vhost, c.Name)
	if refusal != nil {
		return refusal
	}
	switch {
	case q.Epoch != c.Epoch:
		return refuse(CodePreconditionFailed, "stale leader epoch %d for queue '%s' in vhost '%s' (now %d)", c.Epoch, c.Name, c.Vhost, q.Epoch)
	case !slices.Contains(q.InSync, c.Leader):
		return refuse(CodePreconditionFailed, "node '%s' is not an in-sync replica of queue '%s' in vhost '%s'", c.Leader, c.Name, c.Vhost)
	}
	from := q.Owner
	q.Owner = c.Leader
	q.Epoch++
	replicasChanged(ctx, q, from)
	return nil
}

func (f *FSM) addReplica(ctx *applyCtx, c AddReplica) *Error {
	q, refusal := f.replicatedQueue(c.Vhost, c.Name)
	if refusal != nil {
		return refusal
	}
	switch {
	case c.Node == "" || slices.Contains(q.Replicas, c.Node) || slices.Contains(q.Departed, c.Node):
		return nil
	}
	q.Replicas = append(slices.Clone(q.Replicas), c.Node)
	replicasChanged(ctx, q, q.Owner)
	return nil
}

// nodeReturned: a node that starts again may be given replicas again.
func (f *FSM) nodeReturned(node string) {
	for _, vname := range f.vhostNamesLocked() {
		for _, q := range f.vhosts[vname].queues {
			if slices.Contains(q.Departed, node) {
				q.Departed = without(q.Departed, node)
			}
		}
	}
}

// failoverReplicated applies NodeFailed to replicated queues (see NodeFailed).
func (f *FSM) failoverReplicated(ctx *applyCtx, c NodeFailed) {
	choice := func(list []QueueRef, vhost, name string) string {
		for _, r := range list {
			if r.Vhost == vhost && r.Name == name {
				return r.Owner
			}
		}
		return ""
	}
	for _, vname := range f.vhostNamesLocked() {
		vh := f.vhosts[vname]
		for _, name := range sortedKeys(vh.queues) {
			q := vh.queues[name]
			if q.Type != QueueTypeQuorum || !slices.Contains(q.Replicas, c.Node) {
				continue
			}
			from := q.Owner
			changed := false
			if q.Owner == c.Node {
				if next := choice(c.Rehome, vname, name); next != c.Node && slices.Contains(q.InSync, next) {
					q.Owner = next
					q.Epoch++
					changed = true
				}
			}
			if q.Owner != c.Node && slices.Contains(q.InSync, c.Node) {
				q.InSync = without(q.InSync, c.Node)
				changed = true
			}
			if c.Forget && q.Owner != c.Node {
				q.Departed = append(without(q.Departed, c.Node), c.Node)
				replicas := without(q.Replicas, c.Node)
				if r := choice(c.Repair, vname, name); r != "" && r != c.Node && !slices.Contains(replicas, r) {
					replicas = append(replicas, r)
				}
				q.Replicas = replicas
				changed = true
			}
			if changed {
				replicasChanged(ctx, q, from)
			}
		}
	}
}
