package server

import (
	"strconv"

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
		ExpirationMs: -1,
	}
	sum, err := wire.ScanProperties(msg.Props)
	if err != nil {
		return err
	}
	msg.Persistent = sum.DeliveryMode == 2
	msg.Priority = sum.Priority
	var seq uint64
	if ch.confirm {
		ch.publishSeq++
		seq = ch.publishSeq
	}
	return ch.run(wire.ClassBasic, 40, func() error {
		if sum.HasExpiration {
			ms, err := strconv.ParseInt(string(sum.Expiration), 10, 64)
			if err != nil || ms < 0 {
				return errorf(wire.PreconditionFailed, "invalid expiration '%s'", sum.Expiration)
			}
			msg.ExpirationMs = ms
		}
		var headers map[string]any
		if sum.Headers != nil {
			t, _, err := wire.DecodeTable(sum.Headers)
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
	res, refs, err := ch.c.s.node.Publish(ch.c.vhost, exchange, msg, headers, ch.routeBuf)
	ch.routeBuf = refs[:0]
	if err != nil {
		return err
	}
	if res.Routed == 0 && mandatory {
		ch.c.sendContent(ch.id, &wire.BasicReturn{ReplyCode: wire.NoRoute, ReplyText: "NO_ROUTE",
			Exchange: exchange, RoutingKey: msg.RoutingKey}, msg.Props, msg.Body)
	}
	if seq != 0 {
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

// ackLater records a confirm; it goes out (coalesced with multiple=true) once the reader has
// no more buffered frames, so a burst of publishes costs one basic.ack.
func (ch *channel) ackLater(seq uint64) {
	if !ch.pendingAck {
		ch.pendingAck = true
		ch.c.confirmDirty = append(ch.c.confirmDirty, ch)
	}
	_ = seq // every seq up to publishSeq is acked by the flush
}

func (ch *channel) flushConfirms() {
	if !ch.pendingAck {
		return
	}
	ch.pendingAck = false
	ch.sendAckUpTo(ch.publishSeq)
}

func (ch *channel) sendAckUpTo(seq uint64) {
	if seq <= ch.confirmedTo {
		return
	}
	ch.c.sendMethod(ch.id, &wire.BasicAck{DeliveryTag: seq, Multiple: seq-ch.confirmedTo > 1})
	ch.confirmedTo = seq
}

func (ch *channel) nack(seq uint64) {
	if ch.pendingAck {
		ch.pendingAck = false
		ch.sendAckUpTo(seq - 1)
	}
	ch.c.sendMethod(ch.id, &wire.BasicNack{DeliveryTag: seq})
	ch.confirmedTo = seq
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
