package server

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// A consumer of a queue owned by another node: the owner dispatches to it over the data link
// (round-robin with its local consumers, within prefetch credit it keeps), and this node turns
// each delivery into a basic.deliver with its own delivery tag.

type remoteDelivery struct {
	d   datalink.Delivery
	msg *queue.Message
}

// RemoteDeliver is called on the data link's goroutine.
func (cs *consumer) RemoteDeliver(d datalink.Delivery, msg *queue.Message) {
	ch := cs.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if cs.closed {
		return // cancelled: the owner takes back what was in flight
	}
	if !cs.active {
		// consume-ok is not on the wire yet: hold the delivery until it is.
		cs.early = append(cs.early, remoteDelivery{d, msg})
		return
	}
	cs.deliverRemoteLocked(d, msg)
}

func (cs *consumer) deliverRemoteLocked(d datalink.Delivery, msg *queue.Message) {
	if cs.ch.holdRemoteLocked(cs, d, msg) {
		return
	}
	cs.deliverRemoteNowLocked(d, msg)
}

func (cs *consumer) deliverRemoteNowLocked(d datalink.Delivery, msg *queue.Message) {
	ch := cs.ch
	ch.nextTag++
	tag := ch.nextTag
	if !cs.noAck {
		cs.unacked++
		ch.unacked.push(unackedMsg{tag: tag, cons: cs, rsub: cs.remote, rseq: d.Seq})
	}
	c := ch.c
	c.lockOut()
	c.appendContentLocked(ch.id, &wire.BasicDeliver{
		ConsumerTag: cs.tag, DeliveryTag: tag, Redelivered: d.Redelivered,
		Exchange: msg.Exchange, RoutingKey: msg.RoutingKey,
	}, msg.Props, msg.Body)
	c.unlockOut()
	c.s.stats.deliver.Add(1)
	if cs.noAck {
		c.s.stats.deliverNoAck.Add(1)
		cs.remote.Credit(1)
	}
}

// RemoteCancelled: the owner cancelled (queue deleted) or the link to it broke; the client is
// told as for a local queue deletion. Unacked deliveries of this consumer are void: the owner
// already took them back.
func (cs *consumer) RemoteCancelled() { cs.Cancelled(nil) }

// consumeRemote subscribes to a queue owned by another node.
func (ch *channel) consumeRemote(m *wire.BasicConsume, qd fsm.Queue, tag string) error {
	ch.mu.Lock()
	if _, dup := ch.consumers[tag]; dup {
		ch.mu.Unlock()
		return fsm.ConsumerTagReused(tag)
	}
	cs := &consumer{ch: ch, tag: tag, queue: m.Queue, noAck: m.NoAck, exclusive: m.Exclusive, prefetch: ch.prefetch}
	ch.consumers[tag] = cs
	ch.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub, err := ch.c.s.node.ConsumeRemote(ctx, qd.Owner, qd.Vhost, qd.Name, ch.remoteCredit(cs.prefetch), m.NoAck, m.Exclusive, cs)
	if err != nil {
		ch.mu.Lock()
		delete(ch.consumers, tag)
		cs.closed = true
		ch.mu.Unlock()
		return remoteQueueErr(err, qd)
	}
	if !m.NoWait {
		ch.c.sendMethod(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	ch.mu.Lock()
	cs.remote = sub
	cs.active = true
	early := cs.early
	cs.early = nil
	if !cs.closed {
		for _, rd := range early {
			cs.deliverRemoteLocked(rd.d, rd.msg)
		}
	}
	ch.mu.Unlock()
	return nil
}

// getRemote answers basic.get for a queue owned by another node.
func (ch *channel) getRemote(m *wire.BasicGet, qd fsm.Queue) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, msg, sub, ok, err := ch.c.s.node.GetRemote(ctx, qd.Owner, qd.Vhost, qd.Name, m.NoAck)
	if err != nil {
		return remoteQueueErr(err, qd)
	}
	if !ok {
		ch.c.sendMethod(ch.id, &wire.BasicGetEmpty{})
		return nil
	}
	ch.mu.Lock()
	ch.nextTag++
	tag := ch.nextTag
	if !m.NoAck {
		ch.unacked.push(unackedMsg{tag: tag, rsub: sub, rseq: d.Seq})
	}
	ch.c.sendContent(ch.id, &wire.BasicGetOk{
		DeliveryTag: tag, Redelivered: d.Redelivered, Exchange: msg.Exchange,
		RoutingKey: msg.RoutingKey, MessageCount: d.Remaining,
	}, msg.Props, msg.Body)
	ch.mu.Unlock()
	ch.c.s.stats.get.Add(1)
	if m.NoAck {
		ch.c.s.stats.getNoAck.Add(1)
	}
	return nil
}

// purgeRemote purges a queue owned by another node.
func (ch *channel) purgeRemote(qd fsm.Queue) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := ch.c.s.node.PurgeRemote(ctx, qd.Owner, qd.Vhost, qd.Name)
	if err != nil {
		return 0, remoteQueueErr(err, qd)
	}
	return n, nil
}

func remoteQueueErr(err error, qd fsm.Queue) error {
	var re *datalink.RemoteError
	if asRemote(err, &re) && re.Code != 0 {
		return &amqpError{code: re.Code, text: re.Text}
	}
	return errorf(wire.NotFound, "queue '%s' in vhost '%s' is on node '%s', which cannot be reached: %v", qd.Name, qd.Vhost, qd.Owner, err)
}

// settleRemote hands settled deliveries of remote consumers back to their owners.
func settleRemote(msgs []unackedMsg, kind datalink.SettleKind) {
	bySub := map[*broker.RemoteSub][]uint64{}
	var order []*broker.RemoteSub
	for _, u := range msgs {
		if u.rsub == nil {
			continue
		}
		if _, ok := bySub[u.rsub]; !ok {
			order = append(order, u.rsub)
		}
		bySub[u.rsub] = append(bySub[u.rsub], u.rseq)
	}
	// Each remote basic.get has its own sub, and the owner puts each requeued batch back at the
	// queue's front: requeue the latest first so the messages keep their order, as RabbitMQ.
	if kind == datalink.SettleRequeue {
		slices.Reverse(order)
	}
	for _, s := range order {
		s.Settle(kind, bySub[s])
	}
}

func asRemote(err error, target **datalink.RemoteError) bool {
	return errors.As(err, target)
}
