package datalink

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Handler is implemented by the broker on the owner node. Calls for one link arrive in order
// on that link's goroutine; each must not block for long (hand off if needed), because while
// it runs nothing else from that peer is read — which is also how a slow owner pushes back on
// its publishers.
//
// Slices passed in (queues, msg, seqs) belong to the Handler.
type Handler interface {
	// Publish enqueues msg on the listed local queues; reply exactly once (possibly later,
	// from another goroutine, e.g. after an fsync) with whether any queue refused it. Replies
	// reach the publisher's node in publish order whatever order they are given in.
	Publish(from string, queues []string, msg []byte, persistent bool, reply func(rejected bool, err error))
	// Consume registers a remote consumer; deliveries go out through out until Cancel or
	// out.Cancelled. Deliveries may start before Consume returns. A returned error (use a
	// *RemoteError to pick a code) is given to the remote caller.
	Consume(from string, consumerID uint64, queue string, prefetch int, noAck, exclusive bool, out Deliverer) error
	// Cancel ends a remote consumer. The link stops accepting its deliveries before this call.
	Cancel(from string, consumerID uint64)
	// Settle acks, requeues or rejects delivered messages. consumerID is GetConsumerID for
	// messages fetched with Get. Unknown consumers or seqs must be ignored: they can be stale
	// after a reconnect.
	Settle(from string, consumerID uint64, queue string, kind SettleKind, seqs []uint64)
	// Credit says the remote side freed n prefetch slots of the consumer.
	Credit(from string, consumerID uint64, n int)
	// Get takes one message (basic.get).
	Get(from string, queue string, noAck bool) (d Delivery, ok bool, err error)
	// Purge drops the queue's ready messages (queue.purge) and says how many.
	Purge(from string, queue string) (count int, err error)
	// Replicate hands a replication request (package replica's encoding, opaque here) for one
	// stream (a replicated queue) to the Handler; reply exactly once, possibly later, with a
	// body (may be nil) or an error. Requests arrive in the publishes' order; replies leave as
	// soon as given, not behind earlier publishes' confirms.
	Replicate(from string, stream string, payload []byte, reply func(body []byte, err error))
	// PeerDown says the link to that peer broke: drop its consumers and requeue their unacked
	// messages. For one peer, PeerDown of an old link always happens before any call from its
	// next link.
	PeerDown(from string)
}

// Deliverer sends deliveries for one remote consumer. It is safe for concurrent use.
type Deliverer interface {
	// Deliver queues d on the link without blocking. It returns false when the link is down,
	// over its buffer limit, or the consumer was cancelled: the owner keeps the message (retry
	// on the next Credit).
	Deliver(d Delivery) bool
	// Cancelled tells the remote side the consumer is gone (queue deleted); after it Deliver
	// returns false.
	Cancelled()
}

// Server accepts links from peers and dispatches their requests to a Handler.
type Server struct {
	cfg Config
	h   Handler
	ln  net.Listener
	log *slog.Logger

	mu      sync.Mutex
	closed  bool
	pending map[net.Conn]struct{}  // connections still in the handshake
	links   map[string]*serverLink // authenticated links by peer node ID
	wg      sync.WaitGroup
}

// Listen starts accepting data links on addr (e.g. "127.0.0.1:0").
func Listen(addr string, cfg Config, h Handler) (*Server, error) {
	if h == nil {
		return nil, errors.New("datalink: Listen: nil Handler")
	}
	cfg = cfg.withDefaults()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("datalink: listen on %s: %w", addr, err)
	}
	if cfg.ServerTLS != nil {
		ln = tls.NewListener(ln, cfg.ServerTLS)
	}
	s := &Server{
		cfg:     cfg,
		h:       h,
		ln:      ln,
		log:     cfg.Logger.With("component", "datalink", "node", cfg.NodeID),
		pending: make(map[net.Conn]struct{}),
		links:   make(map[string]*serverLink),
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops accepting, breaks every link (each peer gets PeerDown) and waits for all of the
// server's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.pending {
		_ = c.Close()
	}
	for _, sl := range s.links {
		sl.l.fail(ErrClosed)
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("datalink: close listener: %w", err)
	}
	return nil
}

func (s *Server) acceptLoop() {
	defer s.wg.Done()
	var delay time.Duration
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			// Out of file descriptors and the like: wait and retry rather than stop
			// accepting for the node's lifetime.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Error("datalink accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = conn.Close()
			return
		}
		s.pending[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(conn)
	}
}

// serveConn authenticates one connection and then runs it as that peer's link; its goroutine
// is the link's reader, on which all Handler calls for the link are made.
func (s *Server) serveConn(conn net.Conn) {
	defer s.wg.Done()
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	fr, dr := readerFor(conn, s.cfg.DialTimeout)
	h := beginHandshake(conn, fr, dr, s.cfg.DialTimeout)
	from, err := serverHandshake(h, s.cfg)
	s.mu.Lock()
	delete(s.pending, conn)
	closed := s.closed
	s.mu.Unlock()
	if err != nil || closed {
		if err != nil {
			s.log.Warn("datalink connection refused", "remote", conn.RemoteAddr().String(), "err", err)
		}
		_ = conn.Close()
		return
	}
	endHandshake(conn, fr, dr, s.cfg)

	sl := &serverLink{
		s:         s,
		l:         newLink(conn, s.cfg, s.log.With("peer", from)),
		from:      from,
		consumers: make(map[uint64]*deliverer),
		finished:  make(chan struct{}),
	}
	if !s.register(sl) {
		_ = conn.Close()
		close(sl.finished)
		return
	}
	// Welcome goes through the link's buffer so it precedes anything a Handler sends.
	_ = sl.l.acquire(sendControl, nil)
	sl.l.out = appendFrame(sl.l.out, &frame{typ: frameWelcome})
	sl.l.release()
	go sl.l.writeLoop()
	sl.l.log.Info("datalink peer connected", "remote", conn.RemoteAddr().String())

	err = sl.readLoop(fr)
	sl.l.fail(err)
	<-sl.l.writerDone
	if cause := sl.l.cause(); !errors.Is(cause, ErrClosed) {
		sl.l.log.Warn("datalink peer link down", "err", cause)
	}
	s.h.PeerDown(from)
	s.mu.Lock()
	if s.links[from] == sl {
		delete(s.links, from)
	}
	s.mu.Unlock()
	close(sl.finished)
}

// register makes sl the link of its peer. An older link from the same node (the peer
// reconnected before we noticed the old one died) is broken first and its PeerDown completes
// before the new link dispatches anything, so the Handler never drops the new consumers.
func (s *Server) register(sl *serverLink) bool {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		old := s.links[sl.from]
		if old == nil {
			s.links[sl.from] = sl
			s.mu.Unlock()
			return true
		}
		s.mu.Unlock()
		old.l.log.Warn("datalink peer opened a new link; dropping the old one")
		old.l.fail(fmt.Errorf("%w: replaced by a new link from the same node", ErrLinkDown))
		<-old.finished
	}
}

// serverLink is the owner-side state of one link.
type serverLink struct {
	s    *Server
	l    *link
	from string

	// Guarded by l.mu, so that a delivery and its consumer's cancellation are ordered with
	// the frames around them.
	consumers map[uint64]*deliverer
	replies   replyQueue

	finished chan struct{} // closed after PeerDown returned
}

var errProtocol = errors.New("datalink: protocol violation")

func (sl *serverLink) readLoop(fr *frameReader) error {
	var f frame
	var names interner
	h := sl.s.h
	for {
		if err := nextFrame(fr, &f, &names); err != nil {
			return fmt.Errorf("datalink: read from %s: %w", sl.from, err)
		}
		switch f.typ {
		case frameHeartbeat:
		case framePublish:
			if f.flags&flagReplicate != 0 {
				if len(f.queues) != 1 {
					return fmt.Errorf("%w: %s sent a replication request for %d streams", errProtocol, sl.from, len(f.queues))
				}
				h.Replicate(sl.from, f.queues[0], f.msg, sl.replicaReply(f.reqID))
				continue
			}
			slot := sl.reservePublish(f.reqID)
			h.Publish(sl.from, f.queues, f.msg, f.flags&flagPersistent != 0, sl.replyFunc(slot))
		case frameConsume:
			sl.consume(&f)
		case frameCancel:
			sl.cancel(f.consumerID)
		case frameSettle:
			h.Settle(sl.from, f.consumerID, f.queue, f.kind, f.seqs)
		case frameCredit:
			h.Credit(sl.from, f.consumerID, int(f.n))
		case frameGet:
			if f.flags&flagPurge != 0 {
				n, err := h.Purge(sl.from, f.queue)
				reply := frame{typ: frameGetReply, reqID: f.reqID, n: clampU32(n)}
				reply.errCode, reply.errText = toRemoteError(err)
				sl.sendControl(&reply)
				continue
			}
			d, ok, err := h.Get(sl.from, f.queue, f.flags&flagNoAck != 0)
			reply := frame{typ: frameGetReply, reqID: f.reqID}
			reply.errCode, reply.errText = toRemoteError(err)
			if ok && err == nil {
				reply.flags = flagOK
				if d.Redelivered {
					reply.flags |= flagRedelivered
				}
				reply.seq, reply.n, reply.msg = d.Seq, d.Remaining, d.Msg
			}
			sl.sendControl(&reply)
		default:
			return fmt.Errorf("%w: %s sent frame type %d", errProtocol, sl.from, f.typ)
		}
	}
}

func (sl *serverLink) sendControl(f *frame) {
	if sl.l.acquire(sendControl, nil) != nil {
		return
	}
	sl.l.out = appendFrame(sl.l.out, f)
	sl.l.release()
}

func (sl *serverLink) consume(f *frame) {
	d := &deliverer{sl: sl, id: f.consumerID}
	reply := frame{typ: frameConsumeReply, reqID: f.reqID}
	sl.l.mu.Lock()
	_, inUse := sl.consumers[f.consumerID]
	if !inUse {
		sl.consumers[f.consumerID] = d
	}
	sl.l.mu.Unlock()
	if inUse {
		reply.errCode, reply.errText = 530, fmt.Sprintf("consumer id %d already in use on this link", f.consumerID)
		sl.sendControl(&reply)
		return
	}
	err := sl.s.h.Consume(sl.from, f.consumerID, f.queue, int(f.n), f.flags&flagNoAck != 0, f.flags&flagExclusive != 0, d)
	if err != nil {
		sl.l.mu.Lock()
		d.closed = true
		if sl.consumers[f.consumerID] == d {
			delete(sl.consumers, f.consumerID)
		}
		sl.l.mu.Unlock()
		reply.errCode, reply.errText = toRemoteError(err)
	}
	sl.sendControl(&reply)
}

// cancel closes the consumer's deliverer before telling the Handler, so every delivery frame
// of it is queued before the cancel-ok that the client waits for.
func (sl *serverLink) cancel(id uint64) {
	sl.l.mu.Lock()
	d := sl.consumers[id]
	if d != nil {
		d.closed = true
		delete(sl.consumers, id)
	}
	sl.l.mu.Unlock()
	if d != nil {
		sl.s.h.Cancel(sl.from, id)
	}
	sl.sendControl(&frame{typ: frameCancelOk, consumerID: id})
}

// deliverer is the Deliverer of one remote consumer on one link.
type deliverer struct {
	sl     *serverLink
	id     uint64
	closed bool // guarded by sl.l.mu
}

func (d *deliverer) Deliver(dl Delivery) bool {
	if len(dl.Msg) > MaxMessageSize {
		d.sl.l.log.Error("datalink delivery too large; refused", "consumer", d.id, "bytes", len(dl.Msg))
		return false
	}
	l := d.sl.l
	if l.acquire(sendRefuse, nil) != nil {
		return false
	}
	if d.closed {
		l.mu.Unlock()
		return false
	}
	f := frame{typ: frameDeliver, consumerID: d.id, seq: dl.Seq, n: dl.Remaining, msg: dl.Msg}
	if dl.Redelivered {
		f.flags = flagRedelivered
	}
	l.out = appendFrame(l.out, &f)
	l.release()
	return true
}

func (d *deliverer) Cancelled() {
	l := d.sl.l
	if l.acquire(sendControl, nil) != nil {
		return
	}
	if d.closed {
		l.mu.Unlock()
		return
	}
	d.closed = true
	if d.sl.consumers[d.id] == d {
		delete(d.sl.consumers, d.id)
	}
	l.out = appendFrame(l.out, &frame{typ: frameCancelled, consumerID: d.id})
	l.release()
}
