package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/wire"
)

// Version is reported to clients in server-properties.
const Version = "0.1.0"

var errAuthFailed = errors.New("authentication failed")

// handshake runs protocol header → start/start-ok → tune/tune-ok → open/open-ok.
func (c *conn) handshake() error {
	var hdr [8]byte
	if _, err := io.ReadFull(c.nc, hdr[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || isTimeout(err) {
			// A partial or slow header is a client that does not speak AMQP: tell it what we do.
			c.sendRaw(wire.ProtocolHeader)
		}
		return fmt.Errorf("read protocol header: %w", err)
	}
	if !bytes.Equal(hdr[:], wire.ProtocolHeader) {
		c.sendRaw(wire.ProtocolHeader)
		return fmt.Errorf("unsupported protocol header %q", hdr[:])
	}

	c.sendMethod(0, &wire.ConnectionStart{
		VersionMajor: 0, VersionMinor: 9,
		ServerProperties: wire.Table{
			"product":      "Warren",
			"version":      Version,
			"platform":     "Go",
			"cluster_name": c.s.cfg.ClusterName,
			"copyright":    "Warren authors",
			"information":  "Licensed under the MPL 2.0",
			"capabilities": wire.Table{
				"publisher_confirms":           true,
				"exchange_exchange_bindings":   true,
				"basic.nack":                   true,
				"consumer_cancel_notify":       true,
				"connection.blocked":           true,
				"consumer_priorities":          false,
				"authentication_failure_close": true,
				"per_consumer_qos":             true,
				"direct_reply_to":              true,
			},
		},
		Mechanisms: c.mechanisms(),
		Locales:    "en_US",
	})

	startOk := &wire.ConnectionStartOk{}
	if err := c.expect(startOk); err != nil {
		return err
	}
	if caps, ok := startOk.ClientProperties["capabilities"].(wire.Table); ok {
		c.cancelNotify, _ = caps["consumer_cancel_notify"].(bool)
		c.blockedNotify, _ = caps["connection.blocked"].(bool)
	}
	if startOk.Mechanism == "EXTERNAL" {
		if err := c.authenticateExternal(); err != nil {
			return err
		}
	} else {
		user, pass, err := saslCredentials(startOk.Mechanism, startOk.Response)
		if err != nil {
			c.closeWithError(errorf(wire.AccessRefused, "%v", err))
			return err
		}
		if err := c.authenticate(user, pass, startOk.Mechanism); err != nil {
			return err
		}
	}

	c.sendMethod(0, &wire.ConnectionTune{ChannelMax: c.s.cfg.ChannelMax, FrameMax: c.s.cfg.FrameMax, Heartbeat: c.s.cfg.Heartbeat})
	tuneOk := &wire.ConnectionTuneOk{}
	if err := c.expect(tuneOk); err != nil {
		return err
	}
	// The client's values win (py-amqp answers 60 even to a proposal of 0), within our limits.
	if tuneOk.FrameMax != 0 && tuneOk.FrameMax < wire.FrameMinSize {
		c.closeWithError(errorf(wire.NotAllowed, "frame_max=%d < %d min size", tuneOk.FrameMax, wire.FrameMinSize))
		return fmt.Errorf("frame_max %d too small", tuneOk.FrameMax)
	}
	if tuneOk.FrameMax > c.s.cfg.FrameMax {
		c.closeWithError(errorf(wire.NotAllowed, "frame_max=%d > %d max size", tuneOk.FrameMax, c.s.cfg.FrameMax))
		return fmt.Errorf("frame_max %d too large", tuneOk.FrameMax)
	}
	if tuneOk.FrameMax != 0 {
		c.frameMax = tuneOk.FrameMax
	}
	if err := c.tuneChannelMax(tuneOk.ChannelMax); err != nil {
		return err
	}
	c.fr.SetMaxFrameSize(c.s.cfg.FrameMax)
	c.heartbeat = tuneOk.Heartbeat

	open := &wire.ConnectionOpen{}
	if err := c.expect(open); err != nil {
		return err
	}
	if !c.s.node.FSM().VhostExists(open.VirtualHost) {
		c.closeWithError(errorf(wire.NotAllowed, "vhost %s not found", open.VirtualHost))
		return fmt.Errorf("unknown vhost %q", open.VirtualHost)
	}
	if ae := c.checkVhostAccess(c.user, open.VirtualHost); ae != nil {
		c.closeWithError(ae)
		return fmt.Errorf("user %q may not open vhost %q", c.user, open.VirtualHost)
	}
	if err := c.admit(open.VirtualHost); err != nil {
		return err
	}
	c.vhost = open.VirtualHost
	c.sendMethod(0, &wire.ConnectionOpenOk{})
	c.opened(startOk.ClientProperties)
	c.log = c.log.With("user", c.user, "vhost", c.vhost)
	c.log.Debug("connection open", "heartbeat_s", c.heartbeat, "frame_max", c.frameMax)
	return nil
}

func (c *conn) authenticate(user, pass, mechanism string) error {
	host := remoteHost(c.nc.RemoteAddr())
	wait, reserved, refuse := c.s.logins.admit(host)
	if refuse {
		// Answered late, so a refused address cannot spin through connections either.
		if !c.pause(c.s.cfg.FailedLoginMaxDelay) {
			return fmt.Errorf("%w: server closing", errAuthFailed)
		}
		c.closeWithError(errorf(wire.AccessRefused,
			"Login was refused using authentication mechanism %s. Too many failed logins from %s; try again later.", mechanism, host))
		return fmt.Errorf("%w: user %q: too many failed logins from %s", errAuthFailed, user, host)
	}
	if wait > 0 && !c.pause(wait) {
		return fmt.Errorf("%w: server closing", errAuthFailed)
	}
	hash, _, ok := c.s.node.FSM().User(user)
	if !ok || !broker.CheckPassword(hash, pass) {
		if d := c.s.logins.done(host, user, false, reserved); d > 0 && !c.pause(d) {
			return fmt.Errorf("%w: server closing", errAuthFailed)
		}
		c.closeWithError(errorf(wire.AccessRefused,
			"Login was refused using authentication mechanism %s. For details see the broker logfile.", mechanism))
		return fmt.Errorf("%w: user %q", errAuthFailed, user)
	}
	c.s.logins.done(host, user, true, reserved)
	if slices.Contains(c.s.cfg.LoopbackUsers, user) && !isLoopback(c.nc.RemoteAddr()) {
		c.closeWithError(errorf(wire.AccessRefused, "Login was refused using authentication mechanism %s. "+
			"User '%s' can only connect via localhost", mechanism, user))
		return fmt.Errorf("%w: user %q may connect only via localhost", errAuthFailed, user)
	}
	c.user = user
	return nil
}

// pause waits d on this connection's goroutine (no lock held); false if the server is closing.
func (c *conn) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.s.closingCh:
		return false
	}
}

// saslCredentials decodes PLAIN ("\0user\0pass") and AMQPLAIN (a field table without its length
// prefix holding LOGIN and PASSWORD, as py-amqp and kombu send by default).
func saslCredentials(mechanism, response string) (user, pass string, err error) {
	switch mechanism {
	case "PLAIN":
		parts := strings.SplitN(response, "\x00", 3)
		if len(parts) != 3 {
			return "", "", errors.New("malformed PLAIN response")
		}
		return parts[1], parts[2], nil
	case "AMQPLAIN":
		b := make([]byte, 4+len(response))
		b[0], b[1], b[2], b[3] = byte(len(response)>>24), byte(len(response)>>16), byte(len(response)>>8), byte(len(response))
		copy(b[4:], response)
		t, _, err := wire.DecodeTable(b)
		if err != nil {
			return "", "", fmt.Errorf("malformed AMQPLAIN response: %w", err)
		}
		return broker.StringArg(t, "LOGIN"), broker.StringArg(t, "PASSWORD"), nil
	}
	return "", "", fmt.Errorf("unsupported authentication mechanism '%s'", mechanism)
}

// expect reads the next frame of the handshake and decodes it into m; anything else on the
// way fails the handshake (heartbeats excepted).
func (c *conn) expect(m wire.Method) error {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			var pe *wire.ProtocolError
			if errors.As(err, &pe) {
				c.closeWithError(asAMQPError(err))
			}
			return fmt.Errorf("read %s: %w", m.Name(), err)
		}
		if f.Type == wire.FrameHeartbeat {
			if len(f.Payload) != 0 || f.Channel != 0 {
				c.closeWithError(errorf(wire.FrameError, "heartbeat frame with %d bytes of payload on channel %d", len(f.Payload), f.Channel))
				return fmt.Errorf("malformed heartbeat during handshake")
			}
			continue
		}
		if f.Type != wire.FrameMethod || f.Channel != 0 {
			c.closeWithError(errorf(wire.UnexpectedFrame, "expected %s, got frame type %d on channel %d", m.Name(), f.Type, f.Channel))
			return fmt.Errorf("unexpected frame during handshake")
		}
		cls, mth, args, err := wire.SplitMethod(f.Payload)
		if err != nil {
			c.closeWithError(asAMQPError(err))
			return err
		}
		if cls == wire.ClassConnection && mth == 50 { // client gave up with connection.close
			c.sendMethod(0, &wire.ConnectionCloseOk{})
			return fmt.Errorf("client closed during handshake")
		}
		if cls != m.ClassID() || mth != m.MethodID() {
			c.closeWithError(errorf(wire.CommandInvalid, "expected %s, got class %d method %d", m.Name(), cls, mth))
			return fmt.Errorf("expected %s, got class %d method %d", m.Name(), cls, mth)
		}
		if err := m.Decode(args); err != nil {
			c.closeWithError(asAMQPError(err))
			return err
		}
		return nil
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
