package cluster

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// errStoreClosed ends waits for the local FSM when the store shuts down.
var errStoreClosed = errors.New("raft store closed")

// appliedFSM wraps the topology FSM so the store can wait, without polling, until the local
// replica has applied a given index (read-your-writes for forwarded commands).
type appliedFSM struct {
	inner raft.FSM

	mu      sync.Mutex
	applied uint64
	changed chan struct{} // closed and replaced whenever applied moves
	closed  bool
}

func newAppliedFSM(inner raft.FSM) *appliedFSM {
	a := &appliedFSM{inner: inner, changed: make(chan struct{})}
	if ai, ok := inner.(interface{ AppliedIndex() uint64 }); ok {
		a.applied = ai.AppliedIndex()
	}
	return a
}

func (a *appliedFSM) Apply(l *raft.Log) any {
	res := a.inner.Apply(l)
	a.advance(l.Index)
	return res
}

func (a *appliedFSM) Snapshot() (raft.FSMSnapshot, error) { return a.inner.Snapshot() }

func (a *appliedFSM) Restore(rc io.ReadCloser) error {
	if err := a.inner.Restore(rc); err != nil {
		return err
	}
	if ai, ok := a.inner.(interface{ AppliedIndex() uint64 }); ok {
		a.advance(ai.AppliedIndex())
	}
	return nil
}

// reset forgets the applied index (a node restarting Raft empty to join another cluster).
func (a *appliedFSM) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.applied = 0
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *appliedFSM) advance(index uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if index > a.applied {
		a.applied = index
		close(a.changed)
		a.changed = make(chan struct{})
	}
}

func (a *appliedFSM) appliedIndex() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied
}

// waitApplied blocks until the FSM has applied index, the deadline passes or the store closes.
func (a *appliedFSM) waitApplied(index uint64, deadline time.Time) error {
	return a.waitAppliedOrStop(index, deadline, nil)
}

// waitAppliedOrStop is waitApplied that also gives up when stop is closed.
func (a *appliedFSM) waitAppliedOrStop(index uint64, deadline time.Time, stop <-chan struct{}) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		a.mu.Lock()
		applied, changed, closed := a.applied, a.changed, a.closed
		a.mu.Unlock()
		switch {
		case applied >= index:
			return nil
		case closed:
			return errStoreClosed
		}
		select {
		case <-changed:
		case <-stop:
			return errStoreClosed
		case <-timer.C:
			return fmt.Errorf("local FSM at index %d, waiting for %d: timed out", applied, index)
		}
	}
}

func (a *appliedFSM) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed {
		a.closed = true
		close(a.changed)
		a.changed = make(chan struct{})
	}
}
