package node_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
)

// lockedBuffer collects the log lines of every node of a test cluster.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func startLoggedCluster(t *testing.T, size int, secret string, logs io.Writer, tune ...func(*node.Config)) []*node.Node {
	t.Helper()
	var nodes []*node.Node
	var seed string
	for i := 1; i <= size; i++ {
		cfg := node.Config{
			ID: fmt.Sprintf("h%d", i), DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0",
			RaftAddr: freeAddr(t), GossipAddr: freeAddr(t), ForwardAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
			ClusterSecret: secret,
			Logger:        slog.New(slog.NewTextHandler(logs, nil)), RaftLogOutput: io.Discard,
		}
		if seed != "" {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.GossipAddr
		}
		for _, f := range tune {
			f(&cfg)
		}
		n, err := node.Start(cfg)
		if err != nil {
			t.Fatalf("start %s: %v", cfg.ID, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		deadline := time.Now().Add(15 * time.Second)
		for {
			servers, err := n.Store.Configuration()
			if err == nil && len(servers) == size {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: raft configuration %v, %v", n.Broker.ID(), servers, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes
}

// clusterState is what a hostile peer must not change: each node's topology digest and the
// ready count of every queue at its owner.
func clusterState(t *testing.T, nodes []*node.Node, queues []string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range nodes {
		fmt.Fprintf(&b, "%s digest %s\n", n.Broker.ID(), n.FSM.Digest())
		for _, name := range queues {
			if q := n.Broker.LocalQueue("/", name); q != nil {
				ready, unacked, _ := q.Counts()
				fmt.Fprintf(&b, "%s queue %s ready %d unacked %d\n", n.Broker.ID(), name, ready, unacked)
			}
		}
	}
	return b.String()
}

func maxTerm(nodes []*node.Node) uint64 {
	var max uint64
	for _, n := range nodes {
		if term, err := strconv.ParseUint(n.Store.Raft().Stats()["term"], 10, 64); err == nil && term > max {
			max = term
		}
	}
	return max
}

// forwardFrame builds a forwarded-write frame as cluster/forward.go lays it out
// (length | seq | kind | timeout | command | HMAC), keyed by a secret of the attacker's choice.
func forwardFrame(secret string, nonce, cmd []byte) []byte {
	h := sha256.New()
	h.Write([]byte("warren-forward-v1\x00" + secret))
	key := h.Sum(nil)
	body := make([]byte, 13)
	binary.BigEndian.PutUint64(body, 1)
	body[8] = 1 // apply
	binary.BigEndian.PutUint32(body[9:], 1000)
	body = append(body, cmd...)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("req"))
	m.Write(nonce)
	m.Write(body)
	frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)+sha256.Size))
	return append(append(frame, body...), m.Sum(nil)...)
}

// TestHostilePeerChangesNothing: a peer that knows every port of a running 3-node cluster but
// not its secret tries Raft (RequestVote and AppendEntries with a higher term and a command
// deleting a queue, from hashicorp/raft's own client side), forwarded writes (a well-formed
// frame MACed with a wrong secret), data links (publishes with a wrong secret) and gossip (a
// member with a wrong secret, and one with none). Every topology digest, every queue and the
// membership stay as they were, no node's term reaches the attacker's, and each node logs the
// refused attempts.
func TestHostilePeerChangesNothing(t *testing.T) {
	logs := &lockedBuffer{}
	nodes := startLoggedCluster(t, 3, "the-real-secret", logs)
	queues := []string{"hq1", "hq2", "hq3"}
	for i, n := range nodes {
		ch := dialNode(t, n)
		if _, err := ch.QueueDeclare(queues[i], true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 5; j++ {
			if err := ch.Publish("", queues[i], false, false, amqp.Publishing{Body: []byte("keep"), DeliveryMode: amqp.Persistent}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var before string
	deadline := time.Now().Add(10 * time.Second)
	for {
		before = clusterState(t, nodes, queues)
		if strings.Count(before, "ready 5 ") == 3 && strings.Count(before, nodes[0].FSM.Digest()) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster did not settle:\n%s", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	attackTerm := maxTerm(nodes) + 1000
	evil, err := fsm.Encode(fsm.DeleteQueue{Vhost: "/", Name: "hq1"})
	if err != nil {
		t.Fatal(err)
	}

	// Raft, with hashicorp/raft's plain TCP transport as the client.
	rt, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 2*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	defer rt.CloseStreams()
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(rt.LocalAddr())}
	for _, n := range nodes {
		id, addr := raft.ServerID(n.Broker.ID()), raft.ServerAddress(n.Store.RaftAddr())
		last := n.Store.Raft().LastIndex()
		var vote raft.RequestVoteResponse
		if err := rt.RequestVote(id, addr, &raft.RequestVoteRequest{RPCHeader: hdr, Term: attackTerm, LastLogIndex: last + 100, LastLogTerm: attackTerm}, &vote); err == nil {
			t.Errorf("%s answered a RequestVote from a peer without the secret (granted %v)", id, vote.Granted)
		}
		var app raft.AppendEntriesResponse
		if err := rt.AppendEntries(id, addr, &raft.AppendEntriesRequest{
			RPCHeader: hdr, Term: attackTerm, PrevLogEntry: last, PrevLogTerm: attackTerm - 1000, LeaderCommitIndex: last + 1,
			Entries: []*raft.Log{{Index: last + 1, Term: attackTerm, Type: raft.LogCommand, Data: evil}},
		}, &app); err == nil {
			t.Errorf("%s answered an AppendEntries from a peer without the secret (success %v)", id, app.Success)
		}
	}

	// Forwarded writes: a well-formed frame whose MAC uses a wrong secret.
	for _, n := range nodes {
		c, err := net.DialTimeout("tcp", n.Store.ForwardAddr(), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		nonce := make([]byte, 32)
		if _, err := io.ReadFull(c, nonce); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(forwardFrame("a-guess", nonce, evil)); err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(c); len(got) > 0 {
			t.Errorf("%s answered a forwarded write MACed with a wrong secret (%d bytes, %v)", n.Broker.ID(), len(got), err)
		}
		_ = c.Close()
	}

	// Data links: publishes into each owner's queue with a wrong secret.
	for i, n := range nodes {
		m, _ := nodes[0].Members.Member(n.Broker.ID())
		p := datalink.Dial(m.Meta.DataAddr, datalink.Config{NodeID: "evil", Secret: "a-guess", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ConnectWait: time.Second}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := p.Publish(ctx, []string{queues[i]}, []byte("forged"), false)
		up := p.Up()
		cancel()
		_ = p.Close()
		if !errors.Is(err, datalink.ErrLinkDown) || up {
			t.Errorf("%s: data-link publish from a peer without the secret: %v (link up %v)", n.Broker.ID(), err, up)
		}
	}

	// Gossip: a member with a wrong secret, then one with none.
	var seeds []string
	for _, n := range nodes {
		seeds = append(seeds, n.Members.GossipAddr())
	}
	for i, secret := range []string{"a-guess", ""} {
		m, err := cluster.StartMembership(cluster.MembershipConfig{
			NodeID: fmt.Sprintf("evil%d", i), GossipAddr: "127.0.0.1:0", Join: seeds, Secret: secret,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), JoinWait: time.Second,
		})
		if err == nil {
			_ = m.Shutdown()
			t.Errorf("a gossip member with secret %q joined", secret)
		}
	}

	time.Sleep(500 * time.Millisecond) // anything that got through would have applied by now
	if after := clusterState(t, nodes, queues); after != before {
		t.Errorf("cluster changed under attack:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if term := maxTerm(nodes); term >= attackTerm {
		t.Errorf("a node took the attacker's term %d (now %d)", attackTerm, term)
	}
	for _, n := range nodes {
		if ms := n.Members.Members(); len(ms) != 3 {
			t.Errorf("%s sees members %v", n.Broker.ID(), ms)
		}
	}
	out := logs.String()
	for _, want := range []string{
		"raft: refused a connection that did not prove the cluster secret",
		"forwarding: dropping connection",
		"datalink connection refused",
		"no installed keys could decrypt the message",
	} {
		if c := strings.Count(out, want); c == 0 {
			t.Errorf("no log line %q about the attempts", want)
		}
	}
	if t.Failed() {
		t.Logf("logs:\n%s", out)
	}
}

// TestNodeWithoutSecretGeneratesOne: a node started alone without a secret generates one,
// says so, keeps it (0600) in its data dir and finds it again on restart; a node told to join
// without a secret refuses to start with an error naming the flag.
func TestNodeWithoutSecretGeneratesOne(t *testing.T) {
	logs := &lockedBuffer{}
	cfg := diskConfig(t, "zero-config")
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
	path := filepath.Join(cfg.DataDir, "cluster-secret")
	st, err := os.Stat(path)
	if err != nil {
		t.Fatalf("no generated secret: %v", err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %v, want 0600", st.Mode().Perm())
	}
	b, _ := os.ReadFile(path)
	secret := strings.TrimSpace(string(b))
	if len(secret) != 32 || !strings.Contains(logs.String(), "generated a random one") || !strings.Contains(logs.String(), secret) {
		t.Fatalf("secret %q; logs:\n%s", secret, logs.String())
	}
	n, err = node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	_ = n.Close()
	if b2, _ := os.ReadFile(path); string(b2) != string(b) || !strings.Contains(logs.String(), "cluster secret read from the data dir") {
		t.Fatalf("restart changed or did not reuse the secret: %q → %q", b, b2)
	}

	joiner := diskConfig(t, "joiner")
	joiner.Join = []string{"127.0.0.1:1"}
	if _, err := node.Start(joiner); err == nil || !strings.Contains(err.Error(), "--cluster-secret") {
		t.Fatalf("join without a secret: %v", err)
	}
}
