package broker_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/wire"
)

var persistent = wire.Properties{DeliveryMode: 2}

// TestPersistentConfirmWaitsForDisk: a persistent message routed to two durable queues and a
// transient one is written once, with both durable queues' keys; its confirm comes only after
// that write is on disk. A transient message to the same queues completes at once.
func TestPersistentConfirmWaitsForDisk(t *testing.T) {
	s := openStore(t)
	n := single(t, s)
	apply(t, n,
		fsm.DeclareExchange{Vhost: "/", Name: "fan", Kind: "fanout"},
		declareQueue("d1", "a", true, nil), declareQueue("d2", "a", true, nil), declareQueue("t1", "a", false, nil),
		bindQueue("fan", "d1", ""), bindQueue("fan", "d2", ""), bindQueue("fan", "t1", ""))

	s.mu.Lock()
	s.hold = true
	s.mu.Unlock()
	res, done := publish(t, n, message(t, "fan", "", "p", persistent))
	if !res.Deferred || res.Routed != 3 || res.Rejected {
		t.Fatalf("publish result %+v, want deferred to 3 queues", res)
	}
	s.heldWrites(t, 1)
	select {
	case err := <-done:
		t.Fatalf("confirmed (%v) before the message was on disk", err)
	case <-time.After(50 * time.Millisecond):
	}
	s.release()
	if err := confirmed(t, done); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	s.mu.Lock()
	writes := s.writes
	s.mu.Unlock()
	want := []string{broker.StoreKey("/", "d1"), broker.StoreKey("/", "d2")}
	if len(writes) != 1 || !slices.Equal(slices.Sorted(slices.Values(writes[0])), want) {
		t.Fatalf("store writes %q, want one record for %q", writes, want)
	}
	for _, name := range []string{"d1", "d2", "t1"} {
		if d := get(t, localQueue(t, n, name), true); string(d.Msg.Body) != "p" {
			t.Fatalf("%s got %q", name, d.Msg.Body)
		}
	}
	if live := s.live(t); live != 0 {
		t.Fatalf("store keeps %d messages after both durable queues consumed it", live)
	}

	res, _ = publish(t, n, message(t, "fan", "", "t", wire.Properties{}))
	if res.Deferred || res.Routed != 3 {
		t.Fatalf("transient publish result %+v, want complete at once", res)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.writes) != 1 {
		t.Fatal("a transient message was written to the store")
	}
}

// TestConfirmReportsFailedWrite: a disk write that fails turns the confirm into a failure
// (basic.nack), although the message reached its queue.
func TestConfirmReportsFailedWrite(t *testing.T) {
	s := openStore(t)
	n := single(t, s)
	apply(t, n, declareQueue("d", "a", true, nil))
	broken := errors.New("disk on fire")
	s.mu.Lock()
	s.fail = broken
	s.mu.Unlock()
	res, done := publish(t, n, message(t, "", "d", "x", persistent))
	if !res.Deferred {
		t.Fatalf("publish result %+v, want deferred", res)
	}
	if err := confirmed(t, done); !errors.Is(err, broken) {
		t.Fatalf("confirm %v, want the store's failure", err)
	}
}

// TestConfirmNackWhenQueueRejects: a queue full with x-overflow reject-publish refuses the
// message; with a durable sibling queue the deferred confirm still reports the refusal.
func TestConfirmNackWhenQueueRejects(t *testing.T) {
	s := openStore(t)
	n := single(t, s)
	apply(t, n,
		fsm.DeclareExchange{Vhost: "/", Name: "fan", Kind: "fanout"},
		declareQueue("full", "a", true, wire.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"}),
		declareQueue("ok", "a", true, nil),
		bindQueue("fan", "full", ""), bindQueue("fan", "ok", ""))
	if _, done := publish(t, n, message(t, "fan", "", "1", persistent)); confirmed(t, done) != nil {
		t.Fatal("first publish refused")
	}
	res, done := publish(t, n, message(t, "fan", "", "2", persistent))
	if !res.Rejected {
		t.Fatalf("publish result %+v, want rejected", res)
	}
	if err := confirmed(t, done); !errors.Is(err, broker.ErrRefused) {
		t.Fatalf("confirm %v, want ErrRefused", err)
	}
	if ready, _, _ := localQueue(t, n, "ok").Counts(); ready != 2 {
		t.Fatalf("sibling queue holds %d, want 2", ready)
	}
}
