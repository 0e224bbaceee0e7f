package server

import (
	"strconv"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time { return f.t }

func newTestThrottle(clk *fakeClock) *loginThrottle {
	t := newLoginThrottle(1, 3, 5*time.Second)
	t.now = clk.now
	return t
}

func TestLoginThrottleAddress(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := newTestThrottle(clk)
	// The burst of failures is answered at once (other users, so only the address counts).
	for i := range 3 {
		if w, _, refuse := th.admit("10.0.0.1"); w != 0 || refuse {
			t.Fatalf("attempt %d waits %v (refused %v)", i, w, refuse)
		}
		th.done("10.0.0.1", "u"+strconv.Itoa(i), false, false)
	}
	// Then attempts queue one token apart, however many arrive at once.
	var reservedAll []bool
	for i := 1; i <= 5; i++ {
		w, reserved, refuse := th.admit("10.0.0.1")
		if refuse || !reserved || w != time.Duration(i)*time.Second {
			t.Fatalf("queued attempt %d: wait %v reserved %v refused %v, want %ds", i, w, reserved, refuse, i)
		}
		reservedAll = append(reservedAll, reserved)
	}
	if _, _, refuse := th.admit("10.0.0.1"); !refuse {
		t.Fatal("an attempt that would wait over the max delay was not refused")
	}
	// Another address is not slowed.
	if w, _, refuse := th.admit("10.0.0.2"); w != 0 || refuse {
		t.Fatalf("clean address waits %v", w)
	}
	// Successes refund their reserved tokens.
	for range reservedAll {
		th.done("10.0.0.1", "good", true, true)
	}
	clk.t = clk.t.Add(time.Second)
	if w, _, refuse := th.admit("10.0.0.1"); w != 0 || refuse {
		t.Fatalf("after refunds and a second: wait %v refused %v", w, refuse)
	}
}

func TestLoginThrottleUser(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := newTestThrottle(clk)
	// Guesses for one user from many addresses: after the burst each failure is answered later.
	for i := range 3 {
		if d := th.done("10.0.1."+strconv.Itoa(i), "admin", false, false); d != 0 {
			t.Fatalf("failure %d delayed %v", i, d)
		}
	}
	if d := th.done("10.0.1.9", "admin", false, false); d != time.Second {
		t.Fatalf("fourth failure delayed %v, want 1s", d)
	}
	if d := th.done("10.0.1.10", "admin", false, false); d != 2*time.Second {
		t.Fatalf("fifth failure delayed %v, want 2s", d)
	}
	// The user's good login is not delayed.
	if d := th.done("10.0.2.1", "admin", true, false); d != 0 {
		t.Fatalf("good login delayed %v", d)
	}
}

func TestLoginThrottleBoundedMemory(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	th := newTestThrottle(clk)
	th.maxEntries = 1000
	for i := range 50_000 {
		th.done("10."+strconv.Itoa(i>>16)+"."+strconv.Itoa(i>>8&255)+"."+strconv.Itoa(i&255), "u"+strconv.Itoa(i), false, false)
		if n := th.entries(); n > th.maxEntries {
			t.Fatalf("%d entries tracked, limit %d", n, th.maxEntries)
		}
	}
}
