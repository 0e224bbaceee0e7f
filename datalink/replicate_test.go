package datalink

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

// Replication requests share the publishes' ordered path and come back with a body.
func TestReplicateRepliesWithBodyInOrderBesidePublishes(t *testing.T) {
	fb := newFakeBroker("q1")
	_, p := pair(t, fb, newRecorder())
	const n = 500
	type answer struct {
		i    int
		body string
		err  error
	}
	got := make(chan answer, 2*n)
	for i := 0; i < n; i++ {
		p.ReplicateAsync("s", []byte(fmt.Sprint(i)), func(body []byte, err error) {
			got <- answer{i: i, body: string(body), err: err}
		})
		p.PublishAsync([]string{"q1"}, []byte("m"), false, func(rejected bool, err error) {
			if rejected || err != nil {
				got <- answer{i: -1, err: fmt.Errorf("publish rejected=%v err=%v", rejected, err)}
			}
		})
	}
	p.ReplicateAsync("s", nil, func(body []byte, err error) { got <- answer{i: n, body: string(body), err: err} })
	for want := 0; want <= n; want++ {
		select {
		case a := <-got:
			if a.i != want {
				t.Fatalf("answer %d (%v) arrived when %d was due", a.i, a.err, want)
			}
			if want == n {
				var re *RemoteError
				if !errors.As(a.err, &re) || re.Code != 406 || a.body != "" {
					t.Fatalf("refused request: body %q err %v, want the remote 406", a.body, a.err)
				}
				continue
			}
			if a.err != nil || a.body != fmt.Sprintf("s:%d", want) {
				t.Fatalf("answer %d: body %q err %v", want, a.body, a.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no answer for request %d", want)
		}
	}
	if r, _ := fb.counts("q1"); r != n {
		t.Fatalf("q1 has %d messages, want %d", r, n)
	}
}

// A publish or replication request that finds its link broken and already flushed fails at
// once with ErrLinkDown. It used to deadlock (the flushed check read the link's cause under the
// link's own lock), which hung a node's Close once a replicated queue's leader lost a follower
// (found by the full race run).
func TestRequestOnABrokenFlushedLinkFailsAtOnce(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	l := newLink(a, testConfig("client"), testLogger())
	l.fail(errors.New("peer went away"))
	cl := &clientLink{p: &Peer{addr: "test"}, l: l, remoteID: "owner", flushed: true}
	got := make(chan error, 1)
	go func() { got <- cl.publishOnBrokenLink(pendingPublish{done: func(bool, error) {}}) }()
	select {
	case err := <-got:
		if !errors.Is(err, ErrLinkDown) {
			t.Fatalf("request on a broken, flushed link: %v, want ErrLinkDown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a request on a broken, flushed link neither failed nor returned (deadlock)")
	}
}

// holdingBroker answers publishes only when released, to hold a reply slot open.
type holdingBroker struct {
	*fakeBroker
	held chan func(bool, error)
}

func (h *holdingBroker) Publish(from string, queues []string, msg []byte, persistent bool, reply func(bool, error)) {
	h.held <- reply
}

// A follower's acknowledgement must not wait behind a forwarded publish that is itself waiting
// (for replication): replication replies overtake pending publish replies on the same link.
func TestReplicationReplyOvertakesAPendingPublishReply(t *testing.T) {
	hb := &holdingBroker{fakeBroker: newFakeBroker("q1"), held: make(chan func(bool, error), 1)}
	srv, err := Listen("127.0.0.1:0", testConfig("owner"), hb)
	if err != nil {
		t.Fatal(err)
	}
	p := Dial(srv.Addr(), testConfig("client"), newRecorder())
	defer func() { _ = p.Close(); _ = srv.Close() }()
	eventually(t, "link up", 5*time.Second, p.Up)
	published := make(chan error, 1)
	p.PublishAsync([]string{"q1"}, []byte("waits"), true, func(_ bool, err error) { published <- err })
	var reply func(bool, error)
	select {
	case reply = <-hb.held:
	case <-time.After(5 * time.Second):
		t.Fatal("the publish never reached the handler")
	}
	replied := make(chan string, 1)
	p.ReplicateAsync("s", []byte("ack me"), func(body []byte, err error) { replied <- fmt.Sprint(string(body), err) })
	select {
	case got := <-replied:
		if got != "s:ack me<nil>" {
			t.Fatalf("replication reply %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the replication reply waited behind the unanswered publish")
	}
	reply(false, nil)
	if err := <-published; err != nil {
		t.Fatalf("publish: %v", err)
	}
}
