package datalink

import (
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testSecret = "cluster-secret"

func testLogger() *slog.Logger {
	if os.Getenv("DATALINK_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func testConfig(node string) Config {
	return Config{
		NodeID:            node,
		Secret:            testSecret,
		Logger:            testLogger(),
		HeartbeatInterval: 100 * time.Millisecond,
		PeerTimeout:       2 * time.Second,
		ReconnectMin:      20 * time.Millisecond,
		ReconnectMax:      200 * time.Millisecond,
	}
}

// fakeBroker is a tiny owner node: named queues with ready and unacked messages, remote
// consumers with prefetch credit, round-robin dispatch. It records what the link did to it.
type fakeBroker struct {
	mu        sync.Mutex
	queues    map[string]*fakeQueue
	consumers map[consumerKey]*fakeConsumer
	nextSeq   uint64
	peerDowns []string
	calls     int
	published []string // bodies in arrival order

	// publishGate, when set, makes Publish wait for it: an owner that stopped reading.
	publishGate chan struct{}
	// holdReplies keeps publish replies instead of answering.
	holdReplies bool
	held        []func(bool, error)
	// replyLater answers publishes from goroutines after random short delays.
	replyLater bool
	replyWG    sync.WaitGroup
}

type consumerKey struct {
	from string
	id   uint64
}

type fakeQueue struct {
	ready     []fakeMsg
	unacked   map[uint64]fakeUnacked
	consumers []consumerKey
	rr        int
}

type fakeMsg struct {
	seq         uint64
	body        []byte
	redelivered bool
}

type fakeUnacked struct {
	msg   fakeMsg
	owner consumerKey
}

type fakeConsumer struct {
	key       consumerKey
	queue     string
	credit    int
	unlimited bool
	noAck     bool
	out       Deliverer
}

func newFakeBroker(queues ...string) *fakeBroker {
	fb := &fakeBroker{queues: make(map[string]*fakeQueue), consumers: make(map[consumerKey]*fakeConsumer)}
	for _, q := range queues {
		fb.queues[q] = &fakeQueue{unacked: make(map[uint64]fakeUnacked)}
	}
	return fb
}

func (fb *fakeBroker) Publish(from string, queues []string, msg []byte, persistent bool, reply func(bool, error)) {
	if fb.publishGate != nil {
		<-fb.publishGate
	}
	fb.mu.Lock()
	fb.calls++
	rejected := false
	for _, name := range queues {
		q := fb.queues[name]
		if q == nil {
			rejected = true
			continue
		}
		fb.nextSeq++
		q.ready = append(q.ready, fakeMsg{seq: fb.nextSeq, body: msg})
		fb.dispatchLocked(name)
	}
	fb.published = append(fb.published, string(msg))
	switch {
	case fb.holdReplies:
		fb.held = append(fb.held, reply)
		fb.mu.Unlock()
	case fb.replyLater:
		fb.mu.Unlock()
		fb.replyWG.Add(1)
		delay := time.Duration(len(fb.published)*7919%3000) * time.Microsecond
		go func() {
			defer fb.replyWG.Done()
			time.Sleep(delay)
			reply(rejected, nil)
		}()
	default:
		fb.mu.Unlock()
		reply(rejected, nil)
	}
}

// dispatchLocked hands ready messages to consumers with credit, round robin.
func (fb *fakeBroker) dispatchLocked(name string) {
	q := fb.queues[name]
	for len(q.ready) > 0 && len(q.consumers) > 0 {
		var c *fakeConsumer
		for i := 0; i < len(q.consumers); i++ {
			cand := fb.consumers[q.consumers[(q.rr+i)%len(q.consumers)]]
			if cand.unlimited || cand.credit > 0 {
				c = cand
				q.rr = (q.rr + i + 1) % len(q.consumers)
				break
			}
		}
		if c == nil {
			return
		}
		m := q.ready[0]
		if !c.out.Deliver(Delivery{Seq: m.seq, Redelivered: m.redelivered, Remaining: uint32(len(q.ready) - 1), Msg: m.body}) {
			return // the link is full or gone: keep the message, retry on credit
		}
		q.ready = q.ready[1:]
		if !c.unlimited {
			c.credit--
		}
		if !c.noAck {
			q.unacked[m.seq] = fakeUnacked{msg: m, owner: c.key}
		}
	}
}

func (fb *fakeBroker) Consume(from string, id uint64, queue string, prefetch int, noAck, exclusive bool, out Deliverer) error {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	q := fb.queues[queue]
	if q == nil {
		return &RemoteError{Code: 404, Text: "NOT_FOUND - no queue '" + queue + "'"}
	}
	key := consumerKey{from, id}
	fb.consumers[key] = &fakeConsumer{key: key, queue: queue, credit: prefetch, unlimited: prefetch == 0, noAck: noAck, out: out}
	q.consumers = append(q.consumers, key)
	fb.dispatchLocked(queue)
	return nil
}

func (fb *fakeBroker) removeConsumerLocked(key consumerKey) {
	c := fb.consumers[key]
	if c == nil {
		return
	}
	delete(fb.consumers, key)
	if q := fb.queues[c.queue]; q != nil {
		for i, k := range q.consumers {
			if k == key {
				q.consumers = append(q.consumers[:i], q.consumers[i+1:]...)
				break
			}
		}
		q.rr = 0
	}
}

func (fb *fakeBroker) Cancel(from string, id uint64) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	fb.removeConsumerLocked(consumerKey{from, id})
}

func (fb *fakeBroker) Settle(from string, id uint64, queue string, kind SettleKind, seqs []uint64) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	q := fb.queues[queue]
	if q == nil {
		return
	}
	var back []fakeMsg
	for _, s := range seqs {
		u, ok := q.unacked[s]
		if !ok || u.owner != (consumerKey{from, id}) {
			continue
		}
		delete(q.unacked, s)
		if kind == SettleRequeue {
			u.msg.redelivered = true
			back = append(back, u.msg)
		}
	}
	q.ready = append(back, q.ready...)
	fb.dispatchLocked(queue)
}

func (fb *fakeBroker) Credit(from string, id uint64, n int) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	if c := fb.consumers[consumerKey{from, id}]; c != nil {
		c.credit += n
		fb.dispatchLocked(c.queue)
	}
}

func (fb *fakeBroker) Get(from string, queue string, noAck bool) (Delivery, bool, error) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	q := fb.queues[queue]
	if q == nil {
		return Delivery{}, false, &RemoteError{Code: 404, Text: "NOT_FOUND"}
	}
	if len(q.ready) == 0 {
		return Delivery{}, false, nil
	}
	m := q.ready[0]
	q.ready = q.ready[1:]
	if !noAck {
		q.unacked[m.seq] = fakeUnacked{msg: m, owner: consumerKey{from, GetConsumerID}}
	}
	return Delivery{Seq: m.seq, Redelivered: m.redelivered, Remaining: uint32(len(q.ready)), Msg: m.body}, true, nil
}

func (fb *fakeBroker) Purge(from string, queue string) (int, error) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.calls++
	q := fb.queues[queue]
	if q == nil {
		return 0, &RemoteError{Code: 404, Text: "NOT_FOUND"}
	}
	n := len(q.ready)
	q.ready = nil
	return n, nil
}

// Replicate answers with the stream name and payload joined, or refuses an empty payload.
func (fb *fakeBroker) Replicate(from string, stream string, payload []byte, reply func([]byte, error)) {
	fb.mu.Lock()
	fb.calls++
	fb.mu.Unlock()
	if len(payload) == 0 {
		reply(nil, &RemoteError{Code: 406, Text: "empty"})
		return
	}
	reply(append([]byte(stream+":"), payload...), nil)
}

func (fb *fakeBroker) PeerDown(from string) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	fb.peerDowns = append(fb.peerDowns, from)
	for key := range fb.consumers {
		if key.from == from {
			fb.removeConsumerLocked(key)
		}
	}
	for name, q := range fb.queues {
		var back []fakeMsg
		for s, u := range q.unacked {
			if u.owner.from == from {
				delete(q.unacked, s)
				u.msg.redelivered = true
				back = append(back, u.msg)
			}
		}
		q.ready = append(back, q.ready...)
		fb.dispatchLocked(name)
	}
}

// deleteQueue is the owner deleting a queue: its consumers are cancelled.
func (fb *fakeBroker) deleteQueue(name string) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	q := fb.queues[name]
	for _, key := range append([]consumerKey(nil), q.consumers...) {
		fb.consumers[key].out.Cancelled()
		fb.removeConsumerLocked(key)
	}
	delete(fb.queues, name)
}

func (fb *fakeBroker) counts(queue string) (ready, unacked int) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	q := fb.queues[queue]
	return len(q.ready), len(q.unacked)
}

func (fb *fakeBroker) snapshot() (calls int, peerDowns []string, published []string) {
	fb.mu.Lock()
	defer fb.mu.Unlock()
	return fb.calls, append([]string(nil), fb.peerDowns...), append([]string(nil), fb.published...)
}

// recorder is the consumer node's ConsumerEvents.
type recorder struct {
	mu         sync.Mutex
	deliveries map[uint64][]Delivery
	cancelled  []uint64
	block      chan struct{} // when set, Delivered waits for it (a stuck consumer node)
}

func newRecorder() *recorder { return &recorder{deliveries: make(map[uint64][]Delivery)} }

func (r *recorder) Delivered(id uint64, d Delivery) {
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.deliveries[id] = append(r.deliveries[id], d)
}

func (r *recorder) ConsumerCancelled(id uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cancelled = append(r.cancelled, id)
}

func (r *recorder) got(id uint64) []Delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delivery(nil), r.deliveries[id]...)
}

func (r *recorder) cancels() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]uint64(nil), r.cancelled...)
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// pair starts a server with fb and a Peer to it.
func pair(t testing.TB, fb *fakeBroker, ev ConsumerEvents) (*Server, *Peer) {
	t.Helper()
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), fb)
	if err != nil {
		t.Fatal(err)
	}
	p := Dial(srv.Addr(), testConfig("client"), ev)
	t.Cleanup(func() {
		_ = p.Close()
		_ = srv.Close()
	})
	eventually(t, "link up", 5*time.Second, p.Up)
	return srv, p
}
