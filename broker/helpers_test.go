package broker_test

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/broker/brokertest"
	"github.com/warrenmq/warren/exchange"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/msgstore"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func apply(t *testing.T, n *broker.Node, cmds ...fsm.Command) {
	t.Helper()
	for _, c := range cmds {
		if _, err := n.Apply(c); err != nil {
			t.Fatalf("apply %T: %v", c, err)
		}
	}
}

func args(t wire.Table) []byte { return wire.AppendTable(nil, t) }

// declareQueue declares a queue owned by owner.
func declareQueue(name, owner string, durable bool, a wire.Table) fsm.DeclareQueue {
	q := fsm.DeclareQueue{Vhost: "/", Name: name, Durable: durable, Owner: owner}
	if a != nil {
		q.Args = args(a)
	}
	return q
}

func bindQueue(source, q, key string) fsm.Bind {
	return fsm.Bind{Vhost: "/", Source: source, Dest: exchange.Dest{Name: q}, Key: key}
}

// message builds a message as the server does from a content header.
func message(t *testing.T, exchange, key, body string, props wire.Properties) *queue.Message {
	t.Helper()
	m := &queue.Message{Exchange: exchange, RoutingKey: key, Props: props.Append(nil), Body: []byte(body)}
	if _, err := broker.FillFromProps(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// publish routes m from exchange on n; the returned channel gets the deferred outcome (or nil
// at once when the publish completed synchronously).
func publish(t *testing.T, n *broker.Node, m *queue.Message) (broker.PublishResult, <-chan error) {
	t.Helper()
	var headers map[string]any
	if p, err := wire.DecodeProperties(m.Props); err == nil && p.Headers != nil {
		headers = p.Headers
	}
	done := make(chan error, 1)
	res, err := n.Publish("/", m.Exchange, m, headers, &broker.Scratch{}, func(err error) { done <- err })
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	if !res.Deferred {
		done <- nil
	}
	return res, done
}

func confirmed(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no confirm within 5s")
		return nil
	}
}

func localQueue(t *testing.T, n *broker.Node, name string) *queue.Queue {
	t.Helper()
	q := n.LocalQueue("/", name)
	if q == nil {
		t.Fatalf("node %s has no queue %q", n.ID(), name)
	}
	return q
}

// get polls q until a message is ready.
func get(t *testing.T, q *queue.Queue, noAck bool) queue.Delivery {
	t.Helper()
	var d queue.Delivery
	waitFor(t, "a message in "+q.Name(), func() bool {
		var ok bool
		d, ok = q.Get(noAck)
		return ok
	})
	return d
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func headersOf(t *testing.T, m *queue.Message) wire.Table {
	t.Helper()
	p, err := wire.DecodeProperties(m.Props)
	if err != nil {
		t.Fatalf("decode properties: %v", err)
	}
	return p.Headers
}

// store is the node's message store (msgstore in a temporary dir) with a gate on the write
// confirmations and a count of the reads paging does.
type store struct {
	*msgstore.Store
	mu     sync.Mutex
	hold   bool
	held   []func()
	fail   error      // reported instead of the store's outcome
	writes [][]string // the queue keys of each record written
	reads  atomic.Int64
}

func openStore(t *testing.T) *store {
	t.Helper()
	s, _, err := msgstore.Open(msgstore.Options{Dir: t.TempDir(), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &store{Store: s}
}

func (s *store) Publish(queues []string, data []byte, done func(error)) uint64 {
	s.mu.Lock()
	s.writes = append(s.writes, slices.Clone(queues))
	s.mu.Unlock()
	return s.Store.Publish(queues, data, func(err error) {
		s.mu.Lock()
		if s.fail != nil {
			err = s.fail
		}
		if s.hold {
			s.held = append(s.held, func() { done(err) })
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		done(err)
	})
}

func (s *store) ReadQueue(queue string, after, upTo uint64, maxMsgs, maxBytes int) ([]msgstore.Message, uint64, error) {
	s.reads.Add(1)
	return s.Store.ReadQueue(queue, after, upTo, maxMsgs, maxBytes)
}

// heldWrites waits until n write confirmations are held back by the gate.
func (s *store) heldWrites(t *testing.T, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d held disk writes", n), func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.held) == n
	})
}

// release lets held confirmations through and stops holding.
func (s *store) release() {
	s.mu.Lock()
	held := s.held
	s.held, s.hold = nil, false
	s.mu.Unlock()
	for _, f := range held {
		f()
	}
}

func (s *store) live(t *testing.T) int64 {
	t.Helper()
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	return s.Stats().LiveMessages
}

// single starts a one-node broker without Raft, keeping persistent messages in s (nil: none).
func single(t *testing.T, s *store) *broker.Node {
	t.Helper()
	var opts brokertest.Options
	if s != nil {
		opts.Messages = s
	}
	return brokertest.NewNode(t, &brokertest.Log{}, "a", opts)
}
