package node

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
)

// Join makes a running node that is alone in its own one-node cluster join the cluster whose
// gossip seeds are given (`node join`), as RabbitMQ's reset + join_cluster does: its own Raft
// state is discarded and it takes the cluster's topology, users included. It refuses a node
// that holds queues, exchanges or vhosts of its own (those would be lost) and a node that is
// already clustered. It returns once the cluster's leader has added it and its FSM caught up.
func (n *Node) Join(seeds []string, timeout time.Duration) error {
	if n.Members == nil {
		return errors.New("this node runs without gossip (no --gossip-addr): it cannot join a cluster")
	}
	if len(seeds) == 0 {
		return errors.New("join: no seed address given")
	}
	if !n.leaveMu.TryLock() {
		return errors.New("this node is leaving")
	}
	defer n.leaveMu.Unlock()
	for _, m := range n.Members.Members() {
		if m.ID != n.cfg.ID && m.State == cluster.MemberAlive {
			return fmt.Errorf("this node is already in a cluster (with %s): leave it first", m.ID)
		}
	}
	if servers, err := n.Store.Configuration(); err != nil {
		return err
	} else if len(servers) > 1 {
		return fmt.Errorf("this node is already in a Raft cluster of %d nodes: leave it first", len(servers))
	}
	if err := ownTopology(n.FSM); err != nil {
		return fmt.Errorf("join refused: %w; joining would discard it (declare it again in the cluster, or start a fresh node)", err)
	}
	// Back to the state of a node that never ran, so the cluster's log replays onto it.
	fresh, err := fsm.New(fsm.Options{DecodeArgs: broker.DecodeArgs}).SnapshotBytes()
	if err != nil {
		return err
	}
	if err := n.FSM.RestoreBytes(fresh); err != nil {
		return fmt.Errorf("reset topology: %w", err)
	}
	if err := n.Store.ResetForJoin(); err != nil {
		return fmt.Errorf("join: %w", err)
	}
	if err := n.Members.Join(seeds); err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for {
		servers, _ := n.Store.Configuration()
		added := false
		for _, s := range servers {
			added = added || string(s.ID) == n.cfg.ID
		}
		if added && n.Store.Barrier(time.Until(deadline)) == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("joined gossip, but the cluster's leader did not add this node to Raft within %s (is the cluster's leader up?)", timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := n.Broker.Apply(fsm.NodeStarted{Node: n.cfg.ID, KeepTransientExchanges: true}); err != nil {
		return fmt.Errorf("joined, but announcing the node failed: %w", err)
	}
	n.log.Info("joined the cluster", "seeds", seeds)
	return nil
}

// ownTopology reports what a node holds beyond the initial state: any queue, a vhost other
// than "/", an exchange other than the predeclared ones.
func ownTopology(f *fsm.FSM) error {
	if qs := f.Queues(""); len(qs) > 0 {
		return fmt.Errorf("it has %d queues of its own (e.g. %q)", len(qs), qs[0].Name)
	}
	for _, v := range f.Vhosts() {
		if v != fsm.DefaultVhost {
			return fmt.Errorf("it has a vhost of its own (%q)", v)
		}
	}
	for _, e := range f.Exchanges("") {
		if e.Name != "" && !strings.HasPrefix(e.Name, "amq.") {
			return fmt.Errorf("it has an exchange of its own (%q)", e.Name)
		}
	}
	return nil
}

func (n *Node) joinForAPI(seeds []string, timeout time.Duration) error { return n.Join(seeds, timeout) }
