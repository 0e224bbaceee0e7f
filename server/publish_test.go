package server_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/wire"
)

func TestConfirmsAck(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("cq", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := ch.NotifyPublish(make(chan amqp.Confirmation, 100))
	for i := 0; i < 50; i++ {
		publish(t, ch, "", "cq", amqp.Publishing{Body: []byte("x"), DeliveryMode: amqp.Persistent})
	}
	for i := uint64(1); i <= 50; i++ {
		select {
		case c := <-acks:
			if !c.Ack || c.DeliveryTag != i {
				t.Fatalf("confirm %d = %+v", i, c)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("confirm %d missing", i)
		}
	}
}

// TestMandatoryReturnBeforeAck reads the wire itself: client libraries hand returns and
// confirms to different goroutines, so only the frame order proves the order.
func TestMandatoryReturnBeforeAck(t *testing.T) {
	n := startNode(t)
	r := rawDial(t, n)
	r.open()
	r.sendMethod(1, &wire.ConfirmSelect{})
	if _, ok := r.next().(*wire.ConfirmSelectOk); !ok {
		t.Fatal("no confirm.select-ok")
	}
	frames := wire.AppendMethodFrame(nil, 1, &wire.BasicPublish{RoutingKey: "no-such-queue", Mandatory: true})
	frames = wire.AppendHeaderFrame(frames, 1, wire.ClassBasic, 4, []byte{0, 0})
	frames = wire.AppendBodyFrames(frames, 1, []byte("lost"), wire.DefaultFrameMax)
	r.send(frames)
	ret, ok := r.next().(*wire.BasicReturn)
	if !ok || ret.ReplyCode != wire.NoRoute || ret.RoutingKey != "no-such-queue" {
		t.Fatalf("first method after the publish = %#v, want basic.return 312", ret)
	}
	ack, ok := r.next().(*wire.BasicAck)
	if !ok || ack.DeliveryTag != 1 {
		t.Fatalf("after the return: %#v, want basic.ack 1", ack)
	}
}

func TestReturnCarriesCode312(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	if err := ch.PublishWithContext(context.Background(), "amq.direct", "nowhere", true, false, body("b")); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-returns:
		if r.ReplyCode != 312 || string(r.Body) != "b" || r.Exchange != "amq.direct" || r.RoutingKey != "nowhere" {
			t.Fatalf("return = %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no basic.return")
	}
}

func TestNackWhenQueueRejects(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("full", false, false, false, false, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := ch.NotifyPublish(make(chan amqp.Confirmation, 2))
	publish(t, ch, "", "full", body("1"))
	publish(t, ch, "", "full", body("2"))
	c1, c2 := <-acks, <-acks
	if !c1.Ack || c2.Ack {
		t.Fatalf("confirms %+v %+v: want ack then nack", c1, c2)
	}
}

func TestPublishToMissingExchange404(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	_ = ch.PublishWithContext(context.Background(), "missing-x", "k", false, false, body("x"))
	select {
	case e := <-closed:
		if e == nil || e.Code != 404 {
			t.Fatalf("closed with %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel stayed open")
	}
}

func TestTxCommitAndRollback(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("txq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "txq", body("rolled-back"))
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "txq", body("committed"))
	probe := channel(t, dial(t, n))
	if q, _ := probe.QueueDeclarePassive("txq", false, false, false, false, nil); q.Messages != 0 {
		t.Fatalf("uncommitted publish visible: %d messages", q.Messages)
	}
	if err := ch.TxCommit(); err != nil {
		t.Fatal(err)
	}
	m := getOne(t, probe, "txq", true)
	if string(m.Body) != "committed" {
		t.Fatalf("got %q", m.Body)
	}
	if _, ok, _ := probe.Get("txq", true); ok {
		t.Fatal("rolled-back publish was delivered")
	}
}

func TestTxAckAppliesOnCommit(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("txa", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "txa", body("a"))
	if err := ch.Tx(); err != nil {
		t.Fatal(err)
	}
	m := getOne(t, ch, "txa", false)
	_ = m.Ack(false)
	if err := ch.TxRollback(); err != nil {
		t.Fatal(err)
	}
	// The rolled-back ack left the message unacked; closing the channel requeues it.
	_ = ch.Close()
	ch2 := channel(t, dial(t, n))
	if m := getOne(t, ch2, "txa", true); !m.Redelivered {
		t.Fatal("message acked by a rolled-back transaction was lost")
	}
}

func TestConfirmAndTxExclusive(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ch.Tx(), 406)
}

// TestMemoryAlarmBlocksPublishers floods a node past its memory high watermark: the publisher
// gets connection.blocked and is held; once a consumer drains the queues it gets
// connection.unblocked and goes on.
func TestMemoryAlarmBlocksPublishers(t *testing.T) {
	n := startNode(t)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	// The test binary shares the heap with the node: the limit sits 24 MiB above today's heap.
	n.AMQP.SetMemoryHighWatermark(ms.HeapAlloc + 24<<20)
	pubConn := dial(t, n)
	blocked := pubConn.NotifyBlocked(make(chan amqp.Blocking, 4))
	pub := channel(t, pubConn)
	for _, q := range []string{"mem1", "mem2"} {
		if _, err := pub.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		payload := make([]byte, 1<<20)
		// 48 MiB, well past the limit, split so no queue hits its flow mark, and paced: the
		// alarm samples the heap every 200 ms and tells a publisher on its next publish, so a
		// publisher that sent everything between two samples (an idle machine) never heard.
		for i := 0; i < 48; i++ {
			if err := pub.PublishWithContext(context.Background(), "", fmt.Sprintf("mem%d", i%2+1), false, false, amqp.Publishing{Body: payload}); err != nil {
				done <- err
				return
			}
			time.Sleep(15 * time.Millisecond)
		}
		done <- nil
	}()
	select {
	case b := <-blocked:
		if !b.Active || b.Reason != "low on memory" {
			t.Fatalf("blocking notice %+v", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no connection.blocked past the memory high watermark")
	}
	cons := channel(t, dial(t, n))
	for _, q := range []string{"mem1", "mem2"} {
		if _, err := cons.QueuePurge(q, false); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case b := <-blocked:
		if b.Active {
			t.Fatalf("second notice %+v, want unblocked", b)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no connection.unblocked after the queues were drained")
	}
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		case <-blocked: // blocked again as the rest arrives: drain again
			for _, q := range []string{"mem1", "mem2"} {
				if _, err := cons.QueuePurge(q, false); err != nil {
					t.Fatal(err)
				}
			}
		case <-time.After(60 * time.Second):
			t.Fatal("publisher never finished")
		}
	}
}
