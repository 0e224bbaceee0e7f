package server_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/fsm"
)

// pikaTLS connects with Debian's pika over TLS (verifying the node against the CA), logs in
// with PLAIN as guest or with EXTERNAL and a client certificate, and round-trips a message.
const pikaTLS = `
import ssl, sys, pika
host, port, ca, cert, key, mode = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_2
if mode == "external":
    ctx.load_cert_chain(cert, key)
    creds = pika.credentials.ExternalCredentials()
else:
    creds = pika.PlainCredentials("guest", "guest")
params = pika.ConnectionParameters(host=host, port=int(port), credentials=creds,
                                   ssl_options=pika.SSLOptions(ctx, server_hostname=host))
conn = pika.BlockingConnection(params)
ch = conn.channel()
q = "pika-tls-" + mode
ch.queue_declare(q)
ch.confirm_delivery()
ch.basic_publish("", q, b"hello over tls")
method, props, body = ch.basic_get(q, auto_ack=True)
print(conn._impl.params.ssl_options is not None, body.decode())
conn.close()
`

// TestPikaOverTLS: Debian's pika talks amqps to a node with client-certificate verification,
// both with PLAIN and with EXTERNAL (certificate CN alice).
func TestPikaOverTLS(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("needs Debian's /usr/bin/python3 with python3-pika (installed by .ci/run)")
	}
	p := newTestPKI(t)
	issued, err := p.ca.Issue("alice", nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := issued.Write(p.dir, "client-alice")
	if err != nil {
		t.Fatal(err)
	}
	n := startTLSNode(t, p.files(false))
	if _, err := n.Broker.Apply(fsm.PutUser{Name: "alice", PasswordHash: "nope"}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Broker.Apply(fsm.SetPermissions{User: "alice", Vhost: "/", Configure: ".*", Write: ".*", Read: ".*"}); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "pika_tls.py")
	if err := os.WriteFile(script, []byte(pikaTLS), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(n.AMQPSAddr(), ":")
	for _, mode := range []string{"plain", "external"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "/usr/bin/python3", script, host, port, filepath.Join(p.dir, "ca.pem"), cert, key, mode).CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("pika %s over TLS: %v\n%s", mode, err, out)
		}
		if got := strings.TrimSpace(string(out)); got != "True hello over tls" {
			t.Fatalf("pika %s over TLS printed %q", mode, got)
		}
	}
}
