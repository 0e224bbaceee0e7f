package broker_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/broker/brokertest"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// pair starts nodes a and b on one log, linked by data links; stores may be nil.
func pair(t *testing.T, sa, sb *store) (a, b *broker.Node) {
	t.Helper()
	l := &brokertest.Log{}
	opts := func(s *store) brokertest.Options {
		if s == nil {
			return brokertest.Options{}
		}
		return brokertest.Options{Messages: s}
	}
	a = brokertest.NewNode(t, l, "a", opts(sa))
	b = brokertest.NewNode(t, l, "b", opts(sb))
	brokertest.Link(t, a, b)
	return a, b
}

// sink is a remote consumer as the server's channel is one: it collects deliveries.
type sink struct {
	mu        sync.Mutex
	got       []datalink.Delivery
	msgs      []*queue.Message
	cancelled bool
}

func (s *sink) RemoteDeliver(d datalink.Delivery, msg *queue.Message) {
	s.mu.Lock()
	s.got, s.msgs = append(s.got, d), append(s.msgs, msg)
	s.mu.Unlock()
}

func (s *sink) RemoteCancelled() {
	s.mu.Lock()
	s.cancelled = true
	s.mu.Unlock()
}

// next waits for delivery i (0-based, in arrival order).
func (s *sink) next(t *testing.T, i int) (datalink.Delivery, *queue.Message) {
	t.Helper()
	waitFor(t, "remote delivery "+strconv.Itoa(i), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.got) > i
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[i], s.msgs[i]
}

func waitCounts(t *testing.T, q *queue.Queue, ready, unacked, consumers int) {
	t.Helper()
	waitFor(t, "queue "+q.Name()+" counts", func() bool {
		r, u, c := q.Counts()
		return r == ready && u == unacked && c == consumers
	})
}

// TestRemoteConsumerSettles: a consumer on node a of a queue owned by b gets the messages
// published on a (forwarded to b, confirmed by b) and settles them by b's sequence numbers:
// an ack removes, a requeue redelivers marked redelivered, a reject dead-letters on b.
func TestRemoteConsumerSettles(t *testing.T) {
	a, b := pair(t, nil, nil)
	apply(t, a,
		fsm.DeclareExchange{Vhost: "/", Name: "dlx", Kind: "fanout"},
		declareQueue("rq", "b", false, wire.Table{"x-dead-letter-exchange": "dlx"}),
		declareQueue("dead", "b", false, nil), bindQueue("dlx", "dead", ""))
	if a.LocalQueue("/", "rq") != nil {
		t.Fatal("node a holds a queue owned by b")
	}
	rq := localQueue(t, b, "rq")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := &sink{}
	sub, err := a.ConsumeRemote(ctx, "b", "/", "rq", 10, false, false, s)
	if err != nil {
		t.Fatalf("consume remote: %v", err)
	}
	waitCounts(t, rq, 0, 0, 1)
	for _, body := range []string{"ack", "requeue", "reject"} {
		res, done := publish(t, a, message(t, "", "rq", body, wire.Properties{}))
		if !res.Deferred || res.Routed != 1 {
			t.Fatalf("publish on a: %+v, want deferred to b's queue", res)
		}
		if err := confirmed(t, done); err != nil {
			t.Fatalf("b did not take %q: %v", body, err)
		}
	}
	seqs := map[string]uint64{}
	for i := range 3 {
		d, m := s.next(t, i)
		if d.Redelivered {
			t.Fatalf("first delivery of %q marked redelivered", m.Body)
		}
		seqs[string(m.Body)] = d.Seq
	}
	waitCounts(t, rq, 0, 3, 1)

	sub.Settle(datalink.SettleAck, []uint64{seqs["ack"]})
	sub.Settle(datalink.SettleReject, []uint64{seqs["reject"]})
	sub.Settle(datalink.SettleRequeue, []uint64{seqs["requeue"]})
	d, m := s.next(t, 3)
	if string(m.Body) != "requeue" || !d.Redelivered {
		t.Fatalf("after the requeue got %q (redelivered %v)", m.Body, d.Redelivered)
	}
	dead := get(t, localQueue(t, b, "dead"), true)
	if string(dead.Msg.Body) != "reject" {
		t.Fatalf("dead-lettered %q, want the rejected message", dead.Msg.Body)
	}
	deathOf(t, dead.Msg, "rejected", "rq", 1)
	waitCounts(t, rq, 0, 1, 1)

	sub.Settle(datalink.SettleAck, []uint64{d.Seq})
	waitCounts(t, rq, 0, 0, 1)
	sub.Cancel()
	waitCounts(t, rq, 0, 0, 0)
}

// TestRemoteConsumerCancelledWithQueue: deleting the owner's queue cancels the remote
// consumer (basic.cancel to the client, as RabbitMQ's consumer_cancel_notify).
func TestRemoteConsumerCancelledWithQueue(t *testing.T) {
	a, b := pair(t, nil, nil)
	apply(t, a, declareQueue("rq", "b", false, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s := &sink{}
	if _, err := a.ConsumeRemote(ctx, "b", "/", "rq", 1, false, false, s); err != nil {
		t.Fatalf("consume remote: %v", err)
	}
	waitCounts(t, localQueue(t, b, "rq"), 0, 0, 1)
	apply(t, a, fsm.DeleteQueue{Vhost: "/", Name: "rq"})
	waitFor(t, "the remote consumer cancelled", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cancelled
	})
}

// TestMovedQueueHandsOff: moving a durable queue to another node hands its messages over in
// order; the new owner stores them, the old owner drops its copy and its queue object.
func TestMovedQueueHandsOff(t *testing.T) {
	sa, sb := openStore(t), openStore(t)
	a, b := pair(t, sa, sb)
	apply(t, a, declareQueue("mv", "a", true, nil))
	const total = 300
	for i := range total {
		if _, done := publish(t, a, message(t, "", "mv", strconv.Itoa(i), persistent)); confirmed(t, done) != nil {
			t.Fatalf("publish %d refused", i)
		}
	}
	apply(t, a, fsm.MoveQueues{From: "a", Moves: []fsm.QueueRef{{Vhost: "/", Name: "mv", Owner: "b"}}})
	waitFor(t, "the hand-off", func() bool {
		active, moved := a.HandOffs()
		return active == 0 && moved == total
	})
	if a.LocalQueue("/", "mv") != nil {
		t.Fatal("old owner still holds the moved queue")
	}
	mv := localQueue(t, b, "mv")
	waitCounts(t, mv, total, 0, 0)
	if live := sa.live(t); live != 0 {
		t.Fatalf("old owner's store keeps %d messages of the moved queue", live)
	}
	if live := sb.live(t); live != total {
		t.Fatalf("new owner's store holds %d messages, want %d", live, total)
	}
	for i := range total {
		d := get(t, mv, true)
		if string(d.Msg.Body) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q after the hand-off: out of order", i, d.Msg.Body)
		}
	}
}

// catchUpOnPublish is a node's data-link handler that makes the node apply the commands it
// missed (brokertest.Log.Lag) when the at-th forwarded publish arrives, before handling it.
type catchUpOnPublish struct {
	datalink.Handler
	mu      sync.Mutex
	seen    int
	at      int
	release func()
}

func (h *catchUpOnPublish) Publish(from string, keys []string, data []byte, persistent bool, reply func(bool, error)) {
	h.mu.Lock()
	h.seen++
	if h.seen == h.at && h.release != nil {
		h.release()
	}
	h.mu.Unlock()
	h.Handler.Publish(from, keys, data, persistent, reply)
}

// TestHandOffKeepsOrderWhenNewOwnerLags: the old owner starts handing a queue over before the
// new owner has applied the move, so the new owner refuses the first forwards and catches up
// in the middle of the hand-off; the queue still arrives whole and in order.
func TestHandOffKeepsOrderWhenNewOwnerLags(t *testing.T) {
	l := &brokertest.Log{}
	a := brokertest.NewNode(t, l, "a", brokertest.Options{})
	b := brokertest.NewNode(t, l, "b", brokertest.Options{})
	hb := &catchUpOnPublish{at: 3}
	brokertest.LinkVia(t, func(n *broker.Node) datalink.Handler {
		if n == b {
			hb.Handler = n.LinkHandler()
			return hb
		}
		return n.LinkHandler()
	}, a, b)
	apply(t, a, declareQueue("mv", "a", false, nil))
	const total = 300
	for i := range total {
		publish(t, a, message(t, "", "mv", strconv.Itoa(i), wire.Properties{}))
	}
	hb.mu.Lock()
	hb.release = l.Lag(t, "b")
	hb.mu.Unlock()
	apply(t, a, fsm.MoveQueues{From: "a", Moves: []fsm.QueueRef{{Vhost: "/", Name: "mv", Owner: "b"}}})
	waitFor(t, "the hand-off", func() bool {
		active, moved := a.HandOffs()
		return active == 0 && moved == total
	})
	mv := localQueue(t, b, "mv")
	for i := range total {
		d := get(t, mv, true)
		if string(d.Msg.Body) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q after the hand-off: out of order", i, d.Msg.Body)
		}
	}
}
