package node_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

// startReplier serves "re: <body>" replies to every request on queue through node n, publishing
// each reply to the request's reply_to via the default exchange. It reports the reply_to names
// it saw on seen.
func startReplier(t *testing.T, n *node.Node, queue string, seen chan<- string) {
	t.Helper()
	ch := dialNode(t, n)
	if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	reqs, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range reqs {
			select {
			case seen <- d.ReplyTo:
			default:
			}
			_ = ch.Publish("", d.ReplyTo, false, false, amqp.Publishing{
				CorrelationId: d.CorrelationId, Body: []byte("re: " + string(d.Body)),
			})
		}
	}()
}

// callDirect makes n calls from ch (consuming amq.rabbitmq.reply-to) to queue and checks every
// reply arrives on the same channel with its correlation id.
func callDirect(t *testing.T, ch *amqp.Channel, queue string, n int) {
	t.Helper()
	replies, err := ch.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		err := ch.Publish("", queue, false, false, amqp.Publishing{
			ReplyTo: "amq.rabbitmq.reply-to", CorrelationId: fmt.Sprint("c-", i), Body: []byte(fmt.Sprint("req-", i)),
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case d := <-replies:
			if d.CorrelationId != fmt.Sprint("c-", i) || string(d.Body) != fmt.Sprint("re: req-", i) {
				t.Fatalf("reply %d: %q %q", i, d.CorrelationId, d.Body)
			}
			if !strings.HasPrefix(d.RoutingKey, "amq.rabbitmq.reply-to.") || d.Exchange != "" {
				t.Fatalf("reply delivered with exchange %q routing key %q", d.Exchange, d.RoutingKey)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no reply to call %d", i)
		}
	}
}

// TestDirectReplyToAcrossNodes: amqp091-go callers consume amq.rabbitmq.reply-to on one node;
// repliers on another node (and on the same node) publish to the rewritten reply_to; every
// reply comes back on the caller's channel. A pika caller does the same across nodes.
func TestDirectReplyToAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	waitAllAlive(t, nodes)
	seen := make(chan string, 1)
	startReplier(t, nodes[1], "rpc-remote", seen)
	startReplier(t, nodes[0], "rpc-local", make(chan string, 1))

	callDirect(t, dialNode(t, nodes[0]), "rpc-remote", 100)
	callDirect(t, dialNode(t, nodes[0]), "rpc-local", 20)
	if name := <-seen; !strings.HasPrefix(name, "amq.rabbitmq.reply-to.") || len(name) <= len("amq.rabbitmq.reply-to.") {
		t.Fatalf("replier saw reply_to %q", name)
	}

	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "testdata", "directreply_caller.py")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", script, "amqp://guest:guest@"+nodes[0].AMQPAddr()+"/", "rpc-remote", "50").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"replies": 50`) {
		t.Fatalf("pika caller on c1, replier on c2: %v\n%s", err, out)
	}
}

// TestDirectReplyToRules: RabbitMQ's errors for misuse, passive declares of the pseudo-queue,
// and a reply to a consumer that is gone being dropped (acked, delivered nowhere).
func TestDirectReplyToRules(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	waitAllAlive(t, nodes)
	want406 := func(err error, text string) {
		t.Helper()
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed || ae.Reason != "PRECONDITION_FAILED - "+text {
			t.Fatalf("got %v, want 406 %q", err, text)
		}
	}
	ch := dialNode(t, nodes[0])
	_, err := ch.Consume("amq.rabbitmq.reply-to", "", false, false, false, false, nil)
	want406(err, "reply consumer cannot acknowledge")

	ch = dialNode(t, nodes[0])
	if _, err := ch.Consume("amq.rabbitmq.reply-to", "r1", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err = ch.Consume("amq.rabbitmq.reply-to", "r2", true, false, false, false, nil)
	want406(err, "reply consumer already set")

	ch = dialNode(t, nodes[0])
	if _, err := ch.QueueDeclarePassive("amq.rabbitmq.reply-to", false, false, false, false, nil); err != nil {
		t.Fatalf("passive declare of the pseudo-queue: %v", err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	if err := ch.Publish("", "anything", false, false, amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ae := <-closed:
		want406(ae, "fast reply consumer does not exist")
	case <-time.After(10 * time.Second):
		t.Fatal("publish with reply_to amq.rabbitmq.reply-to and no reply consumer was accepted")
	}

	// A caller whose channel closed: its name no longer exists and replies to it are dropped.
	caller := dialNode(t, nodes[0])
	if _, err := caller.Consume("amq.rabbitmq.reply-to", "", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	seen := make(chan string, 1)
	startReplier(t, nodes[1], "rpc-rules", seen)
	if err := caller.Publish("", "rpc-rules", false, false, amqp.Publishing{ReplyTo: "amq.rabbitmq.reply-to", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	name := <-seen
	other := dialNode(t, nodes[1])
	if _, err := other.QueueDeclarePassive(name, false, false, false, false, nil); err != nil {
		t.Fatalf("passive declare of a live reply name through the other node: %v", err)
	}
	if err := caller.Close(); err != nil {
		t.Fatal(err)
	}
	check := dialNode(t, nodes[0])
	if _, err := check.QueueDeclarePassive(name, false, false, false, false, nil); err == nil {
		t.Fatal("reply name still exists after its channel closed")
	}
	pub := dialNode(t, nodes[1])
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	acks := pub.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := pub.Publish("", name, false, false, amqp.Publishing{Body: []byte("late")}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-acks:
		if !c.Ack {
			t.Fatal("reply to a gone consumer nacked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no confirm for a reply to a gone consumer")
	}
}
