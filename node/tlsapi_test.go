package node_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/pki"
	"github.com/warrenmq/warren/server"
)

// TestTLSOnlyClusterAPI: in a cluster whose nodes serve AMQP and the API over TLS only, with
// certificates that name the node but not the address the others call it on, the API of h1
// still shows what only h2 knows (a queue's depth at its owner, a connection to h2): nodes
// call each other's https API, checking the chain against the cluster's CA.
func TestTLSOnlyClusterAPI(t *testing.T) {
	caPath, issue := testCA(t)
	certs := map[string]*cluster.TLSFiles{}
	for _, id := range []string{"h1", "h2"} {
		certs[id] = issue(id, id) // no IP address
	}
	nodes := startLoggedCluster(t, 2, "tls-secret", io.Discard, func(c *node.Config) {
		f := certs[c.ID]
		c.AMQPAddr, c.AMQPSAddr, c.HTTPSAddr, c.TLSOnly = "", "127.0.0.1:0", "127.0.0.1:0", true
		c.TLS = &server.TLSFiles{Cert: f.Cert, Key: f.Key, CA: caPath}
		c.ClusterTLS = f
	})
	pem, err := os.ReadFile(caPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	clientTLS := func(name string) *tls.Config { return &tls.Config{RootCAs: pool, ServerName: name} }

	c2, err := amqp.DialTLS("amqps://guest:guest@"+nodes[1].AMQPSAddr()+"/", clientTLS("h2"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	ch2, err := c2.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch2.QueueDeclare("tls-only-q", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := ch2.Publish("", "tls-only-q", false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}

	h1 := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS("h1")}, Timeout: 10 * time.Second}
	get := func(path string, out any) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, "https://"+nodes[0].HTTPS.Addr()+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("guest", "guest")
		resp, err := h1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("GET %s: %s: %v", path, resp.Status, err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var q struct {
			Messages int    `json:"messages"`
			Node     string `json:"node"`
		}
		var conns []map[string]any
		get("/api/queues/%2F/tls-only-q", &q)
		get("/api/connections", &conns)
		if q.Messages == 3 && q.Node == "h2" && len(conns) == 1 && conns[0]["node"] == "h2" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("h1's API does not see h2's state: queue %+v, connections %v", q, conns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testCA writes a throw-away CA; issue writes a certificate of it for a node (CN id, valid for
// hosts) and returns the node's cluster TLS files.
func testCA(t *testing.T) (caPath string, issue func(id string, hosts ...string) *cluster.TLSFiles) {
	t.Helper()
	ca, err := pki.NewCA("cluster", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFiles := pki.Issued{CertPEM: ca.CertPEM}
	caFiles.KeyPEM, _ = ca.KeyPEM()
	caPath = filepath.Join(dir, "ca.pem")
	if err := caFiles.WriteAs(caPath, filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	return caPath, func(id string, hosts ...string) *cluster.TLSFiles {
		t.Helper()
		issued, err := ca.Issue(id, hosts, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		cert, key, err := issued.Write(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		return &cluster.TLSFiles{Cert: cert, Key: key, CA: caPath}
	}
}
