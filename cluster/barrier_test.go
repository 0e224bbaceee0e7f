package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/warrenmq/warren/fsm"
)

// TestApplyVisibleOnEveryLiveNode: a write answered on one follower is already applied on the
// other follower and on the leader when Apply returns, every time.
func TestApplyVisibleOnEveryLiveNode(t *testing.T) {
	nodes := startCluster(t, []string{"v1", "v2", "v3"}, nodeOptions{})
	waitFor(t, 10*time.Second, "every node to see the others alive", func() bool {
		for _, n := range nodes {
			if len((*n.store.liveNodes.Load())()) != 3 {
				return false
			}
		}
		return true
	})
	followers := followersOf(nodes)
	misses := 0
	for i := 0; i < 200; i++ {
		from, other := followers[i%2], followers[(i+1)%2]
		name := fmt.Sprintf("x%d", i)
		if _, err := from.apply(fsm.DeclareExchange{Vhost: "/", Name: name, Kind: "direct"}); err != nil {
			t.Fatalf("declare %s: %v", name, err)
		}
		for _, n := range []*testNode{other, leaderOf(nodes)} {
			if _, ok := n.fsm.Exchange("/", name); !ok {
				misses++
			}
		}
	}
	if misses > 0 {
		t.Fatalf("%d of 400 checks on other nodes right after Apply missed the write", misses)
	}
}

// TestApplyWaitForStalledPeerIsBounded: a node that memberlist still reports alive but that
// does not answer "applied?" costs the bounded wait once; later writes do not wait for it
// until it answers again.
func TestApplyWaitForStalledPeerIsBounded(t *testing.T) {
	const bound = 300 * time.Millisecond
	nodes := startCluster(t, []string{"s1", "s2", "s3"}, nodeOptions{visibleWait: bound})
	leader := leaderOf(nodes)
	stalled := followersOf(nodes)[1]
	waitFor(t, 10*time.Second, "the leader to see every node alive", func() bool {
		return len((*leader.store.liveNodes.Load())()) == 3
	})
	stalled.store.forwardServer.close() // it keeps applying, but nobody can ask it

	start := time.Now()
	if _, err := leader.apply(fsm.DeclareExchange{Vhost: "/", Name: "first", Kind: "direct"}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("first write took %s with a stalled peer (bound %s)", took, bound)
	}
	start = time.Now()
	const later = 40
	for i := 0; i < later; i++ {
		if _, err := leader.apply(fsm.DeclareExchange{Vhost: "/", Name: fmt.Sprintf("later%d", i), Kind: "direct"}); err != nil {
			t.Fatal(err)
		}
	}
	// Waiting the bound for each would take later*bound = 12 s.
	if took := time.Since(start); took > later*bound/2 {
		t.Fatalf("%d writes took %s: each waited for the stalled peer again", later, took)
	}
}

// TestApplyStopsWaitingForPeerDeclaredDead: a peer killed while writes wait for it is dropped
// from the wait once memberlist declares it dead, well before the bound.
func TestApplyStopsWaitingForPeerDeclaredDead(t *testing.T) {
	nodes := startCluster(t, []string{"d1", "d2", "d3"}, nodeOptions{visibleWait: time.Minute})
	leader := leaderOf(nodes)
	victim := followersOf(nodes)[0]
	waitFor(t, 10*time.Second, "the leader to see every node alive", func() bool {
		return len((*leader.store.liveNodes.Load())()) == 3
	})
	victim.kill()
	start := time.Now()
	if _, err := leader.apply(fsm.DeclareExchange{Vhost: "/", Name: "after-kill", Kind: "direct"}); err != nil {
		t.Fatal(err)
	}
	// The bound is a minute: returning at all within 20 s means the dead peer was dropped.
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("write waited %s for a dead peer", took)
	}
}
