package cluster

import (
	"errors"
	"fmt"
	"time"
)

// GracefulLeave takes this node out of the cluster: it hands Raft leadership to another voter
// if it has it (so the rest elect at once instead of after a timeout), announces the departure
// through gossip, and waits until the leader's reconciler has removed it from the Raft
// configuration. The caller then stops the Reconciler, shuts membership down and closes the
// Store. An error means the node may still be listed as a voter (operators can forget it).
func GracefulLeave(store *Store, members *Membership, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	if store.IsLeader() {
		servers, err := store.Configuration()
		if err == nil && len(servers) > 1 {
			if err := store.LeadershipTransfer(); err != nil {
				return fmt.Errorf("graceful leave: %w", err)
			}
		}
	}
	if err := members.Leave(time.Until(deadline)); err != nil {
		return fmt.Errorf("graceful leave: %w", err)
	}
	for {
		servers, err := store.Configuration()
		if err != nil {
			return fmt.Errorf("graceful leave: %w", err)
		}
		listed := false
		for _, s := range servers {
			listed = listed || string(s.ID) == store.NodeID()
		}
		if !listed {
			return nil
		}
		// The last voter of a cluster cannot be removed by anyone; leaving it is the same as
		// stopping it.
		if len(servers) == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("graceful leave: left gossip, but the raft configuration still lists this node")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
