package fsm

import (
	"strings"
	"testing"
)

// TestVhostQueueLimit: max-queues refuses a new queue with RabbitMQ's 406 text, lets a
// redeclare of an existing one through, survives a snapshot, and clearing the limits lifts it.
func TestVhostQueueLimit(t *testing.T) {
	f := New(Options{})
	apply := func(c Command) Result {
		t.Helper()
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		dc, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		f.applied++
		return f.ApplyCommand(f.applied, dc)
	}
	if r := apply(SetVhostLimits{Vhost: "/", Limits: map[string]int{LimitMaxQueues: 1, LimitMaxConnections: -1}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(DeclareQueue{Vhost: "/", Name: "a"}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := apply(DeclareQueue{Vhost: "/", Name: "a"}); r.Err != nil {
		t.Fatalf("redeclare at the limit: %v", r.Err)
	}
	r := apply(DeclareQueue{Vhost: "/", Name: "b"})
	if r.Err == nil || r.Err.Code != CodePreconditionFailed ||
		r.Err.Text != "PRECONDITION_FAILED - cannot declare queue 'b': queue limit in vhost '/' (1) is reached" {
		t.Fatalf("past max-queues: %+v", r.Err)
	}
	if got := f.VhostLimits("/"); len(got) != 1 || got[LimitMaxQueues] != 1 {
		t.Fatalf("limits %v (a negative value means none)", got)
	}
	snap, err := f.SnapshotBytes()
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{})
	if err := g.RestoreBytes(snap); err != nil {
		t.Fatal(err)
	}
	if g.Digest() != f.Digest() {
		t.Fatal("limits lost in a snapshot")
	}
	if r := apply(SetVhostLimits{Vhost: "/", Limits: map[string]int{"max-widgets": 3}}); r.Err == nil || !strings.Contains(r.Err.Text, "unknown vhost limit") {
		t.Fatalf("unknown limit: %+v", r.Err)
	}
	if r := apply(SetVhostLimits{Vhost: "nope"}); r.Err == nil || r.Err.Code != CodeNotFound {
		t.Fatalf("limits of a missing vhost: %+v", r.Err)
	}
	apply(SetVhostLimits{Vhost: "/"})
	if r := apply(DeclareQueue{Vhost: "/", Name: "b"}); r.Err != nil {
		t.Fatalf("after clearing limits: %v", r.Err)
	}
}
