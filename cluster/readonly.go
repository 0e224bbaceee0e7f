package cluster

import (
	"fmt"
	"strings"

	"github.com/hashicorp/raft"
)

// Read-only topology. Without a Raft leader no topology change can be committed, but the
// node's replica stays as it was: routing, publishes and consumes of queues owned by live
// nodes, and re-declares equal to what exists (answered from the replica, fsm.Redeclare) keep
// working. TopologyStatus says which case a node is in, for `node status` and the API.

// TopologyStatus reports whether this node can commit topology changes now and, when it
// cannot, why (in words for operators).
func (s *Store) TopologyStatus() (writable bool, reason string) {
	if _, id := s.r().LeaderWithID(); id != "" {
		return true, ""
	}
	voters, live, majority := s.quorumView()
	if voters == 0 {
		return false, "no Raft leader known yet: this node is not a member of a cluster"
	}
	if live < majority {
		return false, fmt.Sprintf("read-only: %d of %d Raft voters are alive (%s), a majority needs %d; "+
			"topology changes wait for the others to return or to be forgotten", live, voters, strings.Join(s.liveVoters(), ", "), majority)
	}
	return false, fmt.Sprintf("read-only: no Raft leader (an election is under way; %d of %d voters alive)", live, voters)
}

// quorumView counts the Raft voters and those of them memberlist reports alive (this node
// counts as alive). Without a membership view every voter counts as alive.
func (s *Store) quorumView() (voters, live, majority int) {
	for _, srv := range s.r().GetConfiguration().Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			voters++
		}
	}
	return voters, len(s.liveVoters()), voters/2 + 1
}

func (s *Store) liveVoters() []string {
	livep := s.liveNodes.Load()
	alive := map[string]bool{s.id: true}
	if livep != nil {
		for _, id := range (*livep)() {
			alive[id] = true
		}
	}
	var out []string
	for _, srv := range s.r().GetConfiguration().Configuration().Servers {
		if srv.Suffrage == raft.Voter && (livep == nil || alive[string(srv.ID)]) {
			out = append(out, string(srv.ID))
		}
	}
	return out
}

// cannotElect reports that no leader is known and too few voters are alive to elect one, so
// a write would only wait out the apply timeout; it fails at once instead.
func (s *Store) cannotElect() (bool, string) {
	if _, id := s.r().LeaderWithID(); id != "" || s.liveNodes.Load() == nil {
		return false, ""
	}
	voters, live, majority := s.quorumView()
	if voters == 0 || live >= majority {
		return false, ""
	}
	_, reason := s.TopologyStatus()
	return true, reason
}
