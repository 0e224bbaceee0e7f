package node

import (
	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/msgstore"
)

// recoverMessages hands what the message store kept to the durable queues this node owns,
// once Raft has replayed the topology (so the queues exist). Bodies stay on disk: queues read
// them back as they drain.
func (n *Node) recoverMessages(rec *msgstore.Recovered) {
	queues := make(map[string]broker.RecoveredQueue, len(rec.Queues))
	for key, info := range rec.Queues {
		queues[key] = broker.RecoveredQueue{Messages: info.Messages, Bytes: info.Bytes, LastID: info.LastID}
	}
	restored, err := n.Broker.Recover(queues)
	if err != nil {
		n.log.Error("some stored messages could not be read back and were dropped", "err", err)
	}
	n.log.Info("messages recovered", "messages", restored, "segments", rec.Segments, "records", rec.Records, "took", rec.Duration)
}
