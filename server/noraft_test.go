package server_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker/brokertest"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/server"
)

// countingBroker is the server's view of a broker with its topology writes counted.
type countingBroker struct {
	server.Broker
	applies atomic.Int64
}

func (c *countingBroker) Apply(cmd fsm.Command) (fsm.Result, error) {
	c.applies.Add(1)
	return c.Broker.Apply(cmd)
}

// serveWithoutRaft serves AMQP on a free loopback port for a broker node on an in-memory log
// (no Raft), with user guest; it returns the server's view of the broker, the log and the URL.
func serveWithoutRaft(t *testing.T) (*countingBroker, *brokertest.Log, string) {
	t.Helper()
	log := &brokertest.Log{}
	n := brokertest.NewNode(t, log, "solo", brokertest.Options{})
	brokertest.AddUser(t, n, "guest", "guest", "administrator")
	b := &countingBroker{Broker: n}
	s := server.New(server.Config{Node: b, Logger: quietLogger()})
	if err := s.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return b, log, fmt.Sprintf("amqp://guest:guest@%s/", s.Addr())
}

// TestServeWithoutRaft: the whole client path (handshake, declare, bind, confirmed publish,
// get, ack) works against a broker whose log is in memory.
func TestServeWithoutRaft(t *testing.T) {
	_, _, url := serveWithoutRaft(t)
	ch := channel(t, dialURL(t, url))
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch.ExchangeDeclare("ex", "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("q", "k", "ex", false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "ex", "k", body("hello"))
	if c := <-confirms; !c.Ack {
		t.Fatal("publish nacked")
	}
	m := getOne(t, ch, "q", false)
	if string(m.Body) != "hello" || m.Exchange != "ex" || m.RoutingKey != "k" {
		t.Fatalf("got %q via %s/%s", m.Body, m.Exchange, m.RoutingKey)
	}
	if err := m.Ack(false); err != nil {
		t.Fatal(err)
	}
	if q, err := ch.QueueDeclarePassive("q", false, false, false, false, nil); err != nil || q.Messages != 0 {
		t.Fatalf("after the ack: %+v, %v", q, err)
	}
}

// TestTopologyWritesWithoutMajority: when the broker cannot commit (no Raft majority), a new
// declaration closes only its channel with 541 and says why; a re-declaration equal to what
// exists is answered from the local replica without a write; publishing and consuming on
// existing queues go on; once commits work again so does declaring.
func TestTopologyWritesWithoutMajority(t *testing.T) {
	b, log, url := serveWithoutRaft(t)
	conn := dialURL(t, url)
	ch := channel(t, conn)
	if _, err := ch.QueueDeclare("kept", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	log.Fail(fmt.Errorf("commit: %w", cluster.ErrNoLeader))
	before := b.applies.Load()
	if _, err := ch.QueueDeclare("kept", true, false, false, false, nil); err != nil {
		t.Fatalf("re-declare of an existing queue: %v", err)
	}
	if n := b.applies.Load() - before; n != 0 {
		t.Fatalf("an equal re-declare made %d topology writes", n)
	}
	publish(t, ch, "", "kept", body("still served"))
	if m := getOne(t, ch, "kept", true); string(m.Body) != "still served" {
		t.Fatalf("got %q", m.Body)
	}

	_, err := ch.QueueDeclare("new", true, false, false, false, nil)
	wantCode(t, err, 541)
	if ae := err.(*amqp.Error); !strings.Contains(ae.Reason, "topology change not committed") {
		t.Fatalf("refusal %q does not say the change was not committed", ae.Reason)
	}
	if conn.IsClosed() {
		t.Fatal("a failed commit closed the connection, not only the channel")
	}

	log.Fail(nil)
	ch2 := channel(t, conn)
	if _, err := ch2.QueueDeclare("new", true, false, false, false, nil); err != nil {
		t.Fatalf("declare after commits work again: %v", err)
	}
}
