package node_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/fsm"
)

// TestRouteLimitsAcrossNodes: an exchange chain declared on one node routes, within its depth
// limit, from another node at once, is refused with 406 beyond it, and the queue at its end is
// consumed from a third node; a few thousand remote consumers on it leave with their
// connection and the queue keeps serving.
func TestRouteLimitsAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	decl := dialNode(t, nodes[0])
	const depth = fsm.MaxRouteDepth + 2 // x0 → … → x65: 65 hops from x0, 64 from x1
	for i := range depth {
		if err := decl.ExchangeDeclare("x"+strconv.Itoa(i), "fanout", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if i > 0 {
			if err := decl.ExchangeBind("x"+strconv.Itoa(i), "", "x"+strconv.Itoa(i-1), false, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := decl.QueueDeclare("end", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := decl.QueueBind("end", "", "x"+strconv.Itoa(depth-1), false, nil); err != nil {
		t.Fatal(err)
	}
	// A crowd of consumers from another node comes and goes.
	crowdConn, err := amqp.Dial("amqp://guest:guest@" + nodes[2].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	crowd, err := crowdConn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2000 {
		if _, err := crowd.Consume("end", "c"+strconv.Itoa(i), false, false, false, true, nil); err != nil {
			t.Fatal(err)
		}
	}
	waitConsumers := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			q, err := decl.QueueDeclarePassive("end", false, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			if q.Consumers == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue has %d consumers, want %d", q.Consumers, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitConsumers(2000)
	_ = crowdConn.Close()
	waitConsumers(0)

	cons := dialNode(t, nodes[2])
	deliveries, err := cons.Consume("end", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := dialNode(t, nodes[1])
	if err := pub.PublishWithContext(context.Background(), "x1", "", false, false, amqp.Publishing{Body: []byte("deep")}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "deep" {
			t.Fatalf("delivery %q", d.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("message routed through 64 hops never arrived")
	}
	closed := pub.NotifyClose(make(chan *amqp.Error, 1))
	if err := pub.PublishWithContext(context.Background(), "x0", "", false, false, amqp.Publishing{Body: []byte("too deep")}); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 406 || !strings.Contains(e.Reason, "deeper than 64") {
			t.Fatalf("publish 65 hops deep: %v, want 406", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publish beyond the depth limit was not refused")
	}
}
