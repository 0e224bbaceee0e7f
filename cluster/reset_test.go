package cluster

import (
	"net"
	"testing"
	"time"
)

// TestResetForJoinKeepsTheRaftAddress: RaftAddr is read (gossip metadata, status) while
// `node join` restarts Raft on a new transport; it must stay the address the new transport
// listens on, and a reset after Close must not bring Raft back.
func TestResetForJoinKeepsTheRaftAddress(t *testing.T) {
	n := startTestNode(t, "reset", nodeOptions{})
	waitFor(t, 10*time.Second, "the node to lead its own cluster", n.store.IsLeader)
	addr := n.store.RaftAddr()
	stop, done := make(chan struct{}), make(chan string)
	go func() {
		for {
			select {
			case <-stop:
				done <- ""
				return
			default:
			}
			if got := n.store.RaftAddr(); got != addr {
				<-stop
				done <- got
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	err := n.store.ResetForJoin()
	close(stop)
	if got := <-done; got != "" {
		t.Errorf("RaftAddr changed during the reset: %s, was %s", got, addr)
	}
	if err != nil {
		t.Fatalf("reset: %v", err)
	}
	if got := n.store.RaftAddr(); got != addr {
		t.Fatalf("RaftAddr after the reset: %s, was %s", got, addr)
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("the new transport does not listen on the advertised address: %v", err)
	}
	_ = c.Close()
	n.kill()
	if err := n.store.ResetForJoin(); err == nil {
		t.Fatal("a reset after Close started Raft again")
	}
}
