package cluster

import (
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/pki"
)

func raftTerm(t *testing.T, s *Store) uint64 {
	t.Helper()
	term, err := strconv.ParseUint(s.Raft().Stats()["term"], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return term
}

// TestRaftPortRefusesPeersWithoutTheSecret: hashicorp/raft's own client side (its plain TCP
// transport, and our transport keyed by a wrong secret) cannot get a RequestVote or an
// AppendEntries with a higher term through; the node's term and log stay as they were. A
// transport keyed by the right secret is answered, so the refusals are the handshake's doing.
func TestRaftPortRefusesPeersWithoutTheSecret(t *testing.T) {
	s, f := singleLeader(t)
	target := raft.ServerAddress(s.RaftAddr())
	term, last := raftTerm(t, s), s.Raft().LastIndex()
	hl := hclog.NewNullLogger()

	plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, time.Second, hl)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	wrong, err := newAuthTransport("127.0.0.1:0", nil, deriveKey("warren-raft-v1", "not the secret"), nil, testLogger(), hl, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()

	cmd := encode(t, fsm.AddVhost{Name: "evil"})
	for name, tr := range map[string]*raft.NetworkTransport{"plain tcp": plain, "wrong secret": wrong} {
		var vote raft.RequestVoteResponse
		err := tr.RequestVote("solo", target, &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(tr.LocalAddr())},
			Term:      term + 100, LastLogIndex: last + 100, LastLogTerm: term + 100,
		}, &vote)
		if err == nil {
			t.Errorf("%s: RequestVote answered (term %d, granted %v)", name, vote.Term, vote.Granted)
		}
		var app raft.AppendEntriesResponse
		err = tr.AppendEntries("solo", target, &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(tr.LocalAddr())},
			Term:      term + 200, PrevLogEntry: last, PrevLogTerm: term, LeaderCommitIndex: last + 1,
			Entries: []*raft.Log{{Index: last + 1, Term: term + 200, Type: raft.LogCommand, Data: cmd}},
		}, &app)
		if err == nil {
			t.Errorf("%s: AppendEntries answered (success %v)", name, app.Success)
		}
	}
	if got := raftTerm(t, s); got != term {
		t.Fatalf("term moved from %d to %d", term, got)
	}
	if !s.IsLeader() || f.VhostExists("evil") {
		t.Fatalf("leader %v, evil vhost %v", s.IsLeader(), f.VhostExists("evil"))
	}

	// Garbage and silence are cut off without reaching raft.
	c, err := net.Dial("tcp", string(target))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n-------------------"))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	// EOF or a reset (the node closed with our bytes unread), not our read timing out.
	if _, err := io.ReadAll(c); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("garbage connection left open: %v", err)
		}
	}
	_ = c.Close()

	right, err := newAuthTransport("127.0.0.1:0", nil, deriveKey("warren-raft-v1", testSecret), nil, testLogger(), hl, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer right.Close()
	var vote raft.RequestVoteResponse
	if err := right.RequestVote("solo", target, &raft.RequestVoteRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("friend"), Addr: []byte(right.LocalAddr())}, Term: term,
	}, &vote); err != nil {
		t.Fatalf("a peer holding the secret was refused: %v", err)
	}
	right.CloseStreams()
	plain.CloseStreams()
	wrong.CloseStreams()
}

// TestRaftClusterOverAuthenticatedTransport: nodes that share the secret form a cluster over
// the handshake; one with another secret never gets a vote or a log entry.
func TestRaftClusterOverAuthenticatedTransport(t *testing.T) {
	a := startTestNode(t, "a", nodeOptions{})
	b := startTestNode(t, "b", nodeOptions{join: []string{a.members.GossipAddr()}})
	waitFor(t, 15*time.Second, "b to become a voter", func() bool {
		servers, err := a.store.Configuration()
		return err == nil && len(servers) == 2
	})
	if _, err := b.apply(fsm.AddVhost{Name: "through-b"}); err != nil {
		t.Fatalf("apply on follower: %v", err)
	}
	waitFor(t, 5*time.Second, "vhost on a", func() bool { return a.fsm.VhostExists("through-b") })
}

func writeNodeTLS(t *testing.T, ca *pki.CA, name string) TLSFiles {
	t.Helper()
	dir := t.TempDir()
	caFiles := pki.Issued{CertPEM: ca.CertPEM}
	caFiles.KeyPEM, _ = ca.KeyPEM()
	if err := caFiles.WriteAs(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	issued, err := ca.Issue(name, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := issued.Write(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	return TLSFiles{Cert: cert, Key: key, CA: filepath.Join(dir, "ca.pem")}
}

// TestRaftMutualTLS: with --cluster-tls-* a Raft peer needs a certificate of the cluster's CA
// on top of the secret: the right secret over plain TCP, or with another CA's certificate, is
// refused; the right secret and certificate are answered.
func TestRaftMutualTLS(t *testing.T) {
	ca, err := pki.NewCA("cluster", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	nt, err := LoadNodeTLS(writeNodeTLS(t, ca, "solo"))
	if err != nil {
		t.Fatal(err)
	}
	f := fsm.New(fsm.Options{})
	s, err := Open(Config{
		NodeID: "solo", RaftAddr: "127.0.0.1:0", ForwardAddr: "127.0.0.1:0", FSM: f, Logger: testLogger(),
		InMemory: true, RaftLogOutput: raftLogOutput(), Secret: testSecret, TLS: nt,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitLeader(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	other, _ := pki.NewCA("other", time.Hour)
	stranger, err := LoadNodeTLS(writeNodeTLS(t, other, "stranger"))
	if err != nil {
		t.Fatal(err)
	}
	peer, err := LoadNodeTLS(writeNodeTLS(t, ca, "peer"))
	if err != nil {
		t.Fatal(err)
	}
	key := deriveKey("warren-raft-v1", testSecret)
	hl := hclog.NewNullLogger()
	target := raft.ServerAddress(s.RaftAddr())
	term := raftTerm(t, s)
	for name, tc := range map[string]struct {
		nt *NodeTLS
		ok bool
	}{"no certificate": {nil, false}, "another CA": {stranger, false}, "cluster CA": {peer, true}} {
		tr, err := newAuthTransport("127.0.0.1:0", nil, key, tc.nt, testLogger(), hl, nil)
		if err != nil {
			t.Fatal(err)
		}
		var vote raft.RequestVoteResponse
		err = tr.RequestVote("solo", target, &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("x"), Addr: []byte(tr.LocalAddr())}, Term: term,
		}, &vote)
		if (err == nil) != tc.ok {
			t.Errorf("%s: RequestVote error %v, want success %v", name, err, tc.ok)
		}
		tr.CloseStreams()
		_ = tr.Close()
	}
	// Forwarded writes ride the same certificates.
	good := newForwardPool(deriveKey("warren-forward-v1", testSecret))
	good.tls = peer
	defer good.close()
	if _, _, err := good.apply(s.ForwardAddr(), encode(t, fsm.AddVhost{Name: "tls"}), time.Now().Add(3*time.Second)); err != nil {
		t.Fatalf("forward with the cluster's certificate: %v", err)
	}
	plain := newForwardPool(deriveKey("warren-forward-v1", testSecret))
	defer plain.close()
	if _, _, err := plain.apply(s.ForwardAddr(), encode(t, fsm.AddVhost{Name: "plain"}), time.Now().Add(3*time.Second)); err == nil || f.VhostExists("plain") {
		t.Fatalf("forward without a certificate: %v", err)
	}
}

// TestNodeTLSReload: after the files are replaced with another CA's and Reload runs, new
// handshakes trust the new CA and no longer the old one.
func TestNodeTLSReload(t *testing.T) {
	ca1, _ := pki.NewCA("one", time.Hour)
	ca2, _ := pki.NewCA("two", time.Hour)
	files := writeNodeTLS(t, ca1, "server")
	srv, err := LoadNodeTLS(files)
	if err != nil {
		t.Fatal(err)
	}
	peer1, _ := LoadNodeTLS(writeNodeTLS(t, ca1, "p1"))
	peer2, _ := LoadNodeTLS(writeNodeTLS(t, ca2, "p2"))
	handshake := func(client *NodeTLS) error {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		errc := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			sc := tls.Server(c, srv.Server)
			if err := sc.Handshake(); err != nil {
				errc <- err
				return
			}
			_, err = sc.Write([]byte{1})
			errc <- err
		}()
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Client(c, client.Client)
		cerr := tc.Handshake()
		if cerr == nil {
			// TLS 1.3: the server's verdict on our certificate arrives with the first read.
			_, cerr = tc.Read(make([]byte, 1))
		}
		_ = c.Close()
		if serr := <-errc; serr != nil {
			return serr
		}
		return cerr
	}
	if err := handshake(peer1); err != nil {
		t.Fatalf("peer of the same CA: %v", err)
	}
	if handshake(peer2) == nil {
		t.Fatal("peer of another CA accepted")
	}
	next := writeNodeTLS(t, ca2, "server")
	for from, to := range map[string]string{next.Cert: files.Cert, next.Key: files.Key, next.CA: files.CA} {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := srv.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := handshake(peer2); err != nil {
		t.Fatalf("peer of the new CA after reload: %v", err)
	}
	if handshake(peer1) == nil {
		t.Fatal("peer of the old CA accepted after reload")
	}
}
