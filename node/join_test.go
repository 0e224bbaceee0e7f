package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

func startLoneNode(t *testing.T, id, secret string) *node.Node {
	t.Helper()
	n, err := node.Start(node.Config{
		ID: id, DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
		RaftAddr: freeAddr(t), GossipAddr: freeAddr(t), ForwardAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
		ClusterSecret: secret,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
	})
	if err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func postJoin(t *testing.T, n *node.Node, seed string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.HTTP.Addr()+"/api/cluster/join", strings.NewReader(`{"seeds":["`+seed+`"]}`))
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestJoinAtRuntime: a node started on its own (a one-node cluster of its own) is asked
// through the HTTP API (`node join`) to join a running cluster: it becomes a Raft voter, takes
// the cluster's topology, and serves clients like any member. A node that holds a queue of
// its own is refused with the reason, and keeps its queue.
func TestJoinAtRuntime(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	ch1 := dialNode(t, nodes[0])
	if _, err := ch1.QueueDeclare("before-join", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}

	busy := startLoneNode(t, "busy", "s3cret")
	chBusy := dialNode(t, busy)
	if _, err := chBusy.QueueDeclare("mine", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if code, body := postJoin(t, busy, nodes[0].Members.GossipAddr()); code != http.StatusConflict || !strings.Contains(body, "queues of its own") {
		t.Fatalf("join of a node with its own queue: HTTP %d %s, want 409 naming the queues", code, body)
	}
	if _, ok := busy.FSM.Queue("/", "mine"); !ok {
		t.Fatal("the refused node lost its queue")
	}

	fresh := startLoneNode(t, "c3", "s3cret")
	if code, body := postJoin(t, fresh, nodes[0].Members.GossipAddr()); code != http.StatusNoContent {
		t.Fatalf("join: HTTP %d %s", code, body)
	}
	if q, ok := fresh.FSM.Queue("/", "before-join"); !ok || q.Owner != "c1" {
		t.Fatalf("the joined node does not see the cluster's queue: %+v %v", q, ok)
	}
	servers, err := nodes[0].Store.Configuration()
	if err != nil || len(servers) != 3 {
		t.Fatalf("raft configuration after the join: %v %v", servers, err)
	}
	all := append(nodes[:2:2], fresh)
	waitAllAlive(t, all)
	waitDigests(t, all)

	// A client of the new node declares (forwarded to the leader) and publishes to c1's queue.
	ch3 := dialNode(t, fresh)
	if _, err := ch3.QueueDeclare("after-join", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch3.Confirm(false); err != nil {
		t.Fatal(err)
	}
	c, err := ch3.PublishWithDeferredConfirmWithContext(context.Background(), "", "before-join", false, false,
		amqp.Publishing{Body: []byte("via the new node"), DeliveryMode: amqp.Persistent})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := c.WaitContext(context.Background()); err != nil || !ok {
		t.Fatalf("confirm through the joined node: %v %v", ok, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		d, ok, err := ch1.Get("before-join", true)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(d.Body) != "via the new node" {
				t.Fatalf("got %q", d.Body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the message published through the joined node never arrived")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRebalanceAfterJoin: queues all on one node spread over the cluster once a node joins and
// `node rebalance` runs (POST /api/cluster/rebalance), and every message moves with its queue.
func TestRebalanceAfterJoin(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	ch1 := dialNode(t, nodes[0])
	if err := ch1.Confirm(false); err != nil {
		t.Fatal(err)
	}
	sent := map[string]bool{}
	for q := range 4 {
		name := fmt.Sprint("rq-", q)
		if _, err := ch1.QueueDeclare(name, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := range 50 {
			body := fmt.Sprintf("%s/%d", name, i)
			c, err := ch1.PublishWithDeferredConfirmWithContext(context.Background(), "", name, false, false,
				amqp.Publishing{Body: []byte(body), DeliveryMode: amqp.Persistent})
			if err != nil {
				t.Fatal(err)
			}
			if ok, _ := c.WaitContext(context.Background()); !ok {
				t.Fatal("not confirmed")
			}
			sent[body] = true
		}
	}
	c3 := startLoneNode(t, "c3", "s3cret")
	if code, body := postJoin(t, c3, nodes[0].Members.GossipAddr()); code != http.StatusNoContent {
		t.Fatalf("join: HTTP %d %s", code, body)
	}
	all := []*node.Node{nodes[0], nodes[1], c3}
	waitAllAlive(t, all)
	req, _ := http.NewRequest(http.MethodPost, "http://"+nodes[1].HTTP.Addr()+"/api/cluster/rebalance", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"moved":2`) {
		t.Fatalf("rebalance: HTTP %d %s, want 2 queues moved (4 queues, 2/1/1)", resp.StatusCode, b)
	}
	owners := map[string]int{}
	for _, q := range nodes[0].FSM.Queues("/") {
		owners[q.Owner]++
	}
	if owners["c1"] != 2 || owners["c2"] != 1 || owners["c3"] != 1 {
		t.Fatalf("owners after rebalance: %v", owners)
	}
	ch2 := dialNode(t, nodes[1])
	got := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < len(sent) && time.Now().Before(deadline) {
		progress := false
		for q := range 4 {
			d, ok, err := ch2.Get(fmt.Sprint("rq-", q), true)
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if ok {
				if got[string(d.Body)] || !sent[string(d.Body)] {
					t.Fatalf("duplicate or unknown message %q", d.Body)
				}
				got[string(d.Body)] = true
				progress = true
			}
		}
		if !progress {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if len(got) != len(sent) {
		t.Fatalf("%d of %d messages after the rebalance", len(got), len(sent))
	}
	waitDigests(t, all)
}
