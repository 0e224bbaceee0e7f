package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
)

// MessageStore is the node's on-disk message store (package msgstore) as the broker uses it:
// persistent messages routed to durable queues are written once, with the keys of every durable
// queue they went to; done fires after the record is on disk.
type MessageStore interface {
	Publish(queues []string, data []byte, done func(error)) uint64
	Ack(queue string, id uint64)
	AckMany(queue string, ids []uint64)
	DropQueue(queue string)
}

// wrapMessageStore makes a store that can read messages back (msgstore) a paging one.
func wrapMessageStore(s MessageStore, log *slog.Logger) MessageStore {
	if p, ok := s.(messagePager); ok {
		return &pagedStore{MessageStore: s, pager: p, log: log}
	}
	return s
}

// StoreKey names a queue in the message store.
func StoreKey(vhost, name string) string { return vhost + "\x00" + name }

func splitStoreKey(key string) (vhost, name string, ok bool) {
	return strings.Cut(key, "\x00")
}

// RecoveredQueue is what the message store kept for one queue (msgstore.QueueInfo).
type RecoveredQueue struct {
	Messages int64
	Bytes    int64 // estimate
	LastID   uint64
}

// Recover gives the durable queues this node owns the messages the store kept for them, once
// Raft has replayed the topology; messages of queues that no longer exist are dropped from the
// store. A paging queue is only told how many there are (they are read back from disk as it
// drains); a priority queue reads them all into memory now. From here on, deleting a durable
// queue also drops its messages from the store.
func (n *Node) Recover(recovered map[string]RecoveredQueue) (restored int64, err error) {
	var errs []error
	n.lastIDs = make(map[string]uint64, len(recovered))
	for key, rq := range recovered {
		n.lastIDs[key] = rq.LastID
	}
	for key, rq := range recovered {
		vhost, name, ok := splitStoreKey(key)
		qd, exists := n.fsm.Queue(vhost, name)
		if ok && exists && qd.Type == fsm.QueueTypeQuorum && slices.Contains(qd.Replicas, n.id) {
			restored += rq.Messages // read into the replica's index below
			continue
		}
		lq := n.LocalQueue(vhost, name)
		if !ok || !exists || !qd.Durable || qd.Owner != n.id || lq == nil {
			n.msgs.DropQueue(key)
			continue
		}
		if lq.Pages() {
			lq.RestoreStored(int(rq.Messages), rq.Bytes, rq.LastID)
			restored += rq.Messages
			continue
		}
		msgs, err := n.readAllStored(key, rq.LastID)
		if err != nil {
			errs = append(errs, fmt.Errorf("queue %q: %w", name, err))
		}
		lq.Restore(msgs)
		restored += int64(len(msgs))
	}
	errs = append(errs, n.loadReplicas())
	n.recovered.Store(true)
	return restored, errors.Join(errs...)
}

// readAllStored reads every message the store holds for key into memory (queues that do not
// page: priority queues).
func (n *Node) readAllStored(key string, lastID uint64) ([]*queue.Message, error) {
	ps, ok := n.msgs.(queue.PagingStore)
	if !ok {
		return nil, errors.New("the message store cannot read messages back")
	}
	var out []*queue.Message
	if pp, ok := n.msgs.(*pagedStore); ok {
		// All in memory from here on: compaction may move them.
		defer pp.pager.DoneReading(key)
	}
	for after := uint64(0); after < lastID; {
		msgs, through, err := ps.PageIn(key, after, lastID, 4096, 16<<20)
		out = append(out, msgs...)
		if err != nil {
			return out, err
		}
		if through <= after && len(msgs) == 0 {
			return out, fmt.Errorf("reading stored messages stalled at id %d", after)
		}
		after = through
	}
	return out, nil
}

// ErrRefused is the outcome of a publish some target queue refused (x-overflow
// reject-publish, or a queue the owner no longer has): the publisher gets basic.nack.
var ErrRefused = errors.New("publish refused by a target queue")

// confirmJoin waits for every part of one publish that completes later (the local disk write,
// each remote owner's answer) and reports one outcome, exactly once: nil only if no part failed
// and no queue refused the message. Publish itself holds one part until it has started every
// other, so a refusal it learns synchronously is never overtaken by an early "all done".
type confirmJoin struct {
	mu     sync.Mutex
	parts  int
	err    error
	onDone func(error)
}

func newConfirmJoin(onDone func(error)) *confirmJoin { return &confirmJoin{parts: 1, onDone: onDone} }

func (j *confirmJoin) add() {
	j.mu.Lock()
	j.parts++
	j.mu.Unlock()
}

func (j *confirmJoin) finish(err error) {
	j.mu.Lock()
	if err != nil && j.err == nil {
		j.err = err
	}
	j.parts--
	last := j.parts == 0
	outcome := j.err
	j.mu.Unlock()
	if last {
		j.onDone(outcome)
	}
}

// EncodeStored serialises what a stored message needs to be delivered again: exchange,
// routing key, raw properties and body.
func EncodeStored(m *queue.Message) []byte {
	b := make([]byte, 0, 10+len(m.Exchange)+len(m.RoutingKey)+len(m.Props)+len(m.Body))
	b = binary.AppendUvarint(b, uint64(len(m.Exchange)))
	b = append(b, m.Exchange...)
	b = binary.AppendUvarint(b, uint64(len(m.RoutingKey)))
	b = append(b, m.RoutingKey...)
	b = binary.AppendUvarint(b, uint64(len(m.Props)))
	b = append(b, m.Props...)
	return append(b, m.Body...)
}

var errStoredMessage = errors.New("malformed stored message")

// DecodeStored is the inverse of EncodeStored; the delivery-relevant property fields are
// re-derived by the caller's queue from Props.
func DecodeStored(b []byte) (*queue.Message, error) {
	field := func() ([]byte, error) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, errStoredMessage
		}
		f := b[k : k+int(n)]
		b = b[k+int(n):]
		return f, nil
	}
	ex, err := field()
	if err != nil {
		return nil, err
	}
	key, err := field()
	if err != nil {
		return nil, err
	}
	props, err := field()
	if err != nil {
		return nil, err
	}
	m := &queue.Message{Exchange: string(ex), RoutingKey: string(key), Props: props, Body: b}
	if _, err := FillFromProps(m); err != nil {
		return nil, err
	}
	return m, nil
}
