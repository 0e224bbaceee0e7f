package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// amqp091-go's connection goroutines end a moment after Close returns.
		goleak.IgnoreTopFunction("github.com/rabbitmq/amqp091-go.(*Connection).heartbeater"),
	)
}

var nodeSeq atomic.Int64

type testNode struct {
	*node.Node
	url string
}

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startNode runs a real node in-process: Raft (in-memory transport), broker and AMQP server on
// a free loopback port.
func startNode(t testing.TB, tune ...func(*node.Config)) *testNode {
	t.Helper()
	id := fmt.Sprintf("n%d", nodeSeq.Add(1))
	_, trans := raft.NewInmemTransport(raft.ServerAddress(id))
	cfg := node.Config{
		ID: id, DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0",
		RaftTransport: trans, Logger: quietLogger(), RaftLogOutput: io.Discard,
	}
	for _, f := range tune {
		f(&cfg)
	}
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return &testNode{Node: n, url: "amqp://guest:guest@" + n.AMQPAddr() + "/"}
}

func dial(t testing.TB, n *testNode) *amqp.Connection {
	t.Helper()
	return dialURL(t, n.url)
}

func dialURL(t testing.TB, url string) *amqp.Connection {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func channel(t testing.TB, c *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := c.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	return ch
}

// wantCode asserts err is an AMQP exception with the given reply code.
func wantCode(t testing.TB, err error, code int) {
	t.Helper()
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		t.Fatalf("want AMQP error %d, got %v", code, err)
	}
	if ae.Code != code {
		t.Fatalf("want reply code %d, got %d (%s)", code, ae.Code, ae.Reason)
	}
}

func publish(t testing.TB, ch *amqp.Channel, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ch.PublishWithContext(ctx, exchange, key, false, false, msg); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

func body(s string) amqp.Publishing { return amqp.Publishing{Body: []byte(s)} }

// recv waits for one delivery.
func recv(t testing.TB, d <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case m, ok := <-d:
		if !ok {
			t.Fatal("delivery channel closed")
		}
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no delivery within 5s")
	}
	return amqp.Delivery{}
}

// noRecv asserts nothing arrives for a short while.
func noRecv(t testing.TB, d <-chan amqp.Delivery, wait time.Duration) {
	t.Helper()
	select {
	case m := <-d:
		t.Fatalf("unexpected delivery %q", m.Body)
	case <-time.After(wait):
	}
}

// getOne polls basic.get until a message arrives.
func getOne(t testing.TB, ch *amqp.Channel, q string, autoAck bool) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m, ok, err := ch.Get(q, autoAck)
		if err != nil {
			t.Fatalf("basic.get: %v", err)
		}
		if ok {
			return m
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("queue %s stayed empty", q)
	return amqp.Delivery{}
}

var _ = server.Version
