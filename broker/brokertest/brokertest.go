// Package brokertest runs broker nodes without Raft, for unit tests of the broker and of the
// packages above it (server, mgmt). A Log stands in for the Raft log: it applies each command
// to every member's FSM replica at once, in submission order, on the submitting goroutine —
// what a Raft cluster whose log never fails does, minus the log, the leader and the network.
// Data links between members are real (datalink over loopback).
package brokertest

import (
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
)

// Log is an in-memory replacement for the Raft store (a broker.Applier).
type Log struct {
	mu      sync.Mutex
	index   uint64
	members []*member
	fail    error
}

// member is one node's FSM replica; while it lags, the entries it has not applied wait in
// pending.
type member struct {
	id      string
	fsm     *fsm.FSM
	lagging bool
	pending []*raft.Log
}

var _ broker.Applier = (*Log)(nil)

// Apply runs the encoded command through every member's FSM, as a committed Raft entry, and
// returns the FSM's result (that of the last member that applied it; all compute the same).
// Observers run on this goroutine with the log locked, as they run on Raft's apply goroutine:
// one that submitted a command synchronously would deadlock there too.
func (l *Log) Apply(cmd []byte) (any, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return nil, l.fail
	}
	l.index++
	entry := &raft.Log{Index: l.index, Data: cmd}
	var res any
	for _, m := range l.members {
		if m.lagging {
			m.pending = append(m.pending, entry)
			continue
		}
		res = m.fsm.Apply(entry)
	}
	return res, nil
}

// Lag makes member id stop applying commands, as a follower that has not applied the latest
// entries yet; release applies what it missed, in order, and ends the lag. Commands must be
// submitted through another member meanwhile (the lagging one's own would not be applied).
func (l *Log) Lag(t testing.TB, id string) (release func()) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.members {
		if m.id == id {
			m.lagging = true
			return func() {
				l.mu.Lock()
				defer l.mu.Unlock()
				for _, e := range m.pending {
					m.fsm.Apply(e)
				}
				m.pending, m.lagging = nil, false
			}
		}
	}
	t.Fatalf("brokertest: no member %s", id)
	return nil
}

// Fail makes every later Apply fail with err and commit nothing, as on a node that lost its
// Raft majority (cluster.ErrNoLeader); nil restores normal service.
func (l *Log) Fail(err error) {
	l.mu.Lock()
	l.fail = err
	l.mu.Unlock()
}

// Options tunes a node.
type Options struct {
	// Messages, when set, keeps persistent messages of durable queues (a msgstore.Store or a
	// wrapper of one), given to broker.New as node.Start does.
	Messages broker.MessageStore
	Logger   *slog.Logger // nil: discarded
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// NewNode starts a broker node with id as a member of l; it is closed when the test ends.
// Every member must be created before the first command (there is no log to replay).
func NewNode(t testing.TB, l *Log, id string, opts Options) *broker.Node {
	t.Helper()
	log := opts.Logger
	if log == nil {
		log = discard()
	}
	f := fsm.New(fsm.Options{DecodeArgs: broker.DecodeArgs})
	l.mu.Lock()
	late := l.index > 0
	if !late {
		l.members = append(l.members, &member{id: id, fsm: f})
	}
	l.mu.Unlock()
	if late {
		t.Fatalf("brokertest: node %s added after the first command", id)
	}
	n := broker.New(broker.Config{ID: id, FSM: f, Logger: log, Messages: opts.Messages})
	t.Cleanup(n.Close)
	// Nothing to give back (a new store, no log to replay), but the node is then in its
	// running state: deleting a durable queue drops its messages, a moved queue is handed off.
	if _, err := n.Recover(nil); err != nil {
		t.Fatalf("brokertest: recover %s: %v", id, err)
	}
	n.AttachStore(l)
	return n
}

// AddUser creates user with password and tags and gives it full permissions on vhost "/".
func AddUser(t testing.TB, n *broker.Node, user, password string, tags ...string) {
	t.Helper()
	if _, err := n.Apply(fsm.PutUser{Name: user, PasswordHash: broker.HashPassword(password), Tags: tags}); err != nil {
		t.Fatalf("brokertest: put user %s: %v", user, err)
	}
	if _, err := n.Apply(fsm.SetPermissions{User: user, Vhost: fsm.DefaultVhost, Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		t.Fatalf("brokertest: grant user %s: %v", user, err)
	}
}

// Link connects nodes with data links over loopback (a data-link server each, peers dialled
// on first use) and tells each that all of them are live, as node.Start does from gossip.
// The servers close when the test ends, the peers with their nodes.
func Link(t testing.TB, nodes ...*broker.Node) {
	t.Helper()
	LinkVia(t, (*broker.Node).LinkHandler, nodes...)
}

// LinkVia is Link with each node's data-link server dispatching to handler(node), typically
// the node's LinkHandler wrapped to watch or delay what its peers send.
func LinkVia(t testing.TB, handler func(*broker.Node) datalink.Handler, nodes ...*broker.Node) {
	t.Helper()
	ids := make([]string, len(nodes))
	for i, n := range nodes {
		ids[i] = n.ID()
	}
	var mu sync.Mutex
	addrs := make(map[string]string, len(nodes))
	resolve := func(id string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		a, ok := addrs[id]
		return a, ok
	}
	// Links first: a node's data-link server must not accept peers before it has them.
	for _, n := range nodes {
		n.AttachLinks(datalink.Config{NodeID: n.ID(), Secret: "brokertest", Logger: discard()}, resolve)
		n.SetLiveNodes(func() []string { return ids })
	}
	for _, n := range nodes {
		cfg := datalink.Config{NodeID: n.ID(), Secret: "brokertest", Logger: discard()}
		srv, err := datalink.Listen("127.0.0.1:0", cfg, handler(n))
		if err != nil {
			t.Fatalf("brokertest: data link of %s: %v", n.ID(), err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		mu.Lock()
		addrs[n.ID()] = srv.Addr()
		mu.Unlock()
	}
}
