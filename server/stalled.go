package server

import (
	"time"

	"github.com/warrenmq/warren/wire"
)

// A publish whose body stops arriving would hold its channel (and the bytes received so far)
// for as long as the client keeps the connection open. The reader checks the half-received
// bodies every BodyTimeout/4 (woken by the read deadline if the socket is silent) and closes
// the channel of any body that made no progress for BodyTimeout.

func (c *conn) sweepInterval() int64 {
	return int64(max(c.s.cfg.BodyTimeout/4, 10*time.Millisecond))
}

// partialStarted counts a channel that now waits for body frames.
func (c *conn) partialStarted(p *publishState) {
	p.progress = c.dr.now
	c.partial++
	if c.partial == 1 {
		c.nextSweep = c.dr.now + c.sweepInterval()
		c.dr.wakeAt = c.nextSweep
	}
}

// partialEnded uncounts a channel whose body completed or was dropped.
func (c *conn) partialEnded() {
	c.partial--
	if c.partial == 0 {
		c.dr.wakeAt = 0
	}
}

// sweepBodies closes the channels whose body stalled, with 406 PRECONDITION_FAILED (a soft
// error, like RabbitMQ's refusal of an oversized message): the connection and its other
// channels carry on.
func (c *conn) sweepBodies() {
	now := c.dr.now
	if c.partial == 0 || now < c.nextSweep {
		return
	}
	limit := int64(c.s.cfg.BodyTimeout)
	for _, ch := range c.channels {
		p := &ch.pending
		if ch.closing || !p.gotHeader || p.received >= p.size || now-p.progress < limit {
			continue
		}
		got, size := p.received, p.size
		c.log.Info("closing channel: message body stalled", "channel", ch.id, "received", got, "announced", size)
		ch.closeWithError(&amqpError{code: wire.PreconditionFailed, classID: wire.ClassBasic, methodID: 40,
			text: errorf(wire.PreconditionFailed, "message body not received within %s: %d of %d bytes arrived",
				c.s.cfg.BodyTimeout, got, size).text})
	}
	if c.partial > 0 {
		c.nextSweep = now + c.sweepInterval()
		c.dr.wakeAt = c.nextSweep
	}
}

// resetBodyClocks restarts the stall clock of every half-received body after the reader itself
// stopped reading (memory alarm, flow control): the client was not the one who stalled.
func (c *conn) resetBodyClocks() {
	if c.partial == 0 {
		return
	}
	now := monoNow()
	for _, ch := range c.channels {
		if ch.pending.gotHeader {
			ch.pending.progress = now
		}
	}
}
