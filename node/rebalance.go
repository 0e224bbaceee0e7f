package node

import (
	"errors"
	"sort"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
)

// Rebalance spreads the queues of live nodes evenly over the live nodes (`node rebalance`, e.g.
// after a node joined): queues move, with their messages, from nodes above the even share to
// nodes below it, through the same hand-off as `node leave` (nothing is dropped; consumers get
// basic.cancel and subscribe again at the new owner). Exclusive queues stay with their
// connections, and queues of dead nodes stay put. Replicated queues do not move: their
// leadership is spread instead (leaderPlan). It returns the number of queues moved or given a
// new leader.
func (n *Node) Rebalance() (int, error) {
	if n.Members == nil {
		return 0, errors.New("this node runs without a cluster")
	}
	var live []string
	for _, m := range n.Members.Members() {
		if m.State == cluster.MemberAlive {
			live = append(live, m.ID)
		}
	}
	sort.Strings(live)
	plans := rebalancePlan(n.FSM.Queues(""), live)
	moved := 0
	for _, from := range sortedKeys(plans) {
		if _, err := n.Broker.Apply(plans[from]); err != nil {
			return moved, err
		}
		moved += len(plans[from].Moves)
	}
	for _, e := range leaderPlan(n.FSM.Queues(""), live) {
		if _, err := n.Broker.Apply(e); err != nil {
			return moved, err
		}
		moved++
	}
	if moved > 0 {
		n.log.Info("queues rebalanced", "moved", moved, "nodes", live)
	}
	return moved, nil
}

// leaderPlan spreads the leaders of replicated queues: a queue led by a node above the even
// share of leaders gets, in a new epoch, an in-sync replica on a node below it as its leader
// (ElectLeader: its messages stay where they are, on every replica). Queue name order keeps the
// plan the same whichever node computes it.
func leaderPlan(queues []fsm.Queue, live []string) []fsm.ElectLeader {
	if len(live) < 2 {
		return nil
	}
	led := map[string]int{}
	isLive := map[string]bool{}
	for _, id := range live {
		led[id], isLive[id] = 0, true
	}
	var replicated []fsm.Queue
	for _, q := range queues {
		if q.Type == fsm.QueueTypeQuorum && isLive[q.Owner] {
			replicated = append(replicated, q)
			led[q.Owner]++
		}
	}
	sort.Slice(replicated, func(i, j int) bool {
		return replicated[i].Vhost+"\x00"+replicated[i].Name < replicated[j].Vhost+"\x00"+replicated[j].Name
	})
	total := len(replicated)
	low, high := total/len(live), (total+len(live)-1)/len(live)
	var out []fsm.ElectLeader
	for _, q := range replicated {
		if led[q.Owner] <= high {
			continue
		}
		best := ""
		for _, r := range q.InSync {
			if r != q.Owner && isLive[r] && led[r] < low && (best == "" || led[r] < led[best]) {
				best = r
			}
		}
		if best == "" {
			for _, r := range q.InSync {
				if r != q.Owner && isLive[r] && led[r] < high && (best == "" || led[r] < led[best]) {
					best = r
				}
			}
		}
		if best == "" {
			continue
		}
		led[q.Owner]--
		led[best]++
		out = append(out, fsm.ElectLeader{Vhost: q.Vhost, Name: q.Name, Leader: best, Epoch: q.Epoch})
	}
	return out
}

// rebalancePlan moves queues from owners above ceil(total/len(live)) to owners below
// floor(total/len(live)), one command per source node; queues are taken in name order so the
// plan is the same whichever node computes it.
func rebalancePlan(queues []fsm.Queue, live []string) map[string]fsm.MoveQueues {
	if len(live) < 2 {
		return nil
	}
	owned := map[string][]fsm.Queue{}
	for _, id := range live {
		owned[id] = nil
	}
	total := 0
	for _, q := range queues {
		if _, ok := owned[q.Owner]; ok && !q.Exclusive && q.Type != fsm.QueueTypeQuorum {
			owned[q.Owner] = append(owned[q.Owner], q)
			total++
		}
	}
	low, high := total/len(live), (total+len(live)-1)/len(live)
	var spare []fsm.Queue // queues taken off loaded nodes, in a stable order
	for _, id := range live {
		qs := owned[id]
		sort.Slice(qs, func(i, j int) bool { return qs[i].Vhost+"\x00"+qs[i].Name < qs[j].Vhost+"\x00"+qs[j].Name })
		for len(qs) > high {
			spare = append(spare, qs[len(qs)-1])
			qs = qs[:len(qs)-1]
		}
		owned[id] = qs
	}
	plans := map[string]fsm.MoveQueues{}
	give := func(q fsm.Queue, to string) {
		p := plans[q.Owner]
		p.From = q.Owner
		p.Moves = append(p.Moves, fsm.QueueRef{Vhost: q.Vhost, Name: q.Name, Owner: to})
		plans[q.Owner] = p
		owned[to] = append(owned[to], q)
	}
	for _, limit := range []int{low, high} {
		for _, id := range live {
			for len(owned[id]) < limit && len(spare) > 0 {
				give(spare[0], id)
				spare = spare[1:]
			}
		}
	}
	// Still-spare queues (every node at high already) stay where they were.
	return plans
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (n *Node) rebalanceForAPI() (int, error) { return n.Rebalance() }
