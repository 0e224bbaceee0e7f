package server_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/queue"
)

func TestPublishConsumeAck(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	q, err := ch.QueueDeclare("work", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != "work" {
		t.Fatalf("declared %q", q.Name)
	}
	msgs, err := ch.Consume("work", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "work", amqp.Publishing{Body: []byte("hello"), ContentType: "text/plain",
		Headers: amqp.Table{"k": int32(7)}, CorrelationId: "c1", ReplyTo: "r", Priority: 3})
	m := recv(t, msgs)
	if string(m.Body) != "hello" || m.ContentType != "text/plain" || m.CorrelationId != "c1" || m.ReplyTo != "r" ||
		m.Headers["k"] != int32(7) || m.Priority != 3 || m.RoutingKey != "work" || m.Redelivered {
		t.Fatalf("delivery = %+v", m)
	}
	if err := m.Ack(false); err != nil {
		t.Fatal(err)
	}
}

func TestLargeMessageSpansFrames(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("big", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 1<<20+17)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	publish(t, ch, "", "big", amqp.Publishing{Body: payload})
	m := getOne(t, ch, "big", true)
	if len(m.Body) != len(payload) || string(m.Body) != string(payload) {
		t.Fatalf("body of %d bytes came back as %d bytes (or differs)", len(payload), len(m.Body))
	}
}

func TestRoundRobinAndPrefetch(t *testing.T) {
	n := startNode(t)
	conn := dial(t, n)
	ch1, ch2 := channel(t, conn), channel(t, conn)
	if _, err := ch1.QueueDeclare("rr", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []*amqp.Channel{ch1, ch2} {
		if err := ch.Qos(2, 0, false); err != nil {
			t.Fatal(err)
		}
	}
	d1, _ := ch1.Consume("rr", "c1", false, false, false, false, nil)
	d2, _ := ch2.Consume("rr", "c2", false, false, false, false, nil)
	for i := 0; i < 6; i++ {
		publish(t, ch1, "", "rr", body(fmt.Sprint(i)))
	}
	// Each consumer holds exactly its prefetch of 2; two messages stay ready.
	a, b := recv(t, d1), recv(t, d2)
	a2, b2 := recv(t, d1), recv(t, d2)
	noRecv(t, d1, 100*time.Millisecond)
	noRecv(t, d2, 10*time.Millisecond)
	if string(a.Body)+string(b.Body)+string(a2.Body)+string(b2.Body) != "0123" {
		t.Fatalf("round robin order %s %s %s %s", a.Body, b.Body, a2.Body, b2.Body)
	}
	q, err := ch1.QueueDeclarePassive("rr", false, false, false, false, nil)
	if err != nil || q.Messages != 2 || q.Consumers != 2 {
		t.Fatalf("passive declare = %+v, %v", q, err)
	}
	_ = a.Ack(false)
	if m := recv(t, d1); string(m.Body) != "4" {
		t.Fatalf("after ack got %s", m.Body)
	}
}

func TestGlobalPrefetchSharedAcrossConsumers(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	for _, q := range []string{"g1", "g2"} {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Qos(3, 0, true); err != nil {
		t.Fatal(err)
	}
	d1, _ := ch.Consume("g1", "", false, false, false, false, nil)
	d2, _ := ch.Consume("g2", "", false, false, false, false, nil)
	for i := 0; i < 5; i++ {
		publish(t, ch, "", "g1", body("a"))
		publish(t, ch, "", "g2", body("b"))
	}
	got := 0
	for got < 3 {
		select {
		case <-d1:
		case <-d2:
		case <-time.After(5 * time.Second):
			t.Fatalf("only %d deliveries under a global prefetch of 3", got)
		}
		got++
	}
	// The channel now holds 3 unacked deliveries: nothing more may arrive.
	select {
	case <-d1:
		t.Fatal("a 4th delivery broke the global prefetch")
	case <-d2:
		t.Fatal("a 4th delivery broke the global prefetch")
	case <-time.After(200 * time.Millisecond):
	}
}

func TestNackRequeueRedelivers(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("nq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "nq", body("x"))
	m := getOne(t, ch, "nq", false)
	if m.Redelivered {
		t.Fatal("first delivery marked redelivered")
	}
	if err := m.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	m2 := getOne(t, ch, "nq", false)
	if !m2.Redelivered || string(m2.Body) != "x" {
		t.Fatalf("requeued delivery = %+v", m2)
	}
	if err := m2.Reject(false); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ch.Get("nq", true); ok {
		t.Fatal("rejected message came back")
	}
}

func TestMultipleAck(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("ma", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	d, _ := ch.Consume("ma", "", false, false, false, false, nil)
	for i := 0; i < 5; i++ {
		publish(t, ch, "", "ma", body(fmt.Sprint(i)))
	}
	var last amqp.Delivery
	for i := 0; i < 5; i++ {
		last = recv(t, d)
	}
	if err := last.Ack(true); err != nil {
		t.Fatal(err)
	}
	// A second channel sees no unacked or ready messages left.
	ch2 := channel(t, dial(t, n))
	deadline := time.Now().Add(2 * time.Second)
	for {
		q, err := ch2.QueueDeclarePassive("ma", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages left: %d", q.Messages)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUnknownDeliveryTag406(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Ack(42, false); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 406 {
			t.Fatalf("channel closed with %v, want 406", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("channel not closed for unknown delivery tag")
	}
}

func TestChannelCloseRequeuesUnacked(t *testing.T) {
	n := startNode(t)
	conn := dial(t, n)
	ch := channel(t, conn)
	if _, err := ch.QueueDeclare("cr", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "cr", body("keep"))
	getOne(t, ch, "cr", false)
	if err := ch.Close(); err != nil {
		t.Fatal(err)
	}
	ch2 := channel(t, conn)
	m := getOne(t, ch2, "cr", true)
	if !m.Redelivered || string(m.Body) != "keep" {
		t.Fatalf("after channel close: %+v", m)
	}
}

func TestBasicGetEmptyAndCount(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("gq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := ch.Get("gq", true); ok || err != nil {
		t.Fatalf("get on empty queue: ok=%v err=%v", ok, err)
	}
	for i := 0; i < 3; i++ {
		publish(t, ch, "", "gq", body("m"))
	}
	m := getOne(t, ch, "gq", true)
	if m.MessageCount != 2 {
		t.Fatalf("get-ok message-count = %d, want 2", m.MessageCount)
	}
}

func TestRecoverRequeues(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("rec", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "rec", body("r"))
	getOne(t, ch, "rec", false)
	if err := ch.Recover(true); err != nil {
		t.Fatal(err)
	}
	if m := getOne(t, ch, "rec", false); !m.Redelivered {
		t.Fatal("recovered message not marked redelivered")
	}
}

func TestConsumerTagsRepeatAcrossConnections(t *testing.T) {
	n := startNode(t)
	c1, c2 := channel(t, dial(t, n)), channel(t, dial(t, n))
	if _, err := c1.QueueDeclare("tags", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Consume("tags", "1", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Consume("tags", "1", false, false, false, false, nil); err != nil {
		t.Fatalf("same tag on another connection refused: %v", err)
	}
	_, err := c1.Consume("tags", "1", false, false, false, false, nil)
	wantCode(t, err, 530)
}

func TestConsumeCancelStopsDeliveries(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("ct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	d, err := ch.Consume("ct", "my-tag", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "ct", body("1"))
	if m := recv(t, d); m.ConsumerTag != "my-tag" {
		t.Fatalf("delivery carries consumer tag %q", m.ConsumerTag)
	}
	if err := ch.Cancel("my-tag", false); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "ct", body("2"))
	for m := range d {
		// amqp091-go closes the delivery channel on cancel-ok; "2" arriving would mean the
		// server kept delivering to a cancelled consumer.
		if string(m.Body) == "2" {
			t.Fatal("delivery after cancel")
		}
	}
	if m := getOne(t, ch, "ct", true); string(m.Body) != "2" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestExclusiveConsumer(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("ex", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume("ex", "a", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ch2 := channel(t, dial(t, n))
	_, err := ch2.Consume("ex", "b", false, false, false, false, nil)
	wantCode(t, err, 403)
}

func TestQueueDeleteCancelsConsumer(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("gone", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	cancels := ch.NotifyCancel(make(chan string, 1))
	if _, err := ch.Consume("gone", "watcher", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	other := channel(t, dial(t, n))
	if _, err := other.QueueDelete("gone", false, false, false); err != nil {
		t.Fatal(err)
	}
	select {
	case tag := <-cancels:
		if tag != "watcher" {
			t.Fatalf("cancelled tag %q", tag)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no basic.cancel after queue delete")
	}
}

func TestNoAckConsumer(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("na", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	d, _ := ch.Consume("na", "", true, false, false, false, nil)
	for i := 0; i < 100; i++ {
		publish(t, ch, "", "na", body(fmt.Sprint(i)))
	}
	for i := 0; i < 100; i++ {
		if m := recv(t, d); string(m.Body) != fmt.Sprint(i) {
			t.Fatalf("message %d = %s", i, m.Body)
		}
	}
}

func TestChannelFlowPausesDeliveries(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("flow", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Flow(false); err != nil {
		t.Fatal(err)
	}
	d, _ := ch.Consume("flow", "", true, false, false, false, nil)
	publish(t, ch, "", "flow", body("held"))
	noRecv(t, d, 150*time.Millisecond)
	if err := ch.Flow(true); err != nil {
		t.Fatal(err)
	}
	recv(t, d)
}

func TestManyPublishersConsumers(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("many", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	const pubs, per = 4, 250
	done := make(chan error, pubs)
	for p := 0; p < pubs; p++ {
		go func() {
			c, err := amqp.Dial(n.url)
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			pc, err := c.Channel()
			if err != nil {
				done <- err
				return
			}
			for i := 0; i < per; i++ {
				if err := pc.PublishWithContext(context.Background(), "", "many", false, false, body("m")); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	d, _ := ch.Consume("many", "", false, false, false, false, nil)
	for i := 0; i < pubs*per; i++ {
		m := recv(t, d)
		_ = m.Ack(false)
	}
	for p := 0; p < pubs; p++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

func TestEmptyQueueNameMeansLastDeclared(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("", "k", "amq.direct", false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "amq.direct", "k", body("via-last"))
	m := getOne(t, ch, "", true)
	if string(m.Body) != "via-last" || m.RoutingKey != "k" {
		t.Fatalf("got %+v from the last declared queue %s", m, q.Name)
	}
	fresh := channel(t, dial(t, n))
	_, _, err = fresh.Get("", true)
	wantCode(t, err, 404)
}

func TestPublisherWaitsForBackloggedQueue(t *testing.T) {
	n := startNode(t, func(c *node.Config) { c.Server.FlowWait = time.Hour })
	pub := channel(t, dial(t, n))
	if _, err := pub.QueueDeclare("backlog", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// A consumer that takes one message and never acks: the slow consumer the publisher must
	// be paced to.
	slow := channel(t, dial(t, n))
	if err := slow.Qos(1, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Consume("backlog", "slow", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	const size, count = 4 << 20, 24
	published := make(chan error, 1)
	go func() {
		for i := 0; i < count; i++ {
			if err := pub.PublishWithContext(context.Background(), "", "backlog", false, false, amqp.Publishing{Body: make([]byte, size)}); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	// The queue fills to just past its 64 MiB mark and stays there: the server stops reading
	// from the publisher, so the rest waits in TCP buffers and in the client.
	limit := queue.FlowHighBytes/size + 1
	probe := channel(t, dial(t, n))
	depth := func() int {
		q, err := probe.QueueDeclarePassive("backlog", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}
	deadline := time.Now().Add(10 * time.Second)
	for depth() < limit && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if d := depth(); d != limit {
		t.Fatalf("queue depth %d, want it held at %d", d, limit)
	}
	select {
	case err := <-published:
		t.Fatalf("publisher finished while the queue was backlogged (err %v)", err)
	default:
	}
	// Draining the queue lets the publisher finish (one message sits unacked with the consumer).
	for got := 0; got < count-1; got++ {
		getOne(t, probe, "backlog", true)
	}
	if err := <-published; err != nil {
		t.Fatal(err)
	}
}
