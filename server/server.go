// Package server owns the AMQP 0-9-1 protocol side of a node: the TCP and TLS listeners, the
// connection handshake (SASL PLAIN/AMQPLAIN, EXTERNAL over TLS, tune, vhost), heartbeats,
// channels and the mapping of every class/method onto the broker (topology through Raft,
// publishes and deliveries through the node's queues), with the per-client limits and the
// memory and disk alarms. Frame encoding lives in package wire; queue behaviour in package
// queue.
package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/wire"
)

// Config holds a server's settings; zero values take RabbitMQ's defaults.
type Config struct {
	Node   Broker
	Logger *slog.Logger
	// HandshakeTimeout closes connections that do not finish connection.open in time.
	HandshakeTimeout time.Duration
	Heartbeat        uint16 // seconds proposed in connection.tune (RabbitMQ: 60)
	FrameMax         uint32 // RabbitMQ: 131072
	ChannelMax       uint16 // RabbitMQ 3.10: 2047
	// LoopbackUsers may connect only from a loopback address (RabbitMQ's loopback_users).
	LoopbackUsers []string
	// MaxMessageSize refuses larger bodies with 406 (RabbitMQ 3.10: 128 MiB).
	MaxMessageSize uint64
	// FlowWait bounds how long one publish waits for a backlogged queue to drain (default 1s):
	// a consumer on the same connection cannot ack while the reader waits, so the wait must
	// end on its own.
	FlowWait time.Duration
	// MemoryHighWatermark is the heap size (bytes) above which publishers are blocked
	// (connection.blocked); default 40% of physical memory, as RabbitMQ.
	MemoryHighWatermark uint64
	// DefaultQueueType "quorum" makes durable, non-exclusive, non-auto-delete queues declared
	// without x-queue-type replicated (unmodified applications get replication); "" or
	// "classic" keeps RabbitMQ 3.10's default.
	DefaultQueueType string
	// MaxAnnouncedBodyBytes bounds, per connection, the body bytes content headers announced
	// that have not arrived yet; a header over it closes its channel with 406 (default 256 MiB,
	// at least MaxMessageSize). Memory is only ever allocated for bytes that arrived.
	MaxAnnouncedBodyBytes uint64
	// ConsumerMaxPerChannel refuses basic.consume beyond this many consumers on one channel
	// with 530 NOT_ALLOWED, as RabbitMQ's consumer_max_per_channel; 0: no limit (its default).
	ConsumerMaxPerChannel int
	// FailedLoginRate and FailedLoginBurst size the token buckets that slow failed logins per
	// source address and per user (defaults 1 a second after a burst of 10; a negative rate
	// turns the throttle off). FailedLoginMaxDelay bounds one wait (default 5 s).
	FailedLoginRate     float64
	FailedLoginBurst    int
	FailedLoginMaxDelay time.Duration
	// BodyTimeout closes (406) a channel whose message body made no progress for this long
	// (default 60 s).
	BodyTimeout time.Duration
	// ClusterName is sent as cluster_name in connection.start, the same on every node of a
	// cluster as RabbitMQ does (default "warren").
	ClusterName string
	// MaxConnections caps open client connections on this node (0: no cap); vhosts have
	// their own max-connections limit in the FSM (limits.go).
	MaxConnections int
	// DiskFreeLimit blocks publishers while the file system of DataDir has less free space
	// (bytes; default 50 MB, RabbitMQ's disk_free_limit); DataDir "" turns the check off.
	DiskFreeLimit uint64
	DataDir       string
}

func (c *Config) setDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.ClusterName == "" {
		c.ClusterName = "warren"
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = 60
	}
	if c.FrameMax == 0 {
		c.FrameMax = wire.DefaultFrameMax
	}
	if c.ChannelMax == 0 {
		c.ChannelMax = 2047
	}
	if c.LoopbackUsers == nil {
		c.LoopbackUsers = []string{"guest"}
	}
	if c.FlowWait == 0 {
		c.FlowWait = time.Second
	}
	if c.MemoryHighWatermark == 0 {
		c.MemoryHighWatermark = defaultMemoryLimit()
	}
	if c.DiskFreeLimit == 0 {
		c.DiskFreeLimit = defaultDiskFreeLimit
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 128 << 20
	}
	if c.MaxAnnouncedBodyBytes == 0 {
		c.MaxAnnouncedBodyBytes = 256 << 20
	}
	c.MaxAnnouncedBodyBytes = max(c.MaxAnnouncedBodyBytes, c.MaxMessageSize)
	if c.FailedLoginRate == 0 {
		c.FailedLoginRate = defaultLoginRate
	}
	if c.FailedLoginBurst == 0 {
		c.FailedLoginBurst = defaultLoginBurst
	}
	if c.FailedLoginMaxDelay == 0 {
		c.FailedLoginMaxDelay = defaultLoginMaxDelay
	}
	if c.BodyTimeout == 0 {
		c.BodyTimeout = 60 * time.Second
	}
}

// Server accepts AMQP connections and serves them until Close.
type Server struct {
	cfg    Config
	node   Broker
	log    *slog.Logger
	connID atomic.Uint64
	stats  messageCounters

	mem       *memoryAlarm
	logins    *loginThrottle
	memOnce   sync.Once
	memRuns   atomic.Bool
	closingCh chan struct{} // closed by Close: blocked publishers stop waiting
	limits    connLimits

	mu      sync.Mutex
	ln      net.Listener
	tlsLn   net.Listener // amqps (tls.go)
	conns   map[*conn]struct{}
	closing bool
	wg      sync.WaitGroup
}

// New returns a server for cfg.Node.
func New(cfg Config) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, node: cfg.Node, log: cfg.Logger, conns: make(map[*conn]struct{}),
		mem: newMemoryAlarm(cfg.MemoryHighWatermark), closingCh: make(chan struct{}),
		logins: newLoginThrottle(cfg.FailedLoginRate, cfg.FailedLoginBurst, cfg.FailedLoginMaxDelay)}
	s.mem.disk.path = cfg.DataDir
	s.mem.disk.limit.Store(cfg.DiskFreeLimit)
	s.registerUserCounts()
	return s
}

// Listen binds addr and serves connections in the background; Addr reports the bound address.
func (s *Server) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen amqp on %s: %w", addr, err)
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.startMemoryAlarm()
	s.wg.Add(1)
	go s.acceptLoop(ln)
	return nil
}

// startMemoryAlarm runs the memory alarm once, whichever listener comes first.
func (s *Server) startMemoryAlarm() {
	s.memOnce.Do(func() {
		s.memRuns.Store(true)
		go s.mem.run()
	})
}

// Addr returns the listener's address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

func (s *Server) acceptLoop(ln net.Listener) {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and similar: wait and keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := newConn(s, nc)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			_ = nc.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			c.serve()
			c.closedConn()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// ConnectionCount returns the number of open client connections.
func (s *Server) ConnectionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close stops accepting, closes every client connection with 320 CONNECTION_FORCED (as
// RabbitMQ does on shutdown) and waits for their goroutines to end.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	close(s.closingCh)
	ln, tlsLn := s.ln, s.tlsLn
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	if tlsLn != nil {
		_ = tlsLn.Close()
	}
	for _, c := range conns {
		c.forceClose(wire.ConnectionForced, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
	}
	s.wg.Wait()
	if s.memRuns.Load() {
		s.mem.close()
	}
}
