package fsm

import (
	"strings"
	"testing"
)

// TestVhostQueueLimit: max-queues refuses a new queue with RabbitMQ's 406 text, lets a
// redeclare of an existing one through, survives a snapshot, and clearing the limits lifts it.
func TestVhostQueueLimit(t *testing.T) {
	f := New(Options{})
	apply := encodedApplier(t, f)
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
	restoredCopy(t, f, "limits")
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

// TestUserLimits: user limits are kept per user, survive a password change and a snapshot
// (and change the digest), refuse unknown names and missing users, and go with the user.
func TestUserLimits(t *testing.T) {
	f := New(Options{})
	apply := encodedApplier(t, f)
	apply(PutUser{Name: "u", PasswordHash: "h1"})
	before := f.Digest()
	if r := apply(SetUserLimits{User: "u", Limits: map[string]int{LimitMaxConnections: 2, LimitMaxChannels: -1}}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if f.Digest() == before {
		t.Fatal("user limits do not change the digest")
	}
	if got, ok := f.UserLimits("u"); !ok || len(got) != 1 || got[LimitMaxConnections] != 2 {
		t.Fatalf("limits %v %v (a negative value means none)", got, ok)
	}
	apply(PutUser{Name: "u", PasswordHash: "h2", Tags: []string{"administrator"}})
	if v, ok := f.UserLimit("u", LimitMaxConnections); !ok || v != 2 {
		t.Fatalf("limit after a password change: %d %v", v, ok)
	}
	if _, ok := f.UserLimit("u", LimitMaxChannels); ok {
		t.Fatal("max-channels set by a negative value")
	}
	g := restoredCopy(t, f, "user limits")
	if v, ok := g.UserLimit("u", LimitMaxConnections); !ok || v != 2 {
		t.Fatalf("restored limit: %d %v", v, ok)
	}
	if r := apply(SetUserLimits{User: "u", Limits: map[string]int{LimitMaxQueues: 3}}); r.Err == nil || !strings.Contains(r.Err.Text, "unknown user limit 'max-queues'") {
		t.Fatalf("unknown limit: %+v", r.Err)
	}
	if r := apply(SetUserLimits{User: "nobody"}); r.Err == nil || r.Err.Code != CodeNotFound {
		t.Fatalf("limits of a missing user: %+v", r.Err)
	}
	apply(SetUserLimits{User: "u"})
	if got, _ := f.UserLimits("u"); got != nil {
		t.Fatalf("cleared limits: %v", got)
	}
	apply(SetUserLimits{User: "u", Limits: map[string]int{LimitMaxChannels: 0}})
	apply(DeleteUser{Name: "u"})
	apply(PutUser{Name: "u"})
	if got, _ := f.UserLimits("u"); got != nil {
		t.Fatalf("a re-created user inherited limits: %v", got)
	}
	if e := UserChannelLimit("u", 3); e.Code != 530 || e.Text != "NOT_ALLOWED - number of channels opened for user 'u' has reached the maximum allowed user limit of (3)" {
		t.Fatalf("channel refusal %+v", e)
	}
}

// encodedApplier applies commands to f as Raft would hand them over: encoded and decoded.
func encodedApplier(t *testing.T, f *FSM) func(Command) Result {
	return func(c Command) Result {
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
}

// restoredCopy restores f's snapshot into a new FSM and checks that the digests agree (what is
// names the state that must survive).
func restoredCopy(t *testing.T, f *FSM, what string) *FSM {
	t.Helper()
	snap, err := f.SnapshotBytes()
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{})
	if err := g.RestoreBytes(snap); err != nil {
		t.Fatal(err)
	}
	if g.Digest() != f.Digest() {
		t.Fatalf("%s lost in a snapshot", what)
	}
	return g
}
