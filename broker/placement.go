package broker

import (
	"strings"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/placement"
)

// PlacementQueues describes the FSM's queues to the placement rules. A replicated queue's Size
// is left 0: it is in the queue's arguments, and only replica repair needs it, so that caller
// fills it in rather than every declare decoding every replicated queue's arguments.
func PlacementQueues(qs []fsm.Queue) []placement.Queue {
	out := make([]placement.Queue, len(qs))
	for i, q := range qs {
		out[i] = placement.Queue{
			Vhost: q.Vhost, Name: q.Name, Owner: q.Owner, Durable: q.Durable, Exclusive: q.Exclusive,
			Replicated: q.Type == fsm.QueueTypeQuorum, Replicas: q.Replicas, InSync: q.InSync, Epoch: q.Epoch, Departed: q.Departed,
		}
		if q.Exclusive {
			out[i].ConnNode, _, _ = strings.Cut(q.ExclusiveConn, "/") // "node/connID"
		}
	}
	return out
}
