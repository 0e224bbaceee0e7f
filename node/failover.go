package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/placement"
)

// watchFailures runs while the node is up: when gossip declares a node dead and this node
// leads Raft, the dead node's connections' exclusive queues are deleted and its non-durable
// queues re-homed, empty, to the live node owning the fewest queues (clients that re-declare
// and re-subscribe, as oslo.messaging does, are served again). Durable queues stay with the dead
// node: it may come back with their messages.
//
// Events reach every node, but only the leader acts, and a failure seen while this node was not
// yet leading (the dead node was the leader) would be missed: so every 250 ms the leader also
// looks for dead members whose queues still need re-homing (and every second for replica sets
// to repair). Every node breaks its data link to a node declared dead (Broker.PeerFailed).
func (n *Node) watchFailures(events <-chan cluster.MemberEvent, stop <-chan struct{}) {
	defer close(n.failDone)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastRepair := time.Now()
	for {
		select {
		case <-stop:
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			if ev.Kind != cluster.MemberFailed {
				continue
			}
			n.Broker.PeerFailed(ev.Member.ID)
			if n.Store.IsLeader() {
				n.rehome(ev.Member.ID)
			}
		case <-tick.C:
			if !n.Store.IsLeader() {
				continue
			}
			for _, m := range n.Members.Members() {
				if m.State == cluster.MemberDead && placement.NeedsFailover(m.ID, n.aliveMembers(), n.placementQueues()) {
					n.rehome(m.ID)
				}
			}
			if time.Since(lastRepair) >= time.Second {
				lastRepair = time.Now()
				n.repairReplicas()
			}
		}
	}
}

func (n *Node) rehome(dead string) {
	cmd := n.rehomePlan(dead, false)
	if _, err := n.Broker.Apply(cmd); err != nil {
		n.log.Warn("re-home queues of a dead node", "dead", dead, "err", err)
		return
	}
	n.log.Info("dead node's transient queues re-homed", "dead", dead, "queues", len(cmd.Rehome))
}

// rehomePlan hands a dead node's queues over (placement.Failover): with forget every queue it
// owned, otherwise its non-durable ones, and its replicated queues' leadership.
func (n *Node) rehomePlan(dead string, forget bool) fsm.NodeFailed {
	plan := placement.Failover(dead, n.aliveMembers(), n.placementQueues(), forget)
	return fsm.NodeFailed{Node: dead, Forget: forget, Rehome: refs(plan.Rehome), Repair: refs(plan.Repair)}
}

// ErrNotLeader: forgetting a node is done by the Raft leader.
var ErrNotLeader = errors.New("this node is not the Raft leader")

// Forget removes a dead node for good (`node forget`): it leaves the Raft configuration and
// every queue it owned is re-homed, empty, to live nodes; the messages of its durable queues
// are lost with it. A node that gossip sees alive is refused.
func (n *Node) Forget(id string) error {
	if n.Members == nil {
		return errors.New("this node runs without a cluster")
	}
	if id == n.cfg.ID {
		return errors.New("a node cannot forget itself")
	}
	if m, ok := n.Members.Member(id); ok && m.State == cluster.MemberAlive {
		return fmt.Errorf("node %q is alive: stop it (or let it leave) before forgetting it", id)
	}
	if !n.Store.IsLeader() {
		return ErrNotLeader
	}
	if err := n.Store.RemoveServer(id, 10*time.Second); err != nil {
		return fmt.Errorf("remove %q from raft: %w", id, err)
	}
	if _, err := n.Broker.Apply(n.rehomePlan(id, true)); err != nil {
		return fmt.Errorf("re-home queues of %q: %w", id, err)
	}
	n.log.Info("node forgotten", "node", id)
	return nil
}

// repairReplicas gives every replicated queue with fewer replicas than its size (its
// x-quorum-initial-group-size, or 3) one more on a live node that holds none, the one holding
// the fewest replicas: a queue that lost a replica to `node forget` while no spare node was
// up gets one as soon as a node joins. Run by the Raft leader every second; one replica per
// queue per round, so a new node is filled queue by queue.
func (n *Node) repairReplicas() {
	qs := n.FSM.Queues("")
	view := broker.PlacementQueues(qs)
	for i := range view {
		if view[i].Replicated {
			view[i].Size = n.replicatedSize(qs[i])
		}
	}
	for _, m := range placement.Repair(n.aliveMembers(), view) {
		if _, err := n.Broker.Apply(fsm.AddReplica{Vhost: m.Vhost, Name: m.Name, Node: m.To}); err != nil {
			n.log.Warn("add a replica", "queue", m.Name, "node", m.To, "err", err)
			return
		}
		n.log.Info("replicated queue repaired", "queue", m.Name, "vhost", m.Vhost, "new_replica", m.To)
	}
}

// replicatedSize is how many replicas a replicated queue should have.
func (n *Node) replicatedSize(q fsm.Queue) int {
	if args, err := n.FSM.QueueArgs(q); err == nil && args.QuorumInitialGroupSize > 0 {
		return int(args.QuorumInitialGroupSize)
	}
	return fsm.DefaultReplicas
}

// fastFailover runs when a peer's data link to this node breaks. If that peer leads replicated
// queues this node follows and its data port now refuses connections, its process is gone (a
// live process keeps listening; a dead host or a partition does not refuse, and is left to
// gossip's failure detector): this node proposes the failover at once instead of waiting the
// second or so gossip takes. Any node may propose it; NodeFailed is idempotent.
func (n *Node) fastFailover(peer string) {
	if n.Store != nil {
		n.Store.SuspectLeaderGone() // it may have led Raft too; the store checks
	}
	if n.Members == nil || !n.Broker.LeadsFollowedQueues(peer) {
		return
	}
	m, ok := n.Members.Member(peer)
	if !ok || m.Meta.DataAddr == "" {
		return
	}
	select {
	case n.fastFail <- fastFailure{peer: peer, addr: m.Meta.DataAddr}:
	default: // one is being handled; gossip catches the rest
	}
}

type fastFailure struct{ peer, addr string }

// runFastFailover serves fastFailover's requests one at a time, off the data link's goroutine.
func (n *Node) runFastFailover(stop <-chan struct{}) {
	defer close(n.fastDone)
	for {
		select {
		case <-stop:
			return
		case f := <-n.fastFail:
			if !cluster.ProcessGone(f.addr, stop) {
				continue
			}
			n.log.Info("a replicated queues' leader refuses connections: failing over now", "node", f.peer)
			n.rehome(f.peer)
		}
	}
}
