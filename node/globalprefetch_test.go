package node_test

import (
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestGlobalPrefetchAcrossNodes: a channel on c1 with basic.qos global=true prefetch 3 consumes
// from a queue c1 owns and from two queues c2 owns; never more than 3 deliveries are unacked
// on the channel, and each ack lets exactly one more through, until all 30 messages arrive.
func TestGlobalPrefetchAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	waitAllAlive(t, nodes)
	owner2 := dialNode(t, nodes[1])
	local := dialNode(t, nodes[0])
	queues := map[string]*amqp.Channel{"g-local": local, "g-remote-a": owner2, "g-remote-b": owner2}
	for q, ch := range queues {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 10; i++ {
			if err := ch.Publish("", q, false, false, amqp.Publishing{Body: []byte(fmt.Sprint(q, "-", i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Publishes are asynchronous: wait until every queue holds its 10 messages.
	for q, ch := range queues {
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if st.Messages == 10 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s holds %d messages", q, st.Messages)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	ch := dialNode(t, nodes[0])
	if err := ch.Qos(3, 0, true); err != nil {
		t.Fatal(err)
	}
	all := make(chan amqp.Delivery, 64)
	for _, q := range []string{"g-remote-a", "g-remote-b", "g-local"} {
		d, err := ch.Consume(q, "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for m := range d {
				all <- m
			}
		}()
	}
	// quiet waits long enough for deliveries beyond the limit to show up if they were sent.
	quiet := func() []amqp.Delivery {
		var got []amqp.Delivery
		for {
			select {
			case m := <-all:
				got = append(got, m)
			case <-time.After(400 * time.Millisecond):
				return got
			}
		}
	}
	outstanding := quiet()
	if len(outstanding) != 3 {
		t.Fatalf("%d deliveries unacked with global prefetch 3", len(outstanding))
	}
	received := 3
	for received < 30 {
		if err := outstanding[0].Ack(false); err != nil {
			t.Fatal(err)
		}
		outstanding = outstanding[1:]
		more := quiet()
		if len(more) != 1 {
			t.Fatalf("after one ack %d more deliveries arrived (received %d, want exactly 1)", len(more), received)
		}
		received++
		outstanding = append(outstanding, more...)
	}
	for _, m := range outstanding {
		if err := m.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
}
