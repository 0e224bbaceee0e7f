package server

import (
	"errors"

	"github.com/warrenmq/warren/broker"

	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// publishState assembles one basic.publish from its method, header and body frames.
type publishState struct {
	active    bool
	gotHeader bool
	exchange  string
	key       string
	mandatory bool
	size      uint64
	propsLen  int
	buf       []byte // properties then body, one allocation owned by the message
}

func (ch *channel) startPublish(m *wire.BasicPublish) error {
	ch.pending = publishState{active: true, exchange: m.Exchange, key: m.RoutingKey, mandatory: m.Mandatory}
	return nil
}

func (ch *channel) onHeader(payload []byte) error {
	p := &ch.pending
	if !p.active || p.gotHeader {
		return errorf(wire.UnexpectedFrame, "expected method frame, got non method frame instead")
	}
	h, err := wire.ParseContentHeader(payload)
	if err != nil {
		return err
	}
	if h.ClassID != wire.ClassBasic {
		return errorf(wire.UnexpectedFrame, "content header for class %d, expected class 60", h.ClassID)
	}
	if h.BodySize > ch.c.s.cfg.MaxMessageSize {
		ch.pending = publishState{}
		return ch.run(wire.ClassBasic, 40, func() error {
			return errorf(wire.PreconditionFailed, "message size %d is larger than configured max size %d", h.BodySize, ch.c.s.cfg.MaxMessageSize)
		})
	}
	p.gotHeader = true
	p.size = h.BodySize
	p.propsLen = len(h.Props)
	p.buf = make([]byte, len(h.Props), len(h.Props)+int(h.BodySize))
	copy(p.buf, h.Props)
	if h.BodySize == 0 {
		return ch.finishPublish()
	}
	return nil
}

func (ch *channel) onBody(payload []byte) error {
	p := &ch.pending
	if !p.active || !p.gotHeader {
		return errorf(wire.UnexpectedFrame, "expected method frame, got non method frame instead")
	}
	if uint64(len(p.buf)-p.propsLen+len(payload)) > p.size {
		return errorf(wire.FrameError, "body frames carry more than the %d bytes the content header announced", p.size)
	}
	p.buf = append(p.buf, payload...)
	if uint64(len(p.buf)-p.propsLen) == p.size {
		return ch.finishPublish()
	}
	return nil
}

// finishPublish routes a complete message, answers mandatory returns and confirms.
func (ch *channel) finishPublish() error {
	p := ch.pending
	ch.pending = publishState{}
	msg := &queue.Message{
		Exchange: p.exchange, RoutingKey: p.key,
		Props: p.buf[:p.propsLen:p.propsLen], Body: p.buf[p.propsLen:],
	}
	var seq uint64
	if ch.confirm {
		ch.publishSeq++
		seq = ch.publishSeq
	}
	return ch.run(wire.ClassBasic, 40, func() error {
		if err := ch.c.permitPublish(p.exchange); err != nil {
			return err
		}
		ch.c.s.stats.publish.Add(1)
		rawHeaders, err := broker.FillFromProps(msg)
		if err != nil {
			var ie *broker.InvalidExpirationError
			if errors.As(err, &ie) {
				return errorf(wire.PreconditionFailed, "%s", ie.Error())
			}
			return err
		}
		var headers map[string]any
		if rawHeaders != nil {
			t, _, err := wire.DecodeTable(rawHeaders)
			if err != nil {
				return err
			}
			headers = t
		}
		if ch.tx {
			if _, ok := ch.c.s.node.FSM().Exchange(ch.c.vhost, p.exchange); !ok && p.exchange != "" {
				return errorf(wire.NotFound, "no exchange '%s' in vhost '%s'", p.exchange, ch.c.vhost)
			}
			ch.txPublish = append(ch.txPublish, txPublish{exchange: p.exchange, mandatory: p.mandatory, msg: msg, headers: headers})
			return nil
		}
		return ch.deliverPublish(p.exchange, p.mandatory, msg, headers, seq)
	})
}

func (ch *channel) deliverPublish(exchange string, mandatory bool, msg *queue.Message, headers map[string]any, seq uint64) error {
	var onDone func(error)
	if seq != 0 {
		onDone = ch.deferredConfirm(seq)
		// Counted before the publish starts: its outcome may arrive before Publish returns.
		ch.durablePending.Add(1)
	}
	res, err := ch.c.s.node.Publish(ch.c.vhost, exchange, msg, headers, &ch.scratch, onDone)
	if seq != 0 && (err != nil || !res.Deferred) {
		ch.durablePending.Add(-1) // onDone will not be called
	}
	if err != nil {
		return err
	}
	ch.c.s.stats.countRouting(res.Routed, mandatory)
	if res.Routed == 0 && mandatory {
		ch.c.sendContent(ch.id, &wire.BasicReturn{ReplyCode: wire.NoRoute, ReplyText: "NO_ROUTE",
			Exchange: exchange, RoutingKey: msg.RoutingKey}, msg.Props, msg.Body)
	}
	if seq != 0 && !res.Deferred {
		if res.Rejected {
			ch.nack(seq)
		} else {
			ch.ackLater(seq)
		}
	}
	if res.Throttle != nil {
		ch.c.throttle(res.Throttle)
	}
	ch.c.waitForMemory()
	return nil
}

// deferredConfirm returns the callback that confirms publish seq once every part of it is done
// (its persistent message on disk, other nodes' queues accepted it). It runs on the message
// store's or a data link's goroutine (or on this reader's, if they were quick), sends a single
// (not multiple) ack or nack, and does nothing once the channel closed: clients reuse channel
// numbers, so a late confirm must not reach a new channel.
func (ch *channel) deferredConfirm(seq uint64) func(error) {
	return func(err error) {
		ch.mu.Lock()
		if !ch.confirmsClosed {
			if err != nil {
				if !errors.Is(err, broker.ErrRefused) {
					ch.c.log.Warn("publish nacked", "err", err)
				}
				ch.c.sendMethod(ch.id, &wire.BasicNack{DeliveryTag: seq})
			} else {
				ch.c.sendMethod(ch.id, &wire.BasicAck{DeliveryTag: seq})
				ch.c.s.stats.confirm.Add(1)
			}
		}
		ch.mu.Unlock()
		ch.durablePending.Add(-1)
	}
}

// ackLater records a confirm; it goes out when the reader has no more buffered frames, as one
// basic.ack with multiple=true for the burst when no confirm waits for the disk.
func (ch *channel) ackLater(seq uint64) {
	if len(ch.ackPending) == 0 {
		ch.c.confirmDirty = append(ch.c.confirmDirty, ch)
	}
	ch.ackPending = append(ch.ackPending, seq)
	ch.c.s.stats.confirm.Add(1)
}

func (ch *channel) flushConfirms() {
	n := len(ch.ackPending)
	if n == 0 {
		return
	}
	if ch.durablePending.Load() == 0 {
		// Every earlier publish is settled (disk confirms are sent before the counter drops):
		// one multiple ack covers the burst.
		ch.c.sendMethod(ch.id, &wire.BasicAck{DeliveryTag: ch.ackPending[n-1], Multiple: n > 1})
	} else {
		// A publish before these still waits for the disk: a multiple ack would confirm it too.
		ch.c.lockOut()
		for _, seq := range ch.ackPending {
			ch.c.out = wire.AppendMethodFrame(ch.c.out, ch.id, &wire.BasicAck{DeliveryTag: seq})
		}
		ch.c.unlockOut()
	}
	ch.ackPending = ch.ackPending[:0]
}

func (ch *channel) nack(seq uint64) {
	ch.flushConfirms()
	ch.c.sendMethod(ch.id, &wire.BasicNack{DeliveryTag: seq})
}

// commit applies a transaction: its publishes, then its acks and rejects, in order.
func (ch *channel) commit() error {
	pubs, settles := ch.txPublish, ch.txSettle
	ch.txPublish, ch.txSettle = nil, nil
	for _, tp := range pubs {
		if err := ch.deliverPublish(tp.exchange, tp.mandatory, tp.msg, tp.headers, 0); err != nil {
			return err
		}
	}
	ch.tx = false // settle directly, then back to tx mode
	defer func() { ch.tx = true }()
	for _, s := range settles {
		var err error
		if s.kind == 0 {
			err = ch.ack(s.tag, s.multiple)
		} else {
			err = ch.reject(s.tag, s.multiple, s.requeue)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
