package cluster

import (
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/fsm"
)

// TestFollowersElectAtOnceWhenTheLeaderProcessDies gives the followers a one-minute heartbeat
// timeout, so Raft on its own would not elect anyone for a minute after the leader dies. The
// leader's process "dies" (its sockets close, its Raft port stops listening): the followers
// see their connections from it break, find its port refusing, and elect a new leader at once.
func TestFollowersElectAtOnceWhenTheLeaderProcessDies(t *testing.T) {
	nodes := startCluster(t, []string{"e1", "e2", "e3"}, nodeOptions{})
	old := leaderOf(nodes)
	survivors := followersOf(nodes)
	if old == nil || len(survivors) != 2 {
		t.Fatalf("want one leader and two followers")
	}
	normal := survivors[0].store.r().ReloadableConfig()
	slow := normal
	slow.HeartbeatTimeout, slow.ElectionTimeout = time.Minute, time.Minute
	for _, n := range survivors {
		if err := n.store.r().ReloadConfig(slow); err != nil {
			t.Fatalf("slow down %s: %v", n.id, err)
		}
	}

	killed := time.Now()
	old.kill()
	waitFor(t, 10*time.Second, "a new leader among the survivors", func() bool {
		return leaderOf(survivors) != nil
	})
	t.Logf("kill → new leader: %s (Raft alone: at least a minute)", time.Since(killed).Round(time.Millisecond))
	for _, n := range survivors {
		if got := n.store.r().ReloadableConfig().HeartbeatTimeout; got != time.Minute {
			// The expediter restores what it found once a leader is known.
			waitFor(t, 5*time.Second, "timeouts restored on "+n.id, func() bool {
				return n.store.r().ReloadableConfig().HeartbeatTimeout == time.Minute
			})
		}
		if err := n.store.r().ReloadConfig(normal); err != nil {
			t.Fatalf("restore %s: %v", n.id, err)
		}
	}
	for _, n := range survivors {
		if res, err := n.apply(fsm.DeclareQueue{Vhost: "/", Name: "after-" + n.id, Owner: n.id}); err != nil || res.Err != nil {
			t.Fatalf("write through %s after the election: %+v, %v", n.id, res, err)
		}
	}
}

// TestLiveLeaderIsNotDeposed: a broken connection from a leader that still listens (its pool
// closed one, or the network hiccupped) must not start an election.
func TestLiveLeaderIsNotDeposed(t *testing.T) {
	nodes := startCluster(t, []string{"l1", "l2", "l3"}, nodeOptions{})
	old := leaderOf(nodes)
	if old == nil {
		t.Fatal("no leader")
	}
	term := old.store.r().Stats()["term"]
	for _, n := range followersOf(nodes) {
		for i := 0; i < 5; i++ {
			n.store.SuspectLeaderGone()
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(time.Second)
	if old.store.r().State() != raft.Leader || old.store.r().Stats()["term"] != term {
		t.Fatalf("leader %s deposed (state %v, term %s → %s) though it was alive",
			old.id, old.store.r().State(), term, old.store.r().Stats()["term"])
	}
}

func TestProcessGone(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	if ProcessGone(addr, nil) {
		t.Fatalf("a listening port counted as gone")
	}
	_ = ln.Close()
	if !ProcessGone(addr, nil) {
		t.Fatalf("a closed port did not count as gone")
	}
	stop := make(chan struct{})
	close(stop)
	if ProcessGone(addr, stop) {
		t.Fatalf("a stopped probe answered gone")
	}
}
