package cluster

import (
	"bufio"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The forwarding link carries topology commands from a follower to the leader over TCP.
//
// On accept the leader sends a random 32-byte nonce. Every frame after that is
// length(4) | body | HMAC-SHA256(body), keyed by a key derived from the cluster secret and
// covering the direction, the connection nonce and a per-connection sequence number, so a
// frame cannot be forged, replayed on another connection or replayed on the same one.
//
//	request body:  seq(8) | kind(1) | timeout ms(4) | encoded command (kind apply), index(8) (kind
//	               wait-applied, served by any node), empty (barrier)
//	response body: seq(8) | status(1) | raft index(8) | encoded result or error text
const (
	nonceSize       = 32
	macSize         = sha256.Size
	maxFrameSize    = 16 << 20
	statusOK        = 0
	statusNotLeader = 1
	statusFailed    = 2
	kindApply       = 1
	kindBarrier     = 2
	maxIdlePerPeer  = 64 // as many as concurrent declaring clients commonly are: a new connection costs a handshake
	forwardDialWait = 2 * time.Second
)

// errBadMAC means a frame was not produced by a holder of the cluster secret.
var errBadMAC = errors.New("forwarding frame failed authentication (cluster secrets differ?)")

// remoteFailure is a refusal by the leader that retrying elsewhere would not change.
type remoteFailure struct{ msg string }

func (e *remoteFailure) Error() string { return "leader failed the command: " + e.msg }

// deriveKey turns the cluster secret into a key for one purpose, so the gossip key and the
// forwarding key differ even though both come from the same secret.
func deriveKey(purpose, secret string) []byte {
	h := sha256.New()
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write([]byte(secret))
	return h.Sum(nil)
}

func frameMAC(key []byte, direction string, nonce, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(direction))
	m.Write(nonce)
	m.Write(body)
	return m.Sum(nil)
}

func writeFrame(w *bufio.Writer, key []byte, direction string, nonce, body []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(body)+macSize))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		return err
	}
	if _, err := w.Write(frameMAC(key, direction, nonce, body)); err != nil {
		return err
	}
	return w.Flush()
}

// readFrame reads one frame and returns its authenticated body.
func readFrame(r *bufio.Reader, key []byte, direction string, nonce []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n < macSize || n > maxFrameSize {
		return nil, fmt.Errorf("forwarding frame of %d bytes out of bounds", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	body, mac := buf[:n-macSize], buf[n-macSize:]
	if !hmac.Equal(mac, frameMAC(key, direction, nonce, body)) {
		return nil, errBadMAC
	}
	return body, nil
}

// forwardServer accepts forwarded commands; it answers "not leader" when this node is not.
type forwardServer struct {
	ln    net.Listener
	store *Store
	log   *slog.Logger

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

	// nudge asks for a Raft barrier after forwarded writes: followers learn a new commit index
	// only from the leader's next AppendEntries, which without other traffic comes up to
	// 2×CommitTimeout later; the barrier entry carries it at once. Requests arriving while one
	// barrier is in flight share the next one.
	nudge chan struct{}
	stop  chan struct{}
}

func listenForward(addr string, s *Store, nt *NodeTLS, log *slog.Logger) (*forwardServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for forwarded writes on %s: %w", addr, err)
	}
	if nt != nil {
		ln = tls.NewListener(ln, nt.Server)
	}
	fs := &forwardServer{
		ln: ln, store: s, log: log, conns: make(map[net.Conn]struct{}),
		nudge: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	fs.wg.Add(2)
	go fs.acceptLoop()
	go fs.nudgeLoop()
	return fs, nil
}

func (fs *forwardServer) nudgeLoop() {
	defer fs.wg.Done()
	for {
		select {
		case <-fs.stop:
			return
		case <-fs.nudge:
		}
		// The barrier entry makes followers learn the commit index at once; its outcome does
		// not matter, and waiting for it could hang Close: a barrier queued just before Raft
		// shuts down is never answered (hashicorp/raft leaves its future without a shutdown
		// channel). A short pause instead keeps a burst of nudges to one barrier per tick.
		fs.store.r().Barrier(time.Second)
		select {
		case <-fs.stop:
			return
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func (fs *forwardServer) addr() string { return fs.ln.Addr().String() }

func (fs *forwardServer) acceptLoop() {
	defer fs.wg.Done()
	for {
		conn, err := fs.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				fs.log.Warn("forwarding listener stopped", "err", err)
			}
			return
		}
		fs.mu.Lock()
		if fs.closed {
			fs.mu.Unlock()
			_ = conn.Close()
			return
		}
		fs.conns[conn] = struct{}{}
		fs.wg.Add(1)
		fs.mu.Unlock()
		go fs.serve(conn)
	}
}

func (fs *forwardServer) serve(conn net.Conn) {
	defer fs.wg.Done()
	defer func() {
		fs.mu.Lock()
		delete(fs.conns, conn)
		fs.mu.Unlock()
		_ = conn.Close()
	}()
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(nonce); err != nil {
		fs.log.Error("forwarding: no randomness for nonce", "err", err)
		return
	}
	r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
	if _, err := w.Write(nonce); err != nil {
		return
	}
	if err := w.Flush(); err != nil {
		return
	}
	key := fs.store.forwardKey
	for expect := uint64(1); ; expect++ {
		body, err := readFrame(r, key, "req", nonce)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				fs.log.Warn("forwarding: dropping connection", "remote", conn.RemoteAddr().String(), "err", err)
			}
			return
		}
		if len(body) < 13 || binary.BigEndian.Uint64(body) != expect {
			fs.log.Warn("forwarding: malformed or out-of-sequence request", "remote", conn.RemoteAddr().String())
			return
		}
		timeout := time.Duration(binary.BigEndian.Uint32(body[9:13])) * time.Millisecond
		resp := fs.handle(expect, body[8], body[13:], timeout)
		if err := writeFrame(w, key, "resp", nonce, resp); err != nil {
			return
		}
	}
}

func (fs *forwardServer) handle(seq uint64, kind byte, cmd []byte, timeout time.Duration) []byte {
	var (
		index     uint64
		payload   []byte
		notLeader bool
		err       error
	)
	switch kind {
	case kindApply:
		index, payload, notLeader, err = fs.store.applyAsLeader(cmd, timeout)
	case kindBarrier:
		index, notLeader, err = fs.store.barrierAsLeader(timeout)
	case kindWaitApplied:
		index, err = fs.store.appliedAtLeast(cmd, timeout, fs.stop)
	default:
		err = fmt.Errorf("unknown forwarding request kind %d", kind)
	}
	status := byte(statusOK)
	switch {
	case notLeader:
		status, payload = statusNotLeader, []byte(err.Error())
	case err != nil:
		status, payload = statusFailed, []byte(err.Error())
	case kind != kindWaitApplied:
		select {
		case fs.nudge <- struct{}{}:
		default:
		}
	}
	resp := make([]byte, 17, 17+len(payload))
	binary.BigEndian.PutUint64(resp, seq)
	resp[8] = status
	binary.BigEndian.PutUint64(resp[9:], index)
	return append(resp, payload...)
}

// close stops accepting and drops every connection; goroutines still inside a Raft call finish
// when Raft shuts down, so Store.Close calls wait only after that.
func (fs *forwardServer) close() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.closed {
		return
	}
	fs.closed = true
	close(fs.stop)
	_ = fs.ln.Close()
	for c := range fs.conns {
		_ = c.Close()
	}
}

func (fs *forwardServer) wait() { fs.wg.Wait() }

// forwardConn is one authenticated client connection to a leader's forwarding listener.
type forwardConn struct {
	conn  net.Conn
	r     *bufio.Reader
	w     *bufio.Writer
	nonce []byte
	seq   uint64
}

// forwardPool keeps idle connections per leader address; concurrent writes use separate ones.
type forwardPool struct {
	key []byte
	tls *NodeTLS // nil: plain TCP

	mu     sync.Mutex
	idle   map[string][]*forwardConn
	closed bool
}

func newForwardPool(key []byte) *forwardPool {
	return &forwardPool{key: key, idle: make(map[string][]*forwardConn)}
}

func (p *forwardPool) get(addr string, deadline time.Time) (*forwardConn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errStoreClosed
	}
	if conns := p.idle[addr]; len(conns) > 0 {
		fc := conns[len(conns)-1]
		p.idle[addr] = conns[:len(conns)-1]
		p.mu.Unlock()
		return fc, nil
	}
	p.mu.Unlock()
	d := net.Dialer{Timeout: min(forwardDialWait, time.Until(deadline))}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if p.tls != nil {
		conn = tls.Client(conn, p.tls.Client)
	}
	_ = conn.SetDeadline(deadline)
	fc := &forwardConn{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn), nonce: make([]byte, nonceSize)}
	if _, err := io.ReadFull(fc.r, fc.nonce); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("read forwarding nonce: %w", err)
	}
	return fc, nil
}

func (p *forwardPool) put(addr string, fc *forwardConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle[addr]) >= maxIdlePerPeer {
		_ = fc.conn.Close()
		return
	}
	p.idle[addr] = append(p.idle[addr], fc)
}

// apply sends one command to the leader at addr and returns the index it was committed at and
// the encoded result.
func (p *forwardPool) apply(addr string, cmd []byte, deadline time.Time) (uint64, []byte, error) {
	return p.request(addr, kindApply, cmd, deadline)
}

// barrier asks the leader at addr for a barrier and returns its index: once the local node has
// applied it, it has every command committed before the call.
func (p *forwardPool) barrier(addr string, deadline time.Time) (uint64, error) {
	index, _, err := p.request(addr, kindBarrier, nil, deadline)
	return index, err
}

func (p *forwardPool) request(addr string, kind byte, cmd []byte, deadline time.Time) (uint64, []byte, error) {
	fc, err := p.get(addr, deadline)
	if err != nil {
		return 0, nil, err
	}
	index, payload, err := fc.roundTrip(p.key, kind, cmd, deadline)
	if err != nil {
		_ = fc.conn.Close()
		return 0, nil, err
	}
	p.put(addr, fc)
	return index, payload, nil
}

func (fc *forwardConn) roundTrip(key []byte, kind byte, cmd []byte, deadline time.Time) (uint64, []byte, error) {
	if err := fc.conn.SetDeadline(deadline); err != nil {
		return 0, nil, err
	}
	fc.seq++
	req := make([]byte, 13, 13+len(cmd))
	binary.BigEndian.PutUint64(req, fc.seq)
	req[8] = kind
	binary.BigEndian.PutUint32(req[9:], uint32(max(time.Until(deadline), 0)/time.Millisecond))
	req = append(req, cmd...)
	if err := writeFrame(fc.w, key, "req", fc.nonce, req); err != nil {
		return 0, nil, fmt.Errorf("send: %w", err)
	}
	body, err := readFrame(fc.r, key, "resp", fc.nonce)
	if err != nil {
		return 0, nil, fmt.Errorf("receive: %w", err)
	}
	if len(body) < 17 || binary.BigEndian.Uint64(body) != fc.seq {
		return 0, nil, errors.New("malformed or out-of-sequence forwarding response")
	}
	status, index, payload := body[8], binary.BigEndian.Uint64(body[9:17]), body[17:]
	switch status {
	case statusOK:
		return index, payload, nil
	case statusNotLeader:
		return 0, nil, fmt.Errorf("not the leader any more: %s", payload)
	default:
		return 0, nil, &remoteFailure{msg: string(payload)}
	}
}

func (p *forwardPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for addr, conns := range p.idle {
		for _, fc := range conns {
			_ = fc.conn.Close()
		}
		delete(p.idle, addr)
	}
}
