package chaos

import (
	"sync"
)

// Recorder collects the history of a run from every client goroutine.
type Recorder struct {
	mu sync.Mutex
	h  History
}

// Sent records a publish and what the publisher learned about it.
func (r *Recorder) Sent(s Sent) {
	r.mu.Lock()
	r.h.Sent = append(r.h.Sent, s)
	r.mu.Unlock()
}

// Received records a delivery a consumer handled (before it acks it).
func (r *Recorder) Received(d Received) {
	r.mu.Lock()
	r.h.Received = append(r.h.Received, d)
	r.mu.Unlock()
}

// RPC records one call.
func (r *Recorder) RPC(c RPCCall) {
	r.mu.Lock()
	r.h.RPC = append(r.h.RPC, c)
	r.mu.Unlock()
}

// Counts returns how many sends, receipts and calls were recorded so far (for progress logs).
func (r *Recorder) Counts() (sent, received, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.h.Sent), len(r.h.Received), len(r.h.RPC)
}

// History returns a copy of what was recorded.
func (r *Recorder) History() History {
	r.mu.Lock()
	defer r.mu.Unlock()
	return History{
		Sent:     append([]Sent(nil), r.h.Sent...),
		Received: append([]Received(nil), r.h.Received...),
		RPC:      append([]RPCCall(nil), r.h.RPC...),
	}
}
