// Package cluster owns how a Warren node takes part in the cluster: the Raft store that
// replicates topology commands to every node's FSM, and (with the cluster work) membership and
// forwarding of writes to the leader. A one-node deployment is a Raft cluster of one and takes
// the same code path.
package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// ErrNoLeader is returned when a topology change cannot be committed because the cluster has no
// leader (no quorum) within the apply timeout.
var ErrNoLeader = errors.New("no raft leader: topology changes need a quorum of nodes")

// Config describes one node's Raft store.
type Config struct {
	NodeID   string
	DataDir  string // raft.db and snapshots live under DataDir/raft
	RaftAddr string // TCP bind/advertise address; ignored when Transport is set
	// Transport replaces the TCP transport (tests use raft's in-memory transport).
	Transport raft.Transport
	FSM       raft.FSM
	Logger    *slog.Logger
	// ApplyTimeout bounds how long a topology change waits for commit; default 7s so a client on
	// a node without quorum gets a clear error instead of a hang.
	ApplyTimeout  time.Duration
	RaftLogOutput io.Writer // hashicorp/raft's own log (default stderr)
	// InMemory keeps the log in memory (tests of pure logic; nothing survives a restart).
	InMemory bool
}

// Store wraps hashicorp/raft: the whole flow of a topology write is Apply → raft log → FSM.Apply
// on every node → the future returns the FSM's result.
type Store struct {
	raft         *raft.Raft
	transport    raft.Transport
	closers      []io.Closer
	applyTimeout time.Duration
	log          *slog.Logger
	bootstrapped bool
}

// Open starts the Raft node. On first start (no state on disk) it bootstraps a one-node
// cluster with itself as the only voter, so a fresh node is immediately usable.
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 7 * time.Second
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	// A single node elects itself after HeartbeatTimeout; short timeouts make start-up quick
	// and are still generous for loopback and LAN clusters.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = 8192
	if cfg.RaftLogOutput == nil {
		cfg.RaftLogOutput = os.Stderr
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: cfg.RaftLogOutput})

	s := &Store{applyTimeout: cfg.ApplyTimeout, log: cfg.Logger}
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		dir := filepath.Join(cfg.DataDir, "raft")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create raft dir: %w", err)
		}
		bolt, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		if err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", dir, err)
		}
		s.closers = append(s.closers, bolt)
		fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, rc.Logger)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("open raft snapshots: %w", err)
		}
		logs, stable, snaps = bolt, bolt, fileSnaps
	}

	trans := cfg.Transport
	if trans == nil {
		addr, err := net.ResolveTCPAddr("tcp", cfg.RaftAddr)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("raft address %q: %w", cfg.RaftAddr, err)
		}
		tcp, err := raft.NewTCPTransportWithLogger(cfg.RaftAddr, addr, 3, 10*time.Second, rc.Logger)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("listen raft on %s: %w", cfg.RaftAddr, err)
		}
		trans = tcp
		s.closers = append(s.closers, tcp)
	}
	s.transport = trans

	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		s.closeAll()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	if !existing {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, boot); err != nil {
			s.closeAll()
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
		s.bootstrapped = true
	}
	r, err := raft.NewRaft(rc, cfg.FSM, logs, stable, snaps, trans)
	if err != nil {
		s.closeAll()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	return s, nil
}

// Bootstrapped reports whether this start created a new cluster (no earlier Raft state).
func (s *Store) Bootstrapped() bool { return s.bootstrapped }

// WaitLeader blocks until this node knows a leader, or the timeout passes.
func (s *Store) WaitLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if addr, _ := s.raft.LeaderWithID(); addr != "" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ErrNoLeader
}

// Apply commits one encoded command and returns what the FSM's Apply returned for it.
// On return the local FSM has applied the command (read-your-writes for the caller).
func (s *Store) Apply(cmd []byte) (any, error) {
	f := s.raft.Apply(cmd, s.applyTimeout)
	if err := f.Error(); err != nil {
		switch {
		case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
			errors.Is(err, raft.ErrEnqueueTimeout):
			return nil, fmt.Errorf("%w (%v)", ErrNoLeader, err)
		}
		return nil, fmt.Errorf("raft apply: %w", err)
	}
	return f.Response(), nil
}

// Barrier waits until every command committed before it is applied to the local FSM; used at
// start-up so the node serves clients only with its full topology.
func (s *Store) Barrier(timeout time.Duration) error {
	return s.raft.Barrier(timeout).Error()
}

// Stats exposes Raft's own status map (term, indexes, state) for status pages.
func (s *Store) Stats() map[string]string { return s.raft.Stats() }

// Close shuts Raft down and releases the log store and transport.
func (s *Store) Close() error {
	err := s.raft.Shutdown().Error()
	s.closeAll()
	return err
}

func (s *Store) closeAll() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		_ = s.closers[i].Close()
	}
	s.closers = nil
}
