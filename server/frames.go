package server

import (
	"github.com/warrenmq/warren/wire"
)

// handleFrame dispatches one frame after the handshake. A returned error is a connection
// exception (or errConnDone); channel exceptions are handled inside.
func (c *conn) handleFrame(f wire.Frame) error {
	switch f.Type {
	case wire.FrameHeartbeat:
		if f.Channel != 0 {
			return errorf(wire.FrameError, "heartbeat frame on channel %d", f.Channel)
		}
		if len(f.Payload) != 0 {
			return errorf(wire.FrameError, "heartbeat frame with %d bytes of payload", len(f.Payload))
		}
		return nil
	case wire.FrameMethod:
		if f.Channel == 0 {
			return c.handleConnectionMethod(f.Payload)
		}
		return c.handleChannelMethod(f.Channel, f.Payload)
	case wire.FrameHeader, wire.FrameBody:
		if f.Channel == 0 {
			return errorf(wire.CommandInvalid, "content frame on channel 0")
		}
		ch := c.channel(f.Channel)
		if ch == nil {
			return errorf(wire.ChannelError, "expected 'channel.open' on channel %d", f.Channel)
		}
		if ch.closing {
			return nil // discarded until the client's channel.close-ok
		}
		if f.Type == wire.FrameHeader {
			return ch.onHeader(f.Payload)
		}
		return ch.onBody(f.Payload)
	}
	return errorf(wire.FrameError, "unknown frame type %d", f.Type)
}

func (c *conn) channel(id uint16) *channel {
	if c.lastCh != nil && c.lastCh.id == id {
		return c.lastCh
	}
	ch := c.channels[id]
	if ch != nil {
		c.lastCh = ch
	}
	return ch
}

func (c *conn) handleConnectionMethod(payload []byte) error {
	if c.closeSent.Load() {
		cls, mth, _, _ := wire.SplitMethod(payload)
		if cls == wire.ClassConnection && (mth == 50 || mth == 51) {
			if mth == 50 {
				c.sendMethod(0, &wire.ConnectionCloseOk{})
			}
			return errConnDone
		}
		return nil
	}
	m, err := wire.DecodeMethod(payload)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case *wire.ConnectionClose:
		c.log.Debug("client closed connection", "code", m.ReplyCode, "text", m.ReplyText)
		c.releaseResources()
		c.sendMethod(0, &wire.ConnectionCloseOk{})
		return errConnDone
	case *wire.ConnectionCloseOk:
		return errConnDone
	case *wire.ConnectionUpdateSecret:
		c.sendMethod(0, &wire.ConnectionUpdateSecretOk{})
		return nil
	case *wire.ConnectionBlocked, *wire.ConnectionUnblocked:
		return nil
	}
	return &amqpError{code: wire.CommandInvalid, text: "COMMAND_INVALID - unexpected method " + m.Name() + " on channel 0",
		classID: m.ClassID(), methodID: m.MethodID()}
}

func (c *conn) handleChannelMethod(id uint16, payload []byte) error {
	cls, mth, args, err := wire.SplitMethod(payload)
	if err != nil {
		return err
	}
	ch := c.channel(id)
	if ch == nil {
		if cls == wire.ClassChannel && mth == 10 {
			return c.openChannel(id)
		}
		return &amqpError{code: wire.ChannelError, text: "CHANNEL_ERROR - expected 'channel.open' on channel " + itoa(int(id)),
			classID: cls, methodID: mth}
	}
	if ch.closing {
		// After our channel.close only close-ok (or the client's own close) counts.
		if cls == wire.ClassChannel && (mth == 41 || mth == 40) {
			if mth == 40 {
				c.sendMethod(id, &wire.ChannelCloseOk{})
			}
			c.dropChannel(ch)
		}
		return nil
	}
	if ch.pending.active {
		return &amqpError{code: wire.UnexpectedFrame, text: "UNEXPECTED_FRAME - expected content header for class 60, got non content header frame instead",
			classID: cls, methodID: mth}
	}
	// The two hottest methods decode into structs reused for the whole connection.
	if cls == wire.ClassBasic {
		switch mth {
		case 40:
			if err := c.pub.Decode(args); err != nil {
				return err
			}
			return ch.run(cls, mth, func() error { return ch.startPublish(&c.pub) })
		case 80:
			if err := c.ackM.Decode(args); err != nil {
				return err
			}
			return ch.run(cls, mth, func() error { return ch.ack(c.ackM.DeliveryTag, c.ackM.Multiple) })
		}
	}
	m, ok := wire.NewMethod(cls, mth)
	if !ok {
		return &amqpError{code: wire.NotImplemented, text: "NOT_IMPLEMENTED - unknown method: class " + itoa(int(cls)) + ", method " + itoa(int(mth)),
			classID: cls, methodID: mth}
	}
	if err := m.Decode(args); err != nil {
		return err
	}
	return ch.run(cls, mth, func() error { return ch.handle(m) })
}

func (c *conn) openChannel(id uint16) error {
	if max := c.negotiatedChannelMax(); id > max {
		return errorf(wire.NotAllowed, "channel number %d exceeds channel_max %d", id, max)
	}
	if err := c.admitChannel(); err != nil {
		return err
	}
	ch := newChannel(c, id)
	c.channels[id] = ch
	c.chansMu.Lock()
	c.allChans[ch] = struct{}{}
	c.chansMu.Unlock()
	c.sendMethod(id, &wire.ChannelOpenOk{})
	return nil
}

func (c *conn) dropChannel(ch *channel) {
	ch.shutdown()
	c.releaseChannel()
	delete(c.channels, ch.id)
	c.chansMu.Lock()
	delete(c.allChans, ch)
	c.chansMu.Unlock()
	if c.lastCh == ch {
		c.lastCh = nil
	}
}

// flushConfirms sends the publisher confirms collected while frames were still buffered.
func (c *conn) flushConfirms() {
	for _, ch := range c.confirmDirty {
		ch.flushConfirms()
	}
	c.confirmDirty = c.confirmDirty[:0]
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	neg := n < 0
	if neg {
		n = -n
	}
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}
