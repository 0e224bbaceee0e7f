package server_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/pki"
	"github.com/warrenmq/warren/server"
)

// testPKI is a throw-away CA with a server certificate for 127.0.0.1 and client certificates.
type testPKI struct {
	dir        string
	ca         *pki.CA
	pool       *x509.CertPool
	cert, key  string
	clientCert map[string]tls.Certificate
}

func newTestPKI(t *testing.T, clients ...string) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), pool: x509.NewCertPool(), clientCert: map[string]tls.Certificate{}}
	var err error
	if p.ca, err = pki.NewCA("test CA", time.Hour); err != nil {
		t.Fatal(err)
	}
	p.pool.AppendCertsFromPEM(p.ca.CertPEM)
	caFiles := pki.Issued{CertPEM: p.ca.CertPEM}
	caFiles.KeyPEM, _ = p.ca.KeyPEM()
	if err := caFiles.WriteAs(filepath.Join(p.dir, "ca.pem"), filepath.Join(p.dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	p.issueServer(t, "server-1")
	for _, name := range clients {
		issued, err := p.ca.Issue(name, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(issued.CertPEM, issued.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		p.clientCert[name] = c
	}
	return p
}

// issueServer (re)writes the server certificate files with the given common name.
func (p *testPKI) issueServer(t *testing.T, cn string) {
	t.Helper()
	issued, err := p.ca.Issue(cn, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if p.cert, p.key, err = issued.Write(p.dir, "server"); err != nil {
		t.Fatal(err)
	}
}

func (p *testPKI) files(verifyPeer bool) *server.TLSFiles {
	return &server.TLSFiles{Cert: p.cert, Key: p.key, CA: filepath.Join(p.dir, "ca.pem"), VerifyPeer: verifyPeer}
}

func (p *testPKI) client(certs ...string) *tls.Config {
	c := &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"}
	for _, name := range certs {
		c.Certificates = append(c.Certificates, p.clientCert[name])
	}
	return c
}

func startTLSNode(t *testing.T, files *server.TLSFiles, tune ...func(*node.Config)) *testNode {
	t.Helper()
	return startNode(t, append([]func(*node.Config){func(c *node.Config) {
		c.AMQPSAddr, c.TLS = "127.0.0.1:0", files
	}}, tune...)...)
}

func amqpsURL(n *testNode, userinfo string) string {
	return "amqps://" + userinfo + n.AMQPSAddr() + "/"
}

// TestAMQPSServerVerification: amqp091-go over TLS verifies the node's certificate against
// the CA and then works as over plain TCP; a client that does not trust the CA, or offers
// only TLS 1.1, is refused during the TLS handshake.
func TestAMQPSServerVerification(t *testing.T) {
	p := newTestPKI(t)
	n := startTLSNode(t, p.files(false))
	c, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client())
	if err != nil {
		t.Fatalf("amqps dial: %v", err)
	}
	defer c.Close()
	if st := c.ConnectionState(); st.Version < tls.VersionTLS12 || !st.HandshakeComplete {
		t.Fatalf("TLS state: version %x complete %v", st.Version, st.HandshakeComplete)
	}
	ch := channel(t, c)
	if _, err := ch.QueueDeclare("over-tls", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "over-tls", false, false, amqp.Publishing{Body: []byte("secret")}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, ok, err := ch.Get("over-tls", true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(m.Body) != "secret" {
				t.Fatalf("body %q", m.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("message published over amqps never arrived")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if _, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), &tls.Config{ServerName: "127.0.0.1"}); err == nil ||
		!errors.As(err, new(*tls.CertificateVerificationError)) && !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a client that does not trust the CA: %v", err)
	}
	old := p.client()
	old.MaxVersion = tls.VersionTLS11
	if _, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), old); err == nil {
		t.Fatal("a TLS 1.1 client was accepted")
	}
}

// TestAMQPSClientCertificatesAndEXTERNAL: with --tls-verify-peer a client without a
// certificate is refused; one with a certificate logs in with EXTERNAL as its CN (a user that
// exists, no password), or with PLAIN as before; a certificate whose CN is no user gets 403.
func TestAMQPSClientCertificatesAndEXTERNAL(t *testing.T) {
	p := newTestPKI(t, "alice", "mallory")
	n := startTLSNode(t, p.files(true))
	if _, err := n.Broker.Apply(fsm.PutUser{Name: "alice", PasswordHash: "nope"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Broker.Apply(fsm.SetPermissions{User: "alice", Vhost: "/", Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		t.Fatal(err)
	}

	if _, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client()); err == nil {
		t.Fatal("a client without a certificate was accepted with --tls-verify-peer")
	}

	c, err := amqp.DialTLS_ExternalAuth(amqpsURL(n, ""), p.client("alice"))
	if err != nil {
		t.Fatalf("EXTERNAL with alice's certificate: %v", err)
	}
	ch := channel(t, c)
	if _, err := ch.QueueDeclare("alices", false, false, false, false, nil); err != nil {
		t.Fatalf("alice declares: %v", err)
	}
	_ = c.Close()

	c, err = amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client("alice"))
	if err != nil {
		t.Fatalf("PLAIN over a client-certificate connection: %v", err)
	}
	_ = c.Close()

	_, err = amqp.DialTLS_ExternalAuth(amqpsURL(n, ""), p.client("mallory"))
	wantCode(t, err, amqp.AccessRefused)

	// EXTERNAL is not offered on a plain connection.
	_, err = amqp.DialConfig("amqp://"+n.AMQPAddr()+"/", amqp.Config{SASL: []amqp.Authentication{&amqp.ExternalAuth{}}})
	if !errors.Is(err, amqp.ErrSASL) {
		t.Fatalf("EXTERNAL over plain TCP: %v", err)
	}
}

// TestTLSOnlyRefusesPlaintext: a TLS-only node refuses to open a plaintext listener, and an
// AMQP client speaking plain TCP to its amqps port gets no AMQP connection.
func TestTLSOnlyRefusesPlaintext(t *testing.T) {
	p := newTestPKI(t)
	_, err := node.Start(node.Config{
		ID: "plain", DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", AMQPSAddr: "127.0.0.1:0", TLS: p.files(false), TLSOnly: true,
		Logger: quietLogger(),
	})
	if err == nil || !strings.Contains(err.Error(), "refusing a plaintext AMQP listener") {
		t.Fatalf("tls-only with a plaintext address: %v", err)
	}
	n := startTLSNode(t, p.files(false), func(c *node.Config) { c.AMQPAddr, c.TLSOnly = "", true })
	if n.AMQPAddr() != "" {
		t.Fatalf("tls-only node listens in plaintext on %s", n.AMQPAddr())
	}
	if _, err := amqp.DialConfig("amqp://guest:guest@"+n.AMQPSAddr()+"/", amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)}); err == nil {
		t.Fatal("plain AMQP to the amqps port connected")
	}
	c, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client())
	if err != nil {
		t.Fatalf("amqps on a tls-only node: %v", err)
	}
	_ = c.Close()
}

// TestCertificateReloadUnderLoad: while publishers with confirms run over amqps, the
// certificate files are replaced and reloaded: new connections get the new certificate, no
// open connection is dropped and every publish is confirmed.
func TestCertificateReloadUnderLoad(t *testing.T) {
	p := newTestPKI(t)
	n := startTLSNode(t, p.files(false))
	peerCN := func(c *amqp.Connection) string { return c.ConnectionState().PeerCertificates[0].Subject.CommonName }

	const publishers = 4
	var (
		wg      sync.WaitGroup
		stop    = make(chan struct{})
		mu      sync.Mutex
		failure error
		acked   int
	)
	fail := func(err error) {
		mu.Lock()
		if failure == nil {
			failure = err
		}
		mu.Unlock()
	}
	var conns []*amqp.Connection
	for i := 0; i < publishers; i++ {
		c, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if cn := peerCN(c); cn != "server-1" {
			t.Fatalf("certificate before reload: %s", cn)
		}
		conns = append(conns, c)
		closed := c.NotifyClose(make(chan *amqp.Error, 1))
		ch := channel(t, c)
		if _, err := ch.QueueDeclare("reload", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.Confirm(false); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case e := <-closed:
					fail(errors.New("connection closed during reload: " + e.Error()))
					return
				default:
				}
				dc, err := ch.PublishWithDeferredConfirm("", "reload", false, false, amqp.Publishing{Body: []byte("x")})
				if err != nil {
					fail(err)
					return
				}
				if ok := dc.Wait(); !ok {
					fail(errors.New("publish nacked"))
					return
				}
				mu.Lock()
				acked++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	p.issueServer(t, "server-2")
	if err := n.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	c2, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client())
	if err != nil {
		t.Fatalf("dial after reload: %v", err)
	}
	if cn := peerCN(c2); cn != "server-2" {
		t.Fatalf("certificate after reload: %s", cn)
	}
	_ = c2.Close()
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	for _, c := range conns {
		if c.IsClosed() {
			t.Fatal("a connection opened before the reload is closed")
		}
	}
	if acked == 0 {
		t.Fatal("no publish confirmed")
	}

	// A broken file keeps the running certificate.
	if err := os.WriteFile(p.cert, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n.ReloadTLS(); err == nil {
		t.Fatal("reload of a broken certificate succeeded")
	}
	c3, err := amqp.DialTLS(amqpsURL(n, "guest:guest@"), p.client())
	if err != nil || peerCN(c3) != "server-2" {
		t.Fatalf("after a failed reload: %v", err)
	}
	_ = c3.Close()
}
