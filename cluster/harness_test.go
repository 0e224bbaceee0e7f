package cluster

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/fsm"
)

const testSecret = "test-cluster-secret"

// testLogger is silent unless WARREN_TEST_LOG is set, so failures stay readable.
func testLogger() *slog.Logger {
	if os.Getenv("WARREN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func raftLogOutput() io.Writer {
	if os.Getenv("WARREN_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// testNode is one in-process node: real TCP Raft transport, real memberlist, on loopback.
type testNode struct {
	id      string
	fsm     *fsm.FSM
	store   *Store
	members *Membership
	rec     *Reconciler

	stopOnce sync.Once
}

type nodeOptions struct {
	join         []string
	secret       string
	applyTimeout time.Duration
	reapAfter    time.Duration
	visibleWait  time.Duration
	// dataDir keeps the Raft log on disk (restart tests); raftAddr and gossipAddr reuse a
	// previous run's ports as a restarted production node would.
	dataDir    string
	raftAddr   string
	gossipAddr string
}

func startTestNode(t testing.TB, id string, opts nodeOptions) *testNode {
	t.Helper()
	n, err := tryStartTestNode(id, opts)
	if err != nil {
		t.Fatalf("start node %s: %v", id, err)
	}
	t.Cleanup(n.kill)
	return n
}

func tryStartTestNode(id string, opts nodeOptions) (*testNode, error) {
	if opts.secret == "" {
		opts.secret = testSecret
	}
	if opts.applyTimeout == 0 {
		opts.applyTimeout = 3 * time.Second
	}
	if opts.raftAddr == "" {
		opts.raftAddr = "127.0.0.1:0"
	}
	if opts.gossipAddr == "" {
		opts.gossipAddr = "127.0.0.1:0"
	}
	log := testLogger().With("node", id)
	n := &testNode{id: id, fsm: fsm.New(fsm.Options{})}
	store, err := Open(Config{
		NodeID: id, RaftAddr: opts.raftAddr, ForwardAddr: "127.0.0.1:0", FSM: n.fsm, Logger: log,
		DataDir: opts.dataDir, InMemory: opts.dataDir == "", RaftLogOutput: raftLogOutput(), ApplyTimeout: opts.applyTimeout,
		Join: len(opts.join) > 0, Secret: opts.secret, VisibleWait: opts.visibleWait,
	})
	if err != nil {
		return nil, err
	}
	members, err := StartMembership(MembershipConfig{
		NodeID: id, GossipAddr: opts.gossipAddr, Join: opts.join, Secret: opts.secret, Logger: log,
		Meta: Meta{RaftAddr: store.RaftAddr(), ForwardAddr: store.ForwardAddr()},
	})
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	store.SetForwardResolver(members.ForwardAddr)
	store.SetLiveNodes(func() []string {
		var ids []string
		for _, m := range members.Members() {
			if m.State == MemberAlive {
				ids = append(ids, m.ID)
			}
		}
		return ids
	})
	n.store, n.members = store, members
	n.rec = StartReconciler(ReconcilerConfig{
		Store: store, Members: members, Interval: time.Second, ReapAfter: opts.reapAfter, Logger: log,
	})
	return n, nil
}

// kill stops the node without telling anyone, like kill -9 as far as the others can see.
func (n *testNode) kill() {
	n.stopOnce.Do(func() {
		n.rec.Stop()
		_ = n.members.Shutdown()
		_ = n.store.Close()
	})
}

func (n *testNode) apply(c fsm.Command) (fsm.Result, error) {
	b, err := fsm.Encode(c)
	if err != nil {
		return fsm.Result{}, err
	}
	res, err := n.store.Apply(b)
	if err != nil {
		return fsm.Result{}, err
	}
	r, ok := res.(fsm.Result)
	if !ok {
		return fsm.Result{}, errors.New("apply returned a non-fsm.Result")
	}
	return r, nil
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func voters(t testing.TB, n *testNode) map[string]bool {
	t.Helper()
	servers, err := n.store.Configuration()
	if err != nil {
		return nil
	}
	out := make(map[string]bool, len(servers))
	for _, s := range servers {
		out[string(s.ID)] = true
	}
	return out
}

// startCluster starts n1 (bootstraps) and joins the others through it, then waits until the
// leader's configuration holds every node and each node knows the leader.
func startCluster(t testing.TB, ids []string, opts nodeOptions) []*testNode {
	t.Helper()
	first := startTestNode(t, ids[0], opts)
	if !first.store.Bootstrapped() {
		t.Fatalf("first node did not bootstrap")
	}
	if err := first.store.WaitLeader(5 * time.Second); err != nil {
		t.Fatalf("first node: %v", err)
	}
	nodes := []*testNode{first}
	for _, id := range ids[1:] {
		o := opts
		o.join = []string{first.members.GossipAddr()}
		n := startTestNode(t, id, o)
		if n.store.Bootstrapped() {
			t.Fatalf("joining node %s bootstrapped", id)
		}
		nodes = append(nodes, n)
	}
	waitFor(t, 30*time.Second, "all nodes to be raft voters", func() bool {
		l := leaderOf(nodes)
		return l != nil && len(voters(t, l)) == len(ids)
	})
	for _, n := range nodes {
		if err := n.store.WaitLeader(5 * time.Second); err != nil {
			t.Fatalf("node %s: %v", n.id, err)
		}
	}
	return nodes
}

func leaderOf(nodes []*testNode) *testNode {
	for _, n := range nodes {
		if n.store.IsLeader() {
			return n
		}
	}
	return nil
}

func followersOf(nodes []*testNode) []*testNode {
	var out []*testNode
	for _, n := range nodes {
		if !n.store.IsLeader() {
			out = append(out, n)
		}
	}
	return out
}
