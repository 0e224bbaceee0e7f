package node_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
)

var quorumArgs = amqp.Table{"x-queue-type": "quorum"}

// publishConfirmed publishes bodies prefix0..prefix(n-1) in confirm mode and returns the ones
// the broker acked; it fails the test on a closed confirm channel (a dead channel is not a nack).
func publishConfirmed(t *testing.T, ch *amqp.Channel, queue, prefix string, n int) []string {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, n+1))
	for i := 0; i < n; i++ {
		if err := ch.Publish("", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(prefix + strconv.Itoa(i))}); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	var acked []string
	for i := 0; i < n; i++ {
		select {
		case c, ok := <-confirms:
			if !ok {
				t.Fatalf("confirm channel closed after %d confirms", i)
			}
			if c.Ack {
				acked = append(acked, prefix+strconv.Itoa(int(c.DeliveryTag)-1))
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no confirm for publish %d within 20 s", i)
		}
	}
	return acked
}

// waitQueue polls a node's FSM until cond holds for the queue (10 s at most).
func waitQueue(t *testing.T, n *node.Node, name string, what string, cond func(fsm.Queue) bool) fsm.Queue {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, ok := n.FSM.Queue("/", name)
		if ok && cond(q) {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %q never got %s: %+v", name, what, q)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// drainUntil consumes (with acks) until every body in want arrived, and returns how often each
// body arrived and how many deliveries were marked redelivered.
func drainUntil(t *testing.T, ch *amqp.Channel, queue string, want []string) (bodies map[string]int, redelivered int) {
	t.Helper()
	if err := ch.Qos(200, 0, false); err != nil {
		t.Fatal(err)
	}
	tag := fmt.Sprintf("drain-%d", time.Now().UnixNano())
	msgs, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume %s: %v", queue, err)
	}
	defer func() { _ = ch.Cancel(tag, false) }()
	missing := map[string]bool{}
	for _, b := range want {
		missing[b] = true
	}
	bodies = map[string]int{}
	var arrivals []string
	deadline := time.After(20 * time.Second)
	for len(missing) > 0 {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("consumer of %s closed with %d messages missing", queue, len(missing))
			}
			bodies[string(m.Body)]++
			arrivals = append(arrivals, fmt.Sprintf("%s@%d%v", m.Body, len(arrivals), m.Redelivered))
			delete(missing, string(m.Body))
			if m.Redelivered {
				redelivered++
			}
			if err := m.Ack(false); err != nil {
				t.Fatal(err)
			}
		case <-deadline:
			some := make([]string, 0, 5)
			for b := range missing {
				if len(some) < 5 {
					some = append(some, b)
				}
			}
			unexpected, dups := 0, 0
			wanted := map[string]bool{}
			for _, b := range want {
				wanted[b] = true
			}
			var someUnexpected, someDups []string
			for _, a := range arrivals {
				b := a[:strings.IndexByte(a, '@')]
				if bodies[b] > 1 && len(someDups) < 12 {
					someDups = append(someDups, a)
				}
			}
			t.Logf("duplicate arrivals (body@position redelivered): %v", someDups)
			for b, n := range bodies {
				if !wanted[b] {
					unexpected++
					if len(someUnexpected) < 5 {
						someUnexpected = append(someUnexpected, b)
					}
				}
				if n > 1 {
					dups++
				}
			}
			t.Fatalf("%d confirmed messages of %s never arrived, e.g. %v; %d distinct bodies arrived, %d not confirmed (e.g. %v), %d more than once",
				len(missing), queue, some, len(bodies), unexpected, someUnexpected, dups)
		}
	}
	return bodies, redelivered
}

func bodiesRange(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, prefix+strconv.Itoa(i))
	}
	return out
}

func TestQuorumQueueDeclaredOnOneNodeIsReplicatedEverywhere(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch1 := dialNode(t, nodes[0])
	if _, err := ch1.QueueDeclare("qq", true, false, false, false, quorumArgs); err != nil {
		t.Fatal(err)
	}
	q := waitQueue(t, nodes[2], "qq", "three replicas", func(q fsm.Queue) bool { return len(q.Replicas) == 3 })
	if q.Owner != "c1" || q.Epoch != 1 || !slices.Equal(q.InSync, q.Replicas) {
		t.Fatalf("declared on c1: %+v", q)
	}
	// RabbitMQ's rules, from another node.
	ch2 := dialNode(t, nodes[1])
	_, err := ch2.QueueDeclare("qq-transient", false, false, false, false, quorumArgs)
	if e, ok := err.(*amqp.Error); !ok || e.Code != 406 || e.Reason != "PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq-transient' in vhost '/'" {
		t.Fatalf("non-durable quorum queue: %v", err)
	}
	ch2 = dialNode(t, nodes[1])
	_, err = ch2.QueueDeclare("", true, false, false, false, quorumArgs)
	if e, ok := err.(*amqp.Error); !ok || e.Code != 406 || e.Reason != "PRECONDITION_FAILED - Cannot declare a server-named queue for type rabbit_quorum_queue" {
		t.Fatalf("server-named quorum queue: %v", err)
	}
}

// TestQuorumQueueKeepsConfirmedMessagesWhenItsLeaderDies: messages confirmed through c2 into a
// queue led by c1 are all consumed through c3 after c1 dies, a follower takes over, publishes
// through c2 keep being confirmed, and settled messages do not come back.
func TestQuorumQueueKeepsConfirmedMessagesWhenItsLeaderDies(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch1 := dialNode(t, nodes[0])
	if _, err := ch1.QueueDeclare("orders", true, false, false, false, quorumArgs); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, nodes[1], "orders", "its declaration", func(q fsm.Queue) bool { return q.Owner == "c1" })
	ch2 := dialNode(t, nodes[1])
	acked := publishConfirmed(t, ch2, "orders", "m", 400)
	if len(acked) != 400 {
		t.Fatalf("%d of 400 publishes confirmed with every node up", len(acked))
	}
	// Settle the first 100 through c3 (a remote consumer of c1's queue).
	ch3 := dialNode(t, nodes[2])
	first, _ := drainUntil(t, ch3, "orders", bodiesRange("m", 0, 100))
	if len(first) > 100+200 { // prefetch 200: some of the next ones may have been in flight
		t.Fatalf("first drain got %d distinct bodies", len(first))
	}
	_ = ch3.Close() // requeues what was in flight beyond the first 100
	// Acks reach the followers asynchronously (basic.ack has no reply): wait until both hold
	// only what is left, so the failover below must not bring settled messages back.
	left := 400 - len(first)
	for _, n := range nodes[1:] {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if got, ok := n.Broker.ReplicaMessages("/", "orders"); ok && got == left {
				break
			}
			if time.Now().After(deadline) {
				got, _ := n.Broker.ReplicaMessages("/", "orders")
				t.Fatalf("replica on %s holds %d messages, want %d", n.Broker.ID(), got, left)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	_ = nodes[0].Close()
	q := waitQueue(t, nodes[1], "orders", "a new leader", func(q fsm.Queue) bool { return q.Owner != "c1" })
	if q.Epoch < 2 || !slices.Contains([]string{"c2", "c3"}, q.Owner) {
		t.Fatalf("after c1 died: %+v", q)
	}
	// Publishing through a live node goes on.
	ch2 = dialNode(t, nodes[1])
	more := publishConfirmed(t, ch2, "orders", "after", 50)
	if len(more) != 50 {
		t.Fatalf("%d of 50 publishes confirmed after the failover", len(more))
	}
	ch3 = dialNode(t, nodes[2])
	var want []string
	for _, b := range acked {
		if first[b] == 0 {
			want = append(want, b)
		}
	}
	rest, redelivered := drainUntil(t, ch3, "orders", append(want, more...))
	for b := range first {
		if rest[b] != 0 {
			t.Fatalf("%s was acked before the failover and delivered again", b)
		}
	}
	if redelivered < len(want) {
		t.Fatalf("%d of the %d messages taken over were marked redelivered, want all (docs/replication.md)", redelivered, len(want))
	}
}

// TestLeaveHandsReplicatedQueueLeadershipOver: `node leave` of a replicated queue's leader
// makes an in-sync follower the leader and drops the leaving node from the replica set;
// every confirmed message is consumed through another node.
func TestLeaveHandsReplicatedQueueLeadershipOver(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch1 := dialNode(t, nodes[0])
	if _, err := ch1.QueueDeclare("handed", true, false, false, false, quorumArgs); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, nodes[1], "handed", "three in-sync replicas", func(q fsm.Queue) bool { return len(q.InSync) == 3 })
	acked := publishConfirmed(t, dialNode(t, nodes[1]), "handed", "h", 200)
	if len(acked) != 200 {
		t.Fatalf("%d of 200 confirmed", len(acked))
	}
	rep, err := nodes[0].Leave(30 * time.Second)
	if err != nil {
		t.Fatalf("leave: %v", err)
	}
	if rep.ReplicatedQueues != 1 {
		t.Fatalf("leave report %+v: want the one replicated queue led elsewhere", rep)
	}
	q := waitQueue(t, nodes[2], "handed", "a leader other than c1 and no replica on c1", func(q fsm.Queue) bool {
		return q.Owner != "c1" && !slices.Contains(q.Replicas, "c1")
	})
	if q.Epoch < 2 {
		t.Fatalf("after leave: %+v", q)
	}
	drainUntil(t, dialNode(t, nodes[2]), "handed", acked)
}

// TestQuorumQueueConfirmsPublishesRightAfterTheDeclare: publishes into a new replicated queue
// right after its declare, on its leader's node, with and without a consumer settling them,
// are all confirmed (followers that had not applied the declare yet are synced later).
func TestQuorumQueueConfirmsPublishesRightAfterTheDeclare(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	for _, withConsumer := range []bool{false, true} {
		name := fmt.Sprintf("fresh-%v", withConsumer)
		ch := dialNode(t, nodes[0])
		if _, err := ch.QueueDeclare(name, true, false, false, false, quorumArgs); err != nil {
			t.Fatal(err)
		}
		if withConsumer {
			cons := dialNode(t, nodes[0])
			msgs, err := cons.Consume(name, "", true, false, false, false, nil)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for range msgs {
				}
			}()
		}
		acked := publishConfirmed(t, ch, name, "f", 2000)
		if len(acked) != 2000 {
			t.Fatalf("consumer %v: %d of 2000 confirmed", withConsumer, len(acked))
		}
	}
}

// TestRebalanceSpreadsReplicatedQueueLeaders: three replicated queues led by c1; `node
// rebalance` through c2 hands two of them to in-sync replicas on c2 and c3; every confirmed
// message is then consumed through c3.
func TestRebalanceSpreadsReplicatedQueueLeaders(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch1 := dialNode(t, nodes[0])
	names := []string{"rb1", "rb2", "rb3"}
	acked := map[string][]string{}
	for _, name := range names {
		if _, err := ch1.QueueDeclare(name, true, false, false, false, quorumArgs); err != nil {
			t.Fatal(err)
		}
		waitQueue(t, nodes[1], name, "three in-sync replicas", func(q fsm.Queue) bool { return len(q.InSync) == 3 })
		acked[name] = publishConfirmed(t, dialNode(t, nodes[1]), name, name+"-", 50)
	}
	moved, err := nodes[1].Rebalance()
	if err != nil || moved != 2 {
		t.Fatalf("rebalance: moved %d, %v; want 2 leaders handed over", moved, err)
	}
	leaders := map[string]bool{}
	for _, name := range names {
		q := waitQueue(t, nodes[2], name, "a leader", func(q fsm.Queue) bool { return q.Owner != "" })
		leaders[q.Owner] = true
	}
	if len(leaders) != 3 {
		t.Fatalf("leaders after rebalance: %v, want one on each node", leaders)
	}
	ch3 := dialNode(t, nodes[2])
	for _, name := range names {
		drainUntil(t, ch3, name, acked[name])
	}
}

// declareDeadLetters declares the fanout exchange "dlx" and the classic queue "dead" bound to it
// through ch (so "dead" lives on ch's node).
func declareDeadLetters(t *testing.T, ch *amqp.Channel) {
	t.Helper()
	if err := ch.ExchangeDeclare("dlx", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("dead", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("dead", "", "dlx", false, nil); err != nil {
		t.Fatal(err)
	}
}

// TestQuorumDeliveryLimitDeadLetters: x-delivery-limit 1 on a replicated queue led by c1,
// consumed through c2: the first return comes back with x-delivery-count 1, the second goes to
// the dead-letter exchange with reason delivery_limit, as RabbitMQ's quorum queues do.
func TestQuorumDeliveryLimitDeadLetters(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch1 := dialNode(t, nodes[0])
	declareDeadLetters(t, ch1)
	args := amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(1), "x-dead-letter-exchange": "dlx"}
	if _, err := ch1.QueueDeclare("limited", true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	if acked := publishConfirmed(t, ch1, "limited", "poison", 1); len(acked) != 1 {
		t.Fatal("publish not confirmed")
	}
	ch2 := dialNode(t, nodes[1])
	msgs, err := ch2.Consume("limited", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		select {
		case m := <-msgs:
			count, has := m.Headers["x-delivery-count"]
			switch {
			case i == 0 && has:
				t.Fatalf("first delivery carries x-delivery-count %v", count)
			case i == 1 && fmt.Sprint(count) != "1":
				t.Fatalf("second delivery: x-delivery-count %v (%T), want 1", count, count)
			}
			if err := m.Nack(false, true); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("delivery %d never came", i+1)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, ok, err := dialNode(t, nodes[2]).Get("dead", true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			deaths, _ := m.Headers["x-death"].([]any)
			if string(m.Body) != "poison0" || len(deaths) != 1 || deaths[0].(amqp.Table)["reason"] != "delivery_limit" {
				t.Fatalf("dead-lettered %q with x-death %v", m.Body, m.Headers["x-death"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message past its delivery limit never reached the dead-letter queue")
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case m := <-msgs:
		t.Fatalf("delivered a third time: %q", m.Body)
	case <-time.After(300 * time.Millisecond):
	}
}

// TestQuorumReturnCountsSurviveFailover: a message returned twice under x-delivery-limit 2 keeps
// its count when the leader dies: the new leader delivers it with x-delivery-count 2, and one
// more return dead-letters it, as RabbitMQ's quorum queues (which keep the count in the log) do.
func TestQuorumReturnCountsSurviveFailover(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch1, ch2 := dialNode(t, nodes[0]), dialNode(t, nodes[1])
	declareDeadLetters(t, ch2) // on c2, which survives
	args := amqp.Table{"x-queue-type": "quorum", "x-delivery-limit": int32(2), "x-dead-letter-exchange": "dlx"}
	if _, err := ch1.QueueDeclare("counted", true, false, false, false, args); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, nodes[2], "counted", "both followers in sync", func(q fsm.Queue) bool { return q.Owner == "c1" && len(q.InSync) == 3 })
	if acked := publishConfirmed(t, ch1, "counted", "poison", 1); len(acked) != 1 {
		t.Fatal("publish not confirmed")
	}
	getOne := func(ch *amqp.Channel, what string) amqp.Delivery {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			m, ok, err := ch.Get("counted", false)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			if ok {
				return m
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: queue empty", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := 0; i < 2; i++ {
		m := getOne(ch2, fmt.Sprintf("get %d", i+1))
		if err := m.Nack(false, true); err != nil {
			t.Fatal(err)
		}
	}
	// The followers apply the leader's stream in order: once a later publish is confirmed (every
	// in-sync follower stored it), they hold the counts sent before it.
	if acked := publishConfirmed(t, ch1, "counted", "later", 1); len(acked) != 1 {
		t.Fatal("second publish not confirmed")
	}

	_ = nodes[0].Close()
	waitQueue(t, nodes[1], "counted", "a new leader", func(q fsm.Queue) bool { return q.Owner != "c1" })
	ch3 := dialNode(t, nodes[2])
	m := getOne(ch3, "get after the failover")
	if string(m.Body) != "poison0" {
		t.Fatalf("first message after the failover is %q", m.Body)
	}
	if got := fmt.Sprint(m.Headers["x-delivery-count"]); got != "2" {
		t.Fatalf("after the failover: x-delivery-count %s, want 2 (the returns before it)", got)
	}
	if err := m.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, ok, err := ch3.Get("dead", true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(d.Body) != "poison0" {
				t.Fatalf("dead-lettered %q", d.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the third return did not dead-letter the message (delivery limit 2)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
