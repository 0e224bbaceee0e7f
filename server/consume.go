package server

import (
	"crypto/rand"
	"encoding/base64"
	"errors"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// consumer is one basic.consume subscription; it implements queue.Consumer.
type consumer struct {
	ch        *channel
	tag       string
	queue     string            // the queue's name, for the management API
	q         *queue.Queue      // nil for a consumer of another node's queue
	remote    *broker.RemoteSub // set for a consumer of another node's queue
	noAck     bool
	exclusive bool
	prefetch  int // 0: unlimited
	// Guarded by ch.mu:
	unacked int
	active  bool // set after consume-ok is on the wire, so no delivery overtakes it
	closed  bool
	early   []remoteDelivery // remote deliveries that arrived before consume-ok went out
}

// leave detaches the consumer from its queue, local or remote.
func (cs *consumer) leave() {
	if cs.remote != nil {
		cs.remote.Cancel()
	} else if cs.q != nil {
		cs.q.RemoveConsumer(cs)
	}
}

// TryDeliver is called by the queue with its lock held: reserve credit, assign the delivery
// tag, and queue the frames on the connection, all under the channel lock so tags reach the
// wire in order.
func (cs *consumer) TryDeliver(d queue.Delivery) bool {
	ch := cs.ch
	ch.mu.Lock()
	if cs.closed || !cs.active {
		ch.mu.Unlock()
		return false
	}
	if !ch.flowActive {
		ch.starveLocked(d.Queue)
		ch.mu.Unlock()
		return false
	}
	if cs.noAck {
		if ch.c.outHigh.Load() {
			ch.starveLocked(d.Queue)
			ch.mu.Unlock()
			return false
		}
	} else if (cs.prefetch > 0 && cs.unacked >= cs.prefetch) ||
		(ch.prefetchGlobal > 0 && ch.unacked.live >= ch.prefetchGlobal) {
		ch.starveLocked(d.Queue)
		ch.mu.Unlock()
		return false
	}
	ch.nextTag++
	tag := ch.nextTag
	if !cs.noAck {
		cs.unacked++
		ch.unacked.push(unackedMsg{tag: tag, cons: cs, q: d.Queue,
			settled: queue.Settled{Msg: d.Msg, Seq: d.Seq, ExpiresAt: d.ExpiresAt}})
	}
	c := ch.c
	c.lockOut()
	c.appendContentLocked(ch.id, &wire.BasicDeliver{
		ConsumerTag: cs.tag, DeliveryTag: tag, Redelivered: d.Redelivered,
		Exchange: d.Msg.Exchange, RoutingKey: d.Msg.RoutingKey,
	}, d.Msg.Props, d.Msg.Body)
	c.unlockOut()
	ch.mu.Unlock()
	c.s.stats.deliver.Add(1)
	if cs.noAck {
		c.s.stats.deliverNoAck.Add(1)
	}
	if d.Redelivered {
		c.s.stats.redeliver.Add(1)
	}
	return true
}

// Cancelled is called when the queue is deleted: tell the client (consumer_cancel_notify).
func (cs *consumer) Cancelled(q *queue.Queue) {
	ch := cs.ch
	ch.mu.Lock()
	if cs.closed {
		ch.mu.Unlock()
		return
	}
	cs.closed = true
	if ch.consumers[cs.tag] == cs {
		delete(ch.consumers, cs.tag)
	}
	ch.mu.Unlock()
	if ch.c.cancelNotify {
		ch.c.sendMethod(ch.id, &wire.BasicCancel{ConsumerTag: cs.tag, NoWait: true})
	}
}

func (ch *channel) starveLocked(q *queue.Queue) {
	if ch.starved == nil {
		ch.starved = make(map[*queue.Queue]struct{})
	}
	ch.starved[q] = struct{}{}
}

// kickConsumers retries dispatch on every queue that found this channel without credit.
func (ch *channel) kickConsumers() {
	ch.mu.Lock()
	if len(ch.starved) == 0 {
		ch.mu.Unlock()
		return
	}
	qs := make([]*queue.Queue, 0, len(ch.starved))
	for q := range ch.starved {
		qs = append(qs, q)
	}
	clear(ch.starved)
	ch.mu.Unlock()
	for _, q := range qs {
		q.Kick()
	}
}

// starvedQueues collects the starved queues of every channel (writer goroutine, after the
// output buffer drained). Channels are reached through consumers' back-pointers kept in
// conn.allChannels, guarded by each channel's own lock.
func (c *conn) starvedQueues() []*queue.Queue {
	c.chansMu.Lock()
	chans := make([]*channel, 0, len(c.allChans))
	for ch := range c.allChans {
		chans = append(chans, ch)
	}
	c.chansMu.Unlock()
	var qs []*queue.Queue
	for _, ch := range chans {
		ch.mu.Lock()
		for q := range ch.starved {
			qs = append(qs, q)
		}
		clear(ch.starved)
		ch.mu.Unlock()
	}
	return qs
}

func (ch *channel) qos(m *wire.BasicQos) error {
	if m.PrefetchSize != 0 {
		return errorf(wire.NotImplemented, "prefetch_size!=0 (%d)", m.PrefetchSize)
	}
	ch.mu.Lock()
	if m.Global {
		ch.prefetchGlobal = int(m.PrefetchCount)
		ch.releaseHeldLocked()
	} else {
		ch.prefetch = int(m.PrefetchCount)
	}
	ch.mu.Unlock()
	ch.c.sendMethod(ch.id, &wire.BasicQosOk{})
	ch.kickConsumers()
	return nil
}

func (ch *channel) consume(m *wire.BasicConsume) error {
	if m.Queue == broker.ReplyToQueue {
		return ch.consumeReply(m)
	}
	tag := m.ConsumerTag
	if tag == "" {
		tag = "amq.ctag-" + randomName()
	}
	if err := ch.c.permitted(permRead, "queue", m.Queue); err != nil {
		return err
	}
	if limit := ch.c.s.cfg.ConsumerMaxPerChannel; limit > 0 {
		ch.mu.Lock()
		_, dup := ch.consumers[tag]
		n := len(ch.consumers)
		ch.mu.Unlock()
		if !dup && n >= limit {
			return errorf(wire.NotAllowed, "reached maximum (%d) of consumers per channel", limit)
		}
	}
	if qd, ok := ch.c.s.node.FSM().Queue(ch.c.vhost, m.Queue); ok && qd.Owner != ch.c.s.node.ID() &&
		!(qd.Exclusive && qd.ExclusiveConn != ch.c.id) && ch.c.s.node.LocalQueue(ch.c.vhost, m.Queue) == nil {
		return ch.consumeRemote(m, qd, tag)
	}
	q, err := ch.c.lookupQueue(m.Queue)
	if err != nil {
		return err
	}
	ch.mu.Lock()
	if _, dup := ch.consumers[tag]; dup {
		ch.mu.Unlock()
		return fsm.ConsumerTagReused(tag)
	}
	cs := &consumer{ch: ch, tag: tag, queue: m.Queue, q: q, noAck: m.NoAck, exclusive: m.Exclusive, prefetch: ch.prefetch}
	ch.consumers[tag] = cs
	ch.mu.Unlock()

	if err := q.AddConsumer(cs, m.NoAck, m.Exclusive); err != nil {
		ch.mu.Lock()
		delete(ch.consumers, tag)
		ch.mu.Unlock()
		switch {
		case errors.Is(err, queue.ErrExclusiveConsumer), errors.Is(err, queue.ErrHasConsumers):
			return fsm.QueueInExclusiveUse(ch.c.vhost, m.Queue)
		case errors.Is(err, queue.ErrDeleted):
			return fsm.NoQueue(ch.c.vhost, m.Queue)
		}
		return err
	}
	if !m.NoWait {
		ch.c.sendMethod(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	ch.mu.Lock()
	cs.active = true
	ch.mu.Unlock()
	q.Kick()
	return nil
}

func (ch *channel) cancel(m *wire.BasicCancel) error {
	if ch.cancelReply(m) {
		return nil
	}
	ch.mu.Lock()
	cs := ch.consumers[m.ConsumerTag]
	if cs != nil {
		cs.closed = true
		delete(ch.consumers, m.ConsumerTag)
	}
	ch.mu.Unlock()
	if !m.NoWait {
		// Sent before RemoveConsumer: an auto-delete queue may go away right after.
		ch.c.sendMethod(ch.id, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	}
	if cs != nil {
		cs.leave()
	}
	return nil
}

func (ch *channel) get(m *wire.BasicGet) error {
	if err := ch.c.permitted(permRead, "queue", m.Queue); err != nil {
		return err
	}
	q, qd, err := ch.c.lookupAnyQueue(m.Queue)
	if err != nil {
		return err
	}
	if qd.Type == fsm.QueueTypeQuorum && singleActiveConsumer(ch.c.s.node.FSM(), qd) {
		return errorf(wire.ResourceLocked, "cannot obtain access to locked queue '%s' in vhost '%s'. "+
			"basic.get operations are not supported by quorum queues with single active consumer", qd.Name, qd.Vhost)
	}
	if q == nil {
		return ch.getRemote(m, qd)
	}
	// The queue lock is taken before the channel lock, never inside it (queues dispatch to
	// consumers with their lock held and then take the channel lock).
	d, ok := q.Get(m.NoAck)
	if !ok {
		ch.c.sendMethod(ch.id, &wire.BasicGetEmpty{})
		return nil
	}
	ch.c.s.stats.get.Add(1)
	if m.NoAck {
		ch.c.s.stats.getNoAck.Add(1)
	}
	ch.mu.Lock()
	ch.nextTag++
	tag := ch.nextTag
	if !m.NoAck {
		ch.unacked.push(unackedMsg{tag: tag, q: q, settled: queue.Settled{Msg: d.Msg, Seq: d.Seq, ExpiresAt: d.ExpiresAt}})
	}
	ch.c.sendContent(ch.id, &wire.BasicGetOk{
		DeliveryTag: tag, Redelivered: d.Redelivered, Exchange: d.Msg.Exchange,
		RoutingKey: d.Msg.RoutingKey, MessageCount: uint32(d.Remaining),
	}, d.Msg.Props, d.Msg.Body)
	ch.mu.Unlock()
	return nil
}

// ack settles one or many deliveries. In a transaction it is applied on commit.
func (ch *channel) ack(tag uint64, multiple bool) error {
	if ch.tx {
		return ch.txSettleAdd(txSettle{kind: 0, tag: tag, multiple: multiple})
	}
	return ch.settle(tag, multiple, func(msgs []unackedMsg) {
		ch.c.s.stats.ack.Add(uint64(len(msgs)))
		if len(msgs) == 1 && msgs[0].q != nil {
			one := [1]queue.Settled{msgs[0].settled}
			msgs[0].q.Ack(one[:])
			return
		}
		byQueue := make(map[*queue.Queue][]queue.Settled)
		for _, u := range msgs {
			if u.q != nil {
				byQueue[u.q] = append(byQueue[u.q], u.settled)
			}
		}
		for q, s := range byQueue {
			q.Ack(s)
		}
		settleRemote(msgs, datalink.SettleAck)
	})
}

func (ch *channel) reject(tag uint64, multiple, requeue bool) error {
	if ch.tx {
		return ch.txSettleAdd(txSettle{kind: 1, tag: tag, multiple: multiple, requeue: requeue})
	}
	return ch.settle(tag, multiple, func(msgs []unackedMsg) { requeueByQueue(msgs, requeue) })
}

// settle removes deliveries from the unacked list, returns their credit, hands them to apply
// (outside the channel lock: queues take their own locks) and kicks starved queues.
func (ch *channel) settle(tag uint64, multiple bool, apply func([]unackedMsg)) error {
	var buf [1]unackedMsg
	ch.mu.Lock()
	msgs, ok := ch.unacked.take(tag, multiple, buf[:0])
	if !ok {
		ch.mu.Unlock()
		return fsm.UnknownDeliveryTag(tag)
	}
	ch.releaseLocked(msgs)
	starved := len(ch.starved) > 0
	ch.mu.Unlock()
	apply(msgs)
	if starved {
		ch.kickConsumers()
	}
	return nil
}

func (ch *channel) txSettleAdd(s txSettle) error {
	// Validate now, as RabbitMQ does: an unknown tag fails the channel immediately.
	ch.mu.Lock()
	defer ch.mu.Unlock()
	live := ch.unacked.items[ch.unacked.head:]
	for _, u := range live {
		if !u.tombnote && (u.tag == s.tag || (s.multiple && u.tag <= s.tag)) {
			ch.txSettle = append(ch.txSettle, s)
			return nil
		}
	}
	if s.multiple && s.tag == 0 {
		ch.txSettle = append(ch.txSettle, s)
		return nil
	}
	return fsm.UnknownDeliveryTag(s.tag)
}

// recover requeues every unacknowledged delivery of the channel (basic.recover).
func (ch *channel) recover() {
	ch.mu.Lock()
	all := ch.unacked.takeAll()
	ch.releaseLocked(all)
	ch.mu.Unlock()
	requeueByQueue(all, true)
	ch.kickConsumers()
}

func randomName() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// singleActiveConsumer reports a queue declared with x-single-active-consumer true.
func singleActiveConsumer(f *fsm.FSM, qd fsm.Queue) bool {
	args, refusal := f.QueueArgs(qd)
	return refusal == nil && args.SingleActiveConsumer
}
