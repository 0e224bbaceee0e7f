package main

import (
	"errors"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Minimal reproductions of Warren bugs the real-client tests in quorum_interop_test.go ran
// into, kept as regression tests now that they are fixed. Each says in its comment what it
// sends, what it used to get and what RabbitMQ 3.10 does.

// TestQuorumFailoverDeliversEachMessageOnce is the smallest form of what
// TestQuorumPikaPublisherThroughLeaderKill9 shows: 100 persistent messages published once each
// with confirms through n2 into a quorum queue led by n1; n1 killed with SIGKILL; once a new
// leader serves, 100 more published through n2; then everything consumed through n3. Each
// message must be delivered exactly once.
//
// Was a bug (fixed): the new leader's /api/queues shows
// messages_ready 200, but 300 deliveries come: each of the 100 messages it took over is delivered
// twice (both copies redelivered=true), then the 100 new ones. Without the publishes after the
// takeover every message comes once. Cause, as far as a local experiment shows:
// queue.(*Queue).RestoreStored (queue/paging.go) pushes the run (0, lastID] for the recovered
// messages but leaves p.covered below lastID, so the first stored publish after it extends no
// run and pushes a new one from p.covered, which reads the recovered ids again. Adding
// `p.covered = max(p.covered, lastID)` there made this test and the classic one below pass.
func TestQuorumFailoverDeliversEachMessageOnce(t *testing.T) {
	procs := iopStartThree(t)
	const queue = "once-qq"
	decl := dialProc(t, procs[0])
	if _, err := decl.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare through n1: %v", err)
	}
	iopWaitQueue(t, procs[1], queue, "three in-sync replicas led by n1", func(q iopQueue) bool {
		return q.Leader == "n1" && len(q.InSync) == 3
	})
	pub := dialProc(t, procs[1])
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 1))
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			if err := pub.Publish("", queue, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			select {
			case c := <-confirms:
				if !c.Ack {
					t.Fatalf("message %d nacked", i)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no confirm for message %d", i)
			}
		}
	}
	publish(0, 100)
	iopKill9(procs[0])
	q := iopWaitQueue(t, procs[1], queue, "a new leader", func(q iopQueue) bool {
		return (q.Leader == "n2" || q.Leader == "n3") && len(q.InSync) == 2
	})
	publish(100, 200)
	cons := dialProc(t, procs[2])
	deliveries, err := cons.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume through n3: %v", err)
	}
	times := map[int]int{}
	total := 0
	for quiet := time.After(10 * time.Second); ; {
		select {
		case d := <-deliveries:
			v, _ := strconv.Atoi(string(d.Body))
			times[v]++
			total++
			_ = d.Ack(false)
			quiet = time.After(2 * time.Second) // after the last delivery, wait for extra copies
			continue
		case <-quiet:
		}
		break
	}
	var missing, twice []int
	for i := 0; i < 200; i++ {
		if times[i] == 0 {
			missing = append(missing, i)
		}
		if times[i] > 1 {
			twice = append(twice, i)
		}
	}
	if len(missing) > 0 || len(twice) > 0 {
		t.Fatalf("after failover to %s, %d deliveries of 200 messages: never delivered %d %v; delivered more than once %d %v",
			q.Leader, total, len(missing), missing[:min(len(missing), 10)], len(twice), twice[:min(len(twice), 10)])
	}
}

// TestClassicRestartDeliversEachMessageOnce: the same fault on a classic durable queue of a single
// node: 100 confirmed persistent messages, kill -9, restart, 100 more, then each of the 200
// must be delivered once. Was a bug (fixed): 300 deliveries, the
// 100 recovered messages twice; see TestQuorumFailoverDeliversEachMessageOnce for the cause.
func TestClassicRestartDeliversEachMessageOnce(t *testing.T) {
	bin := nodeBinary(t)
	dir := t.TempDir()
	addrs := freePorts(t, 4)
	p := startNodeProc(t, bin, dir, addrs)
	publish := func(from, to int) {
		c, err := amqp.Dial(p.amqp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ch, err := c.Channel()
		if err == nil {
			_, err = ch.QueueDeclare("dq", true, false, false, false, nil)
		}
		if err == nil {
			err = ch.Confirm(false)
		}
		if err != nil {
			t.Fatal(err)
		}
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
		for i := from; i < to; i++ {
			if err := ch.Publish("", "dq", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(strconv.Itoa(i))}); err != nil {
				t.Fatal(err)
			}
			if c := <-confirms; !c.Ack {
				t.Fatalf("message %d nacked", i)
			}
		}
	}
	publish(0, 100)
	p.kill9()
	p = startNodeProc(t, bin, dir, addrs)
	publish(100, 200)
	c, err := amqp.Dial(p.amqp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume("dq", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	times := map[int]int{}
	total := 0
	for quiet := time.After(10 * time.Second); ; {
		select {
		case d := <-deliveries:
			v, _ := strconv.Atoi(string(d.Body))
			times[v]++
			total++
			quiet = time.After(2 * time.Second)
			continue
		case <-quiet:
		}
		break
	}
	if total != 200 || len(times) != 200 {
		t.Fatalf("%d deliveries of %d distinct messages, want 200 once each", total, len(times))
	}
}

// TestQuorumRefusalsAsRabbitMQ checks two refusals RabbitMQ 3.10 makes for quorum queues (texts
// taken from Debian's rabbitmq-server 3.10 with pika). Warren used to accept both.
func TestQuorumRefusalsAsRabbitMQ(t *testing.T) {
	p := startNodeProc(t, nodeBinary(t), t.TempDir(), freePorts(t, 4))
	conn, err := amqp.Dial(p.amqp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	expect := func(what string, err error, code int, text string) {
		t.Helper()
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != code || ae.Reason != text {
			t.Errorf("%s: got %v, want %d %s", what, err, code, text)
		}
	}
	ch, _ := conn.Channel()
	_, err = ch.QueueDeclare("qq-locator", true, false, false, false, amqp.Table{"x-queue-type": "quorum", "x-queue-master-locator": "min-masters"})
	expect("x-queue-master-locator", err, 406, "PRECONDITION_FAILED - invalid arg 'x-queue-master-locator' for queue 'qq-locator' in vhost '/' of queue type rabbit_quorum_queue")

	ch, _ = conn.Channel()
	if _, err := ch.QueueDeclare("qq-sac", true, false, false, false, amqp.Table{"x-queue-type": "quorum", "x-single-active-consumer": true}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "qq-sac", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	_, _, err = ch.Get("qq-sac", true)
	expect("basic.get on a single-active-consumer quorum queue", err, 405,
		"RESOURCE_LOCKED - cannot obtain access to locked queue 'qq-sac' in vhost '/'. basic.get operations are not supported by quorum queues with single active consumer")
}

// TestQuorumConfirmWhenConsumerAcksFirst: three node processes, a quorum queue led by n1 with a
// consumer through n1 that acks each delivery at once (or, first, never, or after 2 s), and one
// persistent message published with confirms through n1. Each publish must be confirmed.
//
// Was a bug (fixed): with the consumer that acks at once, the
// message is delivered and acked but the publish is never confirmed (nor nacked). With no ack
// the confirm comes in about 0.2 s, and with an ack 2 s later too, unless the machine is so
// loaded that the ack comes first. Seen as well with persistent or transient messages, through
// amq.direct, with the publisher or the consumer on other nodes, and with auto-ack consumers;
// a single-node cluster confirms. In an experiment publishing one message at a time to a fresh
// queue with such a consumer, the first publish got no confirm in 4 s; the confirm of each
// message then came only when the next one was published (confirms lag by one), the last one's
// a few seconds later. So the commit of a message settled at once seems to wait for the next
// Append or write to carry it.
func TestQuorumConfirmWhenConsumerAcksFirst(t *testing.T) {
	procs := iopStartThree(t)
	for _, c := range []struct {
		name     string
		ackAfter time.Duration // < 0: never
	}{{"never-acked", -1}, {"acked-after-2s", 2 * time.Second}, {"acked-at-once", 0}} {
		decl := dialProc(t, procs[0])
		if _, err := decl.QueueDeclare(c.name, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
			t.Fatal(err)
		}
		iopWaitQueue(t, procs[1], c.name, "three in-sync replicas led by n1", func(q iopQueue) bool {
			return q.Leader == "n1" && len(q.InSync) == 3
		})
		cons := dialProc(t, procs[0])
		deliveries, err := cons.Consume(c.name, "", false, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		delivered := make(chan struct{}, 1)
		go func() { // ends when the test's connections close
			for d := range deliveries {
				delivered <- struct{}{}
				if c.ackAfter >= 0 {
					time.Sleep(c.ackAfter)
					_ = d.Ack(false)
				}
			}
		}()
		pub := dialProc(t, procs[0])
		if err := pub.Confirm(false); err != nil {
			t.Fatal(err)
		}
		confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 1))
		if err := pub.Publish("", c.name, false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		select {
		case conf := <-confirms:
			if !conf.Ack {
				t.Errorf("%s: publish nacked", c.name)
			}
		case <-time.After(10 * time.Second):
			select {
			case <-delivered:
				t.Errorf("%s: the message was delivered, but its publish not confirmed in 10 s", c.name)
			default:
				t.Errorf("%s: publish not confirmed in 10 s", c.name)
			}
		}
	}
}
