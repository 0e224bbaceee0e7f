package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"

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

// StoredMessage is one message recovered from the store.
type StoredMessage struct {
	ID   uint64
	Data []byte
}

// AttachMessageStore makes durable queues keep persistent messages in s. It must be called
// before Raft replays the topology, so the durable queues it creates are wired to s.
func (n *Node) AttachMessageStore(s MessageStore) { n.msgs = s }

// StoreKey names a queue in the message store.
func StoreKey(vhost, name string) string { return vhost + "\x00" + name }

func splitStoreKey(key string) (vhost, name string, ok bool) {
	return strings.Cut(key, "\x00")
}

// Recover loads the messages the store kept into the durable queues this node owns, once Raft
// has replayed the topology; messages of queues that no longer exist are dropped from the store.
// From here on, deleting a durable queue also drops its messages from the store.
func (n *Node) Recover(recovered map[string][]StoredMessage) (restored int, err error) {
	var errs []error
	for key, stored := range recovered {
		vhost, name, ok := splitStoreKey(key)
		qd, exists := n.fsm.Queue(vhost, name)
		lq := n.LocalQueue(vhost, name)
		if !ok || !exists || !qd.Durable || qd.Owner != n.id || lq == nil {
			n.msgs.DropQueue(key)
			continue
		}
		msgs := make([]*queue.Message, 0, len(stored))
		for _, sm := range stored {
			m, err := DecodeStored(sm.Data)
			if err != nil {
				errs = append(errs, fmt.Errorf("message %d of queue %q: %w", sm.ID, name, err))
				n.msgs.Ack(key, sm.ID)
				continue
			}
			m.StoreID = sm.ID
			msgs = append(msgs, m)
		}
		lq.Restore(msgs)
		restored += len(msgs)
	}
	n.recovered.Store(true)
	return restored, errors.Join(errs...)
}

// diskConfirm delivers a store's "on disk" callback to the publisher only once the broker knows
// the publish was not refused by a queue: a refused publish is nacked at once and must never
// also be acked when its record reaches the disk.
type diskConfirm struct {
	mu      sync.Mutex
	decided bool
	refused bool
	fired   bool
	err     error
	onDisk  func(error)
}

func (d *diskConfirm) done(err error) {
	d.mu.Lock()
	d.fired, d.err = true, err
	call := d.decided && !d.refused
	d.mu.Unlock()
	if call {
		d.onDisk(err)
	}
}

func (d *diskConfirm) decide(refused bool) {
	d.mu.Lock()
	d.decided, d.refused = true, refused
	call := d.fired && !refused
	err := d.err
	d.mu.Unlock()
	if call {
		d.onDisk(err)
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
