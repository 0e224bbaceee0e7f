package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

func waitAllAlive(t *testing.T, nodes []*node.Node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		ok := true
		for _, a := range nodes {
			for _, b := range nodes {
				if m, _ := a.Members.Member(b.Broker.ID()); m.State != cluster.MemberAlive {
					ok = false
				}
			}
		}
		if ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the nodes did not all see each other alive")
}

// resubscriber consumes a queue through one node for the whole test, acking each message, and
// subscribes again whenever its consumer is cancelled (as clients do on basic.cancel).
type resubscriber struct {
	mu       sync.Mutex
	received map[string]int
	redelivs map[string]int
}

func (r *resubscriber) run(ctx context.Context, t *testing.T, conn *amqp.Connection, queue string) {
	for ctx.Err() == nil {
		ch, err := conn.Channel()
		if err != nil {
			t.Errorf("consumer channel: %v", err)
			return
		}
		_ = ch.Qos(10, 0, false)
		deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
	consume:
		for {
			select {
			case <-ctx.Done():
				_ = ch.Close()
				return
			case d, ok := <-deliveries:
				if !ok {
					break consume // cancelled by the broker: subscribe again
				}
				r.mu.Lock()
				r.received[string(d.Body)]++
				if d.Redelivered {
					r.redelivs[string(d.Body)]++
				}
				r.mu.Unlock()
				_ = d.Ack(false)
			}
		}
		_ = ch.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGracefulLeaveLosesNothing: a node owning a durable queue (persistent messages, a consumer
// on another node holding unacked ones, a publisher on a third node still publishing) and a
// transient queue leaves with `node leave`'s Leave: every queue moves to the other nodes,
// every confirmed message is consumed exactly once (a second copy only as a redelivery), the
// consumer is moved over by basic.cancel + re-subscribe, and the survivors agree on topology.
func TestGracefulLeaveLosesNothing(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	waitAllAlive(t, nodes)
	leaving := nodes[1]
	ch2 := dialNode(t, leaving)
	for _, q := range []struct {
		name    string
		durable bool
	}{{"work", true}, {"temp", false}} {
		if _, err := ch2.QueueDeclare(q.name, q.durable, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch2.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirmed := map[string]bool{}
	publish := func(ch *amqp.Channel, queue, body string, mode uint8) bool {
		c, err := ch.PublishWithDeferredConfirmWithContext(context.Background(), "", queue, false, false,
			amqp.Publishing{Body: []byte(body), DeliveryMode: mode})
		if err != nil {
			return false
		}
		ok, err := c.WaitContext(context.Background())
		return err == nil && ok
	}
	for i := range 1500 {
		body := fmt.Sprintf("work-%d", i)
		if publish(ch2, "work", body, amqp.Persistent) {
			confirmed[body] = true
		}
	}
	for i := range 300 {
		body := fmt.Sprintf("temp-%d", i)
		if publish(ch2, "temp", body, amqp.Transient) {
			confirmed[body] = true
		}
	}
	if len(confirmed) != 1800 {
		t.Fatalf("%d of 1800 messages confirmed before the leave", len(confirmed))
	}

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	sub := &resubscriber{received: map[string]int{}, redelivs: map[string]int{}}
	conn3, err := amqp.Dial("amqp://guest:guest@" + nodes[2].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn3.Close()
	wg.Add(1)
	go func() { defer wg.Done(); sub.run(ctx, t, conn3, "work") }()

	// A publisher on the first node keeps publishing through the leave and after it; a nack
	// (the queue between owners) only means "not confirmed".
	var pubMu sync.Mutex
	confirmedDuring := 0
	ch1 := dialNode(t, nodes[0])
	if err := ch1.Confirm(false); err != nil {
		t.Fatal(err)
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	var pubWG sync.WaitGroup
	pubWG.Add(1)
	go func() {
		defer pubWG.Done()
		for i := 0; pubCtx.Err() == nil; i++ {
			body := fmt.Sprintf("during-%d", i)
			if publish(ch1, "work", body, amqp.Persistent) {
				pubMu.Lock()
				confirmed[body] = true
				confirmedDuring++
				pubMu.Unlock()
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)

	rep, err := leaving.Leave(time.Minute)
	if err != nil {
		t.Fatalf("leave: %v (report %+v)", err, rep)
	}
	if rep.QueuesMoved != 2 {
		t.Fatalf("report %+v: want both queues moved", rep)
	}
	// The transient queue had 300 messages and no consumer: at least those were handed over.
	if rep.MessagesMoved < 300 {
		t.Fatalf("report %+v: want at least the transient queue's 300 messages handed over", rep)
	}
	select {
	case <-leaving.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the node did not close after leaving")
	}
	for _, n := range []*node.Node{nodes[0], nodes[2]} {
		for _, name := range []string{"work", "temp"} {
			if q, ok := n.FSM.Queue("/", name); !ok || q.Owner == "c2" {
				t.Fatalf("queue %s after the leave, seen by %s: %+v %v", name, n.Broker.ID(), q, ok)
			}
		}
	}
	// The queue at its new owner takes publishes through the first node: wait for 100 more
	// confirms, then stop the publisher, so the check below covers every message confirmed.
	pubMu.Lock()
	atLeave := confirmedDuring
	pubMu.Unlock()
	for deadline := time.Now().Add(20 * time.Second); ; {
		pubMu.Lock()
		after := confirmedDuring - atLeave
		pubMu.Unlock()
		if after >= 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d publishes through %s confirmed in 20 s after the leave", after, nodes[0].Broker.ID())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopPub()
	pubWG.Wait()
	// Drain the transient queue through the first node; the durable one is drained by the
	// re-subscribing consumer.
	chGet := dialNode(t, nodes[0])
	for {
		d, ok, err := chGet.Get("temp", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		sub.mu.Lock()
		sub.received[string(d.Body)]++
		sub.mu.Unlock()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pubMu.Lock()
		want := len(confirmed)
		sub.mu.Lock()
		missing := 0
		for body := range confirmed {
			if sub.received[body] == 0 {
				missing++
			}
		}
		sub.mu.Unlock()
		pubMu.Unlock()
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d confirmed messages never arrived after the leave (report %+v)", missing, want, rep)
		}
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	wg.Wait()
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for body, n := range sub.received {
		if n > 1 && sub.redelivs[body] == 0 {
			t.Errorf("%s delivered %d times, never as a redelivery", body, n)
		}
	}
	t.Logf("leave: %+v; %d confirmed messages all consumed (%d published during and after the leave)", rep, len(confirmed), confirmedDuring)
	waitDigests(t, []*node.Node{nodes[0], nodes[2]})
}

func waitDigests(t *testing.T, nodes []*node.Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		equal := true
		for _, n := range nodes[1:] {
			equal = equal && n.FSM.Digest() == nodes[0].FSM.Digest()
		}
		if equal {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("topology digests differ between the surviving nodes")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestLatePublishToMovedQueuesOldOwnerIsNacked: a node that has not yet applied a move still
// forwards publishes to the queue's old owner. The old owner refuses them (the publishing node
// turns that into basic.nack), never keeps them: the test speaks the data link as such a stale
// node would (authenticated with the cluster secret), before the move (accepted) and after it
// (refused), and then finds exactly the accepted messages at the new owner.
func TestLatePublishToMovedQueuesOldOwnerIsNacked(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	waitAllAlive(t, nodes)
	if _, err := dialNode(t, nodes[1]).QueueDeclare("moving", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	m, ok := nodes[0].Members.Member("c2")
	if !ok || m.Meta.DataAddr == "" {
		t.Fatalf("no data address for c2: %+v", m)
	}
	stale := datalink.Dial(m.Meta.DataAddr, datalink.Config{NodeID: "c3", Secret: "s3cret",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, nil)
	defer stale.Close()
	forward := func(body string) (rejected bool) {
		t.Helper()
		msg := &queue.Message{Props: (&wire.Properties{DeliveryMode: 2}).Append(nil), Body: []byte(body), Persistent: true, ExpirationMs: -1}
		type answer struct {
			rejected bool
			err      error
		}
		done := make(chan answer, 1)
		stale.PublishAsync([]string{broker.StoreKey("/", "moving")}, broker.EncodeStored(msg), true,
			func(rejected bool, err error) { done <- answer{rejected, err} })
		select {
		case a := <-done:
			if a.err != nil {
				t.Fatalf("forward %s to c2: %v", body, a.err)
			}
			return a.rejected
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer from c2 for %s", body)
		}
		return false
	}
	if forward("before-move") {
		t.Fatal("c2 refused a forward to a queue it owns")
	}

	if _, err := nodes[0].Broker.Apply(fsm.MoveQueues{From: "c2", Moves: []fsm.QueueRef{{Vhost: "/", Name: "moving", Owner: "c1"}}}); err != nil {
		t.Fatalf("move: %v", err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if q, ok := nodes[1].FSM.Queue("/", "moving"); ok && q.Owner == "c1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c2 never applied the move")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := range 5 {
		if !forward(fmt.Sprint("late-", i)) {
			t.Fatalf("c2 accepted late-%d for a queue it no longer owns", i)
		}
	}

	// The new owner ends up with the message accepted before the move (handed over), and
	// nothing else.
	ch := dialNode(t, nodes[0])
	var got []string
	for deadline := time.Now().Add(10 * time.Second); len(got) == 0; {
		d, ok, err := ch.Get("moving", true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			got = append(got, string(d.Body))
		} else if time.Now().After(deadline) {
			t.Fatal("the message accepted before the move never reached the new owner")
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	time.Sleep(300 * time.Millisecond) // a late message wrongly kept would follow it
	for {
		d, ok, err := ch.Get("moving", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		got = append(got, string(d.Body))
	}
	if len(got) != 1 || got[0] != "before-move" {
		t.Fatalf("at the new owner: %q, want only before-move", got)
	}
}
