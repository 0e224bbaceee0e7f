package node_test

import (
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

// TestLongQueuePagesAndSurvivesRestart runs a durable queue far past the paging window (2048
// messages in memory) through the real AMQP path: consumed in order while it is read back
// from disk, purged in the middle, refilled, a second long queue deleted, then the node
// restarts and exactly the unconsumed messages come back in order, read back from disk again.
func TestLongQueuePagesAndSurvivesRestart(t *testing.T) {
	cfg := diskConfig(t, "paging")
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"long", "doomed"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 20000))
	publish := func(q, prefix string, from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := ch.Publish("", q, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(fmt.Sprintf("%s-%05d", prefix, i))}); err != nil {
				t.Fatal(err)
			}
		}
		for i := from; i < to; i++ {
			select {
			case c := <-confirms:
				if !c.Ack {
					t.Fatalf("publish %d to %s nacked", i, q)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("confirm %d of %s missing", i, q)
			}
		}
	}
	consume := func(c *amqp.Connection, q string, n int) []string {
		t.Helper()
		cch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer cch.Close()
		if err := cch.Qos(200, 0, false); err != nil {
			t.Fatal(err)
		}
		deliveries, err := cch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for len(got) < n {
			select {
			case d := <-deliveries:
				got = append(got, string(d.Body))
				if err := d.Ack(false); err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("consumed %d of %d from %s", len(got), n, q)
			}
		}
		return got
	}
	expect := func(got []string, prefix string, from int) {
		t.Helper()
		for i, b := range got {
			if want := fmt.Sprintf("%s-%05d", prefix, from+i); b != want {
				t.Fatalf("message %d is %q, want %q", i, b, want)
			}
		}
	}

	publish("long", "a", 0, 6000)
	publish("doomed", "d", 0, 5000)
	expect(consume(conn, "long", 2500), "a", 0)
	purged, err := ch.QueuePurge("long", false)
	if err != nil || purged != 3500 {
		t.Fatalf("purge: %d messages, %v; want 3500", purged, err)
	}
	publish("long", "b", 0, 7000)
	expect(consume(conn, "long", 1000), "b", 0)
	if _, err := ch.QueueDelete("doomed", false, false, false); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("doomed", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n2.Close()
	conn2, err := amqp.Dial("amqp://guest:guest@" + n2.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	ch2, err := conn2.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]int{"long": 6000, "doomed": 0} {
		st, err := ch2.QueueDeclarePassive(q, true, false, false, false, nil)
		if err != nil || st.Messages != want {
			t.Fatalf("after restart %s holds %d messages (%v), want %d", q, st.Messages, err, want)
		}
	}
	expect(consume(conn2, "long", 6000), "b", 1000)
	if m, ok, err := ch2.Get("long", true); ok || err != nil {
		t.Fatalf("long holds more than it should: %q %v", m.Body, err)
	}
}

// TestPriorityQueueRecoversInFull: a priority queue does not page; after a restart its
// stored messages are read back into memory and come out by priority, FIFO within one.
func TestPriorityQueueRecoversInFull(t *testing.T) {
	cfg := diskConfig(t, "prio")
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("prio", true, false, false, false, amqp.Table{"x-max-priority": int32(5)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 4000))
	const total = 3000
	for i := range total {
		if err := ch.Publish("", "prio", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent,
			Priority: uint8(i % 3), Body: []byte(fmt.Sprintf("%d-%05d", i%3, i))}); err != nil {
			t.Fatal(err)
		}
	}
	for range total {
		if c := <-confirms; !c.Ack {
			t.Fatal("nacked")
		}
	}
	_ = conn.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n2.Close()
	conn2, err := amqp.Dial("amqp://guest:guest@" + n2.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	ch2, err := conn2.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for p := 2; p >= 0; p-- {
		for i := p; i < total; i += 3 {
			want = append(want, fmt.Sprintf("%d-%05d", p, i))
		}
	}
	for i, w := range want {
		m, ok, err := ch2.Get("prio", true)
		if err != nil || !ok || string(m.Body) != w || !m.Redelivered {
			t.Fatalf("message %d: %q ok=%v redelivered=%v err=%v, want %q", i, m.Body, ok, m.Redelivered, err, w)
		}
	}
}
