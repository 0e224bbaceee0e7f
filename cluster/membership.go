package cluster

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node tells the others about itself through gossip.
type Meta struct {
	AMQPAddr    string `json:"amqp,omitempty"`
	RaftAddr    string `json:"raft,omitempty"`
	DataAddr    string `json:"data,omitempty"`
	HTTPAddr    string `json:"http,omitempty"`
	ForwardAddr string `json:"fwd,omitempty"`
	// Leaving is set just before a graceful leave, so that the others record the departure as
	// "left" (remove from Raft) rather than "dead" (keep: it may come back with its data).
	// memberlist itself tells both apart only internally.
	Leaving bool `json:"leaving,omitempty"`
}

// MemberState is a member's state as seen by this node.
type MemberState uint8

const (
	MemberAlive MemberState = iota + 1
	// MemberSuspect is part of the model but memberlist v0.5.4 does not expose suspicion to
	// delegates, so a suspected node is reported alive until it is declared dead.
	MemberSuspect
	MemberDead
	MemberLeft
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberSuspect:
		return "suspect"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return "MemberState(" + strconv.Itoa(int(s)) + ")"
}

// Member is one node of the cluster as known through gossip.
type Member struct {
	ID         string
	GossipAddr string
	Meta       Meta
	State      MemberState
	// Since is when this node saw the member enter State (used by ReapAfter).
	Since time.Time
}

// MemberEventKind says what happened to a member.
type MemberEventKind uint8

const (
	MemberJoined MemberEventKind = iota + 1
	MemberLeftGracefully
	MemberFailed
	MemberUpdated
)

func (k MemberEventKind) String() string {
	switch k {
	case MemberJoined:
		return "join"
	case MemberLeftGracefully:
		return "leave"
	case MemberFailed:
		return "fail"
	case MemberUpdated:
		return "update"
	}
	return "MemberEventKind(" + strconv.Itoa(int(k)) + ")"
}

// MemberEvent reports a change of one member.
type MemberEvent struct {
	Kind   MemberEventKind
	Member Member
}

// MembershipConfig configures gossip membership.
type MembershipConfig struct {
	NodeID string
	// GossipAddr is host:port to bind and advertise (UDP and TCP); port 0 picks one.
	GossipAddr string
	Meta       Meta
	// Join lists seed gossip addresses; empty starts a new gossip cluster. A seed equal to this
	// node's own address is skipped, so every node of a cluster can be given the same list.
	Join []string
	// JoinWait is how long StartMembership keeps trying the seeds before it gives up with an
	// error (0: one attempt). With JoinOptional it starts anyway and keeps trying in the
	// background: a node with state of its own (or the bootstrapping one) must come up even
	// when it is the first of its cluster to start.
	JoinWait     time.Duration
	JoinOptional bool
	// AdvertiseHost is the IP others reach this node's gossip port on when GossipAddr binds
	// every interface (containers); empty lets memberlist pick a private address.
	AdvertiseHost string
	// RejoinInterval is how often dead members (and, when alone, the seeds) are dialled again:
	// memberlist stops gossiping to a dead node after a few seconds, so without this a node
	// that comes back on its own, or the far side of a healed partition, would stay apart.
	// Default 2s.
	RejoinInterval time.Duration
	// Secret is the cluster secret; its SHA-256-derived 32-byte key encrypts and authenticates
	// all gossip. Empty disables encryption (single node or development only).
	Secret string
	Logger *slog.Logger
	// EventBuffer is the capacity of each subscriber's channel (default 256); events beyond it
	// are dropped, which is why consumers also reconcile periodically.
	EventBuffer int
}

// Membership is this node's view of the cluster through hashicorp/memberlist.
type Membership struct {
	ml       *memberlist.Memberlist
	localID  string
	log      *slog.Logger
	eventBuf int

	mu      sync.Mutex
	meta    Meta
	members map[string]*Member
	subs    map[chan MemberEvent]struct{}
	events  chan MemberEvent
	dropped uint64
	closed  bool

	seeds      []string
	rejoinStop chan struct{}
	rejoinDone chan struct{}
	stopRejoin sync.Once

	leaveOnce    sync.Once
	shutdownOnce sync.Once
	shutdownErr  error
}

// Failure detection tuned for loopback and LAN: a node is probed roughly every 200–400 ms, a
// probe fails after 100 ms, and a suspect is declared dead 400 ms later (SuspicionMult 2 with
// fewer than 10 nodes), so a kill -9'd node is dead on the others within about 1–1.5 s.
const (
	gossipProbeInterval  = 200 * time.Millisecond
	gossipProbeTimeout   = 100 * time.Millisecond
	gossipSuspicionMult  = 2
	gossipInterval       = 100 * time.Millisecond
	gossipPushPull       = 5 * time.Second
	gossipTCPTimeout     = time.Second
	gossipAwarenessLimit = 2
)

// StartMembership creates the gossip member and joins the seeds. Joining fails with an error
// naming the seeds when none answers (including when they use another cluster secret).
func StartMembership(cfg MembershipConfig) (*Membership, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("membership: empty node id")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = 256
	}
	host, portStr, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip address %q: %w", cfg.GossipAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("gossip address %q: bad port", cfg.GossipAddr)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if _, err := encodeMeta(cfg.Meta); err != nil {
		return nil, err
	}
	m := &Membership{
		localID:  cfg.NodeID,
		log:      cfg.Logger,
		eventBuf: cfg.EventBuffer,
		meta:     cfg.Meta,
		members:  make(map[string]*Member),
		subs:     make(map[chan MemberEvent]struct{}),
	}
	m.events = m.subscribeLocked()

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeID
	mc.BindAddr, mc.BindPort = host, port
	if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
		mc.AdvertiseAddr, mc.AdvertisePort = host, port
	} else if cfg.AdvertiseHost != "" {
		ip, err := resolveIP(cfg.AdvertiseHost)
		if err != nil {
			return nil, fmt.Errorf("gossip advertise host: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ip.String(), port
	}
	mc.ProbeInterval = gossipProbeInterval
	mc.ProbeTimeout = gossipProbeTimeout
	mc.SuspicionMult = gossipSuspicionMult
	mc.SuspicionMaxTimeoutMult = 2
	mc.GossipInterval = gossipInterval
	mc.PushPullInterval = gossipPushPull
	mc.TCPTimeout = gossipTCPTimeout
	mc.AwarenessMaxMultiplier = gossipAwarenessLimit
	mc.GossipToTheDeadTime = 5 * time.Second
	// A node restarted on another address (new container IP, port 0) may reclaim its name once
	// it has been dead this long; earlier, the new address is taken for an impostor.
	mc.DeadNodeReclaimTime = 10 * time.Second
	mc.Delegate = (*metaDelegate)(m)
	mc.Events = (*eventDelegate)(m)
	mc.Logger = log.New(&memberlistLogWriter{log: cfg.Logger.With("component", "memberlist")}, "", 0)
	if cfg.Secret != "" {
		mc.SecretKey = deriveKey("warren-gossip-v1", cfg.Secret)
	} else {
		cfg.Logger.Warn("no cluster secret: gossip is neither encrypted nor authenticated")
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.GossipAddr, err)
	}
	m.ml = ml
	m.seeds = withoutSelf(cfg.Join, ml.LocalNode().Address(), cfg.GossipAddr)
	if len(m.seeds) > 0 {
		if err := m.joinSeeds(cfg.JoinWait); err != nil {
			if !cfg.JoinOptional {
				_ = m.Shutdown()
				return nil, err
			}
			m.log.Warn("no seed answered yet; starting alone and retrying in the background", "seeds", m.seeds, "err", err)
		}
	}
	if cfg.RejoinInterval <= 0 {
		cfg.RejoinInterval = 2 * time.Second
	}
	m.rejoinStop, m.rejoinDone = make(chan struct{}), make(chan struct{})
	go m.rejoinLoop(cfg.RejoinInterval)
	return m, nil
}

// joinSeeds tries the seeds until one answers or wait has passed.
func (m *Membership) joinSeeds(wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		n, err := m.ml.Join(m.seeds)
		if n > 0 {
			return nil
		}
		if err == nil {
			err = errors.New("no seed answered")
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("join cluster via %v: no seed answered (unreachable, or a different cluster secret): %w", m.seeds, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// rejoinLoop dials dead members, and the seeds while no other member is alive, every interval.
func (m *Membership) rejoinLoop(interval time.Duration) {
	defer close(m.rejoinDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-m.rejoinStop:
			return
		case <-t.C:
		}
		var dead []string
		aliveOthers := 0
		for _, mem := range m.Members() {
			switch {
			case mem.ID == m.localID:
			case mem.State == MemberAlive:
				aliveOthers++
			case mem.State == MemberDead && mem.GossipAddr != "":
				dead = append(dead, mem.GossipAddr)
			}
		}
		if aliveOthers == 0 {
			m.mu.Lock()
			dead = append(dead, m.seeds...)
			m.mu.Unlock()
		}
		for _, addr := range dead {
			select {
			case <-m.rejoinStop:
				return
			default:
			}
			if n, _ := m.ml.Join([]string{addr}); n > 0 {
				m.log.Info("rejoined gossip with a member thought dead or a seed", "addr", addr)
			}
		}
	}
}

func (m *Membership) haltRejoin() {
	m.stopRejoin.Do(func() {
		if m.rejoinStop != nil {
			close(m.rejoinStop)
			<-m.rejoinDone
		}
	})
}

// withoutSelf drops this node's own addresses from a seed list.
func withoutSelf(seeds []string, self ...string) []string {
	out := make([]string, 0, len(seeds))
	for _, s := range seeds {
		if !slices.Contains(self, s) {
			out = append(out, s)
		}
	}
	return out
}

// resolveIP turns an IP or a host name into one IP address.
func resolveIP(host string) (net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip, nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return nil, fmt.Errorf("resolve %q: %w", host, err)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip, nil
		}
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %q: no address", host)
	}
	return ips[0], nil
}

// Join contacts seeds of a running cluster now (`node join`) and keeps them as seeds for the
// background rejoin; it fails when none answers.
func (m *Membership) Join(seeds []string) error {
	seeds = withoutSelf(seeds, m.ml.LocalNode().Address())
	if len(seeds) == 0 {
		return errors.New("join: no seed other than this node")
	}
	n, err := m.ml.Join(seeds)
	if n == 0 {
		if err == nil {
			err = errors.New("no seed answered")
		}
		return fmt.Errorf("join cluster via %v: no seed answered (unreachable, or a different cluster secret): %w", seeds, err)
	}
	m.mu.Lock()
	m.seeds = seeds
	m.mu.Unlock()
	return nil
}

// AdvertiseHost is the IP other nodes reach this one on.
func (m *Membership) AdvertiseHost() string { return m.ml.LocalNode().Addr.String() }

// LocalID is this node's ID.
func (m *Membership) LocalID() string { return m.localID }

// GossipAddr is the address this node gossips on (useful when started with port 0).
func (m *Membership) GossipAddr() string { return m.ml.LocalNode().Address() }

// Members lists every member this node has seen, including dead and left ones, sorted by ID.
func (m *Membership) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.members))
	for _, mem := range m.members {
		out = append(out, *mem)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Member returns one member by ID.
func (m *Membership) Member(id string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mem := m.members[id]
	if mem == nil {
		return Member{}, false
	}
	return *mem, true
}

// ForwardAddr returns a member's forwarding address; it fits Store.SetForwardResolver.
func (m *Membership) ForwardAddr(id string) (string, bool) {
	mem, ok := m.Member(id)
	if !ok || mem.Meta.ForwardAddr == "" {
		return "", false
	}
	return mem.Meta.ForwardAddr, true
}

// Events is the channel of member events opened at start (one reader). Events are dropped
// when the reader falls behind by more than the buffer; it is closed by Shutdown.
func (m *Membership) Events() <-chan MemberEvent { return m.events }

// Subscribe opens another event channel; cancel closes it. Dropping applies as for Events.
func (m *Membership) Subscribe() (events <-chan MemberEvent, cancel func()) {
	m.mu.Lock()
	ch := m.subscribeLocked()
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if _, ok := m.subs[ch]; ok {
			delete(m.subs, ch)
			close(ch)
		}
	}
}

func (m *Membership) subscribeLocked() chan MemberEvent {
	ch := make(chan MemberEvent, m.eventBuf)
	if m.closed {
		close(ch)
		return ch
	}
	m.subs[ch] = struct{}{}
	return ch
}

// UpdateMeta replaces this node's metadata and gossips it, waiting up to timeout.
func (m *Membership) UpdateMeta(meta Meta, timeout time.Duration) error {
	if _, err := encodeMeta(meta); err != nil {
		return err
	}
	m.mu.Lock()
	m.meta = meta
	m.mu.Unlock()
	if err := m.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip new metadata: %w", err)
	}
	return nil
}

// Leave announces a graceful departure (the leader then removes this node from Raft) and
// waits up to timeout for the announcement to spread. Call Shutdown afterwards.
func (m *Membership) Leave(timeout time.Duration) error {
	var err error
	m.haltRejoin()
	m.leaveOnce.Do(func() {
		m.mu.Lock()
		closed := m.closed
		meta := m.meta
		m.mu.Unlock()
		if closed {
			err = errors.New("leave after shutdown")
			return
		}
		meta.Leaving = true
		if uerr := m.UpdateMeta(meta, timeout); uerr != nil {
			m.log.Warn("leave: could not gossip leaving flag; others may record this node as dead", "err", uerr)
		}
		if lerr := m.ml.Leave(timeout); lerr != nil {
			err = fmt.Errorf("leave gossip cluster: %w", lerr)
		}
	})
	return err
}

// Shutdown stops gossip without announcing anything (the others will declare this node dead
// unless Leave was called first) and closes every event channel.
func (m *Membership) Shutdown() error {
	m.haltRejoin()
	m.shutdownOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		for ch := range m.subs {
			close(ch)
		}
		m.subs = nil
		m.mu.Unlock()
		if m.ml != nil {
			if err := m.ml.Shutdown(); err != nil {
				m.shutdownErr = fmt.Errorf("stop gossip: %w", err)
			}
		}
	})
	return m.shutdownErr
}

// record updates the member table and tells the subscribers; it runs on memberlist goroutines
// and never blocks them.
func (m *Membership) record(n *memberlist.Node, kind MemberEventKind) {
	meta, err := decodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("membership: ignoring undecodable metadata", "member", n.Name, "err", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	mem := m.members[n.Name]
	if mem == nil {
		mem = &Member{ID: n.Name}
		m.members[n.Name] = mem
	}
	prevState := mem.State
	mem.GossipAddr = n.Address()
	if err == nil && (kind != MemberFailed || len(n.Meta) > 0) {
		mem.Meta = meta
	}
	switch kind {
	case MemberJoined:
		mem.State = MemberAlive
	case MemberFailed:
		// NotifyLeave covers both; the leaving flag gossiped before a graceful leave decides.
		if mem.Meta.Leaving {
			kind, mem.State = MemberLeftGracefully, MemberLeft
		} else {
			mem.State = MemberDead
		}
	case MemberUpdated:
		if mem.State == 0 {
			mem.State = MemberAlive
		}
	}
	if mem.State != prevState {
		mem.Since = time.Now()
	}
	m.log.Info("member "+kind.String(), "member", mem.ID, "state", mem.State.String(), "gossip", mem.GossipAddr)
	ev := MemberEvent{Kind: kind, Member: *mem}
	for ch := range m.subs {
		select {
		case ch <- ev:
		default:
			m.dropped++
			m.log.Warn("membership: subscriber behind, event dropped", "member", mem.ID, "kind", kind.String(), "dropped_total", m.dropped)
		}
	}
}

type eventDelegate Membership

func (d *eventDelegate) NotifyJoin(n *memberlist.Node) { (*Membership)(d).record(n, MemberJoined) }
func (d *eventDelegate) NotifyLeave(n *memberlist.Node) {
	(*Membership)(d).record(n, MemberFailed)
}
func (d *eventDelegate) NotifyUpdate(n *memberlist.Node) { (*Membership)(d).record(n, MemberUpdated) }

type metaDelegate Membership

func (d *metaDelegate) NodeMeta(limit int) []byte {
	m := (*Membership)(d)
	m.mu.Lock()
	meta := m.meta
	m.mu.Unlock()
	b, err := encodeMeta(meta)
	if err != nil || len(b) > limit {
		// Checked when the meta was set; an empty meta beats a memberlist panic.
		return nil
	}
	return b
}
func (d *metaDelegate) NotifyMsg([]byte)                {}
func (d *metaDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *metaDelegate) LocalState(bool) []byte          { return nil }
func (d *metaDelegate) MergeRemoteState([]byte, bool)   {}

func encodeMeta(meta Meta) ([]byte, error) {
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, gossip allows %d", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

func decodeMeta(b []byte) (Meta, error) {
	var meta Meta
	if len(b) == 0 {
		return meta, nil
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return Meta{}, fmt.Errorf("decode node metadata: %w", err)
	}
	return meta, nil
}

// memberlistLogWriter turns memberlist's "[LEVEL] memberlist: text" lines into slog records.
type memberlistLogWriter struct{ log *slog.Logger }

func (w *memberlistLogWriter) Write(p []byte) (int, error) {
	line := bytes.TrimSpace(p)
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{"[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError} {
		if bytes.HasPrefix(line, []byte(prefix)) {
			level = l
			line = bytes.TrimSpace(line[len(prefix):])
			break
		}
	}
	w.log.Log(context.Background(), level, string(bytes.TrimPrefix(line, []byte("memberlist: "))))
	return len(p), nil
}
