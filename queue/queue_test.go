package queue

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testConsumer takes up to credit messages (credit < 0: unlimited).
type testConsumer struct {
	mu        sync.Mutex
	credit    int
	got       []Delivery
	cancelled bool
}

func (c *testConsumer) TryDeliver(d Delivery) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.credit == 0 {
		return false
	}
	if c.credit > 0 {
		c.credit--
	}
	c.got = append(c.got, d)
	return true
}

func (c *testConsumer) Cancelled(*Queue) {
	c.mu.Lock()
	c.cancelled = true
	c.mu.Unlock()
}

func (c *testConsumer) bodies() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, len(c.got))
	for i, d := range c.got {
		out[i] = string(d.Msg.Body)
	}
	return out
}

func msg(body string) *Message { return &Message{Body: []byte(body), ExpirationMs: -1} }

func cfg() Config {
	return Config{Vhost: "/", Name: "q", MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1}
}

func TestRoundRobinWithinCredit(t *testing.T) {
	q := New(cfg(), Hooks{})
	defer q.Delete()
	a, b := &testConsumer{credit: 2}, &testConsumer{credit: -1}
	if err := q.AddConsumer(a, false, false); err != nil {
		t.Fatal(err)
	}
	if err := q.AddConsumer(b, false, false); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"1", "2", "3", "4", "5", "6"} {
		q.Publish(msg(s))
	}
	if got := a.bodies(); len(got) != 2 || got[0] != "1" || got[1] != "3" {
		t.Fatalf("consumer a got %v, want [1 3]", got)
	}
	if got := b.bodies(); len(got) != 4 {
		t.Fatalf("consumer b got %v, want 4 messages", got)
	}
	if _, unacked, _ := q.Counts(); unacked != 6 {
		t.Fatalf("unacked = %d, want 6", unacked)
	}
}

func TestRequeueKeepsOrderAndMarksRedelivered(t *testing.T) {
	q := New(cfg(), Hooks{})
	defer q.Delete()
	for _, s := range []string{"1", "2", "3"} {
		q.Publish(msg(s))
	}
	d1, _ := q.Get(false)
	d2, _ := q.Get(false)
	q.Requeue([]Settled{{Msg: d2.Msg, Seq: d2.Seq}, {Msg: d1.Msg, Seq: d1.Seq}})
	var got []string
	for {
		d, ok := q.Get(true)
		if !ok {
			break
		}
		got = append(got, string(d.Msg.Body))
		if want := string(d.Msg.Body) != "3"; d.Redelivered != want {
			t.Fatalf("message %s redelivered=%v", d.Msg.Body, d.Redelivered)
		}
	}
	if len(got) != 3 || got[0] != "1" || got[1] != "2" || got[2] != "3" {
		t.Fatalf("order after requeue = %v", got)
	}
}

func TestPriorityOrder(t *testing.T) {
	c := cfg()
	c.MaxPriority = 5
	q := New(c, Hooks{})
	defer q.Delete()
	for i, p := range []uint8{1, 9, 3, 0} { // 9 is capped to 5
		m := msg(string(rune('a' + i)))
		m.Priority = p
		q.Publish(m)
	}
	var got string
	for {
		d, ok := q.Get(true)
		if !ok {
			break
		}
		got += string(d.Msg.Body)
	}
	if got != "bcad" {
		t.Fatalf("priority order = %q, want bcad", got)
	}
}

func TestMaxLengthDropHeadDeadLetters(t *testing.T) {
	c := cfg()
	c.MaxLength = 2
	c.DeadLetter = true
	var mu sync.Mutex
	var dead []DeadLetter
	q := New(c, Hooks{DeadLetter: func(_ *Queue, d []DeadLetter) { mu.Lock(); dead = append(dead, d...); mu.Unlock() }})
	defer q.Delete()
	for _, s := range []string{"1", "2", "3"} {
		if ok, _ := q.Publish(msg(s)); !ok {
			t.Fatal("drop-head queue refused a publish")
		}
	}
	if r, _, _ := q.Counts(); r != 2 {
		t.Fatalf("ready = %d, want 2", r)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dead) != 1 || string(dead[0].Msg.Body) != "1" || dead[0].Reason != ReasonMaxLen {
		t.Fatalf("dead letters = %+v", dead)
	}
}

func TestRejectPublishOverflow(t *testing.T) {
	c := cfg()
	c.MaxLength = 1
	c.Overflow = RejectPublish
	q := New(c, Hooks{})
	defer q.Delete()
	if ok, _ := q.Publish(msg("1")); !ok {
		t.Fatal("first publish refused")
	}
	if ok, _ := q.Publish(msg("2")); ok {
		t.Fatal("second publish accepted by a full reject-publish queue")
	}
}

func TestMessageTTLExpiresWithoutConsumers(t *testing.T) {
	c := cfg()
	c.MessageTTL = 20 * time.Millisecond
	c.DeadLetter = true
	got := make(chan DeadLetter, 1)
	q := New(c, Hooks{DeadLetter: func(_ *Queue, d []DeadLetter) { got <- d[0] }})
	defer q.Delete()
	q.Publish(msg("x"))
	select {
	case d := <-got:
		if d.Reason != ReasonExpired {
			t.Fatalf("reason = %s", d.Reason)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("message did not expire")
	}
	if r, _, _ := q.Counts(); r != 0 {
		t.Fatalf("ready = %d after expiry", r)
	}
}

func TestZeroTTLDeliversOnlyImmediately(t *testing.T) {
	c := cfg()
	c.MessageTTL = 0
	q := New(c, Hooks{})
	defer q.Delete()
	q.Publish(msg("nobody-waiting"))
	time.Sleep(5 * time.Millisecond)
	if _, ok := q.Get(true); ok {
		t.Fatal("a TTL-0 message waited in the queue")
	}
	cons := &testConsumer{credit: -1}
	if err := q.AddConsumer(cons, true, false); err != nil {
		t.Fatal(err)
	}
	q.Publish(msg("taken"))
	if got := cons.bodies(); len(got) != 1 || got[0] != "taken" {
		t.Fatalf("consumer got %v", got)
	}
}

func TestExclusiveConsumerAndAutoDelete(t *testing.T) {
	c := cfg()
	c.AutoDelete = true
	deleted := make(chan struct{}, 1)
	q := New(c, Hooks{AutoDelete: func(*Queue) { deleted <- struct{}{} }})
	defer q.Delete()
	a := &testConsumer{credit: -1}
	if err := q.AddConsumer(a, false, true); err != nil {
		t.Fatal(err)
	}
	if err := q.AddConsumer(&testConsumer{}, false, false); err != ErrExclusiveConsumer {
		t.Fatalf("second consumer on exclusive: %v", err)
	}
	q.RemoveConsumer(a)
	select {
	case <-deleted:
	case <-time.After(time.Second):
		t.Fatal("auto-delete hook not called")
	}
}

func TestDeleteCancelsConsumers(t *testing.T) {
	q := New(cfg(), Hooks{})
	a := &testConsumer{credit: -1}
	_ = q.AddConsumer(a, false, false)
	q.Publish(msg("1"))
	q.Delete()
	if !a.cancelled {
		t.Fatal("consumer not cancelled on delete")
	}
	if err := q.AddConsumer(a, false, false); err != ErrDeleted {
		t.Fatalf("consume on deleted queue: %v", err)
	}
}

func TestExpiresFiresWhenUnused(t *testing.T) {
	c := cfg()
	c.Expires = 30 * time.Millisecond
	fired := make(chan struct{}, 1)
	q := New(c, Hooks{Expired: func(*Queue) { fired <- struct{}{} }})
	defer q.Delete()
	select {
	case <-fired:
	case <-time.After(2 * time.Second):
		t.Fatal("x-expires did not fire")
	}
}

func BenchmarkPublishDeliver(b *testing.B) {
	q := New(cfg(), Hooks{})
	defer q.Delete()
	c := &countingConsumer{}
	_ = q.AddConsumer(c, true, false)
	m := msg("0123456789")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.Publish(m)
	}
}

type countingConsumer struct{ n int }

func (c *countingConsumer) TryDeliver(Delivery) bool { c.n++; return true }
func (c *countingConsumer) Cancelled(*Queue)         {}

func TestBacklogThrottlesUntilDrained(t *testing.T) {
	q := New(cfg(), Hooks{})
	defer q.Delete()
	// Without consumers the queue just fills (the memory watermark bounds it).
	for i := 0; i < FlowHighCount+1; i++ {
		if _, throttle := q.Publish(msg("x")); throttle != nil {
			t.Fatal("a queue without consumers throttled its publisher")
		}
	}
	q.Purge()
	stalled := &testConsumer{credit: 0} // attached, takes nothing: the slow consumer
	if err := q.AddConsumer(stalled, false, false); err != nil {
		t.Fatal(err)
	}
	big := &Message{Body: make([]byte, 1<<20), ExpirationMs: -1}
	var throttle <-chan struct{}
	for i := 0; throttle == nil; i++ {
		if i > FlowHighBytes>>20+1 {
			t.Fatal("no throttle past the high-water mark")
		}
		_, throttle = q.Publish(big)
	}
	for i := 0; i < FlowHighBytes>>21; i++ {
		select {
		case <-throttle:
			t.Fatalf("released after draining only %d MiB", i)
		default:
		}
		q.Get(true)
	}
	q.Get(true)
	select {
	case <-throttle:
	default:
		t.Fatal("not released after draining to half")
	}
}

type recordingStore struct {
	mu    sync.Mutex
	acked map[uint64]string
}

func (s *recordingStore) Ack(queue string, id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acked == nil {
		s.acked = map[uint64]string{}
	}
	s.acked[id] = queue
}

func (s *recordingStore) AckMany(queue string, ids []uint64) {
	for _, id := range ids {
		s.Ack(queue, id)
	}
}

func (s *recordingStore) has(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.acked[id]
	return ok
}

// TestStoredMessagesForgottenWhenTheyLeave checks every way a stored message leaves a durable
// queue for good is reported to the store, and that a requeue is not.
func TestStoredMessagesForgottenWhenTheyLeave(t *testing.T) {
	st := &recordingStore{}
	c := cfg()
	c.Store, c.StoreKey, c.MaxLength = st, "/\x00q", 3
	q := New(c, Hooks{})
	defer q.Delete()
	stored := func(id uint64) *Message { m := msg("m"); m.StoreID = id; return m }
	q.Publish(stored(1))
	d, _ := q.Get(false)
	q.Requeue([]Settled{{Msg: d.Msg, Seq: d.Seq}})
	if st.has(1) {
		t.Fatal("a requeued message was forgotten")
	}
	d, _ = q.Get(false)
	q.Ack([]Settled{{Msg: d.Msg, Seq: d.Seq}})
	q.Publish(stored(2))
	q.Get(true) // no-ack get
	q.Publish(stored(3))
	d, _ = q.Get(false)
	q.Reject([]Settled{{Msg: d.Msg, Seq: d.Seq}})
	for id := uint64(4); id <= 7; id++ { // max-length 3: 4 is dropped from the head
		q.Publish(stored(id))
	}
	for _, id := range []uint64{1, 2, 3, 4} {
		if !st.has(id) {
			t.Fatalf("message %d left the queue but the store was not told", id)
		}
	}
	q.Purge()
	for _, id := range []uint64{5, 6, 7} {
		if !st.has(id) {
			t.Fatalf("purged message %d not forgotten", id)
		}
	}
	q.Restore([]*Message{stored(8)})
	if d, ok := q.Get(true); !ok || !d.Redelivered || d.Msg.StoreID != 8 {
		t.Fatalf("restored message: %+v ok=%v", d, ok)
	}
}
