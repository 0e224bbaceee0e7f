package fsm

import (
	"slices"
	"testing"
)

var quorumArgs = map[string]any{"x-queue-type": "quorum"}

func withArgs(extra map[string]any) map[string]any {
	out := map[string]any{"x-queue-type": "quorum"}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// The texts were recorded against RabbitMQ 3.10 (Debian's rabbitmq-server) with pika.
func TestQuorumDeclareRefusalsMatchRabbitMQ(t *testing.T) {
	h := newHarness(t)
	decl := func(name string, durable, exclusive, autoDelete bool, args map[string]any) DeclareQueue {
		c := DeclareQueue{Vhost: "/", Name: name, Durable: durable, AutoDelete: autoDelete, Args: encodeArgs(args), Owner: "n1"}
		if exclusive {
			c.Exclusive, c.ExclusiveConn = true, "n1/1"
		}
		return c
	}
	h.refused(decl("qq", false, false, false, quorumArgs), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid property 'non-durable' for queue 'qq' in vhost '/'")
	h.refused(decl("qq", true, true, false, quorumArgs), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid property 'exclusive-owner' for queue 'qq' in vhost '/'")
	h.refused(decl("qq", true, false, true, quorumArgs), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid property 'auto-delete' for queue 'qq' in vhost '/'")
	h.refused(decl("qq", true, false, false, withArgs(map[string]any{"x-max-priority": int32(5)})), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'qq' in vhost '/' of queue type rabbit_quorum_queue")
	h.refused(decl("qq", true, false, false, withArgs(map[string]any{"x-queue-mode": "lazy"})), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid arg 'x-queue-mode' for queue 'qq' in vhost '/' of queue type rabbit_quorum_queue")
	h.refused(decl("qq", true, false, false, withArgs(map[string]any{"x-quorum-initial-group-size": int32(0)})), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid arg 'x-quorum-initial-group-size' for queue 'qq' in vhost '/': {value_zero,0}")
	h.refused(decl("qq", true, false, false, map[string]any{"x-queue-type": "bogus"}), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid arg 'x-queue-type' for queue 'qq' in vhost '/': \"unsupported queue type 'bogus'\"")
	h.refused(decl("cq", true, false, false, map[string]any{"x-delivery-limit": int32(2)}), CodePreconditionFailed,
		"PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue 'cq' in vhost '/' of queue type rabbit_classic_queue")
	if _, ok := h.f.Queue("/", "qq"); ok {
		t.Fatal("a refused declaration created the queue")
	}

	// Equivalence: absent and "classic" are the same type; quorum is not.
	h.ok(decl("cq", true, false, false, nil))
	h.ok(decl("cq", true, false, false, map[string]any{"x-queue-type": "classic"}))
	h.refused(decl("cq", true, false, false, quorumArgs), CodePreconditionFailed,
		"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'cq' in vhost '/': received the value 'quorum' of type 'longstr' but current is none")
	h.ok(decl("qq", true, false, false, withArgs(map[string]any{"x-quorum-initial-group-size": int32(5)})))
	h.refused(decl("qq", true, false, false, nil), CodePreconditionFailed,
		"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'qq' in vhost '/': received none but current is the value 'quorum' of type 'longstr'")
	h.refused(decl("qq", true, false, false, map[string]any{"x-queue-type": "classic"}), CodePreconditionFailed,
		"PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'qq' in vhost '/': received 'classic' but current is 'quorum'")
	h.refused(decl("qq", true, false, false, withArgs(map[string]any{"x-quorum-initial-group-size": int32(3)})), CodePreconditionFailed,
		"PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'qq' in vhost '/': received '3' but current is '5'")
}

func declareReplicated(h *harness, name string, replicas ...string) Queue {
	h.ok(DeclareQueue{Vhost: "/", Name: name, Durable: true, Args: encodeArgs(quorumArgs), Owner: replicas[0], Replicas: replicas})
	q, _ := h.f.Queue("/", name)
	return q
}

func TestQuorumQueueStartsWithEveryReplicaInSync(t *testing.T) {
	h := newHarness(t)
	q := declareReplicated(h, "qq", "a", "b", "c", "b")
	if q.Type != QueueTypeQuorum || q.Owner != "a" || q.Epoch != 1 ||
		!slices.Equal(q.Replicas, []string{"a", "b", "c"}) || !slices.Equal(q.InSync, q.Replicas) {
		t.Fatalf("declared %+v", q)
	}
}

func TestSetInSyncOnlyFromTheCurrentLeaderAndEpoch(t *testing.T) {
	h := newHarness(t)
	declareReplicated(h, "qq", "a", "b", "c")
	var events []Event
	h.f.SetObserver(func(e Event) { events = append(events, e) })
	h.refused(SetInSync{Vhost: "/", Name: "qq", Leader: "a", Epoch: 0, InSync: []string{"a"}}, CodePreconditionFailed,
		"PRECONDITION_FAILED - stale leader epoch 0 of a for queue 'qq' in vhost '/' (now 1 of a)")
	h.refused(SetInSync{Vhost: "/", Name: "qq", Leader: "b", Epoch: 1, InSync: []string{"b"}}, CodePreconditionFailed,
		"PRECONDITION_FAILED - stale leader epoch 1 of b for queue 'qq' in vhost '/' (now 1 of a)")
	h.refused(SetInSync{Vhost: "/", Name: "qq", Leader: "a", Epoch: 1, InSync: []string{"b"}}, CodePreconditionFailed,
		"PRECONDITION_FAILED - the in-sync set of queue 'qq' must contain its leader")
	h.ok(SetInSync{Vhost: "/", Name: "qq", Leader: "a", Epoch: 1, InSync: []string{"c", "a", "x"}})
	q, _ := h.f.Queue("/", "qq")
	if !slices.Equal(q.InSync, []string{"a", "c"}) {
		t.Fatalf("in sync %v, want [a c] (replica order, strangers dropped)", q.InSync)
	}
	if len(events) != 1 || events[0].Kind != QueueReplicasChanged || events[0].From != "a" {
		t.Fatalf("events %+v", events)
	}
}

func TestNodeFailedElectsAnInSyncLeaderAndBumpsTheEpoch(t *testing.T) {
	h := newHarness(t)
	declareReplicated(h, "qq", "a", "b", "c")
	declareReplicated(h, "q2", "b", "a", "c")
	h.ok(SetInSync{Vhost: "/", Name: "qq", Leader: "a", Epoch: 1, InSync: []string{"a", "c"}})
	var events []Event
	h.f.SetObserver(func(e Event) { events = append(events, e) })
	// b is not in sync for qq: refused as its leader; the queue keeps waiting for a.
	h.ok(NodeFailed{Node: "a", Rehome: []QueueRef{{Vhost: "/", Name: "qq", Owner: "b"}}})
	if q, _ := h.f.Queue("/", "qq"); q.Owner != "a" || q.Epoch != 1 {
		t.Fatalf("an out-of-sync replica became leader: %+v", q)
	}
	if q, _ := h.f.Queue("/", "q2"); !slices.Equal(q.InSync, []string{"b", "c"}) || q.Owner != "b" {
		t.Fatalf("follower a not dropped from q2's in-sync set: %+v", q)
	}
	h.ok(NodeFailed{Node: "a", Rehome: []QueueRef{{Vhost: "/", Name: "qq", Owner: "c"}}})
	q, _ := h.f.Queue("/", "qq")
	if q.Owner != "c" || q.Epoch != 2 || !slices.Equal(q.InSync, []string{"c"}) || !slices.Equal(q.Replicas, []string{"a", "b", "c"}) {
		t.Fatalf("after failover %+v", q)
	}
	for _, e := range events {
		if e.Kind != QueueReplicasChanged {
			t.Fatalf("a replicated queue produced %v: its messages must stay", e.Kind)
		}
	}
	// Forget: a is replaced by d, which starts out of sync.
	h.ok(NodeFailed{Node: "a", Forget: true, Repair: []QueueRef{{Vhost: "/", Name: "qq", Owner: "d"}}})
	q, _ = h.f.Queue("/", "qq")
	if !slices.Equal(q.Replicas, []string{"b", "c", "d"}) || !slices.Equal(q.InSync, []string{"c"}) {
		t.Fatalf("after forget %+v", q)
	}
}

func TestReplicatedQueueSurvivesSnapshotRestoreAsReplicasChanged(t *testing.T) {
	h := newHarness(t)
	declareReplicated(h, "qq", "a", "b", "c")
	snap, err := h.f.SnapshotBytes()
	if err != nil {
		t.Fatal(err)
	}
	h2 := newHarness(t)
	declareReplicated(h2, "qq", "b", "a", "c")
	var events []Event
	h2.f.SetObserver(func(e Event) { events = append(events, e) })
	if err := h2.f.RestoreBytes(snap); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Kind != QueueReplicasChanged || events[0].From != "b" || events[0].Queue.Owner != "a" {
		t.Fatalf("events %+v", events)
	}
	if h.f.Digest() != h2.f.Digest() {
		t.Fatal("restored state differs")
	}
}

func TestElectLeaderNeedsAnInSyncReplicaAndTheCurrentEpoch(t *testing.T) {
	h := newHarness(t)
	declareReplicated(h, "qq", "a", "b", "c")
	h.ok(SetInSync{Vhost: "/", Name: "qq", Leader: "a", Epoch: 1, InSync: []string{"a", "b"}})
	h.refused(ElectLeader{Vhost: "/", Name: "qq", Leader: "c", Epoch: 1}, CodePreconditionFailed,
		"PRECONDITION_FAILED - node 'c' is not an in-sync replica of queue 'qq' in vhost '/'")
	h.ok(ElectLeader{Vhost: "/", Name: "qq", Leader: "a", Epoch: 1}) // a restarted leader
	h.refused(ElectLeader{Vhost: "/", Name: "qq", Leader: "b", Epoch: 1}, CodePreconditionFailed,
		"PRECONDITION_FAILED - stale leader epoch 1 for queue 'qq' in vhost '/' (now 2)")
	h.ok(ElectLeader{Vhost: "/", Name: "qq", Leader: "b", Epoch: 2})
	if q, _ := h.f.Queue("/", "qq"); q.Owner != "b" || q.Epoch != 3 {
		t.Fatalf("%+v", q)
	}
}

func TestAddReplicaStartsOutOfSync(t *testing.T) {
	h := newHarness(t)
	declareReplicated(h, "qq", "a", "b")
	h.ok(AddReplica{Vhost: "/", Name: "qq", Node: "c"})
	h.ok(AddReplica{Vhost: "/", Name: "qq", Node: "c"}) // idempotent
	q, _ := h.f.Queue("/", "qq")
	if !slices.Equal(q.Replicas, []string{"a", "b", "c"}) || !slices.Equal(q.InSync, []string{"a", "b"}) {
		t.Fatalf("%+v", q)
	}
}

func TestAForgottenReplicaIsNotAddedBackUntilItStartsAgain(t *testing.T) {
	h := newHarness(t)
	declareReplicated(h, "qq", "a", "b", "c")
	h.ok(NodeFailed{Node: "c", Forget: true})
	h.ok(AddReplica{Vhost: "/", Name: "qq", Node: "c"})
	if q, _ := h.f.Queue("/", "qq"); slices.Contains(q.Replicas, "c") {
		t.Fatalf("a departed node was added back: %+v", q)
	}
	h.ok(NodeStarted{Node: "c", KeepTransientExchanges: true})
	h.ok(AddReplica{Vhost: "/", Name: "qq", Node: "c"})
	if q, _ := h.f.Queue("/", "qq"); !slices.Equal(q.Replicas, []string{"a", "b", "c"}) || len(q.Departed) != 0 {
		t.Fatalf("after c started again: %+v", q)
	}
}
