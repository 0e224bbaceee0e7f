package server

import (
	"net"
	"sync"
	"time"
)

// loginThrottle slows password guessing. Each source address and each user name has a token
// bucket that failed logins spend (burst, then rate per second).
//
//   - An address with tokens left is never delayed, and a successful login spends nothing: good
//     logins from an address that is not failing are answered at once.
//   - An address out of tokens has each further attempt wait until a token refills before its
//     credentials are even checked (the token is reserved first, so attempts in parallel queue
//     behind one another and the address gets about rate guesses a second however many
//     connections it opens); a success refunds the reserved token. An attempt that would wait
//     longer than maxDelay is refused at once with 403.
//   - A user out of tokens has each failed login answered only after the user's debt refills
//     (at most maxDelay), so guesses spread over many addresses are slowed too; the user's good
//     logins are never delayed by it.
//
// The map is bounded (maxEntries): full buckets are dropped first, then arbitrary ones.
// Nothing sleeps under mu; the caller sleeps on its own connection goroutine.
type loginThrottle struct {
	rate       float64 // tokens per second; <= 0 disables the throttle
	burst      float64
	maxDelay   time.Duration
	maxEntries int
	now        func() time.Time

	mu      sync.Mutex
	buckets map[string]*loginBucket
}

type loginBucket struct {
	tokens float64
	at     time.Time
}

const (
	defaultLoginBurst      = 10
	defaultLoginRate       = 1.0
	defaultLoginMaxDelay   = 5 * time.Second
	defaultLoginMaxEntries = 16384
)

func newLoginThrottle(rate float64, burst int, maxDelay time.Duration) *loginThrottle {
	return &loginThrottle{rate: rate, burst: float64(burst), maxDelay: maxDelay,
		maxEntries: defaultLoginMaxEntries, now: time.Now, buckets: make(map[string]*loginBucket)}
}

// bucketLocked returns the refilled bucket for key, creating it if create is set.
func (t *loginThrottle) bucketLocked(key string, now time.Time, create bool) *loginBucket {
	b := t.buckets[key]
	if b == nil {
		if !create {
			return nil
		}
		if len(t.buckets) >= t.maxEntries {
			t.evictLocked(now)
		}
		b = &loginBucket{tokens: t.burst, at: now}
		t.buckets[key] = b
		return b
	}
	if el := now.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(t.burst, b.tokens+el*t.rate)
	}
	b.at = now
	return b
}

// evictLocked makes room: buckets that refilled carry no information; if the map is still
// full, an eighth of it goes, whatever it held.
func (t *loginThrottle) evictLocked(now time.Time) {
	for k, b := range t.buckets {
		if b.tokens+now.Sub(b.at).Seconds()*t.rate >= t.burst {
			delete(t.buckets, k)
		}
	}
	for k := range t.buckets {
		if len(t.buckets) < t.maxEntries-t.maxEntries/8 {
			break
		}
		delete(t.buckets, k)
	}
}

func (t *loginThrottle) wait(tokens float64) time.Duration {
	return time.Duration((1 - tokens) / t.rate * float64(time.Second))
}

// admit is asked before the credentials of a login from addr are checked: how long to wait
// first, whether a token was reserved (pass it to done), and whether to refuse outright.
func (t *loginThrottle) admit(addr string) (wait time.Duration, reserved, refuse bool) {
	if t.rate <= 0 {
		return 0, false, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.bucketLocked("a:"+addr, t.now(), false)
	if b == nil || b.tokens >= 1 {
		return 0, false, false
	}
	wait = t.wait(b.tokens)
	if wait > t.maxDelay {
		return 0, false, true
	}
	b.tokens--
	return wait, true, false
}

// done records a login's outcome and returns how long to wait before answering a failure.
func (t *loginThrottle) done(addr, user string, ok, reserved bool) time.Duration {
	if t.rate <= 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	if ok {
		if reserved {
			if b := t.bucketLocked("a:"+addr, now, false); b != nil {
				b.tokens = min(t.burst, b.tokens+1)
			}
		}
		return 0
	}
	if !reserved {
		t.bucketLocked("a:"+addr, now, true).tokens--
	}
	u := t.bucketLocked("u:"+user, now, true)
	u.tokens--
	if u.tokens >= 0 {
		return 0
	}
	return min(t.maxDelay, t.wait(u.tokens+1))
}

// entries reports how many buckets are tracked.
func (t *loginThrottle) entries() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.buckets)
}

// remoteHost is the address part of a connection's remote address: the throttle's key.
func remoteHost(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
