package server

import (
	"errors"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/fsm"

	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// publishState assembles one basic.publish from its method, header and body frames.
//
// Memory follows the bytes that arrived, never the size a header announces: the properties
// wait in the channel's reused propsBuf, the message's single buffer (properties then body) is
// allocated when the first body frame arrives, sized exactly when that frame completes the body
// (the common case: one allocation per message) and otherwise grown with what was received.
type publishState struct {
	active    bool
	gotHeader bool
	exchange  string
	key       string
	mandatory bool
	size      uint64 // body size the header announced
	received  uint64 // body bytes that arrived
	propsLen  int
	buf       []byte // nil until the first body frame; then properties and body so far
	progress  int64  // reader clock (monoNow) at the last frame of this message
}

// Publish assembly limits (see docs/limits.md).
const (
	// minBodyGrowth is the smallest buffer a partial body gets, so a body trickled a byte at a
	// time does not reallocate on every frame.
	minBodyGrowth = 512
	// maxKeptPropsBuf bounds the properties scratch a channel keeps between messages.
	maxKeptPropsBuf = 4 << 10
)

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
	cfg := &ch.c.s.cfg
	if h.BodySize > cfg.MaxMessageSize {
		ch.pending = publishState{}
		return ch.run(wire.ClassBasic, 40, func() error {
			return errorf(wire.PreconditionFailed, "message size %d is larger than configured max size %d", h.BodySize, cfg.MaxMessageSize)
		})
	}
	if h.BodySize == 0 {
		p.gotHeader = true
		p.propsLen = len(h.Props)
		p.buf = append(make([]byte, 0, len(h.Props)), h.Props...)
		return ch.finishPublish()
	}
	c := ch.c
	if c.announced+h.BodySize > cfg.MaxAnnouncedBodyBytes {
		ch.pending = publishState{}
		return ch.run(wire.ClassBasic, 40, func() error {
			return errorf(wire.PreconditionFailed, "message of %d bytes would take this connection's announced but unreceived body bytes over %d (%d pending)",
				h.BodySize, cfg.MaxAnnouncedBodyBytes, c.announced)
		})
	}
	p.gotHeader = true
	p.size = h.BodySize
	p.propsLen = len(h.Props)
	ch.propsBuf = append(ch.propsBuf[:0], h.Props...)
	c.announced += h.BodySize
	c.partialStarted(p)
	return nil
}

func (ch *channel) onBody(payload []byte) error {
	p := &ch.pending
	if !p.active || !p.gotHeader {
		return errorf(wire.UnexpectedFrame, "expected method frame, got non method frame instead")
	}
	n := uint64(len(payload))
	if p.received+n > p.size {
		return errorf(wire.FrameError, "body frames carry more than the %d bytes the content header announced", p.size)
	}
	if p.buf == nil {
		p.buf = firstBodyBuf(ch.propsBuf, payload, int(p.size))
		if cap(ch.propsBuf) > maxKeptPropsBuf {
			ch.propsBuf = nil
		}
	} else {
		p.buf = appendBody(p.buf, payload, p.propsLen+int(p.size))
	}
	p.received += n
	c := ch.c
	c.announced -= n
	if p.received == p.size {
		c.partialEnded()
		return ch.finishPublish()
	}
	p.progress = c.dr.now
	return nil
}

// firstBodyBuf allocates a message's buffer at its first body frame: exact when the frame
// completes the body (one allocation per message), otherwise room for what arrived, doubled.
func firstBodyBuf(props, payload []byte, size int) []byte {
	total := len(props) + size
	need := len(props) + len(payload)
	c := total
	if need < total {
		c = min(total, max(2*need, len(props)+minBodyGrowth))
	}
	buf := append(make([]byte, 0, c), props...)
	return append(buf, payload...)
}

// appendBody adds a later body frame, growing the buffer by doubling but never past total.
func appendBody(buf, payload []byte, total int) []byte {
	if need := len(buf) + len(payload); need > cap(buf) {
		grown := make([]byte, len(buf), min(total, max(2*cap(buf), need)))
		copy(grown, buf)
		buf = grown
	}
	return append(buf, payload...)
}

// abandonPublish drops a half-received message (channel closed, connection gone) and returns
// its unreceived bytes to the connection's allowance.
func (ch *channel) abandonPublish() {
	p := &ch.pending
	if p.gotHeader && p.received < p.size {
		ch.c.announced -= p.size - p.received
		ch.c.partialEnded()
	}
	ch.pending = publishState{}
	ch.propsBuf = nil
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
		if err := ch.rewriteReplyTo(msg); err != nil {
			return err
		}
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
				return fsm.NoExchange(ch.c.vhost, p.exchange)
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
	res, err := ch.publishOrReply(exchange, msg, headers, onDone)
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
		ch.c.resetBodyClocks()
	}
	if ch.c.s.mem.blocked.Load() {
		ch.c.waitForMemory()
		ch.c.resetBodyClocks()
	}
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
