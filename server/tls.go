package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync/atomic"

	"github.com/warrenmq/warren/wire"
)

// TLSFiles names the PEM files of the node's TLS listeners (amqps, https). They are read at
// start and again on every Reload.
type TLSFiles struct {
	Cert, Key string
	// CA verifies client certificates; required with VerifyPeer.
	CA string
	// VerifyPeer requires every client to present a certificate signed by CA (RabbitMQ's
	// verify_peer with fail_if_no_peer_cert); such clients may log in with EXTERNAL.
	VerifyPeer bool
}

// TLSSource hands out TLS settings built from TLSFiles. Reload swaps in freshly read files;
// handshakes after it use them, established connections keep theirs (nothing is dropped).
type TLSSource struct {
	files TLSFiles
	log   *slog.Logger
	cur   atomic.Pointer[tls.Config]
}

// NewTLSSource reads the files once; a missing or bad file is an error naming it.
func NewTLSSource(files TLSFiles, log *slog.Logger) (*TLSSource, error) {
	if files.Cert == "" || files.Key == "" {
		return nil, errors.New("tls: a certificate and its key are both required (--tls-cert, --tls-key)")
	}
	if files.VerifyPeer && files.CA == "" {
		return nil, errors.New("tls: verifying client certificates (--tls-verify-peer) needs the CA that signs them (--tls-ca)")
	}
	if log == nil {
		log = slog.Default()
	}
	t := &TLSSource{files: files, log: log}
	c, err := t.build()
	if err != nil {
		return nil, err
	}
	t.cur.Store(c)
	return t, nil
}

func (t *TLSSource) build() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.files.Cert, t.files.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load certificate %s and key %s: %w", t.files.Cert, t.files.Key, err)
	}
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
	}
	if t.files.CA != "" {
		pem, err := os.ReadFile(t.files.CA)
		if err != nil {
			return nil, fmt.Errorf("tls: read CA %s: %w", t.files.CA, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: no PEM certificate in CA file %s", t.files.CA)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.VerifyClientCertIfGiven
	}
	if t.files.VerifyPeer {
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

// Reload reads the files again; on an error the previous settings stay in use.
func (t *TLSSource) Reload() error {
	c, err := t.build()
	if err != nil {
		return err
	}
	t.cur.Store(c)
	t.log.Info("tls: certificates reloaded", "cert", t.files.Cert)
	return nil
}

// Config is the tls.Config for a listener: each handshake picks the settings current then.
func (t *TLSSource) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return t.cur.Load(), nil
		},
	}
}

// ListenTLS serves AMQP over TLS (amqps) on addr beside, or instead of, the plain listener.
func (s *Server) ListenTLS(addr string, src *TLSSource) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen amqps on %s: %w", addr, err)
	}
	tln := tls.NewListener(ln, src.Config())
	s.mu.Lock()
	s.tlsLn = tln
	s.mu.Unlock()
	s.startMemoryAlarm()
	s.wg.Add(1)
	go s.acceptLoop(tln)
	return nil
}

// TLSAddr returns the amqps listener's address, or nil without one.
func (s *Server) TLSAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tlsLn == nil {
		return nil
	}
	return s.tlsLn.Addr()
}

// peerCertName is the common name of the client's verified certificate ("" for a plain
// connection or one without a verified certificate): the user name of SASL EXTERNAL, as
// RabbitMQ's ssl_cert_login_from = common_name.
func (c *conn) peerCertName() string {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return ""
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return ""
	}
	return st.PeerCertificates[0].Subject.CommonName
}

// mechanisms lists the SASL mechanisms offered: EXTERNAL only to a client whose certificate
// was verified.
func (c *conn) mechanisms() string {
	if c.peerCertName() != "" {
		return "AMQPLAIN PLAIN EXTERNAL"
	}
	return "AMQPLAIN PLAIN"
}

// authenticateExternal logs the client in as the common name of its verified certificate;
// the user must exist (its password is not used), as with RabbitMQ's rabbitmq_auth_mechanism_ssl.
func (c *conn) authenticateExternal() error {
	refuse := func(why string) error {
		c.closeWithError(errorf(wire.AccessRefused, "Login was refused using authentication mechanism EXTERNAL. For details see the broker logfile."))
		return fmt.Errorf("%w: EXTERNAL: %s", errAuthFailed, why)
	}
	user := c.peerCertName()
	if user == "" {
		return refuse("no verified client certificate")
	}
	if _, _, ok := c.s.node.FSM().User(user); !ok {
		return refuse(fmt.Sprintf("certificate common name %q is not a user", user))
	}
	if slices.Contains(c.s.cfg.LoopbackUsers, user) && !isLoopback(c.nc.RemoteAddr()) {
		return refuse(fmt.Sprintf("user %q may connect only via localhost", user))
	}
	c.user = user
	return nil
}
