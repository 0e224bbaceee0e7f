package node_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

// visibleRounds is how many declare/use/delete/use rounds TestTopologyVisibleOnOkEverywhere runs.
const visibleRounds = 1000

// nodeClient is one amqp091-go connection to a node with a confirm-mode channel.
type nodeClient struct {
	t       *testing.T
	conn    *amqp.Connection
	ch      *amqp.Channel
	returns chan amqp.Return
	acks    chan amqp.Confirmation
}

func newNodeClient(t *testing.T, n *node.Node) *nodeClient {
	t.Helper()
	c, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatalf("dial %s: %v", n.AMQPAddr(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	nc := &nodeClient{t: t, conn: c}
	nc.reopen()
	return nc
}

// reopen opens a fresh channel (after a channel error such as 404).
func (nc *nodeClient) reopen() {
	nc.t.Helper()
	ch, err := nc.conn.Channel()
	if err != nil {
		nc.t.Fatalf("open channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		nc.t.Fatal(err)
	}
	nc.ch = ch
	nc.returns = ch.NotifyReturn(make(chan amqp.Return, 4))
	nc.acks = ch.NotifyPublish(make(chan amqp.Confirmation, 4))
}

// publishMandatory publishes and reports whether the broker returned the message as unroutable
// (basic.return reaches the client before the basic.ack of the same publish); a nack (routed
// to a queue whose owner no longer has it) counts as neither delivered nor returned: a miss.
func (nc *nodeClient) publishMandatory(exchange, key string) (returned, nacked bool) {
	nc.t.Helper()
	if err := nc.ch.Publish(exchange, key, true, false, amqp.Publishing{Body: []byte(key)}); err != nil {
		nc.t.Fatalf("publish: %v", err)
	}
	select {
	case c := <-nc.acks:
		if !c.Ack {
			nacked = true
		}
	case <-time.After(10 * time.Second):
		nc.t.Fatal("no confirm within 10 s")
	}
	select {
	case <-nc.returns:
		return true, nacked
	default:
		return false, nacked
	}
}

func isNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// TestTopologyVisibleOnOkEverywhere: 1,000 rounds of a declare (and bind) answered on node A,
// then right away a consume, passive declare or mandatory publish through node B must see it;
// then a delete on A, and B must no longer see it. A and B rotate over follower→follower,
// leader→follower and follower→leader. Every miss is counted; there must be none.
func TestTopologyVisibleOnOkEverywhere(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	clients := []*nodeClient{newNodeClient(t, nodes[0]), newNodeClient(t, nodes[1]), newNodeClient(t, nodes[2])}
	if err := clients[1].ch.ExchangeDeclare("vis-x", "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	pairs := [][2]int{{1, 2}, {0, 2}, {2, 0}}
	rounds := visibleRounds
	if testing.Short() {
		rounds = 150
	}
	var createMisses, deleteMisses int
	for i := 0; i < rounds; i++ {
		// Every pair sees all three kinds of check (i%3) in turn.
		pair := pairs[(i/3)%3]
		a, b := clients[pair[0]], clients[pair[1]]
		name := fmt.Sprintf("vis-%d", i)
		if _, err := a.ch.QueueDeclare(name, false, false, false, false, nil); err != nil {
			t.Fatalf("round %d: declare: %v", i, err)
		}
		if err := a.ch.QueueBind(name, name, "vis-x", false, nil); err != nil {
			t.Fatalf("round %d: bind: %v", i, err)
		}
		switch i % 3 {
		case 0:
			tag := "c-" + name
			if _, err := b.ch.Consume(name, tag, false, false, false, false, nil); err != nil {
				createMisses++
				t.Logf("round %d: consume on the other node: %v", i, err)
				b.reopen()
			} else if err := b.ch.Cancel(tag, false); err != nil {
				t.Fatalf("round %d: cancel: %v", i, err)
			}
		case 1:
			if _, err := b.ch.QueueDeclarePassive(name, false, false, false, false, nil); err != nil {
				createMisses++
				t.Logf("round %d: passive declare on the other node: %v", i, err)
				b.reopen()
			}
		case 2:
			if returned, nacked := b.publishMandatory("vis-x", name); returned || nacked {
				createMisses++
				t.Logf("round %d: publish through the other node was returned unroutable", i)
			}
		}
		if _, err := a.ch.QueueDelete(name, false, false, false); err != nil {
			t.Fatalf("round %d: delete: %v", i, err)
		}
		switch i % 3 {
		case 0:
			_, err := b.ch.Consume(name, "d-"+name, false, false, false, false, nil)
			if !isNotFound(err) {
				deleteMisses++
				t.Logf("round %d: consume of a deleted queue on the other node: %v", i, err)
				if err == nil {
					_ = b.ch.Cancel("d-"+name, false)
					continue
				}
			}
			b.reopen()
		case 1:
			_, err := b.ch.QueueDeclarePassive(name, false, false, false, false, nil)
			if !isNotFound(err) {
				deleteMisses++
				t.Logf("round %d: passive declare of a deleted queue on the other node: %v", i, err)
				if err == nil {
					continue
				}
			}
			b.reopen()
		case 2:
			if returned, _ := b.publishMandatory("vis-x", name); !returned {
				deleteMisses++
				t.Logf("round %d: publish through the other node was routed to a deleted queue", i)
			}
		}
	}
	if createMisses+deleteMisses > 0 {
		t.Fatalf("%d of %d rounds missed a declare, %d missed a delete", createMisses, rounds, deleteMisses)
	}
}
