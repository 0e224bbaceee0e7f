package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/wire"
)

// amqpError is a protocol exception: a hard code closes the connection, a soft one the channel.
type amqpError struct {
	code              uint16
	text              string
	classID, methodID uint16
	// channelOnly keeps a normally hard code on the channel: 541 for a topology change the
	// cluster could not commit (no quorum) closes the channel, not the client's connection.
	channelOnly bool
}

func (e *amqpError) Error() string { return e.text }

func errorf(code uint16, format string, args ...any) *amqpError {
	return &amqpError{code: code, text: wire.ReplyCodeName(code) + " - " + fmt.Sprintf(format, args...)}
}

// asAMQPError turns any failure into the exception the client is sent.
func asAMQPError(err error) *amqpError {
	var ae *amqpError
	if errors.As(err, &ae) {
		return ae
	}
	var pe *wire.ProtocolError
	if errors.As(err, &pe) {
		return &amqpError{code: pe.Code, text: prefixed(pe.Code, pe.Text)}
	}
	if errors.Is(err, cluster.ErrNoLeader) {
		return &amqpError{code: wire.InternalError, channelOnly: true,
			text: prefixed(wire.InternalError, "topology change not committed: "+err.Error())}
	}
	var fe *fsm.Error
	if errors.As(err, &fe) {
		return &amqpError{code: fe.Code, text: prefixed(fe.Code, fe.Text)}
	}
	return &amqpError{code: wire.InternalError, text: prefixed(wire.InternalError, err.Error())}
}

func prefixed(code uint16, text string) string {
	name := wire.ReplyCodeName(code)
	if name != "" && len(text) >= len(name) && text[:len(name)] == name {
		return text
	}
	return name + " - " + text
}

// deadlineReader extends the read deadline before each read from the socket (once per buffer
// fill, not per frame) so a peer that stops sending, heartbeats included, is dropped. It also
// wakes the reader at wakeAt (a half-received body may have stalled) with errSweep, which leaves
// the frame reader able to continue.
type deadlineReader struct {
	nc      net.Conn
	timeout atomic.Int64 // nanoseconds; 0: no deadline
	frozen  atomic.Bool  // set once a close is under way: the deadline no longer moves

	// Owned by the reader goroutine.
	now       int64 // monoNow at the start of the last read: the clock publish assembly uses
	quietFrom int64 // monoNow when the current silence began (the last read that got data)
	gotData   bool
	wakeAt    int64 // monoNow at which to return errSweep; 0: never
	sweepWake bool  // the deadline in force is wakeAt, not the heartbeat's
	hasDL     bool  // a deadline is set on the socket
}

// errSweep reports that the read stopped early so stalled bodies can be timed out.
var errSweep = errors.New("read paused for the body timeout sweep")

// monoStart anchors monoNow, a monotonic clock in nanoseconds.
var monoStart = time.Now()

func monoNow() int64 { return int64(time.Since(monoStart)) }

func (r *deadlineReader) Read(p []byte) (int, error) {
	now := monoNow()
	r.now = now
	if r.gotData || r.quietFrom == 0 {
		r.quietFrom = now
	}
	if !r.frozen.Load() {
		var dl int64
		if t := r.timeout.Load(); t > 0 {
			dl = r.quietFrom + t
		}
		r.sweepWake = r.wakeAt != 0 && (dl == 0 || r.wakeAt < dl)
		if r.sweepWake {
			dl = r.wakeAt
		}
		if dl != 0 {
			_ = r.nc.SetReadDeadline(monoStart.Add(time.Duration(dl)))
			r.hasDL = true
		} else if r.hasDL {
			_ = r.nc.SetReadDeadline(time.Time{})
			r.hasDL = false
		}
	}
	n, err := r.nc.Read(p)
	r.gotData = n > 0
	if err != nil && r.sweepWake && !r.frozen.Load() && isTimeout(err) {
		r.now = monoNow()
		return n, errSweep
	}
	return n, err
}

// conn is one client connection. Its reader goroutine (serve) handles every frame in order;
// its writer goroutine owns the socket's write side. Anything may queue bytes with the send*
// methods: queues deliver from publishers' goroutines straight into this buffer.
type conn struct {
	s   *Server
	nc  net.Conn
	id  string
	log *slog.Logger
	dr  *deadlineReader
	fr  *wire.FrameReader

	outMu      sync.Mutex
	out        []byte
	outClosed  bool
	wake       chan struct{}
	stopWriter chan struct{}
	writerDone chan struct{}
	wrote      atomic.Bool
	outHigh    atomic.Bool // out buffer above its high-water mark: no-ack consumers wait

	frameMax      uint32
	heartbeat     uint16
	user          string
	vhost         string
	cancelNotify  bool
	blockedNotify bool   // the client handles connection.blocked/unblocked
	admitted      string // vhost counted by admit (limits.go)
	admittedOK    bool
	channelMax    uint16 // negotiated in tune-ok (limits.go); 0: the server's

	channels     map[uint16]*channel
	chansMu      sync.Mutex            // guards allChans, which the writer goroutine reads
	allChans     map[*channel]struct{} // the same channels, for kickAll
	lastCh       *channel
	confirmDirty []*channel
	hasExclusive bool
	closeSent    atomic.Bool // we sent connection.close and wait for close-ok
	closeOnce    sync.Once
	released     bool                     // releaseResources ran (reader goroutine only)
	info         atomic.Pointer[connMeta] // what the management API shows (access.go)

	pub  wire.BasicPublish // reused for every basic.publish
	ackM wire.BasicAck

	// Publish assembly across channels (reader goroutine only).
	announced uint64 // body bytes announced by content headers and not yet received
	partial   int    // channels holding a half-received body
	nextSweep int64  // monoNow of the next stalled-body check while partial > 0
}

// outHighWater bounds the bytes queued for a slow client before no-ack deliveries pause.
const outHighWater = 4 << 20

func newConn(s *Server, nc net.Conn) *conn {
	id := fmt.Sprintf("%s/%d", s.node.ID(), s.connID.Add(1))
	c := &conn{
		s: s, nc: nc, id: id,
		log:        s.log.With("conn", id, "remote", nc.RemoteAddr().String()),
		wake:       make(chan struct{}, 1),
		stopWriter: make(chan struct{}),
		writerDone: make(chan struct{}),
		frameMax:   s.cfg.FrameMax,
		channels:   make(map[uint16]*channel),
		allChans:   make(map[*channel]struct{}),
	}
	c.dr = &deadlineReader{nc: nc}
	c.fr = wire.NewFrameReader(c.dr, s.cfg.FrameMax)
	return c
}

// serve runs the connection to its end: handshake, frames, clean-up.
func (c *conn) serve() {
	go c.writeLoop()
	defer c.cleanup()
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	if err := c.handshake(); err != nil {
		c.logEnd("handshake failed", err)
		return
	}
	c.applyHeartbeatDeadline()
	for {
		f, err := c.fr.ReadFrame()
		if err == errSweep {
			c.sweepBodies()
			continue
		}
		if err != nil {
			c.readFailed(err)
			return
		}
		err = c.handleFrame(f)
		if err == nil && c.partial > 0 && c.dr.now >= c.nextSweep {
			c.sweepBodies()
		}
		if err != nil {
			if errors.Is(err, errConnDone) {
				return
			}
			ae := asAMQPError(err)
			c.log.Warn("closing connection on protocol error", "code", ae.code, "text", ae.text)
			c.closeWithError(ae)
			c.drainUntilCloseOk()
			return
		}
		if c.fr.Buffered() == 0 {
			c.flushConfirms()
		}
	}
}

var errConnDone = errors.New("connection finished")

func (c *conn) logEnd(msg string, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		c.log.Debug(msg, "err", err)
		return
	}
	c.log.Info(msg, "err", err)
}

// readFailed handles a read error: a framing violation gets a connection.close with 501, a
// missed-heartbeat timeout and EOF just end the connection.
func (c *conn) readFailed(err error) {
	var pe *wire.ProtocolError
	if errors.As(err, &pe) {
		ae := asAMQPError(err)
		c.log.Warn("closing connection on frame error", "code", ae.code, "text", ae.text)
		c.closeWithError(ae)
		return
	}
	if c.closeSent.Load() {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.log.Warn("closing connection: missed heartbeats", "heartbeat_s", c.heartbeat)
		return
	}
	c.logEnd("connection closed by peer", err)
}

func (c *conn) applyHeartbeatDeadline() {
	if c.heartbeat == 0 {
		_ = c.nc.SetReadDeadline(time.Time{})
		return
	}
	// Two missed heartbeats, as RabbitMQ, plus slack for a loaded machine.
	c.dr.timeout.Store(int64(2*time.Duration(c.heartbeat)*time.Second + time.Second))
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Duration(c.dr.timeout.Load())))
}

// writeLoop owns the socket's write side: it writes whatever was queued, and a heartbeat when
// nothing was written for half the heartbeat interval.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var buf []byte
	var tick <-chan time.Time
	var ticker *time.Ticker
	defer func() {
		if ticker != nil {
			ticker.Stop()
		}
	}()
	hbSet := false
	for {
		stop := false
		select {
		case <-c.wake:
		case <-tick:
			if !c.wrote.Swap(false) {
				c.sendRaw(wire.AppendHeartbeat(nil))
			}
			continue
		case <-c.stopWriter:
			stop = true
		}
		if !hbSet && c.heartbeat > 0 {
			hbSet = true
			ticker = time.NewTicker(time.Duration(c.heartbeat) * time.Second / 2)
			tick = ticker.C
		}
		c.outMu.Lock()
		buf, c.out = c.out, buf[:0]
		if stop {
			c.outClosed = true
		}
		c.outMu.Unlock()
		if len(buf) > 0 {
			_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
			if _, err := c.nc.Write(buf); err != nil {
				c.outMu.Lock()
				c.outClosed = true
				c.out = nil
				c.outMu.Unlock()
				_ = c.nc.Close() // the reader sees the close and cleans up
				return
			}
			c.wrote.Store(true)
		}
		if cap(buf) > 1<<20 {
			buf = nil
		}
		if c.outHigh.Load() {
			c.outMu.Lock()
			low := len(c.out) < outHighWater/2
			c.outMu.Unlock()
			if low {
				c.outHigh.Store(false)
				c.kickAll()
			}
		}
		if stop {
			return
		}
	}
}

// throttle stops reading from this publisher until the backlogged queue drains (TCP then pushes
// back on the client), as RabbitMQ's credit flow does. Confirms already earned go out first.
func (c *conn) throttle(drained <-chan struct{}) {
	c.flushConfirms()
	t := time.NewTimer(c.s.cfg.FlowWait)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
	}
}

// lockOut takes the output buffer lock; callers append frames to c.out and call unlockOut.
func (c *conn) lockOut() { c.outMu.Lock() }

func (c *conn) unlockOut() {
	n := len(c.out)
	if c.outClosed {
		c.out = c.out[:0]
	}
	c.outMu.Unlock()
	if n >= outHighWater {
		c.outHigh.Store(true)
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *conn) sendRaw(b []byte) {
	c.lockOut()
	c.out = append(c.out, b...)
	c.unlockOut()
}

func (c *conn) sendMethod(ch uint16, m wire.Method) {
	c.lockOut()
	c.out = wire.AppendMethodFrame(c.out, ch, m)
	c.unlockOut()
}

// sendContent queues a method with content (deliver, get-ok, return) as one unit so no other
// frame lands between its frames.
func (c *conn) sendContent(ch uint16, m wire.Method, props, body []byte) {
	c.lockOut()
	c.appendContentLocked(ch, m, props, body)
	c.unlockOut()
}

func (c *conn) appendContentLocked(ch uint16, m wire.Method, props, body []byte) {
	c.out = wire.AppendMethodFrame(c.out, ch, m)
	c.out = wire.AppendHeaderFrame(c.out, ch, wire.ClassBasic, uint64(len(body)), props)
	c.out = wire.AppendBodyFrames(c.out, ch, body, c.frameMax)
}

// closeWithError sends connection.close for a hard error; the reader then waits for close-ok.
func (c *conn) closeWithError(e *amqpError) {
	if c.closeSent.Swap(true) {
		return
	}
	c.sendMethod(0, &wire.ConnectionClose{ReplyCode: e.code, ReplyText: truncate(e.text), ClassId: e.classID, MethodId: e.methodID})
}

// forceClose is called from another goroutine (server shutdown): send connection.close and give
// the client a moment to answer before the socket goes.
func (c *conn) forceClose(code uint16, text string) {
	c.closeWithError(&amqpError{code: code, text: text})
	c.dr.frozen.Store(true)
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
}

// drainUntilCloseOk reads and drops frames until the peer's close-ok (or close), or 3 s.
func (c *conn) drainUntilCloseOk() {
	c.dr.frozen.Store(true)
	_ = c.nc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		if f.Type == wire.FrameMethod && f.Channel == 0 {
			cls, mth, _, err := wire.SplitMethod(f.Payload)
			if err == nil && cls == wire.ClassConnection && (mth == 51 || mth == 50) {
				if mth == 50 {
					c.sendMethod(0, &wire.ConnectionCloseOk{})
				}
				return
			}
		}
	}
}

func truncate(s string) string {
	if len(s) > 255 {
		return s[:255]
	}
	return s
}

// cleanup runs once the reader is done: resources released, the writer flushed and the socket
// closed.
func (c *conn) cleanup() {
	c.closeOnce.Do(func() {
		c.release()
		c.releaseResources()
		close(c.stopWriter)
		select {
		case <-c.writerDone:
		case <-time.After(5 * time.Second):
		}
		_ = c.nc.Close()
		<-c.writerDone
	})
}

// releaseResources closes every channel (unacked messages requeued) and deletes the
// connection's exclusive queues. On a client's connection.close it runs before close-ok, so a
// client that saw close-ok also sees its exclusive queues gone, as with RabbitMQ.
func (c *conn) releaseResources() {
	if c.released {
		return
	}
	c.released = true
	for _, ch := range c.channels {
		ch.shutdown()
	}
	c.channels = nil
	c.lastCh = nil
	if c.hasExclusive {
		if _, err := c.s.node.Apply(fsm.DropConnection{Conn: c.id}); err != nil {
			c.log.Warn("delete exclusive queues of closed connection", "err", err)
		}
	}
}

// kickAll retries dispatch for every queue this connection consumes from (after the output
// buffer drained below its high-water mark).
func (c *conn) kickAll() {
	c.outMu.Lock()
	closed := c.outClosed
	c.outMu.Unlock()
	if closed {
		return
	}
	// Channels map belongs to the reader goroutine; consumers registered on it keep their own
	// list under the channel lock, which is what starved() reads.
	for _, q := range c.starvedQueues() {
		q.Kick()
	}
}

func isLoopback(addr net.Addr) bool {
	if ta, ok := addr.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	return false
}
