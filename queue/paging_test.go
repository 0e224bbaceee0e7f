package queue

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/warrenmq/warren/msgstore"
)

// storeAdapter is what the broker does over msgstore, with the body as the stored data.
type storeAdapter struct{ s *msgstore.Store }

func (a storeAdapter) Ack(q string, id uint64)               { a.s.Ack(q, id) }
func (a storeAdapter) AckMany(q string, ids []uint64)        { a.s.AckMany(q, ids) }
func (a storeAdapter) AckRange(q string, after, upTo uint64) { a.s.AckRange(q, after, upTo) }
func (a storeAdapter) StartPaging(q string, after uint64)    { a.s.StartPaging(q, after) }
func (a storeAdapter) StopPaging(q string, announced uint64) bool {
	return a.s.StopPaging(q, announced)
}
func (a storeAdapter) PageIn(q string, after, upTo uint64, n, b int) ([]*Message, uint64, error) {
	got, through, err := a.s.ReadQueue(q, after, upTo, n, b)
	msgs := make([]*Message, len(got))
	for i, m := range got {
		msgs[i] = &Message{Body: m.Data, StoreID: m.ID, Persistent: true, ExpirationMs: -1}
	}
	return msgs, through, err
}

const pagedKey = "/\x00lazy"

type pagingRig struct {
	t     *testing.T
	dir   string
	store *msgstore.Store
	rec   *msgstore.Recovered
	q     *Queue
}

func newPagingRig(t *testing.T, dir string, window int, mut func(*Config)) *pagingRig {
	t.Helper()
	st, rec, err := msgstore.Open(msgstore.Options{Dir: dir, SegmentBytes: 16 << 10, NoSync: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	c := cfg()
	c.Name, c.Store, c.StoreKey, c.PageWindow = "lazy", storeAdapter{st}, pagedKey, window
	if mut != nil {
		mut(&c)
	}
	r := &pagingRig{t: t, dir: dir, store: st, rec: rec, q: New(c, Hooks{})}
	if !r.q.Pages() {
		t.Fatal("a durable queue over a paging store does not page")
	}
	return r
}

func (r *pagingRig) close() {
	r.q.Delete()
	if err := r.store.Close(); err != nil {
		r.t.Fatal(err)
	}
}

// publish stores a persistent message and then hands it to the queue, as the broker does.
func (r *pagingRig) publish(body string) *Message {
	m := msg(body)
	m.Persistent = true
	m.StoreID = r.store.Publish([]string{pagedKey}, []byte(body), func(err error) {
		if err != nil {
			r.t.Errorf("store publish: %v", err)
		}
	})
	r.q.Publish(m)
	return m
}

func (r *pagingRig) window() int {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	return r.q.levels[0].len()
}

// drain takes every ready message with basic.get semantics and acks it.
func (r *pagingRig) drain() (bodies []string, redelivered int) {
	for {
		d, ok := r.q.Get(false)
		if !ok {
			return bodies, redelivered
		}
		// Publishers racing for store ids may push a few late arrivals past the limit.
		if w := r.window(); w > r.q.pg.window+8 {
			r.t.Fatalf("window holds %d messages, limit %d", w, r.q.pg.window)
		}
		bodies = append(bodies, string(d.Msg.Body))
		if d.Redelivered {
			redelivered++
		}
		r.q.Ack([]Settled{{Msg: d.Msg, Seq: d.Seq}})
	}
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%05d", prefix, i))
	}
	return out
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestPagingQueueKeepsAWindowAndDeliversInOrder(t *testing.T) {
	r := newPagingRig(t, t.TempDir(), 16, nil)
	defer r.close()
	want := names("m", 0, 3000)
	for i, b := range want {
		if i%500 == 250 {
			r.q.Publish(msg("transient-" + b)) // kept in memory, in its place
			want = append(want[:i:i], append([]string{"transient-" + b}, want[i:]...)...)
		}
		r.publish(b)
	}
	want = nil
	for i, b := range names("m", 0, 3000) {
		if i%500 == 250 {
			want = append(want, "transient-"+b)
		}
		want = append(want, b)
	}
	if w := r.window(); w != 16 {
		t.Fatalf("window holds %d messages after 3000 publishes, want 16", w)
	}
	if ready, _, _ := r.q.Counts(); ready != len(want) {
		t.Fatalf("ready = %d, want %d", ready, len(want))
	}
	got, _ := r.drain()
	if !sameStrings(got, want) {
		t.Fatalf("got %d messages (first %v), want %d in publish order", len(got), got[:min(5, len(got))], len(want))
	}
	if err := r.store.Sync(); err != nil {
		t.Fatal(err)
	}
	if live := r.store.Stats().LiveMessages; live != 0 {
		t.Fatalf("%d messages still live in the store after all were acked", live)
	}
	r.q.mu.Lock()
	active := r.q.pg.active
	r.q.mu.Unlock()
	if active {
		t.Fatal("the queue is still paging although it is empty and nothing is in flight")
	}
}

// TestPagingAcrossRestartWithPurgeInTheMiddle: a long queue, part consumed, purged, refilled,
// then the node "restarts" (store reopened, queue recreated from what the store recovered):
// exactly the unconsumed messages come back, in order, marked redelivered.
func TestPagingAcrossRestartWithPurgeInTheMiddle(t *testing.T) {
	dir := t.TempDir()
	r := newPagingRig(t, dir, 8, nil)
	for _, b := range names("old", 0, 500) {
		r.publish(b)
	}
	for range 100 {
		d, _ := r.q.Get(false)
		r.q.Ack([]Settled{{Msg: d.Msg, Seq: d.Seq}})
	}
	held, _ := r.q.Get(false) // unacked across the purge: it must survive it
	if n := r.q.Purge(); n != 399 {
		t.Fatalf("purge removed %d, want 399", n)
	}
	want := names("new", 0, 700)
	for _, b := range want {
		r.publish(b)
	}
	if err := r.store.Sync(); err != nil {
		t.Fatal(err)
	}
	r.close() // crash: the unacked message was never acked
	_ = held

	r = newPagingRig(t, dir, 8, nil)
	defer r.close()
	info := r.rec.Queues[pagedKey]
	if info.Messages != 701 {
		t.Fatalf("store recovered %d messages, want 701", info.Messages)
	}
	r.q.RestoreStored(int(info.Messages), info.Bytes, info.LastID)
	if w := r.window(); w != 0 {
		t.Fatalf("restore loaded %d messages into memory, want none before they are needed", w)
	}
	got, redelivered := r.drain()
	want = append([]string{string(held.Msg.Body)}, want...)
	if !sameStrings(got, want) {
		t.Fatalf("after restart got %d messages (first %v), want %d (first %v)", len(got), got[:min(3, len(got))], len(want), want[:3])
	}
	if redelivered != len(want) {
		t.Fatalf("%d of %d recovered messages marked redelivered", redelivered, len(want))
	}
}

func TestPagingWithMaxLengthDropsFromTheHead(t *testing.T) {
	r := newPagingRig(t, t.TempDir(), 8, func(c *Config) { c.MaxLength = 100 })
	defer r.close()
	for _, b := range names("m", 0, 1000) {
		r.publish(b)
	}
	if ready, _, _ := r.q.Counts(); ready != 100 {
		t.Fatalf("ready = %d, want 100", ready)
	}
	got, _ := r.drain()
	if want := names("m", 900, 1000); !sameStrings(got, want) {
		t.Fatalf("got %v…, want the newest 100", got[:min(3, len(got))])
	}
}

// TestLateArrivalIsDeliveredOnce: a publisher that got its store id before another but
// reaches the queue after it (and after the queue already read its message back from the
// log) must not be delivered twice, and paging must not end while it is on its way.
func TestLateArrivalIsDeliveredOnce(t *testing.T) {
	r := newPagingRig(t, t.TempDir(), 4, nil)
	defer r.close()
	for _, b := range names("m", 0, 10) {
		r.publish(b) // fills the window and starts paging
	}
	late := msg("late")
	late.Persistent = true
	late.StoreID = r.store.Publish([]string{pagedKey}, []byte("late"), func(error) {})
	r.publish("after")
	got, _ := r.drain() // reads "late" back from the log: its run covers its id
	r.q.mu.Lock()
	active := r.q.pg.active
	r.q.mu.Unlock()
	if !active {
		t.Fatal("paging ended while a stored message was still on its way to the queue")
	}
	r.q.Publish(late)
	more, _ := r.drain()
	got = append(got, more...)
	want := append(names("m", 0, 10), "late", "after")
	if !sameStrings(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestConcurrentPublishersThroughPaging: several publishers race store ids against queue
// arrival while a consumer drains; every message is delivered exactly once and each
// publisher's messages stay in order.
func TestConcurrentPublishersThroughPaging(t *testing.T) {
	r := newPagingRig(t, t.TempDir(), 32, nil)
	defer r.close()
	const publishers, each = 4, 3000
	var wg sync.WaitGroup
	defer wg.Wait() // before r.close, also when the test fails
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r.publish(fmt.Sprintf("p%d-%05d", p, i))
			}
		}()
	}
	seen := map[string]bool{}
	last := make([]int, publishers)
	for i := range last {
		last[i] = -1
	}
	check := func(bodies []string) {
		for _, b := range bodies {
			var p, i int
			fmt.Sscanf(b, "p%d-%d", &p, &i)
			if seen[b] {
				t.Fatalf("%s delivered twice", b)
			}
			seen[b] = true
			if i <= last[p] {
				t.Fatalf("publisher %d: %d after %d", p, i, last[p])
			}
			last[p] = i
		}
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		got, _ := r.drain()
		check(got)
	}
	got, _ := r.drain()
	check(got)
	if len(seen) != publishers*each {
		t.Fatalf("delivered %d messages, want %d", len(seen), publishers*each)
	}
}

// A queue restored from the store that then pages new publishes must not start their run at
// id 0: that run would read the restored messages a second time (and its count would stand
// for messages never delivered). Found by node/TestQuorumQueueRandomisedCrashes.
func TestPublishesAfterRestoreStoredAreReadOnce(t *testing.T) {
	dir := t.TempDir()
	r := newPagingRig(t, dir, 8, nil)
	for _, b := range names("old", 0, 50) {
		r.store.Publish([]string{pagedKey}, []byte(b), func(error) {})
	}
	if err := r.store.Sync(); err != nil {
		t.Fatal(err)
	}
	r.close()
	r = newPagingRig(t, dir, 8, nil)
	defer r.close()
	info := r.rec.Queues[pagedKey]
	r.q.RestoreStored(int(info.Messages), info.Bytes, info.LastID)
	for _, b := range names("new", 0, 30) {
		r.publish(b)
	}
	bodies, _ := r.drain()
	want := append(names("old", 0, 50), names("new", 0, 30)...)
	if !slices.Equal(bodies, want) {
		t.Fatalf("read back %d messages %v..., want %d once each in order", len(bodies), bodies[:min(len(bodies), 8)], len(want))
	}
}
