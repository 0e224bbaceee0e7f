package node

import (
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/msgstore"
)

// recoverMessages loads what the message store kept into the durable queues this node owns,
// once Raft has replayed the topology (so the queues exist).
func (n *Node) recoverMessages(rec *msgstore.Recovered) {
	log := n.log
	stored := make(map[string][]broker.StoredMessage, len(rec.Queues))
	for key, ms := range rec.Queues {
		for _, m := range ms {
			stored[key] = append(stored[key], broker.StoredMessage{ID: m.ID, Data: m.Data})
		}
	}
	restored, err := n.Broker.Recover(stored)
	if err != nil {
		log.Error("some stored messages could not be decoded and were dropped", "err", err)
	}
	log.Info("messages recovered", "messages", restored, "segments", rec.Segments, "records", rec.Records, "took", rec.Duration)
}
