package datalink

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"time"
)

// Handshake (both nonces are 32 random bytes, fresh per connection):
//
//	client → server  hello     {version, clientID, clientNonce}
//	server → client  challenge {version, serverID, serverNonce, proof("server")}
//	client → server  proof     {proof("client")}
//	server → client  welcome
//
// proof(role) = HMAC-SHA256(key, role, clientNonce, serverNonce, clientID, serverID) with
// key = SHA-256("warren-datalink\x00"+secret). The role label stops a peer from reflecting
// one side's proof back as the other's; the fresh nonces stop replays. Each side checks the
// other's proof before trusting anything else it says, and the server reads no request frame
// before the client's proof checked out.

const nonceSize = 32

// ErrAuth reports a peer that could not prove it knows the cluster secret.
var ErrAuth = errors.New("datalink: peer failed authentication")

func secretKey(secret string) []byte {
	k := sha256.Sum256([]byte("warren-datalink\x00" + secret))
	return k[:]
}

func handshakeProof(key []byte, role string, clientNonce, serverNonce []byte, clientID, serverID string) []byte {
	m := hmac.New(sha256.New, key)
	var n [2]byte
	for _, field := range [][]byte{[]byte(role), clientNonce, serverNonce, []byte(clientID), []byte(serverID)} {
		// Length-prefixed so that no two different field lists hash the same.
		binary.BigEndian.PutUint16(n[:], uint16(len(field)))
		m.Write(n[:])
		m.Write(field)
	}
	return m.Sum(nil)
}

func newNonce() ([]byte, error) {
	b := make([]byte, nonceSize)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("datalink: nonce: %w", err)
	}
	return b, nil
}

// handshakeIO reads and writes handshake frames within one deadline.
type handshakeIO struct {
	conn net.Conn
	fr   *frameReader
	f    frame
	buf  []byte
}

func (h *handshakeIO) send(f *frame) error {
	h.buf = appendFrame(h.buf[:0], f)
	if _, err := h.conn.Write(h.buf); err != nil {
		return fmt.Errorf("datalink: handshake write: %w", err)
	}
	return nil
}

func (h *handshakeIO) expect(typ frameType) (*frame, error) {
	body, _, err := h.fr.next()
	if err != nil {
		return nil, fmt.Errorf("datalink: handshake read: %w", err)
	}
	if err := decodeFrame(body, &h.f, nil); err != nil {
		return nil, fmt.Errorf("datalink: handshake: %w", err)
	}
	if h.f.typ != typ {
		return nil, fmt.Errorf("datalink: handshake: got frame type %d, want %d", h.f.typ, typ)
	}
	return &h.f, nil
}

// beginHandshake bounds the whole exchange by timeout; endHandshake switches the reader to
// the link's limits.
func beginHandshake(conn net.Conn, fr *frameReader, dr *deadlineReader, timeout time.Duration) *handshakeIO {
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	dr.timeout = timeout
	fr.max = maxHandshakeFrame
	return &handshakeIO{conn: conn, fr: fr}
}

func endHandshake(conn net.Conn, fr *frameReader, dr *deadlineReader, cfg Config) {
	_ = conn.SetWriteDeadline(time.Time{})
	dr.timeout = cfg.PeerTimeout
	fr.max = maxFrameSize
}

// clientHandshake authenticates both ends from the dialling side and returns the server's
// node ID.
func clientHandshake(h *handshakeIO, cfg Config) (string, error) {
	key := secretKey(cfg.Secret)
	clientNonce, err := newNonce()
	if err != nil {
		return "", err
	}
	if err := h.send(&frame{typ: frameHello, nodeID: cfg.NodeID, nonce: clientNonce}); err != nil {
		return "", err
	}
	ch, err := h.expect(frameChallenge)
	if err != nil {
		return "", err
	}
	serverID := ch.nodeID
	if len(ch.nonce) != nonceSize {
		return "", fmt.Errorf("datalink: handshake: server nonce of %d bytes", len(ch.nonce))
	}
	serverNonce := append([]byte(nil), ch.nonce...)
	want := handshakeProof(key, "server", clientNonce, serverNonce, cfg.NodeID, serverID)
	if !hmac.Equal(want, ch.proof) {
		return "", fmt.Errorf("%w: server %q", ErrAuth, serverID)
	}
	proof := handshakeProof(key, "client", clientNonce, serverNonce, cfg.NodeID, serverID)
	if err := h.send(&frame{typ: frameProof, proof: proof}); err != nil {
		return "", err
	}
	if _, err := h.expect(frameWelcome); err != nil {
		// The server closes without a word when our proof is wrong.
		return "", fmt.Errorf("datalink: refused by server %q (wrong cluster secret?): %w", serverID, err)
	}
	return serverID, nil
}

// serverHandshake authenticates both ends from the accepting side and returns the client's
// node ID. The welcome frame is sent by the caller once the link is registered.
func serverHandshake(h *handshakeIO, cfg Config) (string, error) {
	key := secretKey(cfg.Secret)
	hello, err := h.expect(frameHello)
	if err != nil {
		return "", err
	}
	clientID := hello.nodeID
	if len(hello.nonce) != nonceSize {
		return "", fmt.Errorf("datalink: handshake: client nonce of %d bytes", len(hello.nonce))
	}
	clientNonce := append([]byte(nil), hello.nonce...)
	serverNonce, err := newNonce()
	if err != nil {
		return "", err
	}
	proof := handshakeProof(key, "server", clientNonce, serverNonce, clientID, cfg.NodeID)
	if err := h.send(&frame{typ: frameChallenge, nodeID: cfg.NodeID, nonce: serverNonce, proof: proof}); err != nil {
		return "", err
	}
	pf, err := h.expect(frameProof)
	if err != nil {
		return "", err
	}
	want := handshakeProof(key, "client", clientNonce, serverNonce, clientID, cfg.NodeID)
	if !hmac.Equal(want, pf.proof) {
		return "", fmt.Errorf("%w: client %q", ErrAuth, clientID)
	}
	return clientID, nil
}
