package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestGetAndPurgeAcrossNodes: basic.get and queue.purge through nodes that do not own the
// queue behave as on the owner: message-count, redelivery after a nack, ack, no-ack, requeue
// of an unacked get when its channel closes, and the purge count.
func TestGetAndPurgeAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	owner := dialNode(t, nodes[1])
	if _, err := owner.QueueDeclare("remote-q", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := owner.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		c, err := owner.PublishWithDeferredConfirmWithContext(context.Background(), "", "remote-q", false, false,
			amqp.Publishing{Body: []byte(fmt.Sprint("m", i)), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		if ok, _ := c.WaitContext(context.Background()); !ok {
			t.Fatal("publish not confirmed")
		}
	}
	ch1 := dialNode(t, nodes[0])
	get := func(ch *amqp.Channel, autoAck bool) amqp.Delivery {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			d, ok, err := ch.Get("remote-q", autoAck)
			if err != nil {
				t.Fatalf("get through a non-owner: %v", err)
			}
			if ok {
				return d
			}
			if time.Now().After(deadline) {
				t.Fatal("get: queue empty")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	d := get(ch1, false)
	if string(d.Body) != "m0" || d.MessageCount != 5 || d.Redelivered {
		t.Fatalf("first get: body %q count %d redelivered %v", d.Body, d.MessageCount, d.Redelivered)
	}
	if err := d.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	d = get(ch1, false)
	if string(d.Body) != "m0" || !d.Redelivered {
		t.Fatalf("after requeue: body %q redelivered %v", d.Body, d.Redelivered)
	}
	if err := d.Ack(false); err != nil {
		t.Fatal(err)
	}
	if d = get(ch1, true); string(d.Body) != "m1" {
		t.Fatalf("no-ack get: %q", d.Body)
	}
	// An unacked get goes back when its channel closes.
	ch3 := dialNode(t, nodes[2])
	if d = get(ch3, false); string(d.Body) != "m2" {
		t.Fatalf("get on the third node: %q", d.Body)
	}
	if err := ch3.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		q, err := owner.QueueDeclarePassive("remote-q", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ready after the getting channel closed, want 4 (m2 back)", q.Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ch3 = dialNode(t, nodes[2])
	n, err := ch3.QueuePurge("remote-q", false)
	if err != nil || n != 4 {
		t.Fatalf("purge through a non-owner: %d, %v; want 4", n, err)
	}
	if _, ok, err := ch1.Get("remote-q", true); ok || err != nil {
		t.Fatalf("get after the purge: ok=%v err=%v", ok, err)
	}
}
