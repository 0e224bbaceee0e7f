package fsm

import "testing"

func TestNodeFailedRehomesTransientQueuesAndDropsExclusive(t *testing.T) {
	h := newHarness(t)
	var events []Event
	h.f.SetObserver(func(e Event) { events = append(events, e) })
	h.ok(DeclareQueue{Vhost: "/", Name: "t", Owner: "dead"})
	h.ok(DeclareQueue{Vhost: "/", Name: "d", Durable: true, Owner: "dead"})
	h.ok(DeclareQueue{Vhost: "/", Name: "x", Exclusive: true, ExclusiveConn: "dead/7", Owner: "dead"})
	h.ok(DeclareQueue{Vhost: "/", Name: "other", Owner: "alive"})
	events = nil
	h.ok(NodeFailed{Node: "dead", Rehome: []QueueRef{
		{Vhost: "/", Name: "t", Owner: "alive"},
		{Vhost: "/", Name: "d", Owner: "alive"},     // durable: stays with the dead node
		{Vhost: "/", Name: "other", Owner: "dead2"}, // not the dead node's: untouched
	}})
	if q, _ := h.f.Queue("/", "t"); q.Owner != "alive" {
		t.Fatalf("transient queue owner %q, want alive", q.Owner)
	}
	if q, _ := h.f.Queue("/", "d"); q.Owner != "dead" {
		t.Fatalf("durable queue moved to %q", q.Owner)
	}
	if q, _ := h.f.Queue("/", "other"); q.Owner != "alive" {
		t.Fatalf("a live node's queue moved to %q", q.Owner)
	}
	if _, ok := h.f.Queue("/", "x"); ok {
		t.Fatal("exclusive queue of the dead node's connection survived")
	}
	kinds := map[EventKind]int{}
	for _, e := range events {
		kinds[e.Kind]++
	}
	if kinds[QueueCreated] != 1 || kinds[QueueDeleted] != 2 {
		t.Fatalf("events %+v: want the re-homed queue deleted+created and the exclusive one deleted", events)
	}
}

func TestNodeFailedForgetRehomesDurableQueues(t *testing.T) {
	h := newHarness(t)
	h.ok(DeclareQueue{Vhost: "/", Name: "d", Durable: true, Owner: "gone"})
	h.ok(NodeFailed{Node: "gone", Rehome: []QueueRef{{Vhost: "/", Name: "d", Owner: "alive"}}})
	if q, _ := h.f.Queue("/", "d"); q.Owner != "gone" {
		t.Fatalf("durable queue moved to %q without Forget", q.Owner)
	}
	h.ok(NodeFailed{Node: "gone", Forget: true, Rehome: []QueueRef{{Vhost: "/", Name: "d", Owner: "alive"}}})
	if q, _ := h.f.Queue("/", "d"); q.Owner != "alive" {
		t.Fatalf("forgotten node's durable queue still owned by %q", q.Owner)
	}
}
