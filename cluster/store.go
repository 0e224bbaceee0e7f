// Package cluster owns how a Warren node takes part in the cluster: the Raft store that
// replicates topology commands to every node's FSM, membership and failure detection over
// hashicorp/memberlist, the leader's reconciler that turns membership into Raft configuration,
// the forwarding of topology writes from followers to the leader, the wait until the other live
// nodes applied a write (barrier.go), Raft connections that prove the cluster secret
// (streamlayer.go) and graceful leave. A one-node deployment is a Raft cluster of one and
// takes the same code path.
//
// Bootstrap rule: a node started without any join address and without earlier Raft state
// bootstraps a new one-node cluster with itself as the only voter. A node started with join
// addresses (Config.Join) never bootstraps: it starts empty and waits until the leader's
// reconciler, seeing it in the gossip membership, adds it as a voter. A node with earlier Raft
// state never bootstraps either way; it rejoins the configuration it already knows.
package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// raftIOTimeout bounds one Raft dial or RPC. A peer whose container vanished does not refuse
// the connection, it times out: a long timeout kept a node's shutdown waiting on dead peers.
const raftIOTimeout = 3 * time.Second

// ErrNoLeader is returned when a topology change cannot be committed because the cluster has no
// leader (no quorum) within the apply timeout.
var ErrNoLeader = errors.New("no raft leader: topology changes need a quorum of nodes")

// Config describes one node's Raft store.
type Config struct {
	NodeID   string
	DataDir  string // raft.db and snapshots live under DataDir/raft
	RaftAddr string // TCP bind/advertise address (port 0 picks one); ignored when Transport is set
	// RaftAdvertise is the host:port others dial when RaftAddr binds every interface
	// (0.0.0.0 in a container); empty advertises RaftAddr itself.
	RaftAdvertise string
	// Transport replaces the TCP transport (tests use raft's in-memory transport).
	Transport raft.Transport
	FSM       raft.FSM
	Logger    *slog.Logger
	// ApplyTimeout bounds how long a topology change waits for commit, including finding and
	// reaching the leader; default 7s so a client on a node without quorum gets a clear error
	// instead of a hang.
	ApplyTimeout  time.Duration
	RaftLogOutput io.Writer // hashicorp/raft's own log (default stderr)
	// InMemory keeps the log in memory (tests of pure logic; nothing survives a restart).
	InMemory bool

	// Join marks a node started to join an existing cluster: it never bootstraps (see the
	// package comment for the rule).
	Join bool
	// Secret is the cluster secret: every Raft connection proves it in a handshake before raft
	// reads from it (streamlayer.go), and forwarded writes carry an HMAC keyed by it.
	Secret string
	// ForwardAddr is where this node accepts writes forwarded by followers while it is the
	// leader ("" = do not serve; fine for a single node). Port 0 picks one; see ForwardAddr().
	ForwardAddr string
	// ResultCodec carries FSM results back over the forwarding link; default FSMResultCodec.
	ResultCodec ResultCodec
	// VisibleWait bounds how long Apply waits for other live nodes to apply a command
	// (default DefaultVisibleWait; see barrier.go).
	VisibleWait time.Duration
	// TLS, when set, wraps Raft and forwarding connections in mutual TLS (tls.go).
	TLS *NodeTLS
}

// Store wraps hashicorp/raft: the whole flow of a topology write is Apply → (forward to the
// leader) → raft log → FSM.Apply on every node → the caller gets the FSM's result once its own
// FSM has applied the entry.
type Store struct {
	id           string
	raftPtr      atomic.Pointer[raft.Raft] // swapped only by ResetForJoin
	rc           *raft.Config
	dataDir      string
	inMemory     bool
	raftAddr     string // advertised; a transport made by ResetForJoin advertises the same
	fsm          *appliedFSM
	closers      []io.Closer
	applyTimeout time.Duration
	log          *slog.Logger
	bootstrapped bool
	restarted    bool
	codec        ResultCodec
	forwardKey   []byte
	logsVal      atomic.Value // raft.LogStore; replaced by ResetForJoin
	// resetMu orders ResetForJoin and Close (both change closers and raft); closed is under it.
	resetMu      sync.Mutex
	closed       bool
	newTransport func() (*raft.NetworkTransport, error) // nil with a caller's transport

	forwardServer *forwardServer
	forwardPool   *forwardPool
	resolver      atomic.Pointer[func(nodeID string) (string, bool)]
	liveNodes     atomic.Pointer[func() []string]
	vis           *visibility
	expedite      *electionExpediter

	closeOnce sync.Once
	closeErr  error
}

// Open starts the Raft node. Without earlier state it bootstraps a one-node cluster with itself
// as the only voter, unless cfg.Join is set (then it waits to be added by the leader).
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 7 * time.Second
	}
	if cfg.ResultCodec == nil {
		cfg.ResultCodec = FSMResultCodec{}
	}
	if cfg.FSM == nil {
		return nil, errors.New("open raft store: no FSM configured")
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	// Short timeouts make start-up and failover quick (a new leader about 1–1.5 s after the
	// old one goes silent; about 0.3 s after its process dies, expedite.go) and are still
	// generous for loopback and LAN clusters.
	rc.HeartbeatTimeout = 500 * time.Millisecond
	rc.ElectionTimeout = 500 * time.Millisecond
	rc.LeaderLeaseTimeout = 250 * time.Millisecond
	rc.CommitTimeout = 5 * time.Millisecond
	rc.SnapshotThreshold = 8192
	// Only Close shuts Raft down. A leader that removes itself (it leaves) would otherwise shut
	// down on its own; Close's Shutdown then returns without waiting for Raft's goroutines,
	// and the log store could close under one still writing ("failed to save current term:
	// database not open", a panic seen once in a test run).
	rc.ShutdownOnRemove = false
	if cfg.RaftLogOutput == nil {
		cfg.RaftLogOutput = os.Stderr
	}
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: cfg.RaftLogOutput})

	s := &Store{
		id:           cfg.NodeID,
		applyTimeout: cfg.ApplyTimeout,
		log:          cfg.Logger,
		codec:        cfg.ResultCodec,
		forwardKey:   deriveKey("warren-forward-v1", cfg.Secret),
		fsm:          newAppliedFSM(cfg.FSM),
	}
	s.expedite = newElectionExpediter(s)
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
		// With port 0 the listener's real address must be advertised, not ":0".
		var advertise net.Addr
		switch {
		case cfg.RaftAdvertise != "":
			adv, err := net.ResolveTCPAddr("tcp", cfg.RaftAdvertise)
			if err != nil {
				s.closeAll()
				return nil, fmt.Errorf("raft advertise address %q: %w", cfg.RaftAdvertise, err)
			}
			advertise = adv
		case addr.IP != nil && addr.IP.IsUnspecified() || addr.IP == nil && addr.Port != 0:
			s.closeAll()
			return nil, fmt.Errorf("raft address %q listens on every interface: set an advertise host (--advertise-host) so other nodes know where to reach it", cfg.RaftAddr)
		case addr.Port != 0:
			advertise = addr
		}
		raftKey := deriveKey("warren-raft-v1", cfg.Secret)
		tcp, err := newAuthTransport(cfg.RaftAddr, advertise, raftKey, cfg.TLS, s.log, rc.Logger, s.SuspectLeaderGone)
		if err != nil {
			s.closeAll()
			return nil, fmt.Errorf("listen raft on %s: %w", cfg.RaftAddr, err)
		}
		trans = tcp
		s.closers = append(s.closers, tcp, streamCloser{tcp})
		// Raft closes its transport when it shuts down; ResetForJoin listens again on the
		// same port, advertising the same address.
		_, port, _ := net.SplitHostPort(string(tcp.LocalAddr()))
		bind := net.JoinHostPort(addr.IP.String(), port)
		if addr.IP == nil {
			bind = ":" + port
		}
		adv, _ := net.ResolveTCPAddr("tcp", string(tcp.LocalAddr()))
		s.newTransport = func() (*raft.NetworkTransport, error) {
			return newAuthTransport(bind, adv, raftKey, cfg.TLS, s.log, rc.Logger, s.SuspectLeaderGone)
		}
	}
	s.raftAddr = string(trans.LocalAddr())
	s.logsVal.Store(logHolder{logs})

	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		s.closeAll()
		return nil, fmt.Errorf("inspect raft state: %w", err)
	}
	s.restarted = existing
	if !existing && !cfg.Join {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr()}}}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, trans, boot); err != nil {
			s.closeAll()
			return nil, fmt.Errorf("bootstrap raft: %w", err)
		}
		s.bootstrapped = true
	}
	r, err := raft.NewRaft(rc, s.fsm, logs, stable, snaps, trans)
	if err != nil {
		s.closeAll()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	s.raftPtr.Store(r)
	s.rc = rc
	s.dataDir, s.inMemory = cfg.DataDir, cfg.InMemory
	s.forwardPool = newForwardPool(s.forwardKey)
	s.vis = newVisibility(s, cfg.VisibleWait)
	s.forwardPool.tls = cfg.TLS

	if cfg.ForwardAddr != "" {
		fs, err := listenForward(cfg.ForwardAddr, s, cfg.TLS, s.log)
		if err != nil {
			s.vis.close()
			_ = s.r().Shutdown().Error()
			s.closeAll()
			return nil, err
		}
		s.forwardServer = fs
	}
	s.expedite.start()
	return s, nil
}

// Bootstrapped reports whether this start created a new cluster (no earlier Raft state).
func (s *Store) Bootstrapped() bool { return s.bootstrapped }

// NodeID is this node's Raft server ID.
// Restarted reports whether this node found Raft state of an earlier run.
func (s *Store) Restarted() bool { return s.restarted }

func (s *Store) NodeID() string { return s.id }

// Raft gives direct access to the Raft node (status pages, operator tools).
func (s *Store) Raft() *raft.Raft { return s.r() }

func (s *Store) r() *raft.Raft { return s.raftPtr.Load() }

// RaftAddr is the address this node's Raft transport advertises.
func (s *Store) RaftAddr() string { return s.raftAddr }

// ForwardAddr is the address of this node's forwarding listener ("" when not serving).
func (s *Store) ForwardAddr() string {
	if s.forwardServer == nil {
		return ""
	}
	return s.forwardServer.addr()
}

// SetForwardResolver tells the store how to find a node's forwarding address by node ID
// (normally (*Membership).ForwardAddr). It may be set after Open, since membership is usually
// started once the store's addresses are known.
func (s *Store) SetForwardResolver(resolve func(nodeID string) (addr string, ok bool)) {
	s.resolver.Store(&resolve)
}

// IsLeader reports whether this node is currently the Raft leader.
func (s *Store) IsLeader() bool { return s.r().State() == raft.Leader }

// Leader returns the current leader's ID and Raft address ("" when unknown).
func (s *Store) Leader() (id, addr string) {
	a, i := s.r().LeaderWithID()
	return string(i), string(a)
}

// LeaderCh is raft's leadership channel (true on gaining, false on losing leadership). Raft
// supports only one reader of it; the Reconciler does not use it.
func (s *Store) LeaderCh() <-chan bool { return s.r().LeaderCh() }

// Configuration returns the current Raft configuration (the voters and their addresses).
func (s *Store) Configuration() ([]raft.Server, error) {
	f := s.r().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("read raft configuration: %w", err)
	}
	return f.Configuration().Servers, nil
}

// AddVoter adds (or re-addresses) a voter; only the leader can.
func (s *Store) AddVoter(id, raftAddr string, timeout time.Duration) error {
	if err := s.r().AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, timeout).Error(); err != nil {
		return fmt.Errorf("add voter %s at %s: %w", id, raftAddr, err)
	}
	return nil
}

// RemoveServer removes a server from the Raft configuration; only the leader can.
func (s *Store) RemoveServer(id string, timeout time.Duration) error {
	if err := s.r().RemoveServer(raft.ServerID(id), 0, timeout).Error(); err != nil {
		return fmt.Errorf("remove server %s: %w", id, err)
	}
	return nil
}

// LeadershipTransfer hands leadership to another voter; a leader that is about to leave calls it
// first so that the remaining nodes elect without waiting for a timeout.
func (s *Store) LeadershipTransfer() error {
	if err := s.r().LeadershipTransfer().Error(); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

// WaitLeader blocks until this node knows a leader, or the timeout passes.
func (s *Store) WaitLeader(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if addr, _ := s.r().LeaderWithID(); addr != "" {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ErrNoLeader
}

// AppliedIndex is the Raft index of the last command applied to the local FSM.
func (s *Store) AppliedIndex() uint64 { return s.fsm.appliedIndex() }

// Apply commits one encoded command and returns what the FSM's Apply returned for it. On a
// follower the command is forwarded to the leader. On return the local FSM has applied the
// command (read-your-writes for the caller), and so has every other live node, within the
// bound described in barrier.go (visible on -ok, whichever node a client talks to next).
// Without a leader it fails with ErrNoLeader within the apply timeout.
func (s *Store) Apply(cmd []byte) (any, error) {
	if no, why := s.cannotElect(); no {
		return nil, fmt.Errorf("%w: %s", ErrNoLeader, why)
	}
	deadline := time.Now().Add(s.applyTimeout)
	var lastErr error
	for {
		res, retry, err := s.applyOnce(cmd, deadline)
		if !retry {
			return res, err
		}
		lastErr = err
		if time.Until(deadline) <= 0 {
			if lastErr == nil {
				lastErr = errors.New("no leader known")
			}
			return nil, fmt.Errorf("%w: gave up after %s: %w", ErrNoLeader, s.applyTimeout, lastErr)
		}
		time.Sleep(min(50*time.Millisecond, time.Until(deadline)))
	}
}

// applyOnce makes one attempt; retry says the attempt found no usable leader and may be repeated
// without risk of the command having been committed twice by this attempt. A command that
// changed something is also waited for on the other live nodes (barrier.go); the leader that
// committed it has applied it already.
func (s *Store) applyOnce(cmd []byte, deadline time.Time) (res any, retry bool, err error) {
	if s.r().State() == raft.Leader {
		f := s.r().Apply(cmd, time.Until(deadline))
		if err := f.Error(); err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
				errors.Is(err, raft.ErrEnqueueTimeout) {
				return nil, true, err
			}
			return nil, false, fmt.Errorf("raft apply: %w", err)
		}
		if changedState(f.Response()) {
			s.nudgeFollowers()
			s.vis.waitPeers(f.Index(), s.id)
		}
		return f.Response(), false, nil
	}
	addr, leaderID := s.r().LeaderWithID()
	if addr == "" {
		return nil, true, errors.New("no leader known")
	}
	if leaderID == raft.ServerID(s.id) {
		return nil, true, errors.New("leadership changing")
	}
	fwdAddr, err := s.resolveForward(string(leaderID))
	if err != nil {
		return nil, true, err
	}
	index, payload, err := s.forwardPool.apply(fwdAddr, cmd, deadline)
	if err != nil {
		var refused *remoteFailure
		retry := !errors.As(err, &refused) && !errors.Is(err, errStoreClosed)
		return nil, retry, fmt.Errorf("forward to leader %s at %s: %w", leaderID, fwdAddr, err)
	}
	result, err := s.codec.Decode(payload)
	if err != nil {
		return nil, false, fmt.Errorf("decode result forwarded by leader %s: %w", leaderID, err)
	}
	// The other followers apply the command about when this one does: ask them while this
	// node's own FSM catches up, not after.
	var peersDone chan struct{}
	if changedState(result) {
		peersDone = make(chan struct{})
		go func() {
			defer close(peersDone)
			s.vis.waitPeers(index, string(leaderID))
		}()
	}
	localErr := s.fsm.waitApplied(index, deadline)
	if peersDone != nil {
		<-peersDone
	}
	if localErr != nil {
		return nil, false, fmt.Errorf("%w: command committed at index %d but not yet applied here: %w", ErrNoLeader, index, localErr)
	}
	return result, false, nil
}

// nudgeFollowers makes the leader send the new commit index to followers now rather than at
// the next CommitTimeout tick (see forwardServer.nudge).
func (s *Store) nudgeFollowers() {
	if s.forwardServer == nil {
		return
	}
	select {
	case s.forwardServer.nudge <- struct{}{}:
	default:
	}
}

func (s *Store) resolveForward(leaderID string) (string, error) {
	resolve := s.resolver.Load()
	if resolve == nil {
		return "", fmt.Errorf("no forwarding resolver set: cannot reach leader %s", leaderID)
	}
	addr, ok := (*resolve)(leaderID)
	if !ok || addr == "" {
		return "", fmt.Errorf("no forwarding address known for leader %s", leaderID)
	}
	return addr, nil
}

// applyAsLeader serves a forwarded command: commit it here and return its index and encoded
// result. notLeader reports that this node cannot serve it (the follower looks again).
func (s *Store) applyAsLeader(cmd []byte, timeout time.Duration) (index uint64, payload []byte, notLeader bool, err error) {
	if s.r().State() != raft.Leader {
		return 0, nil, true, raft.ErrNotLeader
	}
	f := s.r().Apply(cmd, timeout)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
			errors.Is(err, raft.ErrEnqueueTimeout) {
			return 0, nil, true, err
		}
		return 0, nil, false, fmt.Errorf("raft apply: %w", err)
	}
	payload, err = s.codec.Encode(f.Response())
	if err != nil {
		return 0, nil, false, fmt.Errorf("encode result: %w", err)
	}
	return f.Index(), payload, false, nil
}

// Barrier waits until every command committed before it is applied to the local FSM; used at
// start-up so the node serves clients only with its full topology. On a follower (raft's own
// Barrier works only on the leader) it asks the leader for a barrier over the forwarding link
// and waits until the local FSM has caught up with it; when the leader cannot be asked it falls
// back to the commit index this node knows.
func (s *Store) Barrier(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var target uint64
	for {
		if s.r().State() == raft.Leader {
			err := s.r().Barrier(time.Until(deadline)).Error()
			if err == nil || !(errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost)) || time.Now().After(deadline) {
				return err
			}
			continue // lost leadership meanwhile: ask the new leader
		}
		target = s.r().CommitIndex()
		_, leaderID := s.r().LeaderWithID()
		if leaderID == "" || leaderID == raft.ServerID(s.id) {
			break
		}
		addr, err := s.resolveForward(string(leaderID))
		if err != nil {
			break
		}
		index, err := s.forwardPool.barrier(addr, deadline)
		if err == nil {
			target = max(target, index)
			break
		}
		// The node we took for the leader is not it any more (an election is under way, as
		// when this node restarts right after the leader died): look it up again.
		if time.Now().After(deadline) {
			return fmt.Errorf("barrier via leader %s: %w", leaderID, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for s.r().AppliedIndex() < target {
		if time.Now().After(deadline) {
			return fmt.Errorf("barrier: raft did not apply index %d within %s", target, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Raft counts an entry applied once handed to the FSM goroutine; wait for the FSM itself.
	if cmdIndex := s.lastCommandAtOrBefore(target); cmdIndex > 0 {
		if err := s.fsm.waitApplied(cmdIndex, deadline); err != nil {
			return fmt.Errorf("barrier: %w", err)
		}
	}
	return nil
}

// barrierAsLeader serves a follower's barrier request.
func (s *Store) barrierAsLeader(timeout time.Duration) (index uint64, notLeader bool, err error) {
	if s.r().State() != raft.Leader {
		return 0, true, raft.ErrNotLeader
	}
	if err := s.r().Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, true, err
		}
		return 0, false, fmt.Errorf("raft barrier: %w", err)
	}
	// The barrier is committed once its future resolves, so the commit index covers it.
	return s.r().CommitIndex(), false, nil
}

// lastCommandAtOrBefore finds the newest FSM command entry at or below index; configuration
// and no-op entries never reach the FSM, so their indexes cannot be waited for. 0 means none
// found nearby (e.g. compacted into a snapshot, which raft restores before advancing).
func (s *Store) lastCommandAtOrBefore(index uint64) uint64 {
	logs := s.logsVal.Load().(logHolder).LogStore
	first, err := logs.FirstIndex()
	if err != nil {
		return 0
	}
	const lookBack = 64
	for i := index; i >= first && i > 0 && index-i < lookBack; i-- {
		var entry raft.Log
		if err := logs.GetLog(i, &entry); err != nil {
			return 0
		}
		if entry.Type == raft.LogCommand {
			return i
		}
	}
	return 0
}

// Stats exposes Raft's own status map (term, indexes, state) for status pages.
func (s *Store) Stats() map[string]string { return s.r().Stats() }

// Close stops the forwarding listener, shuts Raft down and releases the log store and transport.
func (s *Store) Close() error {
	s.resetMu.Lock()
	defer s.resetMu.Unlock()
	s.closed = true
	s.closeOnce.Do(func() {
		if s.forwardServer != nil {
			s.forwardServer.close()
		}
		s.vis.close()
		s.expedite.close()
		s.forwardPool.close()
		s.closeErr = s.r().Shutdown().Error()
		if s.forwardServer != nil {
			s.forwardServer.wait()
		}
		s.fsm.close()
		s.closeAll()
	})
	return s.closeErr
}

func (s *Store) closeAll() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		_ = s.closers[i].Close()
	}
	s.closers = nil
}

// logHolder gives atomic.Value one concrete type whatever the log store is.
type logHolder struct{ raft.LogStore }

// ResetForJoin throws this node's Raft state away and starts Raft again empty, as a node that
// joins an existing cluster: it waits until that cluster's leader adds it (`node join`). Only
// for a node alone in its own one-node cluster; the caller checks that its topology held
// nothing worth keeping and resets the FSM to its initial state first.
func (s *Store) ResetForJoin() error {
	s.resetMu.Lock()
	defer s.resetMu.Unlock()
	if s.closed {
		return errors.New("the raft store is closed")
	}
	servers, err := s.Configuration()
	if err != nil {
		return err
	}
	if len(servers) > 1 {
		return errors.New("this node is already part of a cluster of several nodes")
	}
	if s.newTransport == nil {
		return errors.New("this node's raft transport cannot be restarted")
	}
	if err := s.r().Shutdown().Error(); err != nil {
		return fmt.Errorf("stop raft: %w", err)
	}
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if s.inMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		old := s.logsVal.Load().(logHolder).LogStore
		for i, c := range s.closers {
			if c == old.(io.Closer) {
				s.closers = append(s.closers[:i], s.closers[i+1:]...)
				_ = c.Close()
				break
			}
		}
		dir := filepath.Join(s.dataDir, "raft")
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove raft state: %w", err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("create raft dir: %w", err)
		}
		bolt, err := raftboltdb.NewBoltStore(filepath.Join(dir, "raft.db"))
		if err != nil {
			return fmt.Errorf("open raft log %s: %w", dir, err)
		}
		s.closers = append(s.closers, bolt)
		fileSnaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, s.rc.Logger)
		if err != nil {
			return fmt.Errorf("open raft snapshots: %w", err)
		}
		logs, stable, snaps = bolt, bolt, fileSnaps
	}
	tcp, err := s.newTransport()
	if err != nil {
		return fmt.Errorf("listen raft again: %w", err)
	}
	s.closers = append(s.closers, tcp, streamCloser{tcp})
	s.fsm.reset()
	s.vis.forget()
	r, err := raft.NewRaft(s.rc, s.fsm, logs, stable, snaps, tcp)
	if err != nil {
		return fmt.Errorf("restart raft empty: %w", err)
	}
	s.logsVal.Store(logHolder{logs})
	s.raftPtr.Store(r)
	s.log.Info("raft state discarded; waiting to be added to a cluster")
	return nil
}

// streamCloser closes a TCP transport's pooled outgoing connections, which Close leaves open;
// otherwise each peer's reader goroutine for them would outlive this store.
type streamCloser struct{ t *raft.NetworkTransport }

func (c streamCloser) Close() error {
	c.t.CloseStreams()
	return nil
}
