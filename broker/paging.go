package broker

import (
	"log/slog"

	"github.com/warrenmq/warren/msgstore"
	"github.com/warrenmq/warren/queue"
)

// messagePager is the part of the message store (msgstore.Store) that gives a queue its
// messages back from disk.
type messagePager interface {
	ReadQueue(queue string, after, upTo uint64, maxMsgs, maxBytes int) ([]msgstore.Message, uint64, error)
	ReadQueueCopy(queue string, after, upTo uint64, maxMsgs, maxBytes int) ([]msgstore.Message, uint64, error)
	AckRange(queue string, after, upTo uint64)
	StartPaging(queue string, after uint64)
	StopPaging(queue string, announced uint64) bool
	DoneReading(queue string)
}

// pagedStore is the message store as durable queues see it: a queue.PagingStore that decodes
// what it reads back into queue messages.
type pagedStore struct {
	MessageStore
	pager messagePager
	log   *slog.Logger
}

var _ queue.PagingStore = (*pagedStore)(nil)

func (p *pagedStore) PageIn(key string, after, upTo uint64, maxMsgs, maxBytes int) ([]*queue.Message, uint64, error) {
	got, through, err := p.pager.ReadQueue(key, after, upTo, maxMsgs, maxBytes)
	msgs := make([]*queue.Message, 0, len(got))
	for _, sm := range got {
		m, derr := DecodeStored(sm.Data)
		if derr != nil {
			// Its record passed its checksum, so this is a bug or a format change, not disk
			// damage; keeping it would stop the queue at this message forever.
			_, name, _ := splitStoreKey(key)
			p.log.Error("stored message cannot be decoded; dropping it", "queue", name, "id", sm.ID, "err", derr)
			p.MessageStore.Ack(key, sm.ID)
			continue
		}
		m.StoreID = sm.ID
		msgs = append(msgs, m)
	}
	return msgs, through, err
}

func (p *pagedStore) AckRange(key string, after, upTo uint64) { p.pager.AckRange(key, after, upTo) }
func (p *pagedStore) StartPaging(key string, after uint64)    { p.pager.StartPaging(key, after) }
func (p *pagedStore) StopPaging(key string, announced uint64) bool {
	return p.pager.StopPaging(key, announced)
}
