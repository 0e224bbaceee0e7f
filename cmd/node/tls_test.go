package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// syncBuffer is a bytes.Buffer a child process writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func caPool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatal("no certificate in ca.pem")
	}
	return pool
}

// TestTLSOnlyNodeWithGeneratedCertsReloadsOnSIGHUP: `node certs` writes a CA and node/client
// certificates; the binary started --tls-only with them serves amqps and https and no
// plaintext listener; after new certificates (from a new CA) are written and SIGHUP is sent,
// new clients verify against the new CA while a connection opened before keeps working.
func TestTLSOnlyNodeWithGeneratedCertsReloadsOnSIGHUP(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "warren")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	certs := t.TempDir()
	var out, errb bytes.Buffer
	if code := run([]string{"certs", "--dir", certs, "--nodes", "n1", "--clients", "guest"}, &out, &errb); code != 0 {
		t.Fatalf("node certs: exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "client-guest.pem", "client-guest-key.pem"} {
		if _, err := os.Stat(filepath.Join(certs, f)); err != nil {
			t.Fatalf("node certs did not write %s: %v\n%s", f, err, out.String())
		}
	}

	// An explicit plaintext address is refused in TLS-only mode.
	errb.Reset()
	if code := run([]string{"run", "--tls-only", "--amqp-addr", "127.0.0.1:0", "--amqps-addr", "127.0.0.1:0",
		"--tls-cert", filepath.Join(certs, "n1.pem"), "--tls-key", filepath.Join(certs, "n1-key.pem"), "--data-dir", t.TempDir()}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "refusing a plaintext AMQP listener") {
		t.Fatalf("tls-only with --amqp-addr: exit %d: %s", code, errb.String())
	}

	addrs := freePorts(t, 4) // amqps, https, raft, gossip
	cmd := exec.Command(bin, "run", "--id", "tls1", "--data-dir", t.TempDir(), "--tls-only",
		"--amqps-addr", addrs[0], "--https-addr", addrs[1], "--raft-addr", addrs[2], "--gossip-addr", addrs[3],
		"--tls-cert", filepath.Join(certs, "n1.pem"), "--tls-key", filepath.Join(certs, "n1-key.pem"), "--tls-ca", filepath.Join(certs, "ca.pem"))
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	tlsCfg := &tls.Config{RootCAs: caPool(t, certs), ServerName: "127.0.0.1"}
	var conn *amqp.Connection
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := amqp.DialTLS("amqps://guest:guest@"+addrs[0]+"/", tlsCfg)
		if err == nil {
			conn = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never accepted amqps on %s: %v\n%s", addrs[0], err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer conn.Close()
	if !strings.Contains(stderr.String(), `amqp="" amqps=`+addrs[0]) {
		t.Fatalf("tls-only node: want no plaintext AMQP listener\n%s", stderr.String())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 5 * time.Second}
	req, _ := http.NewRequest("GET", "https://"+addrs[1]+"/api/overview", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("https api: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("https api: %s", resp.Status)
	}

	// The CLI reaches a TLS-only node's API over https.
	out.Reset()
	errb.Reset()
	if code := run([]string{"status", "--http", "https://" + addrs[1], "--tls-ca", filepath.Join(certs, "ca.pem")}, &out, &errb); code != 0 ||
		!strings.Contains(out.String(), "tls1  alive") {
		t.Fatalf("status over https: exit %d\n%s%s", code, out.String(), errb.String())
	}

	// New CA and certificates, then SIGHUP.
	if code := run([]string{"certs", "--dir", certs, "--nodes", "n1"}, &out, &errb); code != 0 {
		t.Fatalf("node certs again: %s", errb.String())
	}
	newCfg := &tls.Config{RootCAs: caPool(t, certs), ServerName: "127.0.0.1"}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for {
		c, err := amqp.DialTLS("amqps://guest:guest@"+addrs[0]+"/", newCfg)
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP the node does not present the new certificate: %v\n%s", err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("connection opened before SIGHUP: %v", err)
	}
	if _, err := ch.QueueDeclare("", false, true, true, false, nil); err != nil {
		t.Fatalf("connection opened before SIGHUP: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
}
