package broker_test

import (
	"testing"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// deathOf returns the message's x-death entries and checks the newest one.
func deathOf(t *testing.T, m *queue.Message, reason, queueName string, count int64) wire.Table {
	t.Helper()
	h := headersOf(t, m)
	deaths, ok := h["x-death"].([]any)
	if !ok || len(deaths) == 0 {
		t.Fatalf("no x-death header in %v", h)
	}
	d, ok := deaths[0].(wire.Table)
	if !ok {
		t.Fatalf("x-death entry %T", deaths[0])
	}
	if d["reason"] != reason || d["queue"] != queueName {
		t.Fatalf("x-death %v, want reason %s queue %s", d, reason, queueName)
	}
	if c, _ := wire.Int64(d["count"]); c != count {
		t.Fatalf("x-death count %v, want %d", d["count"], count)
	}
	return h
}

// TestDeadLetterOnReject: a rejected message goes to the queue's dead-letter exchange with
// RabbitMQ's x-death entry and x-first-death-* headers; its own headers and routing key stay.
func TestDeadLetterOnReject(t *testing.T) {
	n := single(t, nil)
	apply(t, n,
		fsm.DeclareExchange{Vhost: "/", Name: "dlx", Kind: "fanout"},
		declareQueue("work", "a", false, wire.Table{"x-dead-letter-exchange": "dlx"}),
		declareQueue("dead", "a", false, nil), bindQueue("dlx", "dead", ""))
	publish(t, n, message(t, "", "work", "m", wire.Properties{Headers: wire.Table{"app": "kept"}}))

	work := localQueue(t, n, "work")
	d := get(t, work, false)
	work.Reject([]queue.Settled{{Msg: d.Msg, Seq: d.Seq}})

	got := get(t, localQueue(t, n, "dead"), true)
	if string(got.Msg.Body) != "m" || got.Msg.Exchange != "dlx" || got.Msg.RoutingKey != "work" {
		t.Fatalf("dead-lettered %q via %q/%q", got.Msg.Body, got.Msg.Exchange, got.Msg.RoutingKey)
	}
	h := deathOf(t, got.Msg, "rejected", "work", 1)
	d0 := h["x-death"].([]any)[0].(wire.Table)
	if d0["exchange"] != "" || len(d0["routing-keys"].([]any)) != 1 || d0["routing-keys"].([]any)[0] != "work" {
		t.Fatalf("x-death %v: want exchange \"\" and routing-keys [work]", d0)
	}
	if h["x-first-death-reason"] != "rejected" || h["x-first-death-queue"] != "work" || h["x-first-death-exchange"] != "" {
		t.Fatalf("x-first-death headers %v", h)
	}
	if h["app"] != "kept" {
		t.Fatalf("the message's own header was lost: %v", h)
	}
	if ready, unacked, _ := work.Counts(); ready != 0 || unacked != 0 {
		t.Fatalf("work holds %d ready, %d unacked after the reject", ready, unacked)
	}
}

// TestDeadLetterCycleOfRejects: a queue dead-lettering to itself keeps one x-death entry per
// queue and reason, counting the rejections (RabbitMQ breaks only cycles without rejections).
func TestDeadLetterCycleOfRejects(t *testing.T) {
	n := single(t, nil)
	apply(t, n, declareQueue("loop", "a", false, wire.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"}))
	publish(t, n, message(t, "", "loop", "m", wire.Properties{}))
	q := localQueue(t, n, "loop")
	for i := int64(1); i <= 3; i++ {
		d := get(t, q, false)
		if i > 1 {
			deathOf(t, d.Msg, "rejected", "loop", i-1)
		}
		q.Reject([]queue.Settled{{Msg: d.Msg, Seq: d.Seq}})
	}
	h := deathOf(t, get(t, q, true).Msg, "rejected", "loop", 3)
	if deaths := h["x-death"].([]any); len(deaths) != 1 {
		t.Fatalf("%d x-death entries, want 1", len(deaths))
	}
}

// TestDeadLetterOnExpiry: a message whose per-message TTL runs out is dead-lettered with
// reason expired, with x-dead-letter-routing-key, and its expiration moved to
// original-expiration so the copy does not expire again.
func TestDeadLetterOnExpiry(t *testing.T) {
	n := single(t, nil)
	apply(t, n,
		fsm.DeclareExchange{Vhost: "/", Name: "dlx", Kind: "direct"},
		declareQueue("ttl", "a", false, wire.Table{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "gone"}),
		declareQueue("dead", "a", false, nil), bindQueue("dlx", "dead", "gone"))
	publish(t, n, message(t, "", "ttl", "m", wire.Properties{Expiration: "5"}))

	got := get(t, localQueue(t, n, "dead"), true)
	if got.Msg.RoutingKey != "gone" {
		t.Fatalf("dead-lettered with routing key %q, want gone", got.Msg.RoutingKey)
	}
	h := deathOf(t, got.Msg, "expired", "ttl", 1)
	d0 := h["x-death"].([]any)[0].(wire.Table)
	if d0["original-expiration"] != "5" {
		t.Fatalf("x-death %v: want original-expiration 5", d0)
	}
	p, _ := wire.DecodeProperties(got.Msg.Props)
	if p.Expiration != "" || got.Msg.ExpirationMs != -1 {
		t.Fatalf("dead-lettered copy still expires (%q, %d)", p.Expiration, got.Msg.ExpirationMs)
	}
}

// TestDeadLetterOnMaxLength: the head dropped by x-max-length is dead-lettered (maxlen).
func TestDeadLetterOnMaxLength(t *testing.T) {
	n := single(t, nil)
	apply(t, n,
		fsm.DeclareExchange{Vhost: "/", Name: "dlx", Kind: "fanout"},
		declareQueue("short", "a", false, wire.Table{"x-max-length": int32(1), "x-dead-letter-exchange": "dlx"}),
		declareQueue("dead", "a", false, nil), bindQueue("dlx", "dead", ""))
	publish(t, n, message(t, "", "short", "first", wire.Properties{}))
	publish(t, n, message(t, "", "short", "second", wire.Properties{}))
	got := get(t, localQueue(t, n, "dead"), true)
	if string(got.Msg.Body) != "first" {
		t.Fatalf("dead-lettered %q, want the head", got.Msg.Body)
	}
	deathOf(t, got.Msg, "maxlen", "short", 1)
	if d := get(t, localQueue(t, n, "short"), true); string(d.Msg.Body) != "second" {
		t.Fatalf("queue kept %q", d.Msg.Body)
	}
}
