// Package node assembles one running Warren node from its parts: the message store, the
// topology FSM, the Raft store, the broker runtime, gossip membership, the data links and the
// AMQP and HTTP servers. cmd/node and the tests start nodes through it, so both run exactly the
// same wiring. It also holds what a node does as a cluster member: re-homing a dead node's
// queues (on the Raft leader), forget, join, leave and rebalance.
package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/mgmt"
	"github.com/warrenmq/warren/msgstore"
	"github.com/warrenmq/warren/server"
)

// Config is what a node needs to start.
type Config struct {
	ID         string
	DataDir    string
	AMQPAddr   string
	HTTPAddr   string
	RaftAddr   string
	GossipAddr string
	Logger     *slog.Logger
	// RaftTransport replaces the TCP transport (tests); InMemoryRaft keeps the log in memory.
	RaftTransport raft.Transport
	InMemoryRaft  bool
	RaftLogOutput io.Writer // hashicorp/raft's own log (default stderr)
	// Join lists gossip addresses of running nodes to join; empty starts (or restarts) a
	// cluster of its own. ClusterSecret must be the same on every node: Raft, gossip,
	// forwarded writes and data links are keyed by it. Empty on a node that joins nobody
	// generates one (kept in DataDir/cluster-secret); empty with Join is an error. ForwardAddr serves topology writes forwarded
	// from followers. ReapAfter (0: never) removes nodes dead that long from Raft.
	Join          []string
	ClusterSecret string
	ForwardAddr   string
	DataAddr      string // node-to-node data links (forwarded publishes); "" with no gossip
	ReapAfter     time.Duration
	// AdvertiseHost is the host other nodes (and `node status`) use for the addresses above
	// that bind every interface (0.0.0.0 in a container).
	AdvertiseHost string
	// Bootstrap starts a new cluster when this node has no state even though Join is set, so
	// every node of a static deployment (docker-compose) can carry the same seed list; the
	// seeds are then dialled in the background. Exactly one node of a new cluster may have it.
	Bootstrap bool
	// JoinWait is how long a new node keeps dialling the seeds before giving up (default 60s:
	// containers start in any order).
	JoinWait time.Duration
	// Server tunes the AMQP server (heartbeat, frame size, loopback users); Node is filled in.
	Server server.Config
	// AMQPSAddr serves AMQP over TLS and HTTPSAddr the HTTP API over TLS ("" = off), both
	// with the certificate files in TLS (required by either). TLSOnly refuses plaintext
	// client listeners: AMQPAddr and HTTPAddr must then be empty.
	AMQPSAddr string
	HTTPSAddr string
	TLS       *server.TLSFiles
	TLSOnly   bool
	// ClusterTLS puts Raft, forwarding and data links in mutual TLS with the operator's
	// certificates, on top of the cluster secret (nil: the secret alone).
	ClusterTLS *cluster.TLSFiles
}

// Node is a started node.
type Node struct {
	cfg       Config
	closeOnce sync.Once
	closeErr  error
	log       *slog.Logger
	FSM       *fsm.FSM
	Broker    *broker.Node
	Store     *cluster.Store
	AMQP      *server.Server
	HTTP      *mgmt.Server
	HTTPS     *mgmt.Server
	TLS       *server.TLSSource // nil without TLS listeners; ReloadTLS re-reads its files
	Messages  *msgstore.Store
	Members   *cluster.Membership

	reconciler  *cluster.Reconciler
	clusterTLS  *cluster.NodeTLS // --cluster-tls-*; nil without
	links       *datalink.Server
	failStop    chan struct{}
	failDone    chan struct{}
	fastFail    chan fastFailure
	fastDone    chan struct{}
	leaveMu     sync.Mutex
	done        chan struct{}
	unsubscribe func()
}

// Start brings a node up: Raft (bootstrapping a one-node cluster on first start), the
// topology replayed into the FSM, transient state of a previous run dropped, the default
// user created on first start, then the AMQP listener.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("node", cfg.ID)
	n := &Node{cfg: cfg, log: log, done: make(chan struct{})}
	if err := claimDataDir(cfg.DataDir, cfg.ID); err != nil {
		return nil, err
	}
	if err := checkTLSConfig(cfg); err != nil {
		return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
	}
	if err := resolveSecret(&cfg, log); err != nil {
		return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
	}
	n.cfg = cfg
	msgs, rec, err := msgstore.Open(msgstore.Options{Dir: filepath.Join(cfg.DataDir, "messages"), Logger: log})
	if err != nil {
		return nil, fmt.Errorf("start node %s: open message store: %w", cfg.ID, err)
	}
	n.Messages = msgs
	if rec.TruncatedBytes > 0 {
		log.Warn("message store: dropped a torn or corrupt tail (a write cut short by a crash)", "bytes", rec.TruncatedBytes)
	}
	n.FSM = fsm.New(fsm.Options{DecodeArgs: broker.DecodeArgs})
	// Before Raft replays the topology: the broker creates the queues it replays, and the
	// durable ones keep their messages in msgs. The store, the live-node list and the data
	// links exist only after Raft started, so they are attached below (atomically).
	n.Broker = broker.New(broker.Config{ID: cfg.ID, FSM: n.FSM, Logger: log, Messages: msgs})
	if cfg.ClusterTLS != nil {
		if n.clusterTLS, err = cluster.LoadNodeTLS(*cfg.ClusterTLS); err != nil {
			n.Close()
			return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
		}
	}
	raftAdvertise := advertised(cfg.RaftAddr, cfg.AdvertiseHost)
	if raftAdvertise == cfg.RaftAddr {
		raftAdvertise = ""
	}
	store, err := cluster.Open(cluster.Config{
		NodeID: cfg.ID, DataDir: cfg.DataDir, RaftAddr: cfg.RaftAddr, FSM: n.FSM, Logger: log,
		Transport: cfg.RaftTransport, InMemory: cfg.InMemoryRaft, RaftLogOutput: cfg.RaftLogOutput,
		Join: len(cfg.Join) > 0 && !cfg.Bootstrap, Secret: cfg.ClusterSecret, ForwardAddr: cfg.ForwardAddr,
		RaftAdvertise: raftAdvertise, TLS: n.clusterTLS,
	})
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
	}
	n.Store = store
	n.Broker.AttachStore(store)
	joinWait := cfg.JoinWait
	if joinWait == 0 {
		joinWait = 60 * time.Second
	}
	if cfg.GossipAddr != "" {
		optional := store.Restarted() || store.Bootstrapped()
		if optional {
			joinWait = 0 // one attempt now; the rejoin loop keeps dialling in the background
		}
		// The data link listens before gossip starts, so the address is in the metadata this
		// node joins with: a node that learns of it at the join can forward to it at once (a
		// client may declare a queue here and publish to it through another node right away).
		var gossip atomic.Pointer[cluster.Membership] // set once gossip runs; links resolve through it
		dataAddr := ""
		if cfg.DataAddr != "" {
			lcfg := datalink.Config{NodeID: cfg.ID, Secret: cfg.ClusterSecret, Logger: log}
			if n.clusterTLS != nil {
				lcfg.ServerTLS, lcfg.ClientTLS = n.clusterTLS.Server, n.clusterTLS.Client
			}
			// Links first: a peer's request may need a link back as soon as the server listens.
			n.Broker.AttachLinks(lcfg, func(id string) (string, bool) {
				members := gossip.Load()
				if members == nil {
					return "", false
				}
				m, ok := members.Member(id)
				return m.Meta.DataAddr, ok && m.Meta.DataAddr != ""
			})
			n.links, err = datalink.Listen(cfg.DataAddr, lcfg, n.Broker.LinkHandler())
			if err != nil {
				n.Close()
				return nil, fmt.Errorf("start node %s: data link: %w", cfg.ID, err)
			}
			// A wildcard listen address without --advertise-host is completed below, once
			// gossip knows this node's address.
			if a := advertised(n.links.Addr(), cfg.AdvertiseHost); dialable(a) {
				dataAddr = a
			}
		}
		// After Raft listens, so the leader can add this node as soon as gossip announces it.
		n.Members, err = cluster.StartMembership(cluster.MembershipConfig{
			NodeID: cfg.ID, GossipAddr: cfg.GossipAddr, Join: cfg.Join, Secret: cfg.ClusterSecret, Logger: log,
			AdvertiseHost: cfg.AdvertiseHost,
			// A new node must find the cluster; one that has state, or starts a new cluster,
			// comes up alone if need be and keeps dialling the seeds.
			JoinWait: joinWait, JoinOptional: optional,
			Meta: cluster.Meta{AMQPAddr: cfg.AMQPAddr, RaftAddr: store.RaftAddr(), HTTPAddr: cfg.HTTPAddr, ForwardAddr: store.ForwardAddr(), DataAddr: dataAddr},
		})
		if err != nil {
			n.Close()
			return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
		}
		gossip.Store(n.Members)
		store.SetForwardResolver(n.Members.ForwardAddr)
		n.Broker.SetLiveNodes(n.aliveMembers)
		store.SetLiveNodes(n.aliveMembers)
		n.reconciler = cluster.StartReconciler(cluster.ReconcilerConfig{Store: store, Members: n.Members, ReapAfter: cfg.ReapAfter, Logger: log})
		events, unsubscribe := n.Members.Subscribe()
		n.failStop, n.failDone, n.unsubscribe = make(chan struct{}), make(chan struct{}), unsubscribe
		go n.watchFailures(events, n.failStop)
		n.fastFail, n.fastDone = make(chan fastFailure, 1), make(chan struct{})
		go n.runFastFailover(n.failStop)
		n.Broker.OnPeerDown(n.fastFailover)
	}
	if err := n.prepareTopology(); err != nil {
		n.Close()
		return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
	}
	n.recoverMessages(rec)
	n.Broker.StartReplication()
	scfg := cfg.Server
	scfg.Node = n.Broker
	scfg.Logger = log
	if scfg.DataDir == "" {
		scfg.DataDir = cfg.DataDir // the disk free limit watches the data dir's file system
	}
	n.AMQP = server.New(scfg)
	if cfg.AMQPAddr != "" {
		if err := n.AMQP.Listen(cfg.AMQPAddr); err != nil {
			n.Close()
			return nil, err
		}
	}
	api := mgmt.Source{
		Node: n.Broker, AMQP: n.AMQP, RaftStats: n.Store.Stats, Version: server.Version, ClusterSecret: n.cfg.ClusterSecret,
		StoreStats: n.Messages.Stats, Members: n.members, Leader: n.leader,
		Forget: n.Forget, ErrNotLeader: ErrNotLeader, Leave: n.leaveForAPI, Join: n.joinForAPI, Rebalance: n.rebalanceForAPI,
		Topology: n.Store.TopologyStatus, ClusterName: cfg.Server.ClusterName,
		Limits: func() any { return n.AMQP.Limits() },
	}
	if api.PeerTLS, err = peerAPITLS(cfg); err != nil {
		n.Close()
		return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
	}
	if cfg.HTTPAddr != "" {
		n.HTTP, err = mgmt.Listen(cfg.HTTPAddr, api, log)
		if err != nil {
			n.Close()
			return nil, err
		}
	}
	if err := n.listenTLS(api); err != nil {
		n.Close()
		return nil, fmt.Errorf("start node %s: %w", cfg.ID, err)
	}
	if n.Members != nil {
		// The AMQP and HTTP ports may have been picked at listen time (":0").
		host := cfg.AdvertiseHost
		if host == "" {
			host = n.Members.AdvertiseHost()
		}
		meta := cluster.Meta{AMQPAddr: advertised(n.clientAddr(), host), RaftAddr: store.RaftAddr(), ForwardAddr: advertised(store.ForwardAddr(), host)}
		if n.links != nil {
			meta.DataAddr = advertised(n.links.Addr(), host)
		}
		if n.HTTP != nil {
			meta.HTTPAddr = advertised(n.HTTP.Addr(), host)
		} else if n.HTTPS != nil {
			meta.HTTPAddr = "https://" + advertised(n.HTTPS.Addr(), host) // peers call it with TLS
		}
		if err := n.Members.UpdateMeta(meta, 5*time.Second); err != nil {
			log.Warn("announce addresses to the cluster", "err", err)
		}
	}
	log.Info("node started", "amqp", n.AMQPAddr(), "amqps", n.AMQPSAddr(), "raft", cfg.RaftAddr, "data_dir", cfg.DataDir)
	return n, nil
}

// advertised is listen with an unspecified host (0.0.0.0, ::, "") replaced by host; "" when
// there is nothing to replace or no host to put in.
func advertised(listen, host string) string {
	h, port, err := net.SplitHostPort(listen)
	if err != nil || host == "" {
		return listen
	}
	if ip := net.ParseIP(h); h != "" && (ip == nil || !ip.IsUnspecified()) {
		return listen
	}
	return net.JoinHostPort(host, port)
}

// dialable: addr names a host other nodes can dial (not a wildcard).
func dialable(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil || h == "" {
		return false
	}
	ip := net.ParseIP(h)
	return ip == nil || !ip.IsUnspecified()
}

func (n *Node) prepareTopology() error {
	if err := n.Store.WaitLeader(15 * time.Second); err != nil {
		return err
	}
	if err := n.Store.Barrier(15 * time.Second); err != nil {
		return fmt.Errorf("replay topology: %w", err)
	}
	// Non-durable queues and exchanges of a previous run die with it, as in RabbitMQ.
	// Transient exchanges live until the whole cluster restarts: only a node alone drops them.
	keep := false
	if servers, err := n.Store.Configuration(); err == nil && len(servers) > 1 {
		keep = true
	}
	if _, err := n.Broker.Apply(fsm.NodeStarted{Node: n.cfg.ID, KeepTransientExchanges: keep}); err != nil {
		return fmt.Errorf("drop transient topology: %w", err)
	}
	if n.Store.Bootstrapped() {
		// First start of a new cluster: RabbitMQ's default user, loopback-only by default.
		if _, err := n.Broker.Apply(fsm.PutUser{Name: "guest", PasswordHash: broker.HashPassword("guest"), Tags: []string{"administrator"}}); err != nil {
			return fmt.Errorf("create default user: %w", err)
		}
		if _, err := n.Broker.Apply(fsm.SetPermissions{User: "guest", Vhost: "/", Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
			return fmt.Errorf("grant default user: %w", err)
		}
	}
	return nil
}

// AMQPAddr returns the address clients connect to without TLS ("" when there is none).
func (n *Node) AMQPAddr() string {
	if a := n.AMQP.Addr(); a != nil {
		return a.String()
	}
	return ""
}

// Close closes client connections with 320 CONNECTION_FORCED, then stops Raft and the broker.
func (n *Node) Close() error {
	n.closeOnce.Do(func() { n.closeErr = n.close() })
	return n.closeErr
}

func (n *Node) close() error {
	var errs []error
	if n.HTTP != nil {
		n.HTTP.Close()
	}
	if n.HTTPS != nil {
		n.HTTPS.Close()
	}
	if n.AMQP != nil {
		n.AMQP.Close()
	}
	if n.failStop != nil {
		close(n.failStop)
		<-n.failDone
		<-n.fastDone
		n.unsubscribe()
	}
	if n.reconciler != nil {
		n.reconciler.Stop()
	}
	if n.links != nil {
		_ = n.links.Close()
	}
	if n.Members != nil {
		if err := n.Members.Shutdown(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.Store != nil {
		if err := n.Store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	n.Broker.Close()
	if n.Messages != nil {
		if err := n.Messages.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// claimDataDir records the node id in a new data dir and refuses a data dir that belongs to
// another node: Raft state and stored messages are tied to the id (a restarted node must come
// back as itself, with its queues).
func claimDataDir(dir, id string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	path := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != id {
			return fmt.Errorf("data dir %s belongs to node %q, not %q: start with --id %s or use another --data-dir", dir, got, id, got)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return os.WriteFile(path, []byte(id+"\n"), 0o644)
	}
	return fmt.Errorf("read %s: %w", path, err)
}

func (n *Node) leader() string {
	id, _ := n.Store.Leader()
	return id
}
