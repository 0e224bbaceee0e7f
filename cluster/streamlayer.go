package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// The Raft port authenticates every connection before hashicorp/raft reads a byte of it:
// without this, anything that reaches the port could send AppendEntries or RequestVote with a
// higher term and rewrite the topology. Handshake (nonces are 32 random bytes per connection):
//
//	dialler  → acceptor  raftMagic | clientNonce
//	acceptor → dialler   serverNonce | proof("server")
//	dialler  → acceptor  proof("client")
//	acceptor → dialler   raftAccepted
//
// proof(role) = HMAC-SHA256(key, role | clientNonce | serverNonce) with key derived from the
// cluster secret for this purpose only. Both sides check the other's proof, so a node neither
// takes Raft RPCs from a peer without the secret nor sends its log to one. The role label
// stops a proof being reflected back; the fresh nonces stop replays. What follows the
// handshake is raft's plain stream: against an attacker on the path, add --cluster-tls-*.
const (
	raftMagic         = "WRNRAFT1"
	raftAccepted      = byte(1)
	raftHandshakeWait = raftIOTimeout
	// maxPendingRaftHandshakes bounds connections that have not proved the secret yet, so a
	// flood of idle connections cannot pile up goroutines; more are closed at once.
	maxPendingRaftHandshakes = 64
)

// errRaftAuth means a Raft peer did not prove it holds the cluster secret.
var errRaftAuth = errors.New("raft peer failed authentication (cluster secrets differ?)")

// errSilentPeer: the connection closed before a byte arrived, as ProcessGone's probes do.
var errSilentPeer = errors.New("raft peer closed without a handshake")

func raftProof(key []byte, role string, clientNonce, serverNonce []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(role))
	m.Write(clientNonce)
	m.Write(serverNonce)
	return m.Sum(nil)
}

// authStreamLayer is a raft.StreamLayer over TCP whose Accept hands raft only connections that
// completed the handshake above, and whose Dial completes it before returning.
type authStreamLayer struct {
	ln        net.Listener
	advertise net.Addr
	key       []byte
	tls       *NodeTLS // nil: plain TCP under the handshake
	log       *slog.Logger
	onBreak   func() // nil, or called when an accepted connection's read fails (expedite.go)

	ready     chan net.Conn
	done      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup

	mu      sync.Mutex
	pending map[net.Conn]struct{} // in handshake; closed by Close
}

// newAuthTransport listens on bind and returns a raft transport whose every connection, in
// and out, is authenticated with key. advertise nil advertises the listener's address.
// onBreak (may be nil) hears of accepted connections that broke: the leader's, when it dies.
func newAuthTransport(bind string, advertise net.Addr, key []byte, nt *NodeTLS, log *slog.Logger, hl hclog.Logger, onBreak func()) (*raft.NetworkTransport, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	if advertise == nil {
		advertise = ln.Addr()
	}
	if a, ok := advertise.(*net.TCPAddr); !ok || a.IP == nil || a.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("raft address %s is not one other nodes can dial", advertise)
	}
	l := &authStreamLayer{
		ln: ln, advertise: advertise, key: key, tls: nt, log: log, onBreak: onBreak,
		ready: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{},
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: l, MaxPool: 3, Timeout: raftIOTimeout, Logger: hl,
	}), nil
}

func (l *authStreamLayer) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.log.Warn("raft: accept failed", "err", err)
			select {
			case <-l.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		l.mu.Lock()
		select {
		case <-l.done: // Close already cut the pending ones
			l.mu.Unlock()
			_ = c.Close()
			return
		default:
		}
		if len(l.pending) >= maxPendingRaftHandshakes {
			l.mu.Unlock()
			l.log.Warn("raft: too many connections in handshake; refusing one", "remote", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		l.pending[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go l.admit(c)
	}
}

// admit runs the acceptor's side of the handshake and hands the connection to raft.
func (l *authStreamLayer) admit(raw net.Conn) {
	defer l.wg.Done()
	c := raw
	if l.tls != nil {
		c = tls.Server(raw, l.tls.Server) // the TLS handshake runs within acceptHandshake's deadline
	}
	err := acceptHandshake(c, l.key)
	l.mu.Lock()
	delete(l.pending, raw)
	l.mu.Unlock()
	if errors.Is(err, errSilentPeer) {
		l.log.Debug("raft: a connection closed before saying anything (a port probe)", "remote", c.RemoteAddr().String())
		_ = c.Close()
		return
	}
	if err != nil {
		l.log.Warn("raft: refused a connection that did not prove the cluster secret", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	if l.onBreak != nil {
		c = &breakWatchConn{Conn: c, onBreak: l.onBreak}
	}
	select {
	case l.ready <- c:
	case <-l.done:
		_ = c.Close()
	}
}

// breakWatchConn reports the first failed read of an accepted Raft connection.
type breakWatchConn struct {
	net.Conn
	once    sync.Once
	onBreak func()
}

func (c *breakWatchConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(c.onBreak)
	}
	return n, err
}

func acceptHandshake(c net.Conn, key []byte) error {
	if err := c.SetDeadline(time.Now().Add(raftHandshakeWait)); err != nil {
		return err
	}
	hello := make([]byte, len(raftMagic)+nonceSize)
	if n, err := io.ReadFull(c, hello); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return errSilentPeer
		}
		return fmt.Errorf("read hello: %w", err)
	}
	if !bytes.Equal(hello[:len(raftMagic)], []byte(raftMagic)) {
		return fmt.Errorf("%w: not a Warren raft handshake", errRaftAuth)
	}
	clientNonce := hello[len(raftMagic):]
	serverNonce := make([]byte, nonceSize)
	if _, err := rand.Read(serverNonce); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	if _, err := c.Write(append(serverNonce, raftProof(key, "server", clientNonce, serverNonce)...)); err != nil {
		return fmt.Errorf("write challenge: %w", err)
	}
	proof := make([]byte, macSize)
	if _, err := io.ReadFull(c, proof); err != nil {
		return fmt.Errorf("read proof: %w", err)
	}
	if !hmac.Equal(proof, raftProof(key, "client", clientNonce, serverNonce)) {
		return errRaftAuth
	}
	if _, err := c.Write([]byte{raftAccepted}); err != nil {
		return fmt.Errorf("write accept: %w", err)
	}
	return c.SetDeadline(time.Time{})
}

func dialHandshake(c net.Conn, key []byte, deadline time.Time) error {
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	clientNonce := make([]byte, nonceSize)
	if _, err := rand.Read(clientNonce); err != nil {
		return fmt.Errorf("nonce: %w", err)
	}
	if _, err := c.Write(append([]byte(raftMagic), clientNonce...)); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	challenge := make([]byte, nonceSize+macSize)
	if _, err := io.ReadFull(c, challenge); err != nil {
		return fmt.Errorf("read challenge (a peer without the cluster secret closes here): %w", err)
	}
	serverNonce, proof := challenge[:nonceSize], challenge[nonceSize:]
	if !hmac.Equal(proof, raftProof(key, "server", clientNonce, serverNonce)) {
		return errRaftAuth
	}
	if _, err := c.Write(raftProof(key, "client", clientNonce, serverNonce)); err != nil {
		return fmt.Errorf("write proof: %w", err)
	}
	var ok [1]byte
	if _, err := io.ReadFull(c, ok[:]); err != nil {
		// A peer closes here when our proof is wrong, or when it is shutting down.
		return fmt.Errorf("%w: the peer closed after our proof: %v", errRaftAuth, err)
	}
	if ok[0] != raftAccepted {
		return fmt.Errorf("%w: the peer refused our proof", errRaftAuth)
	}
	return c.SetDeadline(time.Time{})
}

// Dial connects to a peer's Raft port and authenticates both ends within timeout.
func (l *authStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("tcp", string(address), timeout)
	if err != nil {
		return nil, err
	}
	if l.tls != nil {
		c = tls.Client(c, l.tls.Client)
	}
	if err := dialHandshake(c, l.key, deadline); err != nil {
		_ = c.Close()
		l.log.Warn("raft: peer failed the handshake", "peer", string(address), "err", err)
		return nil, fmt.Errorf("raft handshake with %s: %w", address, err)
	}
	return c, nil
}

// Accept returns the next authenticated connection.
func (l *authStreamLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops listening, cuts connections still in handshake and waits for their goroutines.
func (l *authStreamLayer) Close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.done)
		err = l.ln.Close()
		l.mu.Lock()
		for c := range l.pending {
			_ = c.Close()
		}
		l.mu.Unlock()
		l.wg.Wait()
	})
	return err
}

func (l *authStreamLayer) Addr() net.Addr { return l.advertise }
