package node_test

import (
	"io"
	"log/slog"
	"net"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rabbitmq/amqp091-go.(*Connection).heartbeater"))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRestartKeepsDurableTopology restarts a node on its data dir (real raft-boltdb and TCP
// transport) and checks RabbitMQ's rule: durable exchanges, queues and bindings survive,
// transient and exclusive ones do not.
func TestRestartKeepsDurableTopology(t *testing.T) {
	cfg := node.Config{
		ID: "restart", DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", RaftAddr: freeAddr(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
	}
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
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("d-x", "topic", true, false, false, false, nil))
	must(ch.ExchangeDeclare("t-x", "topic", false, false, false, false, nil))
	_, err = ch.QueueDeclare("d-q", true, false, false, false, amqp.Table{"x-max-length": int32(5)})
	must(err)
	_, err = ch.QueueDeclare("t-q", false, false, false, false, nil)
	must(err)
	_, err = ch.QueueDeclare("x-q", true, false, true, false, nil)
	must(err)
	must(ch.QueueBind("d-q", "a.#", "d-x", false, nil))
	digestBefore := n.FSM.Digest()
	_ = conn.Close()
	must(n.Close())

	n2, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n2.Close()
	if n2.FSM.Digest() == digestBefore {
		t.Fatal("digest unchanged: transient topology was not dropped")
	}
	conn2, err := amqp.Dial("amqp://guest:guest@" + n2.AMQPAddr() + "/")
	if err != nil {
		t.Fatalf("guest could not log in after restart: %v", err)
	}
	defer conn2.Close()
	probe := func(f func(*amqp.Channel) error) error {
		c, err := conn2.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return f(c)
	}
	if err := probe(func(c *amqp.Channel) error {
		return c.ExchangeDeclarePassive("d-x", "topic", true, false, false, false, nil)
	}); err != nil {
		t.Fatalf("durable exchange lost: %v", err)
	}
	if err := probe(func(c *amqp.Channel) error {
		return c.ExchangeDeclarePassive("t-x", "topic", false, false, false, false, nil)
	}); err == nil {
		t.Fatal("transient exchange survived a restart")
	}
	if err := probe(func(c *amqp.Channel) error {
		_, err := c.QueueDeclarePassive("t-q", false, false, false, false, nil)
		return err
	}); err == nil {
		t.Fatal("transient queue survived a restart")
	}
	if err := probe(func(c *amqp.Channel) error {
		_, err := c.QueueDeclarePassive("x-q", true, false, true, false, nil)
		return err
	}); err == nil {
		t.Fatal("exclusive queue survived a restart")
	}
	// The durable queue is back with its arguments and its binding routes.
	c, err := conn2.Channel()
	must(err)
	if _, err := c.QueueDeclare("d-q", true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err != nil {
		t.Fatalf("durable queue lost or its arguments changed: %v", err)
	}
	must(c.Publish("d-x", "a.b.c", false, false, amqp.Publishing{Body: []byte("routed")}))
	m, ok, err := c.Get("d-q", true)
	if err != nil || !ok || string(m.Body) != "routed" {
		t.Fatalf("binding lost after restart: ok=%v err=%v", ok, err)
	}
}
