package server_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/wire"
)

// rawConn is a hand-driven AMQP client for sending what no well-behaved client would.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	fr *wire.FrameReader
}

func rawDial(t *testing.T, n *testNode) *rawConn {
	t.Helper()
	nc, err := net.Dial("tcp", n.AMQPAddr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, fr: wire.NewFrameReader(nc, wire.DefaultFrameMax)}
}

func (r *rawConn) send(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

func (r *rawConn) sendMethod(ch uint16, m wire.Method) { r.send(wire.AppendMethodFrame(nil, ch, m)) }

// next reads frames until a method arrives (heartbeats skipped).
func (r *rawConn) next() wire.Method {
	r.t.Helper()
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("read frame: %v", err)
		}
		if f.Type != wire.FrameMethod {
			continue
		}
		m, err := wire.DecodeMethod(f.Payload)
		if err != nil {
			r.t.Fatalf("decode: %v", err)
		}
		return m
	}
}

// open performs the handshake and opens channel 1.
func (r *rawConn) open() {
	r.t.Helper()
	r.send(wire.ProtocolHeader)
	if _, ok := r.next().(*wire.ConnectionStart); !ok {
		r.t.Fatal("no connection.start")
	}
	r.sendMethod(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	if _, ok := r.next().(*wire.ConnectionTune); !ok {
		r.t.Fatal("no connection.tune")
	}
	r.sendMethod(0, &wire.ConnectionTuneOk{ChannelMax: 10, FrameMax: wire.DefaultFrameMax, Heartbeat: 0})
	r.sendMethod(0, &wire.ConnectionOpen{VirtualHost: "/"})
	if _, ok := r.next().(*wire.ConnectionOpenOk); !ok {
		r.t.Fatal("no connection.open-ok")
	}
	r.sendMethod(1, &wire.ChannelOpen{})
	if _, ok := r.next().(*wire.ChannelOpenOk); !ok {
		r.t.Fatal("no channel.open-ok")
	}
}

// expectConnClose waits for connection.close with code, answers close-ok, and checks the
// socket then closes.
func (r *rawConn) expectConnClose(code uint16) {
	r.t.Helper()
	for {
		m := r.next()
		if c, ok := m.(*wire.ConnectionClose); ok {
			if c.ReplyCode != code {
				r.t.Fatalf("connection.close %d (%s), want %d", c.ReplyCode, c.ReplyText, code)
			}
			r.sendMethod(0, &wire.ConnectionCloseOk{})
			r.expectEOF()
			return
		}
	}
}

func (r *rawConn) expectEOF() {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	for {
		_, err := r.nc.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			r.t.Fatal("server left the socket open")
		}
		return
	}
}

func TestWrongProtocolHeader(t *testing.T) {
	n := startNode(t)
	for _, garbage := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "AMQP\x00\x00\x08\x00", "\x01\x02\x03\x04\x05\x06\x07\x08\x09"} {
		r := rawDial(t, n)
		r.send([]byte(garbage))
		got, _ := io.ReadAll(io.LimitReader(r.nc, 64))
		if !bytes.Equal(got, wire.ProtocolHeader) {
			t.Fatalf("answer to %q = %q, want our protocol header then close", garbage, got)
		}
	}
	// The broker still serves well-behaved clients.
	dial(t, n)
}

func TestAMQPLAINAndPlainAuth(t *testing.T) {
	n := startNode(t)
	c, err := amqp.DialConfig(n.url, amqp.Config{SASL: []amqp.Authentication{&amqp.AMQPlainAuth{Username: "guest", Password: "guest"}}})
	if err != nil {
		t.Fatalf("AMQPLAIN: %v", err)
	}
	_ = c.Close()
	_, err = amqp.Dial("amqp://guest:wrong@" + n.AMQPAddr() + "/")
	if err == nil || !errors.Is(err, amqp.ErrSASL) && !isCode(err, 403) {
		t.Fatalf("bad password: %v", err)
	}
}

func isCode(err error, code int) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == code
}

func TestUnknownVhost530(t *testing.T) {
	n := startNode(t)
	_, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/nope")
	if !isCode(err, 530) {
		t.Fatalf("unknown vhost: %v", err)
	}
}

// nonLoopbackIP returns an IPv4 address of one of this machine's interfaces that is not
// loopback: a connection from this machine to it comes from it too, so the broker sees a
// non-loopback peer without any test seam.
func nonLoopbackIP(t *testing.T) net.IP {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatalf("interface addresses: %v", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && ipn.IP.IsGlobalUnicast() {
			return ipn.IP
		}
	}
	return nil
}

// TestGuestOnlyFromLoopback: with guest a loopback-only user (RabbitMQ's loopback_users, the
// default), guest is admitted from 127.0.0.1 and refused with 403 ACCESS_REFUSED and
// RabbitMQ's text when it connects from a non-loopback address of this machine; a node
// without loopback users admits guest from that same address, so the refusal is the rule
// and not the network.
func TestGuestOnlyFromLoopback(t *testing.T) {
	ip := nonLoopbackIP(t)
	if ip == nil {
		t.Skip("this machine has no non-loopback IPv4 address to connect from; isLoopback itself is covered by TestLoopbackUsersNeedLoopbackAddress")
	}
	listenAll := func(c *node.Config) { c.AMQPAddr = "0.0.0.0:0" }
	n := startNode(t, listenAll, func(c *node.Config) { c.Server.LoopbackUsers = []string{"guest"} })
	_, port, err := net.SplitHostPort(n.AMQPAddr())
	if err != nil {
		t.Fatal(err)
	}
	dial(t, &testNode{Node: n.Node, url: "amqp://guest:guest@127.0.0.1:" + port + "/"})

	remote := "amqp://guest:guest@" + net.JoinHostPort(ip.String(), port) + "/"
	c, err := amqp.Dial(remote)
	if err == nil {
		_ = c.Close()
		t.Fatalf("guest connected from %s to a node where guest is loopback-only", ip)
	}
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.AccessRefused || !strings.Contains(ae.Reason, "User 'guest' can only connect via localhost") {
		t.Fatalf("guest from %s: %v, want 403 ACCESS_REFUSED naming localhost", ip, err)
	}

	open := startNode(t, listenAll, func(c *node.Config) { c.Server.LoopbackUsers = []string{} })
	_, port2, _ := net.SplitHostPort(open.AMQPAddr())
	dial(t, &testNode{Node: open.Node, url: "amqp://guest:guest@" + net.JoinHostPort(ip.String(), port2) + "/"})
}

func TestHeartbeatsKeepIdleConnectionAlive(t *testing.T) {
	n := startNode(t)
	c, err := amqp.DialConfig(n.url, amqp.Config{Heartbeat: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(3500 * time.Millisecond)
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("connection died while idle with heartbeats: %v", err)
	}
	_ = ch.Close()
}

func TestSilentPeerDroppedAfterMissedHeartbeats(t *testing.T) {
	n := startNode(t)
	r := rawDial(t, n)
	r.send(wire.ProtocolHeader)
	r.next()
	r.sendMethod(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
	r.next()
	r.sendMethod(0, &wire.ConnectionTuneOk{FrameMax: wire.DefaultFrameMax, Heartbeat: 1})
	r.sendMethod(0, &wire.ConnectionOpen{VirtualHost: "/"})
	r.next()
	// We never send anything again: the server must hang up within ~2 intervals plus slack.
	_ = r.nc.SetReadDeadline(time.Now().Add(8 * time.Second))
	start := time.Now()
	buf := make([]byte, 64)
	for {
		if _, err := r.nc.Read(buf); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("server kept a silent connection open")
			}
			break
		}
	}
	if time.Since(start) < 1500*time.Millisecond {
		t.Fatalf("dropped after %v, before two heartbeat intervals", time.Since(start))
	}
}

func TestHandshakeTimeout(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Server.HandshakeTimeout = 300 * time.Millisecond })
	r := rawDial(t, n)
	r.send(wire.ProtocolHeader)
	r.next() // connection.start, never answered
	r.expectEOF()
}

func TestFrameErrors(t *testing.T) {
	n := startNode(t)
	// A queue.declare whose argument table claims more bytes than the frame holds.
	badArgs := []byte{0, 50, 0, 10, 0, 0, 1, 'q', 0, 0, 0, 0, 99}
	malformed := wire.AppendUint32([]byte{wire.FrameMethod, 0, 1}, uint32(len(badArgs)))
	malformed = append(append(malformed, badArgs...), wire.FrameEnd)
	cases := map[string]struct {
		frame []byte
		code  uint16
	}{
		"bad frame end":            {append(wire.AppendHeartbeat(nil)[:7], 0x00), wire.FrameError},
		"unknown frame type":       {[]byte{9, 0, 1, 0, 0, 0, 0, wire.FrameEnd}, wire.FrameError},
		"too large":                {[]byte{wire.FrameMethod, 0, 1, 0x00, 0x10, 0x00, 0x00}, wire.FrameError},
		"unknown method":           {[]byte{wire.FrameMethod, 0, 1, 0, 0, 0, 4, 0, 60, 0, 255, wire.FrameEnd}, wire.NotImplemented},
		"content without method":   {wire.AppendHeaderFrame(nil, 1, 60, 3, []byte{0, 0}), wire.UnexpectedFrame},
		"method on closed channel": {wire.AppendMethodFrame(nil, 7, &wire.BasicQos{PrefetchCount: 1}), wire.ChannelError},
		"malformed table":          {malformed, wire.SyntaxError},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			bystander := channel(t, dial(t, n))
			r := rawDial(t, n)
			r.open()
			r.send(tc.frame)
			r.expectConnClose(tc.code)
			if _, err := bystander.QueueDeclare("", false, true, true, false, nil); err != nil {
				t.Fatalf("another connection was disturbed: %v", err)
			}
		})
	}
}

func TestMethodDuringContent505(t *testing.T) {
	n := startNode(t)
	r := rawDial(t, n)
	r.open()
	r.sendMethod(1, &wire.BasicPublish{RoutingKey: "x"})
	r.sendMethod(1, &wire.BasicQos{})
	r.expectConnClose(wire.UnexpectedFrame)
}

func TestShutdownSends320(t *testing.T) {
	n := startNode(t)
	c := dial(t, n)
	closed := c.NotifyClose(make(chan *amqp.Error, 1))
	go func() { _ = n.Close() }()
	select {
	case e := <-closed:
		if e == nil || e.Code != 320 {
			t.Fatalf("closed with %v, want 320 CONNECTION_FORCED", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed on shutdown")
	}
}
