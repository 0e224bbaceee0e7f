package datalink

import (
	"errors"
	"fmt"
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
