package datalink

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// sendMode says how a sender treats a full outbound buffer.
type sendMode uint8

const (
	// sendControl ignores the limit: replies, settlements, credit and cancels are small and
	// bounded by requests already admitted, and blocking them could deadlock the two ends.
	sendControl sendMode = iota
	// sendWait waits for the writer to drain below the limit (publishes).
	sendWait
	// sendRefuse fails at once when over the limit (deliveries: the message stays queued).
	sendRefuse
)

var errBufferFull = errors.New("datalink: link buffer full")

// keepBuffer says whether the writer recycles a written batch's buffer: small ones always,
// large ones only while they are mostly used, so a past burst does not pin memory for the
// link's lifetime but a sustained high rate does not reallocate every batch.
func keepBuffer(batch []byte) bool {
	return cap(batch) <= 1<<20 || len(batch) >= cap(batch)/4
}

// link is one authenticated connection: an outbound byte buffer that senders encode frames
// into under mu, one writer goroutine that writes everything queued in one syscall, and the
// framing for the owner's reader goroutine. Client and server links wrap it.
type link struct {
	conn        net.Conn
	log         *slog.Logger
	maxBuffered int
	heartbeat   time.Duration

	mu           sync.Mutex
	out          []byte // encoded frames not yet handed to the writer
	spare        []byte // the writer's previous batch, recycled
	inflight     int    // bytes the writer is writing now
	closed       bool
	err          error // why the link failed
	spaceWaiters int
	space        chan struct{} // closed (and replaced) when the writer frees space

	wake       chan struct{} // capacity 1: "out has data"
	done       chan struct{} // closed when the link fails
	writerDone chan struct{}
}

func newLink(conn net.Conn, cfg Config, log *slog.Logger) *link {
	return &link{
		conn:        conn,
		log:         log,
		maxBuffered: cfg.MaxBuffered,
		heartbeat:   cfg.HeartbeatInterval,
		space:       make(chan struct{}),
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		writerDone:  make(chan struct{}),
	}
}

// acquire locks the link for appending frames to out, applying mode's back-pressure rule.
// On success the caller holds mu and must call release. cancel (may be nil) aborts a wait.
func (l *link) acquire(mode sendMode, cancel <-chan struct{}) error {
	l.mu.Lock()
	for {
		if l.closed {
			l.mu.Unlock()
			return ErrLinkDown
		}
		if mode == sendControl || len(l.out)+l.inflight < l.maxBuffered {
			return nil
		}
		if mode == sendRefuse {
			l.mu.Unlock()
			return errBufferFull
		}
		ch := l.space
		l.spaceWaiters++
		l.mu.Unlock()
		var aborted bool
		select {
		case <-ch:
		case <-cancel:
			aborted = true
		}
		l.mu.Lock()
		l.spaceWaiters--
		if aborted {
			l.mu.Unlock()
			return errWaitAborted
		}
	}
}

var errWaitAborted = errors.New("datalink: wait aborted")

// release unlocks after acquire and wakes the writer.
func (l *link) release() {
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// buffered reports the bytes queued or being written (for tests and metrics).
func (l *link) buffered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.out) + l.inflight
}

// fail marks the link dead, wakes every waiter and closes the socket so the reader and the
// writer return. The first error wins; later calls do nothing.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.err = err
	close(l.space)
	l.mu.Unlock()
	close(l.done)
	_ = l.conn.Close()
}

// cause returns why the link failed, nil while it is up.
func (l *link) cause() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// writeLoop is the link's writer goroutine: it takes everything queued and writes it in one
// call, and sends a heartbeat when a whole interval passed without writing.
func (l *link) writeLoop() {
	defer close(l.writerDone)
	ticker := time.NewTicker(l.heartbeat)
	defer ticker.Stop()
	wrote := false
	for {
		heartbeatDue := false
		select {
		case <-l.wake:
		case <-ticker.C:
			heartbeatDue = !wrote
			wrote = false
		case <-l.done:
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			return
		}
		if len(l.out) == 0 {
			if !heartbeatDue {
				l.mu.Unlock()
				continue
			}
			l.out = appendFrame(l.out, &frame{typ: frameHeartbeat})
		}
		batch := l.out
		l.out = l.spare[:0]
		l.spare = nil
		l.inflight = len(batch)
		l.mu.Unlock()

		_, err := l.conn.Write(batch)
		wrote = true
		traffic.bytesOut.Add(uint64(len(batch)))
		traffic.writes.Add(1)

		l.mu.Lock()
		l.inflight = 0
		if keepBuffer(batch) {
			l.spare = batch[:0]
		}
		if l.spaceWaiters > 0 && !l.closed {
			close(l.space)
			l.space = make(chan struct{})
		}
		l.mu.Unlock()
		if err != nil {
			l.fail(fmt.Errorf("datalink: write: %w", err))
			return
		}
	}
}

// readerFor returns a frame reader whose every socket read must complete within timeout, so
// a peer that went silent (partition, frozen process) is detected; heartbeats keep an idle
// but healthy link within it.
// The handshake reads through the same reader (so no buffered byte is lost) with a short
// frame limit and its own deadline; setLinkMode switches to the link's limits afterwards.
func readerFor(conn net.Conn, handshakeTimeout time.Duration) (*frameReader, *deadlineReader) {
	dr := &deadlineReader{conn: conn, timeout: handshakeTimeout}
	return &frameReader{r: bufio.NewReaderSize(dr, 64<<10), max: maxHandshakeFrame}, dr
}

type deadlineReader struct {
	conn    net.Conn
	timeout time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if err := d.conn.SetReadDeadline(time.Now().Add(d.timeout)); err != nil {
		return 0, fmt.Errorf("datalink: set read deadline: %w", err)
	}
	return d.conn.Read(p)
}

// nextFrame reads and decodes the next frame; msg is copied out of the reused buffer so the
// receiver may keep it.
func nextFrame(fr *frameReader, f *frame, in *interner) error {
	body, owned, err := fr.next()
	if err != nil {
		return err
	}
	if err := decodeFrame(body, f, in); err != nil {
		return err
	}
	if !owned && f.msg != nil {
		f.msg = append([]byte(nil), f.msg...)
		if f.msg == nil {
			f.msg = []byte{}
		}
	}
	return nil
}
