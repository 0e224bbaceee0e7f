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

func TestMoveQueuesChangesOwnerAndReportsTheMove(t *testing.T) {
	h := newHarness(t)
	var events []Event
	h.f.SetObserver(func(e Event) { events = append(events, e) })
	h.ok(DeclareQueue{Vhost: "/", Name: "d", Durable: true, Owner: "leaving"})
	h.ok(DeclareQueue{Vhost: "/", Name: "x", Exclusive: true, ExclusiveConn: "leaving/1", Owner: "leaving"})
	h.ok(DeclareQueue{Vhost: "/", Name: "elsewhere", Owner: "other"})
	events = nil
	h.ok(MoveQueues{From: "leaving", Moves: []QueueRef{
		{Vhost: "/", Name: "d", Owner: "target"},
		{Vhost: "/", Name: "x", Owner: "target"},         // exclusive: stays with its connection
		{Vhost: "/", Name: "elsewhere", Owner: "target"}, // not From's: untouched
		{Vhost: "/", Name: "missing", Owner: "target"},
	}})
	if q, _ := h.f.Queue("/", "d"); q.Owner != "target" {
		t.Fatalf("moved queue owner %q, want target", q.Owner)
	}
	if q, _ := h.f.Queue("/", "x"); q.Owner != "leaving" {
		t.Fatalf("exclusive queue moved to %q", q.Owner)
	}
	if q, _ := h.f.Queue("/", "elsewhere"); q.Owner != "other" {
		t.Fatalf("another node's queue moved to %q", q.Owner)
	}
	if len(events) != 1 || events[0].Kind != QueueMoved || events[0].From != "leaving" || events[0].Queue.Name != "d" {
		t.Fatalf("events %+v: want one QueueMoved of d from leaving", events)
	}
	b, err := Encode(MoveQueues{From: "a", Moves: []QueueRef{{Vhost: "/", Name: "q", Owner: "b"}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := Decode(b)
	if err != nil || c.(MoveQueues).Moves[0].Owner != "b" {
		t.Fatalf("codec round trip: %+v, %v", c, err)
	}
}
