package node

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/placement"
)

// LeaveReport says what a graceful leave did.
type LeaveReport struct {
	QueuesMoved   int   `json:"queues_moved"`
	MessagesMoved int64 `json:"messages_moved"`
	// Unfinished counts hand-offs still running when the time ran out (their messages stay
	// on this node's disk; see docs/operations.md).
	Unfinished int `json:"unfinished_handoffs"`
	// ReplicatedQueues counts the replicated queues this node led that got a new leader.
	ReplicatedQueues int    `json:"replicated_queues_led_elsewhere"`
	Took             string `json:"took"`
}

// Leave takes this node out of the cluster without losing messages (`node leave`): it closes
// its client connections (320, as on shutdown: clients reconnect to other nodes), hands every
// queue it owns to the live node with the fewest queues through Raft (fsm.MoveQueues; the
// messages follow over the data links), waits for the hand-offs, leaves Raft and gossip, and
// then closes itself in the background (Done is closed when it has). Exclusive queues go with
// their connections, as in RabbitMQ.
func (n *Node) Leave(timeout time.Duration) (LeaveReport, error) {
	start := time.Now()
	deadline := start.Add(timeout)
	var rep LeaveReport
	if n.Members == nil {
		return rep, errors.New("this node runs without a cluster")
	}
	if !n.leaveMu.TryLock() {
		return rep, errors.New("this node is already leaving")
	}
	defer n.leaveMu.Unlock()
	targets := slices.DeleteFunc(n.aliveMembers(), func(id string) bool { return id == n.cfg.ID })
	if len(targets) == 0 {
		return rep, errors.New("no other live node to hand the queues to: stop the node instead")
	}
	n.log.Info("leaving the cluster: handing queues over", "targets", targets)
	n.AMQP.Close()
	_, movedBefore := n.Broker.HandOffs()
	cmd := fsm.MoveQueues{From: n.cfg.ID, Moves: refs(placement.Leave(n.cfg.ID, targets, n.placementQueues()))}
	if len(cmd.Moves) > 0 {
		if _, err := n.Broker.Apply(cmd); err != nil {
			return rep, fmt.Errorf("hand queues over: %w", err)
		}
	}
	rep.QueuesMoved = len(cmd.Moves)
	for {
		active, moved := n.Broker.HandOffs()
		rep.MessagesMoved, rep.Unfinished = moved-movedBefore, active
		if active == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if rep.Unfinished > 0 {
		rep.Took = time.Since(start).String()
		return rep, fmt.Errorf("%d queue hand-offs did not finish in %s; the node stays in the cluster (run `node leave` again: it goes on where this one stopped)", rep.Unfinished, timeout)
	}
	// Replicated queues do not move: their other replicas already hold the messages. The
	// queues this node leads get an in-sync leader elsewhere, and every replica set it was in
	// gets a live node in its place, filled by the leader (as for a forgotten node).
	if plan := n.rehomePlan(n.cfg.ID, true); placement.HoldsReplicas(n.cfg.ID, n.placementQueues()) {
		if _, err := n.Broker.Apply(plan); err != nil {
			return rep, fmt.Errorf("hand replicated queues over: %w", err)
		}
		rep.ReplicatedQueues = len(plan.Rehome)
	}
	if err := cluster.GracefulLeave(n.Store, n.Members, max(time.Until(deadline), 5*time.Second)); err != nil {
		return rep, err
	}
	rep.Took = time.Since(start).String()
	n.log.Info("left the cluster", "queues", rep.QueuesMoved, "messages", rep.MessagesMoved, "took", rep.Took)
	go func() {
		// After the HTTP answer is on its way: closing waits for the API's handlers.
		time.Sleep(100 * time.Millisecond)
		_ = n.Close()
		close(n.done)
	}()
	return rep, nil
}

// Done is closed once the node has left the cluster and closed itself.
func (n *Node) Done() <-chan struct{} { return n.done }

func (n *Node) leaveForAPI(timeout time.Duration) (any, error) { return n.Leave(timeout) }
