package node_test

import (
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/wire"
)

// writeRaftState gives cfg's data dir the Raft state a node would have left behind: the
// commands in snapshotted are compacted into a snapshot, the ones in logged follow it in the
// log. Written through a bare FSM (no broker), so no queue timer runs while writing.
func writeRaftState(t *testing.T, cfg node.Config, snapshotted, logged []fsm.Command) {
	t.Helper()
	s, err := cluster.Open(cluster.Config{
		NodeID: cfg.ID, DataDir: cfg.DataDir, RaftAddr: cfg.RaftAddr, Secret: cfg.ClusterSecret,
		FSM: fsm.New(fsm.Options{DecodeArgs: broker.DecodeArgs}), Logger: cfg.Logger, RaftLogOutput: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitLeader(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	apply := func(cmds []fsm.Command) {
		for _, c := range cmds {
			b, err := fsm.Encode(c)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Apply(b)
			if err != nil {
				t.Fatal(err)
			}
			if r, ok := res.(fsm.Result); ok && r.Err != nil {
				t.Fatalf("%T: %v", c, r.Err)
			}
		}
	}
	apply(snapshotted)
	if err := s.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	apply(logged)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRestartExpiresQueuesFromReplayedState restarts a node whose snapshot and log hold
// durable queues with a 1 ms x-expires next to queues without it. Raft restores the snapshot
// inside cluster.Open, before the broker has its store, so those queues' expiry timers fire
// while the node is still being wired; the log's entries are applied once the node leads.
// Each expired queue must be deleted (RabbitMQ restarts x-expires when a node starts, and
// nobody consumes these), the others kept; -race checks the wiring against the timers.
func TestRestartExpiresQueuesFromReplayedState(t *testing.T) {
	cfg := diskConfig(t, "replay")
	cfg.ClusterSecret = "replay-secret"
	cfg.GossipAddr, cfg.DataAddr, cfg.ForwardAddr = freeAddr(t), "127.0.0.1:0", "127.0.0.1:0"
	expires := wire.AppendTable(nil, wire.Table{"x-expires": int32(1)})
	hourly := wire.AppendTable(nil, wire.Table{"x-expires": int32(3600_000)})
	declare := func(name string, args []byte) fsm.Command {
		return fsm.DeclareQueue{Vhost: fsm.DefaultVhost, Name: name, Durable: true, Args: args, Owner: cfg.ID}
	}
	var snapshotted, logged []fsm.Command
	var gone, kept []string
	for i := range 200 {
		e, k, h := fmt.Sprintf("snap-expiring-%d", i), fmt.Sprintf("snap-kept-%d", i), fmt.Sprintf("snap-hourly-%d", i)
		snapshotted = append(snapshotted, declare(e, expires), declare(k, nil), declare(h, hourly))
		gone, kept = append(gone, e), append(kept, k, h)
	}
	for i := range 5 {
		e, k := fmt.Sprintf("log-expiring-%d", i), fmt.Sprintf("log-kept-%d", i)
		logged = append(logged, declare(e, expires), declare(k, nil))
		gone, kept = append(gone, e), append(kept, k)
	}
	writeRaftState(t, cfg, snapshotted, logged)

	n, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("start on the written state: %v", err)
	}
	defer n.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var left []string
		for _, name := range gone {
			if _, ok := n.FSM.Queue(fsm.DefaultVhost, name); ok {
				left = append(left, name)
			}
		}
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d queues with a 1 ms x-expires still exist 15 s after the restart (e.g. %q)", len(left), left[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range kept {
		if _, ok := n.FSM.Queue(fsm.DefaultVhost, name); !ok {
			t.Errorf("queue %q was lost in the restart", name)
		}
		if n.Broker.LocalQueue(fsm.DefaultVhost, name) == nil {
			t.Errorf("queue %q has no queue object after the restart", name)
		}
	}
}
