package datalink

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ConsumerEvents is implemented by the broker on the consumer's node. Its methods run on the
// link's reader goroutine: they must not block for long (a slow one stalls every frame from
// that peer, which is the intended back-pressure only up to the consumers' prefetch).
type ConsumerEvents interface {
	// Delivered hands over one message for a remote consumer; d.Msg belongs to the callee.
	// It can be called before Peer.Consume returns (the owner may deliver at once).
	Delivered(consumerID uint64, d Delivery)
	// ConsumerCancelled says the owner cancelled the consumer (queue deleted) or the link
	// broke; the owner requeues its unacked messages, so settlements for them are moot. It is
	// not called after Peer.Cancel, nor for a Consume that returned an error.
	ConsumerCancelled(consumerID uint64)
}

// Peer is the client end of the link to one remote node: it connects in the background,
// reconnects with backoff until Close, and multiplexes every request over one connection.
type Peer struct {
	addr    string
	cfg     Config
	events  ConsumerEvents
	log     *slog.Logger
	created time.Time

	cur atomic.Pointer[clientLink] // the established link, nil while down

	mu        sync.Mutex
	closed    bool
	everUp    bool
	upCh      chan struct{} // closed (and replaced) each time a link comes up
	remoteID  string
	consumers map[uint64]*remoteConsumer

	stop   chan struct{}
	ctx    context.Context // cancelled by Close; aborts dials and handshakes
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type consumerState uint8

const (
	consumerPending    consumerState = iota // consume sent, no reply yet
	consumerActive                          // the owner accepted it
	consumerCancelling                      // cancel sent, waiting for cancel-ok
)

type remoteConsumer struct {
	cl    *clientLink
	queue string
	noAck bool
	state consumerState
}

// Dial returns the Peer for the node at addr. It connects in the background and keeps
// reconnecting (backoff ReconnectMin → ReconnectMax) until Close.
func Dial(addr string, cfg Config, events ConsumerEvents) *Peer {
	cfg = cfg.withDefaults()
	if events == nil {
		events = noEvents{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Peer{
		addr:      addr,
		cfg:       cfg,
		events:    events,
		log:       cfg.Logger.With("component", "datalink", "node", cfg.NodeID, "peer_addr", addr),
		created:   time.Now(),
		upCh:      make(chan struct{}),
		consumers: make(map[uint64]*remoteConsumer),
		stop:      make(chan struct{}),
		ctx:       ctx,
		cancel:    cancel,
	}
	p.wg.Add(1)
	go p.run()
	return p
}

type noEvents struct{}

func (noEvents) Delivered(uint64, Delivery) {}
func (noEvents) ConsumerCancelled(uint64)   {}

// Up reports whether the link is established now.
func (p *Peer) Up() bool {
	cl := p.cur.Load()
	if cl == nil {
		return false
	}
	select {
	case <-cl.l.done:
		return false
	default:
		return true
	}
}

// RemoteID is the node ID the peer proved in its last handshake ("" before the first).
func (p *Peer) RemoteID() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.remoteID
}

// Close breaks the link, fails every outstanding request with ErrClosed (which wraps
// ErrLinkDown), reports active consumers through ConsumerCancelled and waits for the Peer's
// goroutines.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	p.cancel()
	if cl := p.cur.Load(); cl != nil {
		cl.l.fail(ErrClosed)
	}
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// Break fails the current connection, if any, with cause, as if it had broken: requests waiting
// on it fail now instead of after PeerTimeout, and the Peer reconnects as after any failure. For
// a peer the cluster has declared dead: a frozen process (SIGSTOP, a partition) keeps its socket
// open, and every request in flight to it would wait out the timeout.
func (p *Peer) Break(cause error) {
	if cl := p.cur.Load(); cl != nil {
		cl.l.fail(cause)
	}
}

// run is the Peer's supervisor goroutine: connect, serve the link as its reader, clean up,
// back off, repeat.
func (p *Peer) run() {
	defer p.wg.Done()
	backoff := p.cfg.ReconnectMin
	var lastErr string
	for {
		cl, fr, err := p.connect()
		if err != nil {
			if p.stopping() {
				return
			}
			// Log each new reason once; a peer that is down for an hour should not flood.
			if msg := err.Error(); msg != lastErr {
				p.log.Warn("datalink connect failed; retrying", "err", err, "backoff", backoff)
				lastErr = msg
			}
			if !p.sleep(backoff) {
				return
			}
			backoff = min(2*backoff, p.cfg.ReconnectMax)
			continue
		}
		lastErr = ""
		if !p.attach(cl) {
			cl.l.fail(ErrClosed)
			return
		}
		started := time.Now()
		p.log.Info("datalink link up", "peer", cl.remoteID)
		go cl.l.writeLoop()
		cl.l.fail(cl.readLoop(fr))
		<-cl.l.writerDone
		cl.flushPending(p.linkDownError(cl))
		p.detach(cl)
		if p.stopping() {
			return
		}
		p.log.Warn("datalink link down", "peer", cl.remoteID, "err", cl.l.cause())
		if time.Since(started) >= p.cfg.ReconnectMax {
			backoff = p.cfg.ReconnectMin
		}
		if !p.sleep(backoff) {
			return
		}
		backoff = min(2*backoff, p.cfg.ReconnectMax)
	}
}

func (p *Peer) stopping() bool {
	select {
	case <-p.stop:
		return true
	default:
		return false
	}
}

func (p *Peer) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.stop:
		return false
	}
}

// connect dials and authenticates one connection.
func (p *Peer) connect() (*clientLink, *frameReader, error) {
	ctx, cancel := context.WithTimeout(p.ctx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("datalink: dial %s: %w", p.addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if p.cfg.ClientTLS != nil {
		conn = tls.Client(conn, p.cfg.ClientTLS)
	}
	// Close (or the timeout) must be able to interrupt a handshake with a silent peer.
	stopWatch := context.AfterFunc(ctx, func() { _ = conn.Close() })
	fr, dr := readerFor(conn, p.cfg.DialTimeout)
	remoteID, err := clientHandshake(beginHandshake(conn, fr, dr, p.cfg.DialTimeout), p.cfg)
	if !stopWatch() && err == nil {
		err = fmt.Errorf("datalink: handshake with %s: %w", p.addr, ctx.Err())
	}
	if err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	endHandshake(conn, fr, dr, p.cfg)
	cl := &clientLink{
		p:        p,
		l:        newLink(conn, p.cfg, p.log.With("peer", remoteID)),
		remoteID: remoteID,
		requests: make(map[uint64]*pendingRequest),
		replicas: make(map[uint64]pendingPublish),
	}
	return cl, fr, nil
}

func (p *Peer) attach(cl *clientLink) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.cur.Store(cl)
	p.everUp = true
	p.remoteID = cl.remoteID
	close(p.upCh)
	p.upCh = make(chan struct{})
	return true
}

// detach forgets a broken link and reports its accepted consumers as cancelled.
func (p *Peer) detach(cl *clientLink) {
	p.mu.Lock()
	p.cur.CompareAndSwap(cl, nil)
	var lost []uint64
	for id, c := range p.consumers {
		if c.cl != cl {
			continue
		}
		delete(p.consumers, id)
		if c.state == consumerActive {
			lost = append(lost, id)
		}
	}
	p.mu.Unlock()
	for _, id := range lost {
		p.events.ConsumerCancelled(id)
	}
}

func (p *Peer) linkDownError(cl *clientLink) error {
	cause := cl.l.cause()
	if cause == ErrClosed {
		return ErrClosed
	}
	return fmt.Errorf("%w: link to %s (%s) broke: %v", ErrLinkDown, cl.remoteID, p.addr, cause)
}

// awaitLink returns the current link. Right after Dial it waits up to ConnectWait for the
// first connection; once a link has existed, a down link fails at once.
func (p *Peer) awaitLink(ctx context.Context) (*clientLink, error) {
	for {
		if cl := p.cur.Load(); cl != nil {
			return cl, nil
		}
		p.mu.Lock()
		closed, everUp, up := p.closed, p.everUp, p.upCh
		p.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		wait := p.cfg.ConnectWait - time.Since(p.created)
		if everUp || wait <= 0 {
			return nil, fmt.Errorf("%w: no link to %s", ErrLinkDown, p.addr)
		}
		t := time.NewTimer(wait)
		select {
		case <-up:
		case <-t.C:
		case <-p.stop:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("datalink: waiting for link to %s: %w", p.addr, ctx.Err())
		}
		t.Stop()
	}
}

func checkQueueNames(queues ...string) error {
	for _, q := range queues {
		if len(q) > maxNameLen {
			return fmt.Errorf("datalink: queue name of %d bytes is too long", len(q))
		}
	}
	if len(queues) > math.MaxUint16 {
		return fmt.Errorf("datalink: publish to %d queues: too many", len(queues))
	}
	return nil
}

// Publish sends msg to the listed queues of the owner and waits for its reply. Any error
// (link down or broken before the reply, ctx done) means the outcome is unknown: nack.
func (p *Peer) Publish(ctx context.Context, queues []string, msg []byte, persistent bool) (rejected bool, err error) {
	type result struct {
		rejected bool
		err      error
	}
	ch := make(chan result, 1)
	err = p.enqueuePublish(ctx, queues, msg, publishFlags(persistent), pendingPublish{done: func(rejected bool, err error) {
		ch <- result{rejected, err}
	}})
	if err != nil {
		return false, err
	}
	select {
	case r := <-ch:
		return r.rejected, r.err
	case <-ctx.Done():
		return false, fmt.Errorf("datalink: publish to %s: %w", p.addr, ctx.Err())
	}
}

// PublishAsync is Publish with a callback, for a goroutine that must not wait per message.
// It blocks only while the link's buffer is over MaxBuffered (or, right after Dial, for the
// first connection). done is called exactly once: with the owner's reply, or with an error
// wrapping ErrLinkDown; possibly before PublishAsync returns. Callbacks run in publish order
// (on the link's reader goroutine, so they must not block) and msg may be reused once
// PublishAsync returns.
func (p *Peer) PublishAsync(queues []string, msg []byte, persistent bool, done func(rejected bool, err error)) {
	if err := p.enqueuePublish(context.Background(), queues, msg, publishFlags(persistent), pendingPublish{done: done}); err != nil {
		done(false, err)
	}
}

// ReplicateAsync sends a replication request for stream (opaque here: package replica encodes
// it) to the peer's Handler.Replicate, on the same ordered path as publishes: requests reach
// the Handler in the order they were sent (also relative to publishes). Replies come back as
// soon as the Handler gives them, not behind earlier publishes' confirms: replied is called
// exactly once with the reply's body or an error (wrapping ErrLinkDown if the link broke first). Unlike
// PublishAsync it never waits for buffer space: over MaxBuffered it fails with ErrNotSent.
func (p *Peer) ReplicateAsync(stream string, payload []byte, replied func(body []byte, err error)) {
	if err := p.enqueuePublish(context.Background(), []string{stream}, payload, flagReplicate, pendingPublish{replied: replied}); err != nil {
		replied(nil, err)
	}
}

func publishFlags(persistent bool) uint8 {
	if persistent {
		return flagPersistent
	}
	return 0
}

// enqueuePublish queues the publish frame and registers pp; on error pp was not registered
// and the caller reports the error.
func (p *Peer) enqueuePublish(ctx context.Context, queues []string, msg []byte, flags uint8, pp pendingPublish) error {
	if len(msg) > MaxMessageSize {
		return fmt.Errorf("datalink: message of %d bytes exceeds %d", len(msg), MaxMessageSize)
	}
	if err := checkQueueNames(queues...); err != nil {
		return err
	}
	cl, err := p.awaitLink(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotSent, err)
	}
	mode := sendWait
	if flags&flagReplicate != 0 {
		// Replication requests are sent from Handler calls of other links (a leader handling
		// a forwarded publish): waiting for this link's buffer there could wait in a circle
		// (each node's reader blocked on the other's buffer). They are refused instead; the
		// leader syncs that follower again later.
		mode = sendRefuse
	}
	switch err := cl.l.acquire(mode, ctx.Done()); err {
	case nil:
	case errBufferFull:
		return fmt.Errorf("datalink: request to %s: %w: %w", p.addr, ErrNotSent, err)
	case errWaitAborted:
		return fmt.Errorf("datalink: publish to %s waiting for buffer space: %w: %w", p.addr, ErrNotSent, ctx.Err())
	default:
		pp.unsent = true
		if err := cl.publishOnBrokenLink(pp); err != nil {
			return fmt.Errorf("%w: %w", ErrNotSent, err)
		}
		return nil
	}
	reqID := cl.nextReq
	cl.nextReq++
	pp.reqID = reqID
	if flags&flagReplicate != 0 {
		cl.replicas[reqID] = pp
	} else {
		cl.publishes = append(cl.publishes, pp)
	}
	f := frame{typ: framePublish, reqID: reqID, queues: queues, msg: msg, flags: flags}
	cl.l.out = appendFrame(cl.l.out, &f)
	cl.l.release()
	return nil
}

// Consume registers consumerID on the owner's queue. Deliveries come through
// ConsumerEvents.Delivered, possibly before Consume returns. If Consume fails, deliveries
// already received for the ID should be settled with SettleRequeue (or dropped if noAck).
// Use IDs unique for the node's lifetime: a stale settlement after a reconnect then names an
// ID the owner does not know.
func (p *Peer) Consume(ctx context.Context, consumerID uint64, queue string, prefetch int, noAck, exclusive bool) error {
	if err := checkQueueNames(queue); err != nil {
		return err
	}
	cl, err := p.awaitLink(ctx)
	if err != nil {
		return err
	}
	c := &remoteConsumer{cl: cl, queue: queue, noAck: noAck, state: consumerPending}
	p.mu.Lock()
	if p.consumers[consumerID] != nil {
		p.mu.Unlock()
		return fmt.Errorf("datalink: consumer id %d already in use towards %s", consumerID, p.addr)
	}
	p.consumers[consumerID] = c
	p.mu.Unlock()

	req := &pendingRequest{consumerID: consumerID, ch: make(chan requestResult, 1)}
	f := frame{typ: frameConsume, consumerID: consumerID, queue: queue, n: clampU32(prefetch)}
	if noAck {
		f.flags |= flagNoAck
	}
	if exclusive {
		f.flags |= flagExclusive
	}
	if !cl.sendRequest(&f, req) {
		p.forgetConsumer(consumerID, c)
		return p.linkDownError(cl)
	}
	select {
	case r := <-req.ch:
		if r.err != nil {
			return fmt.Errorf("datalink: consume %q on %s: %w", queue, p.addr, r.err)
		}
		return nil
	case <-ctx.Done():
		// The owner may register it after we stop waiting: cancel so it does not linger.
		p.Cancel(consumerID)
		return fmt.Errorf("datalink: consume %q on %s: %w", queue, p.addr, ctx.Err())
	}
}

func (p *Peer) forgetConsumer(id uint64, c *remoteConsumer) {
	p.mu.Lock()
	if p.consumers[id] == c {
		delete(p.consumers, id)
	}
	p.mu.Unlock()
}

// Cancel ends a remote consumer. Deliveries of it still in flight are requeued at the owner
// (not handed to Delivered); unacked messages already delivered stay settleable.
func (p *Peer) Cancel(consumerID uint64) {
	p.mu.Lock()
	c := p.consumers[consumerID]
	if c == nil || c.state == consumerCancelling {
		p.mu.Unlock()
		return
	}
	c.state = consumerCancelling
	p.mu.Unlock()
	if !c.cl.sendControl(&frame{typ: frameCancel, consumerID: consumerID}) {
		p.forgetConsumer(consumerID, c)
	}
}

// Settle acks, requeues or rejects delivered messages (use GetConsumerID for messages from
// Get). It is dropped when the link is down: the owner requeued them on PeerDown.
func (p *Peer) Settle(consumerID uint64, queue string, kind SettleKind, seqs []uint64) {
	if kind < SettleAck || kind > SettleReject || checkQueueNames(queue) != nil {
		p.log.Error("datalink settle ignored: bad arguments", "kind", kind, "queue_len", len(queue))
		return
	}
	cl := p.cur.Load()
	if cl == nil {
		return
	}
	cl.settle(consumerID, queue, kind, seqs)
}

// Credit tells the owner that n more deliveries may be in flight for the consumer.
func (p *Peer) Credit(consumerID uint64, n int) {
	if n <= 0 {
		return
	}
	if cl := p.cur.Load(); cl != nil {
		cl.sendControl(&frame{typ: frameCredit, consumerID: consumerID, n: clampU32(n)})
	}
}

// Get fetches one message from the owner's queue (basic.get). ok is false when the queue was
// empty. Messages got with noAck false are settled with Settle(GetConsumerID, …); if ctx ends
// before the reply, such a message is requeued.
func (p *Peer) Get(ctx context.Context, queue string, noAck bool) (Delivery, bool, error) {
	if err := checkQueueNames(queue); err != nil {
		return Delivery{}, false, err
	}
	cl, err := p.awaitLink(ctx)
	if err != nil {
		return Delivery{}, false, err
	}
	req := &pendingRequest{isGet: true, queue: queue, noAck: noAck, ch: make(chan requestResult, 1)}
	f := frame{typ: frameGet, queue: queue}
	if noAck {
		f.flags = flagNoAck
	}
	if !cl.sendRequest(&f, req) {
		return Delivery{}, false, p.linkDownError(cl)
	}
	select {
	case r := <-req.ch:
		if r.err != nil {
			return Delivery{}, false, fmt.Errorf("datalink: get from %q on %s: %w", queue, p.addr, r.err)
		}
		return r.d, r.ok, nil
	case <-ctx.Done():
		if cl.abandon(f.reqID, req) {
			return Delivery{}, false, fmt.Errorf("datalink: get from %q on %s: %w", queue, p.addr, ctx.Err())
		}
		// The reply was already taken off the wire: it is on its way to req.ch.
		r := <-req.ch
		return r.d, r.ok, r.err
	}
}

// Purge drops the ready messages of the owner's queue (queue.purge) and returns how many.
func (p *Peer) Purge(ctx context.Context, queue string) (int, error) {
	if err := checkQueueNames(queue); err != nil {
		return 0, err
	}
	cl, err := p.awaitLink(ctx)
	if err != nil {
		return 0, err
	}
	// A get request that never carries a message back: nothing to requeue if abandoned.
	req := &pendingRequest{isGet: true, queue: queue, noAck: true, ch: make(chan requestResult, 1)}
	f := frame{typ: frameGet, queue: queue, flags: flagPurge}
	if !cl.sendRequest(&f, req) {
		return 0, p.linkDownError(cl)
	}
	select {
	case r := <-req.ch:
		if r.err != nil {
			return 0, fmt.Errorf("datalink: purge %q on %s: %w", queue, p.addr, r.err)
		}
		return int(r.d.Remaining), nil
	case <-ctx.Done():
		cl.abandon(f.reqID, req)
		return 0, fmt.Errorf("datalink: purge %q on %s: %w", queue, p.addr, ctx.Err())
	}
}

func clampU32(n int) uint32 {
	switch {
	case n <= 0:
		return 0
	case uint64(n) > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(n)
}
