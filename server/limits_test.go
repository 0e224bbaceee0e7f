package server_test

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/wire"
)

func wantRefusal(t *testing.T, err error, code int, reason string) {
	t.Helper()
	wantCode(t, err, code)
	if ae := err.(*amqp.Error); ae.Reason != reason {
		t.Fatalf("reason %q, want %q", ae.Reason, reason)
	}
}

// TestNodeConnectionCap: a node with --max-connections 2 refuses the third connection with
// RabbitMQ's 530 text and takes one again once a connection closes.
func TestNodeConnectionCap(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Server.MaxConnections = 2 })
	c1 := dial(t, n)
	dial(t, n)
	_, err := amqp.Dial(n.url)
	wantRefusal(t, err, amqp.NotAllowed, "NOT_ALLOWED - connection refused: node connection limit (2) is reached")
	if got := n.AMQP.Limits(); got.Connections != 2 || got.ConnectionMax != 2 {
		t.Fatalf("limits %+v", got)
	}
	_ = c1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := amqp.Dial(n.url)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connection after one closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVhostLimits: max-connections refuses connection.open with 530 and RabbitMQ's text,
// max-queues refuses queue.declare of a new queue with 406; a redeclare passes.
func TestVhostLimits(t *testing.T) {
	n := startNode(t)
	if _, err := n.Broker.Apply(fsm.SetVhostLimits{Vhost: "/", Limits: map[string]int{"max-connections": 1, "max-queues": 1}}); err != nil {
		t.Fatal(err)
	}
	ch := channel(t, dial(t, n))
	_, err := amqp.Dial(n.url)
	wantRefusal(t, err, amqp.NotAllowed, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached")
	if _, err := ch.QueueDeclare("q1", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q1", false, false, false, false, nil); err != nil {
		t.Fatalf("redeclare at the limit: %v", err)
	}
	_, err = ch.QueueDeclare("q2", false, false, false, false, nil)
	wantRefusal(t, err, amqp.PreconditionFailed, "PRECONDITION_FAILED - cannot declare queue 'q2': queue limit in vhost '/' (1) is reached")
}

// TestDiskFreeLimitBlocksPublishers: with a disk free limit above the free space the publisher
// gets connection.blocked "low on disk" and is held; once the limit is lowered it gets
// connection.unblocked, and every publish is confirmed and in the queue.
func TestDiskFreeLimitBlocksPublishers(t *testing.T) {
	n := startNode(t)
	c := dial(t, n)
	blocked := c.NotifyBlocked(make(chan amqp.Blocking, 4))
	ch := channel(t, c)
	if _, err := ch.QueueDeclare("disk", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	n.AMQP.SetDiskFreeLimit(1 << 62)
	select {
	case b := <-blocked:
		t.Fatalf("blocked before publishing: %+v", b)
	case <-time.After(1500 * time.Millisecond):
	}
	if !n.AMQP.Limits().DiskFreeAlarm {
		t.Fatal("no disk alarm with a limit above the free space")
	}
	const total = 20
	done := make(chan error, 1)
	go func() {
		for i := 0; i < total; i++ {
			dc, err := ch.PublishWithDeferredConfirm("", "disk", false, false, amqp.Publishing{Body: []byte("d")})
			if err != nil {
				done <- err
				return
			}
			if !dc.Wait() {
				done <- errors.New("publish nacked")
				return
			}
		}
		done <- nil
	}()
	select {
	case b := <-blocked:
		if !b.Active || b.Reason != "low on disk" {
			t.Fatalf("blocking notice %+v", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.blocked below the disk free limit")
	}
	select {
	case err := <-done:
		t.Fatalf("the blocked publisher finished: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	n.AMQP.SetDiskFreeLimit(1)
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("second notice %+v, want unblocked", b)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no connection.unblocked after the limit was lowered")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publisher never finished")
	}
	q, err := ch.QueueDeclarePassive("disk", false, false, false, false, nil)
	if err != nil || q.Messages != total {
		t.Fatalf("queue holds %d of %d confirmed messages (%v)", q.Messages, total, err)
	}
}

// TestChannelMax: a connection negotiates channel_max down (amqp091-go asks for 2) and
// cannot open a channel past it (530); --channel-max is what the server offers.
func TestChannelMax(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Server.ChannelMax = 3 })
	c, err := amqp.DialConfig(n.url, amqp.Config{ChannelMax: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Config.ChannelMax != 2 {
		t.Fatalf("negotiated channel_max %d", c.Config.ChannelMax)
	}
	c2 := dial(t, n)
	if c2.Config.ChannelMax != 3 {
		t.Fatalf("offered channel_max %d, want 3", c2.Config.ChannelMax)
	}
	// A client asking for more than the server offers is refused (raw: tune-ok says 10).
	rawDial(t, n).openExpectingTuneRefusal()

	// The server holds a client to the lower channel_max it negotiated.
	r := rawDial(t, startNode(t))
	r.open() // negotiates 10
	r.sendMethod(11, &wire.ChannelOpen{})
	r.expectConnClose(wire.NotAllowed)
}

func (r *rawConn) openExpectingTuneRefusal() {
	r.t.Helper()
	r.send(wire.ProtocolHeader)
	r.next()
	r.sendMethod(0, &wire.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest", Locale: "en_US"})
	r.next()
	r.sendMethod(0, &wire.ConnectionTuneOk{ChannelMax: 10, FrameMax: wire.DefaultFrameMax})
	r.expectConnClose(wire.NotAllowed)
}

// TestMemoryAlarmLosesNothing: a confirming publisher past the memory high watermark is
// blocked; a consumer draining the queue (not a purge) lets it resume, and every message is
// confirmed and delivered exactly once.
func TestMemoryAlarmLosesNothing(t *testing.T) {
	n := startNode(t)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	n.AMQP.SetMemoryHighWatermark(ms.HeapAlloc + 16<<20)
	pc := dial(t, n)
	blocked := pc.NotifyBlocked(make(chan amqp.Blocking, 16))
	pub := channel(t, pc)
	if _, err := pub.QueueDeclare("mem-drain", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	// Far more than the watermark: the alarm samples every 200 ms, so a publisher that is done
	// before a sample would never be blocked.
	const total = 80
	done := make(chan error, 1)
	go func() {
		body := make([]byte, 1<<20)
		for i := 0; i < total; i++ {
			binary.BigEndian.PutUint32(body, uint32(i))
			dc, err := pub.PublishWithDeferredConfirm("", "mem-drain", false, false, amqp.Publishing{Body: body})
			if err != nil {
				done <- err
				return
			}
			if !dc.Wait() {
				done <- errors.New("publish nacked")
				return
			}
		}
		done <- nil
	}()
	select {
	case b := <-blocked:
		if !b.Active || b.Reason != "low on memory" {
			t.Fatalf("blocking notice %+v", b)
		}
	case err := <-done:
		t.Fatalf("publisher finished without being blocked (%v)", err)
	case <-time.After(20 * time.Second):
		t.Fatal("no connection.blocked past the memory high watermark")
	}
	cons := channel(t, dial(t, n))
	deliveries, err := cons.Consume("mem-drain", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	timeout := time.After(60 * time.Second)
	for len(seen) < total {
		select {
		case d := <-deliveries:
			i := binary.BigEndian.Uint32(d.Body)
			if seen[i] {
				t.Fatalf("message %d delivered twice", i)
			}
			seen[i] = true
			_ = d.Ack(false)
		case <-blocked: // blocked and unblocked again as the rest arrives
		case <-timeout:
			t.Fatalf("only %d of %d messages delivered", len(seen), total)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("publisher never finished")
	}
}
