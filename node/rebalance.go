package node

import (
	"errors"
	"maps"
	"slices"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/placement"
)

// Rebalance spreads the queues of live nodes evenly over the live nodes (`node rebalance`, e.g.
// after a node joined): queues move, with their messages, from nodes above the even share to
// nodes below it, through the same hand-off as `node leave` (nothing is dropped; consumers get
// basic.cancel and subscribe again at the new owner). Exclusive queues stay with their
// connections, and queues of dead nodes stay put. Replicated queues do not move: their
// leadership is spread instead (placement.Leaders). It returns the number of queues moved or
// given a new leader.
func (n *Node) Rebalance() (int, error) {
	if n.Members == nil {
		return 0, errors.New("this node runs without a cluster")
	}
	live := n.aliveMembers()
	slices.Sort(live)
	plans := placement.Rebalance(live, n.placementQueues())
	moved := 0
	for _, from := range slices.Sorted(maps.Keys(plans)) {
		if _, err := n.Broker.Apply(fsm.MoveQueues{From: from, Moves: refs(plans[from])}); err != nil {
			return moved, err
		}
		moved += len(plans[from])
	}
	// Planned after the moves are applied, from the topology they left.
	for _, m := range placement.Leaders(live, n.placementQueues()) {
		if _, err := n.Broker.Apply(fsm.ElectLeader{Vhost: m.Vhost, Name: m.Name, Leader: m.To, Epoch: m.Epoch}); err != nil {
			return moved, err
		}
		moved++
	}
	if moved > 0 {
		n.log.Info("queues rebalanced", "moved", moved, "nodes", live)
	}
	return moved, nil
}

func (n *Node) rebalanceForAPI() (int, error) { return n.Rebalance() }
