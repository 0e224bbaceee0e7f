package wire

import (
	"bytes"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The interop test speaks raw AMQP through this package to the reference
// RabbitMQ (scripts/rabbitmq.sh), so both our encoder and our decoder meet a
// real peer. It is skipped when no broker listens.
func rabbitAddr() string {
	if addr := os.Getenv("WARREN_RABBITMQ_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:5682"
}

type rawConn struct {
	t        *testing.T
	conn     net.Conn
	fr       *FrameReader
	out      []byte
	frameMax uint32
}

func (c *rawConn) send(channel uint16, m Method) {
	c.t.Helper()
	c.out = AppendMethodFrame(c.out[:0], channel, m)
	c.flush()
}

func (c *rawConn) flush() {
	c.t.Helper()
	if _, err := c.conn.Write(c.out); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next non-heartbeat frame.
func (c *rawConn) next() Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("ReadFrame: %v", err)
		}
		if f.Type != FrameHeartbeat {
			return f
		}
	}
}

func (c *rawConn) expect(channel uint16, want Method) Method {
	c.t.Helper()
	f := c.next()
	if f.Type != FrameMethod || f.Channel != channel {
		c.t.Fatalf("want a method frame on channel %d, got type %d on channel %d", channel, f.Type, f.Channel)
	}
	m, err := DecodeMethod(f.Payload)
	if err != nil {
		c.t.Fatalf("DecodeMethod: %v", err)
	}
	if reflect.TypeOf(m) != reflect.TypeOf(want) {
		c.t.Fatalf("want %s, got %s: %+v", want.Name(), m.Name(), m)
	}
	return m
}

// content reads a content header and its body frames.
func (c *rawConn) content(channel uint16) (Properties, []byte) {
	c.t.Helper()
	f := c.next()
	if f.Type != FrameHeader || f.Channel != channel {
		c.t.Fatalf("want a header frame on channel %d, got type %d on %d", channel, f.Type, f.Channel)
	}
	ch, err := ParseContentHeader(f.Payload)
	if err != nil {
		c.t.Fatal(err)
	}
	props, err := DecodeProperties(ch.Props)
	if err != nil {
		c.t.Fatalf("DecodeProperties of RabbitMQ's header: %v", err)
	}
	var body []byte
	for uint64(len(body)) < ch.BodySize {
		f := c.next()
		if f.Type != FrameBody {
			c.t.Fatalf("want a body frame, got type %d", f.Type)
		}
		body = append(body, f.Payload...)
	}
	return props, body
}

func dialRabbit(t *testing.T) *rawConn {
	conn, err := net.DialTimeout("tcp", rabbitAddr(), time.Second)
	if err != nil {
		t.Skipf("reference RabbitMQ not reachable at %s: %v", rabbitAddr(), err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c := &rawConn{t: t, conn: conn, fr: NewFrameReader(conn, FrameMinSize)}
	c.out = append(c.out, ProtocolHeader...)
	c.flush()

	start := c.expect(0, &ConnectionStart{}).(*ConnectionStart)
	if start.VersionMajor != 0 || start.VersionMinor != 9 || !strings.Contains(start.Mechanisms, "PLAIN") {
		t.Fatalf("unexpected connection.start %+v", start)
	}
	if start.ServerProperties["product"] != "RabbitMQ" {
		t.Fatalf("server-properties product = %#v", start.ServerProperties["product"])
	}
	if caps, ok := start.ServerProperties["capabilities"].(Table); !ok || caps["publisher_confirms"] != true {
		t.Fatalf("server capabilities %#v", start.ServerProperties["capabilities"])
	}
	c.send(0, &ConnectionStartOk{
		ClientProperties: Table{"product": "warren-wire-test", "capabilities": Table{"basic.nack": true}},
		Mechanism:        "PLAIN",
		Response:         "\x00guest\x00guest",
		Locale:           "en_US",
	})
	tune := c.expect(0, &ConnectionTune{}).(*ConnectionTune)
	c.frameMax = tune.FrameMax
	c.fr.SetMaxFrameSize(tune.FrameMax)
	c.send(0, &ConnectionTuneOk{ChannelMax: tune.ChannelMax, FrameMax: tune.FrameMax})
	c.send(0, &ConnectionOpen{VirtualHost: "/"})
	c.expect(0, &ConnectionOpenOk{})
	c.send(1, &ChannelOpen{})
	c.expect(1, &ChannelOpenOk{})
	return c
}

func TestInteropWithRabbitMQ(t *testing.T) {
	c := dialRabbit(t)

	c.send(1, &QueueDeclare{Exclusive: true, Arguments: Table{"x-expires": int32(60000), "x-message-ttl": int64(60000)}})
	declared := c.expect(1, &QueueDeclareOk{}).(*QueueDeclareOk)
	if !strings.HasPrefix(declared.Queue, "amq.gen-") {
		t.Fatalf("server-named queue %q", declared.Queue)
	}

	c.send(1, &ConfirmSelect{})
	c.expect(1, &ConfirmSelectOk{})

	sent := Properties{
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		Headers: Table{
			"bool": true, "i8": int8(-1), "u8": uint8(1), "i16": int16(-2), "u16": uint16(2),
			"i32": int32(-3), "u32": uint32(3), "i64": int64(-4), "f32": float32(1.5), "f64": 2.5,
			"dec": Decimal{Scale: 2, Value: 314}, "str": "s", "bytes": []byte{0, 1}, "void": nil,
			"array": []any{int32(1), "two", Table{"three": int64(3)}},
			"time":  time.Unix(1700000000, 0).UTC(), "table": Table{"nested": Table{"deep": "yes"}},
		},
		DeliveryMode:  2,
		Priority:      3,
		CorrelationID: "corr-1",
		ReplyTo:       "reply_q",
		Expiration:    "60000",
		MessageID:     "m-1",
		Timestamp:     time.Unix(1700000001, 0).UTC(),
		Type:          "t",
		UserID:        "guest",
		AppID:         "warren",
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB: several frames at frame-max
	c.out = AppendMethodFrame(c.out[:0], 1, &BasicPublish{RoutingKey: declared.Queue})
	c.out = AppendHeaderFrame(c.out, 1, ClassBasic, uint64(len(body)), sent.Append(nil))
	c.out = AppendBodyFrames(c.out, 1, body, c.frameMax)
	c.flush()
	if ack := c.expect(1, &BasicAck{}).(*BasicAck); ack.DeliveryTag != 1 {
		t.Fatalf("confirm %+v", ack)
	}

	c.send(1, &BasicGet{Queue: declared.Queue, NoAck: true})
	getOk := c.expect(1, &BasicGetOk{}).(*BasicGetOk)
	if getOk.RoutingKey != declared.Queue || getOk.MessageCount != 0 {
		t.Fatalf("basic.get-ok %+v", getOk)
	}
	props, got := c.content(1)
	if !bytes.Equal(got, body) {
		t.Fatalf("body of %d bytes differs from the %d sent", len(got), len(body))
	}
	if !reflect.DeepEqual(props, sent) {
		t.Fatalf("properties through RabbitMQ:\n got %#v\nwant %#v", props, sent)
	}

	// Unroutable mandatory publish: basic.return then the confirm.
	c.out = AppendMethodFrame(c.out[:0], 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "nowhere", Mandatory: true})
	c.out = AppendHeaderFrame(c.out, 1, ClassBasic, 0, (&Properties{}).Append(nil))
	c.flush()
	ret := c.expect(1, &BasicReturn{}).(*BasicReturn)
	if ret.ReplyCode != NoRoute || ret.ReplyText != "NO_ROUTE" || ret.Exchange != "amq.direct" {
		t.Fatalf("basic.return %+v", ret)
	}
	if p, b := c.content(1); !reflect.DeepEqual(p, Properties{}) || len(b) != 0 {
		t.Fatalf("returned content %+v %q", p, b)
	}
	c.expect(1, &BasicAck{})

	// A channel error, as RabbitMQ encodes channel.close.
	c.send(1, &QueueDeclare{Queue: "warren-wire-test-missing", Passive: true})
	closeM := c.expect(1, &ChannelClose{}).(*ChannelClose)
	if closeM.ReplyCode != NotFound || closeM.ClassId != ClassQueue || closeM.MethodId != 10 ||
		!strings.HasPrefix(closeM.ReplyText, "NOT_FOUND") {
		t.Fatalf("channel.close %+v", closeM)
	}
	c.send(1, &ChannelCloseOk{})

	c.send(0, &ConnectionClose{ReplyCode: ReplySuccess, ReplyText: "bye"})
	c.expect(0, &ConnectionCloseOk{})
}

// RabbitMQ answers a frame above the negotiated frame-max with a
// connection.close FRAME_ERROR. It tolerates 8 bytes over (its
// FRAME_SIZE_FUDGE, for clients that count frame-max as payload only), so
// the frame sent here is 9 bytes over; our FrameReader has no such slack.
func TestInteropFrameErrorFromRabbitMQ(t *testing.T) {
	c := dialRabbit(t)
	body := make([]byte, c.frameMax+1)
	c.out = AppendMethodFrame(c.out[:0], 1, &BasicPublish{RoutingKey: "nowhere"})
	c.out = AppendHeaderFrame(c.out, 1, ClassBasic, uint64(len(body)), (&Properties{}).Append(nil))
	c.out = AppendBodyFrames(c.out, 1, body, 0) // one frame, 9 bytes over frame-max
	c.flush()
	closeM := c.expect(0, &ConnectionClose{}).(*ConnectionClose)
	if closeM.ReplyCode != FrameError {
		t.Fatalf("connection.close %+v, want FRAME_ERROR", closeM)
	}
}
