package node

import (
	"cmp"
	"slices"

	"github.com/warrenmq/warren/cluster"
)

// members is the cluster as RabbitMQ's `cluster_status` shows it (the view behind /api/nodes
// and `node status`): the Raft voters, each running or not as gossip sees it, plus live nodes
// gossip knows that are on their way into Raft. A node that left gracefully is no longer a
// member (Raft removed it; gossip says "left"), and a dead node stays listed, not running,
// until it returns or is forgotten (`node forget` removes it from Raft).
func (n *Node) members() []cluster.Member {
	if n.Members == nil {
		return nil
	}
	gossip := n.Members.Members()
	servers, err := n.Store.Configuration()
	if err != nil {
		// No Raft view (shutting down): fall back to gossip without departed nodes.
		out := gossip[:0]
		for _, m := range gossip {
			if m.State != cluster.MemberLeft {
				out = append(out, m)
			}
		}
		return out
	}
	inRaft := make(map[string]bool, len(servers))
	for _, s := range servers {
		inRaft[string(s.ID)] = true
	}
	var out []cluster.Member
	seen := make(map[string]bool, len(gossip))
	for _, m := range gossip {
		seen[m.ID] = true
		switch {
		case m.State == cluster.MemberLeft:
		case inRaft[m.ID], m.State == cluster.MemberAlive:
			out = append(out, m)
		}
	}
	// Voters gossip has not heard from since this node started: members, not running.
	for _, s := range servers {
		if id := string(s.ID); !seen[id] {
			out = append(out, cluster.Member{ID: id, State: cluster.MemberDead})
		}
	}
	slices.SortFunc(out, func(a, b cluster.Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}
