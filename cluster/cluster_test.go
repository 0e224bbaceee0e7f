package cluster

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/fsm"
)

func digestsEqual(nodes []*testNode) bool {
	d := nodes[0].fsm.Digest()
	for _, n := range nodes[1:] {
		if n.fsm.Digest() != d {
			return false
		}
	}
	return true
}

func TestFollowerWriteIsForwardedAndReadYourWrites(t *testing.T) {
	nodes := startCluster(t, []string{"n1", "n2", "n3"}, nodeOptions{})
	follower := followersOf(nodes)[0]

	for i := range 20 {
		// Each write is checked on the writer's own FSM the moment Apply returns.
		writer := nodes[i%len(nodes)]
		name := fmt.Sprintf("x%d", i)
		res, err := writer.apply(fsm.DeclareExchange{Vhost: "/", Name: name, Kind: "direct", Durable: true})
		if err != nil {
			t.Fatalf("declare %s on %s: %v", name, writer.id, err)
		}
		if res.Err != nil || !res.Created {
			t.Fatalf("declare %s on %s: result %+v", name, writer.id, res)
		}
		if _, ok := writer.fsm.Exchange("/", name); !ok {
			t.Fatalf("exchange %s not in %s's FSM when Apply returned", name, writer.id)
		}
	}

	// The leader's FSM result, refusals included, travels back to the follower.
	res, err := follower.apply(fsm.DeclareExchange{Vhost: "/", Name: "x0", Kind: "fanout", Durable: true})
	if err != nil {
		t.Fatalf("redeclare on follower: %v", err)
	}
	if res.Err == nil || res.Err.Code != fsm.CodePreconditionFailed {
		t.Fatalf("redeclare with another kind: want 406 refusal, got %+v", res)
	}
	res, err = follower.apply(fsm.DeclareQueue{Vhost: "/", Name: "q1", Durable: true, Owner: follower.id})
	if err != nil || res.Queue == nil || res.Queue.Owner != follower.id || !res.Created {
		t.Fatalf("declare queue on follower: %+v, %v", res, err)
	}

	waitFor(t, 5*time.Second, "equal digests on all nodes", func() bool { return digestsEqual(nodes) })
	for _, n := range nodes {
		if _, ok := n.fsm.Queue("/", "q1"); !ok {
			t.Fatalf("queue q1 missing on %s", n.id)
		}
	}
}

func TestLeaderKillElectsNewLeaderAndSurvivorsWrite(t *testing.T) {
	nodes := startCluster(t, []string{"k1", "k2", "k3"}, nodeOptions{})
	old := leaderOf(nodes)
	survivors := followersOf(nodes)
	if old == nil || len(survivors) != 2 {
		t.Fatalf("want one leader and two followers")
	}

	killed := time.Now()
	old.kill()
	waitFor(t, 30*time.Second, "a new leader", func() bool {
		id, _ := survivors[0].store.Leader()
		return id != "" && id != old.id && leaderOf(survivors) != nil
	})
	leaderAfter := time.Since(killed)
	waitFor(t, 30*time.Second, "killed leader declared dead", func() bool {
		m, ok := survivors[0].members.Member(old.id)
		return ok && m.State == MemberDead
	})
	t.Logf("kill → new leader: %s; kill → member dead: %s", leaderAfter.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))

	for i, n := range survivors {
		res, err := n.apply(fsm.DeclareQueue{Vhost: "/", Name: fmt.Sprintf("after-%d", i), Owner: n.id})
		if err != nil || res.Err != nil {
			t.Fatalf("write on survivor %s after failover: %+v, %v", n.id, res, err)
		}
	}
	waitFor(t, 5*time.Second, "survivor digests equal", func() bool { return digestsEqual(survivors) })

	// Dead is not gone: without ReapAfter the killed node stays a voter (it may come back).
	time.Sleep(1500 * time.Millisecond) // more than one reconcile interval
	if !voters(t, leaderOf(survivors))[old.id] {
		t.Fatalf("dead node %s was removed from raft without ReapAfter", old.id)
	}
}

func TestMinorityWriteFailsWithErrNoLeader(t *testing.T) {
	for _, survivorRole := range []string{"leader", "follower"} {
		t.Run("survivor was "+survivorRole, func(t *testing.T) {
			const timeout = 2 * time.Second
			p := survivorRole[:1]
			nodes := startCluster(t, []string{p + "1", p + "2", p + "3"}, nodeOptions{applyTimeout: timeout})
			survivor := leaderOf(nodes)
			if survivorRole == "follower" {
				survivor = followersOf(nodes)[0]
			}
			for _, n := range nodes {
				if n != survivor {
					n.kill()
				}
			}

			start := time.Now()
			_, err := survivor.apply(fsm.AddVhost{Name: "minority"})
			took := time.Since(start)
			if !errors.Is(err, ErrNoLeader) {
				t.Fatalf("write without quorum: want ErrNoLeader, got %v", err)
			}
			if took > timeout+time.Second {
				t.Fatalf("write without quorum took %s, apply timeout is %s", took, timeout)
			}
			if survivor.fsm.VhostExists("minority") {
				t.Fatalf("write without quorum was applied")
			}
			t.Logf("minority write failed after %s: %v", took.Round(time.Millisecond), err)
		})
	}
}

func TestGracefulLeaveRemovesFromRaft(t *testing.T) {
	for _, role := range []string{"follower", "leader"} {
		t.Run(role+" leaves", func(t *testing.T) {
			p := role[:1]
			nodes := startCluster(t, []string{p + "1", p + "2", p + "3"}, nodeOptions{})
			leaving := leaderOf(nodes)
			if role == "follower" {
				leaving = followersOf(nodes)[0]
			}
			var rest []*testNode
			for _, n := range nodes {
				if n != leaving {
					rest = append(rest, n)
				}
			}

			start := time.Now()
			if err := GracefulLeave(leaving.store, leaving.members, 5*time.Second); err != nil {
				t.Fatalf("graceful leave: %v", err)
			}
			leaving.kill()
			waitFor(t, 30*time.Second, "left node removed from raft", func() bool {
				l := leaderOf(rest)
				return l != nil && !voters(t, l)[leaving.id] && len(voters(t, l)) == 2
			})
			t.Logf("leave → removed from raft: %s", time.Since(start).Round(time.Millisecond))
			if m, _ := rest[0].members.Member(leaving.id); m.State != MemberLeft {
				t.Fatalf("left member recorded as %s", m.State)
			}
			// Two voters remain, both alive: writes commit from either.
			for _, n := range rest {
				if _, err := n.apply(fsm.AddVhost{Name: "after-leave-" + n.id}); err != nil {
					t.Fatalf("write on %s after leave: %v", n.id, err)
				}
			}
		})
	}
}

func TestReapAfterRemovesDeadNode(t *testing.T) {
	nodes := startCluster(t, []string{"r1", "r2", "r3"}, nodeOptions{reapAfter: time.Second})
	victim := followersOf(nodes)[0]
	leader := leaderOf(nodes)
	if leader == nil {
		t.Fatal("no leader")
	}
	// The configuration is read strictly: an error must not pass for "the node is gone".
	config := func() map[string]bool {
		servers, err := leader.store.Configuration()
		if err != nil {
			t.Logf("read configuration: %v", err)
			return nil
		}
		out := map[string]bool{}
		for _, s := range servers {
			out[string(s.ID)] = true
		}
		return out
	}
	if before := config(); len(before) != 3 || !before[victim.id] {
		t.Fatalf("voters before the kill: %v", before)
	}
	victim.kill()
	var after map[string]bool
	waitFor(t, 30*time.Second, "dead node reaped from raft", func() bool {
		after = config()
		return after != nil && !after[victim.id]
	})
	for _, n := range nodes {
		if n != victim && !after[n.id] {
			t.Fatalf("live node %s was removed too: voters %v", n.id, after)
		}
	}
	if len(after) != 2 {
		t.Fatalf("voters after the reap: %v", after)
	}
}

func TestDifferentSecretCannotJoin(t *testing.T) {
	first := startTestNode(t, "s1", nodeOptions{})
	_, err := tryStartTestNode("intruder", nodeOptions{join: []string{first.members.GossipAddr()}, secret: "another secret"})
	if err == nil {
		t.Fatalf("node with a different secret joined")
	}
	if !strings.Contains(err.Error(), "no seed answered") {
		t.Fatalf("unexpected error: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, m := range first.members.Members() {
		if m.ID == "intruder" {
			t.Fatalf("intruder visible in membership: %+v", m)
		}
	}
}

func TestJoinWithNoSeedAnsweringFails(t *testing.T) {
	_, err := StartMembership(MembershipConfig{
		NodeID: "lonely", GossipAddr: "127.0.0.1:0", Join: []string{"127.0.0.1:1"}, Secret: testSecret, Logger: testLogger(),
	})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("want an error naming the seed, got %v", err)
	}
}

func TestDeadNodeRestartsWithItsDataAndCatchesUp(t *testing.T) {
	t.Run("through seeds", func(t *testing.T) { testDeadNodeRestart(t, true) })
	// Without seeds the restarted node is found by the others, which keep dialling dead
	// members: the case of a node whose peers were all down when it came back, or of the far
	// side of a healed partition.
	t.Run("without seeds, found by the others", func(t *testing.T) { testDeadNodeRestart(t, false) })
}

func testDeadNodeRestart(t *testing.T, withSeeds bool) {
	base := t.TempDir()
	opts := func(id string) nodeOptions { return nodeOptions{dataDir: base + "/" + id} }
	first := startTestNode(t, "d1", opts("d1"))
	waitFor(t, 5*time.Second, "first leader", first.store.IsLeader)
	nodes := []*testNode{first}
	for _, id := range []string{"d2", "d3"} {
		o := opts(id)
		o.join = []string{first.members.GossipAddr()}
		nodes = append(nodes, startTestNode(t, id, o))
	}
	waitFor(t, 30*time.Second, "three voters", func() bool { return len(voters(t, first)) == 3 })

	victim := followersOf(nodes)[0]
	raftAddr, gossipAddr := victim.store.RaftAddr(), victim.members.GossipAddr()
	if _, err := victim.apply(fsm.AddVhost{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	victim.kill()
	var rest []*testNode
	for _, n := range nodes {
		if n != victim {
			rest = append(rest, n)
		}
	}
	waitFor(t, 30*time.Second, "victim dead", func() bool {
		m, _ := rest[0].members.Member(victim.id)
		return m.State == MemberDead
	})
	for i := range 5 {
		if _, err := rest[i%2].apply(fsm.AddVhost{Name: fmt.Sprintf("while-dead-%d", i)}); err != nil {
			t.Fatalf("write while a node is dead: %v", err)
		}
	}

	o := opts(victim.id)
	o.raftAddr, o.gossipAddr = raftAddr, gossipAddr
	if withSeeds {
		o.join = []string{rest[0].members.GossipAddr()}
	}
	back := startTestNode(t, victim.id, o)
	if back.store.Bootstrapped() {
		t.Fatalf("restarted node bootstrapped a new cluster")
	}
	all := append(rest, back)
	waitFor(t, 30*time.Second, "restarted node caught up", func() bool {
		return back.fsm.VhostExists("while-dead-4") && digestsEqual(all)
	})
	// Both ways: the restarted node must also know the others (and their forwarding addresses);
	// without seeds it learns them from the others' next push/pull exchange.
	waitFor(t, 20*time.Second, "restarted node alive again", func() bool {
		for _, a := range all {
			for _, b := range all {
				if m, _ := a.members.Member(b.id); m.State != MemberAlive {
					return false
				}
			}
		}
		return true
	})
	if _, err := back.apply(fsm.AddVhost{Name: "after-restart"}); err != nil {
		t.Fatalf("write on the restarted node: %v (its members: %+v)", err, back.members.Members())
	}
	if len(voters(t, leaderOf(all))) != 3 {
		t.Fatalf("restart changed the voter set: %v", voters(t, leaderOf(all)))
	}
}

func TestFollowerBarrierSeesLeaderWrites(t *testing.T) {
	nodes := startCluster(t, []string{"b1", "b2", "b3"}, nodeOptions{})
	leader, follower := leaderOf(nodes), followersOf(nodes)[0]
	for round := range 20 {
		name := fmt.Sprintf("v%d", round)
		if _, err := leader.apply(fsm.AddVhost{Name: name}); err != nil {
			t.Fatal(err)
		}
		if err := follower.store.Barrier(2 * time.Second); err != nil {
			t.Fatalf("follower barrier: %v", err)
		}
		if !follower.fsm.VhostExists(name) {
			t.Fatalf("round %d: follower barrier returned before the leader's write was applied", round)
		}
	}
}
