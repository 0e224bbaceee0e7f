package node

import (
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/placement"
)

// The placement package decides where queues go; this file gathers its inputs (gossip's live
// members, the FSM's queues) and turns its answers into Raft commands.

// aliveMembers lists the members gossip sees alive, this node included.
func (n *Node) aliveMembers() []string {
	var live []string
	for _, m := range n.Members.Members() {
		if m.State == cluster.MemberAlive {
			live = append(live, m.ID)
		}
	}
	return live
}

// placementQueues describes every queue of the FSM to the placement rules.
func (n *Node) placementQueues() []placement.Queue {
	return broker.PlacementQueues(n.FSM.Queues(""))
}

// refs turns planned moves into the queue references of a Raft command (nil for none).
func refs(moves []placement.Move) []fsm.QueueRef {
	var out []fsm.QueueRef
	for _, m := range moves {
		out = append(out, fsm.QueueRef{Vhost: m.Vhost, Name: m.Name, Owner: m.To})
	}
	return out
}
