package node_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/node"
)

// TestClusterMutualTLS: three nodes with --cluster-tls-* certificates of one CA form a cluster
// (Raft over TLS), a queue declared on h2 is written through the leader (forwarding over TLS)
// and a publish on h1 reaches it (data link over TLS); a data-link peer that holds the secret
// but no certificate is refused.
func TestClusterMutualTLS(t *testing.T) {
	_, issue := testCA(t)
	files := map[string]*cluster.TLSFiles{}
	for _, id := range []string{"h1", "h2", "h3"} {
		files[id] = issue(id, "127.0.0.1")
	}
	nodes := startLoggedCluster(t, 3, "tls-secret", io.Discard, func(c *node.Config) { c.ClusterTLS = files[c.ID] })

	ch2 := dialNode(t, nodes[1])
	if _, err := ch2.QueueDeclare("over-mtls", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ch1 := dialNode(t, nodes[0])
	if err := ch1.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch1.PublishWithDeferredConfirm("", "over-mtls", false, false, amqp.Publishing{Body: []byte("m"), DeliveryMode: amqp.Persistent})
	if err != nil {
		t.Fatal(err)
	}
	if !dc.Wait() {
		t.Fatal("publish to another node's queue over mutual TLS was nacked")
	}
	if m, ok, err := ch2.Get("over-mtls", true); err != nil || !ok || string(m.Body) != "m" {
		t.Fatalf("get on the owner: %v %v", ok, err)
	}

	m, _ := nodes[0].Members.Member("h2")
	p := datalink.Dial(m.Meta.DataAddr, datalink.Config{NodeID: "h9", Secret: "tls-secret", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ConnectWait: time.Second}, nil)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := p.Publish(ctx, []string{"over-mtls"}, []byte("forged"), false); !errors.Is(err, datalink.ErrLinkDown) || p.Up() {
		t.Fatalf("a data-link peer with the secret but no certificate: %v (link up %v)", err, p.Up())
	}
}
