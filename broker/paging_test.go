package broker_test

import (
	"strconv"
	"testing"

	"github.com/warrenmq/warren/queue"
)

// TestLongDurableQueuePagesAndReadsBackInOrder: a durable queue holding more persistent
// messages than its memory window keeps the rest on disk only and reads them back from the
// store, in publish order, as it drains; consumed messages leave the store.
func TestLongDurableQueuePagesAndReadsBackInOrder(t *testing.T) {
	s := openStore(t)
	n := single(t, s)
	apply(t, n, declareQueue("long", "a", true, nil))
	q := localQueue(t, n, "long")
	if !q.Pages() {
		t.Fatal("a durable queue on a message store does not page")
	}
	total := queue.DefaultPageWindow + 700
	dones := make([]<-chan error, total)
	for i := range total {
		_, dones[i] = publish(t, n, message(t, "", "long", strconv.Itoa(i), persistent))
	}
	for i, done := range dones {
		if err := confirmed(t, done); err != nil {
			t.Fatalf("confirm %d: %v", i, err)
		}
	}
	if ready, _, _ := q.Counts(); ready != total {
		t.Fatalf("queue holds %d, want %d", ready, total)
	}
	for i := range total {
		d, ok := q.Get(true)
		if !ok {
			t.Fatalf("queue empty after %d of %d", i, total)
		}
		if string(d.Msg.Body) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q: out of order", i, d.Msg.Body)
		}
	}
	if s.reads.Load() == 0 {
		t.Fatal("every message came from memory: the queue never read its backlog from the store")
	}
	if _, ok := q.Get(true); ok {
		t.Fatal("queue not empty after draining")
	}
	if live := s.live(t); live != 0 {
		t.Fatalf("store keeps %d messages of a drained queue", live)
	}
}
