package node_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/warrenmq/warren/node"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/rabbitmq/amqp091-go.(*Connection).heartbeater"))
}

// diskConfig is a node on a real data dir with a real TCP Raft transport, logs discarded.
func diskConfig(t *testing.T, id string) node.Config {
	return node.Config{
		ID: id, DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", RaftAddr: freeAddr(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestRestartKeepsDurableTopology restarts a node on its data dir (real raft-boltdb and TCP
// transport) and checks RabbitMQ's rule: durable exchanges, queues and bindings survive,
// transient and exclusive ones do not.
func TestRestartKeepsDurableTopology(t *testing.T) {
	cfg := diskConfig(t, "restart")
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(ch.ExchangeDeclare("d-x", "topic", true, false, false, false, nil))
	must(ch.ExchangeDeclare("t-x", "topic", false, false, false, false, nil))
	_, err = ch.QueueDeclare("d-q", true, false, false, false, amqp.Table{"x-max-length": int32(5)})
	must(err)
	_, err = ch.QueueDeclare("t-q", false, false, false, false, nil)
	must(err)
	_, err = ch.QueueDeclare("x-q", true, false, true, false, nil)
	must(err)
	must(ch.QueueBind("d-q", "a.#", "d-x", false, nil))
	digestBefore := n.FSM.Digest()
	_ = conn.Close()
	must(n.Close())

	n2, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n2.Close()
	if n2.FSM.Digest() == digestBefore {
		t.Fatal("digest unchanged: transient topology was not dropped")
	}
	conn2, err := amqp.Dial("amqp://guest:guest@" + n2.AMQPAddr() + "/")
	if err != nil {
		t.Fatalf("guest could not log in after restart: %v", err)
	}
	defer conn2.Close()
	probe := func(f func(*amqp.Channel) error) error {
		c, err := conn2.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return f(c)
	}
	if err := probe(func(c *amqp.Channel) error {
		return c.ExchangeDeclarePassive("d-x", "topic", true, false, false, false, nil)
	}); err != nil {
		t.Fatalf("durable exchange lost: %v", err)
	}
	if err := probe(func(c *amqp.Channel) error {
		return c.ExchangeDeclarePassive("t-x", "topic", false, false, false, false, nil)
	}); err == nil {
		t.Fatal("transient exchange survived a restart")
	}
	if err := probe(func(c *amqp.Channel) error {
		_, err := c.QueueDeclarePassive("t-q", false, false, false, false, nil)
		return err
	}); err == nil {
		t.Fatal("transient queue survived a restart")
	}
	if err := probe(func(c *amqp.Channel) error {
		_, err := c.QueueDeclarePassive("x-q", true, false, true, false, nil)
		return err
	}); err == nil {
		t.Fatal("exclusive queue survived a restart")
	}
	// The durable queue is back with its arguments and its binding routes.
	c, err := conn2.Channel()
	must(err)
	if _, err := c.QueueDeclare("d-q", true, false, false, false, amqp.Table{"x-max-length": int32(5)}); err != nil {
		t.Fatalf("durable queue lost or its arguments changed: %v", err)
	}
	must(c.Publish("d-x", "a.b.c", false, false, amqp.Publishing{Body: []byte("routed")}))
	m, ok, err := c.Get("d-q", true)
	if err != nil || !ok || string(m.Body) != "routed" {
		t.Fatalf("binding lost after restart: ok=%v err=%v", ok, err)
	}
}

func TestHTTPAPI(t *testing.T) {
	cfg := diskConfig(t, "api")
	cfg.HTTPAddr = "127.0.0.1:0"
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	conn, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, _ := conn.Channel()
	if _, err := ch.QueueDeclare("api-q", false, false, false, false, amqp.Table{"x-max-length": int32(3)}); err != nil {
		t.Fatal(err)
	}
	if err := ch.Publish("", "api-q", false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
		t.Fatal(err)
	}
	base := "http://" + n.HTTP.Addr()
	get := func(path, user, pass string, out any) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if out != nil && resp.StatusCode == 200 {
			if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode
	}
	if code := get("/api/overview", "guest", "bad", nil); code != 401 {
		t.Fatalf("bad password: HTTP %d", code)
	}
	var nodes []map[string]any
	if code := get("/api/nodes", "guest", "guest", &nodes); code != 200 || len(nodes) != 1 || nodes[0]["name"] != "api" || nodes[0]["running"] != true {
		t.Fatalf("/api/nodes: %d %v", code, nodes)
	}
	var queues []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for {
		get("/api/queues", "guest", "guest", &queues)
		if len(queues) == 1 && queues[0]["messages_ready"] == float64(1) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/queues = %v", queues)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if q := queues[0]; q["name"] != "api-q" || q["node"] != "api" || q["arguments"].(map[string]any)["x-max-length"] != float64(3) {
		t.Fatalf("queue entry %v", q)
	}
	var overview map[string]any
	get("/api/overview", "guest", "guest", &overview)
	if d, _ := overview["topology_digest"].(string); d != n.FSM.Digest() {
		t.Fatalf("overview digest %v", overview["topology_digest"])
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(text), `warren_queue_messages_ready{queue="api-q",vhost="/"} 1`) ||
		!strings.Contains(string(text), "warren_store_fsyncs_total ") {
		t.Fatalf("/metrics:\n%s", text)
	}
}

// TestPersistentMessagesSurviveRestart: confirmed persistent messages in a durable queue come
// back after a restart, in order, marked redelivered; acked ones do not; transient messages and
// messages of non-durable queues are gone, as in RabbitMQ.
func TestPersistentMessagesSurviveRestart(t *testing.T) {
	cfg := diskConfig(t, "durable")
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := conn.Channel()
	for _, q := range []struct {
		name    string
		durable bool
	}{{"orders", true}, {"scratch", false}} {
		if _, err := ch.QueueDeclare(q.name, q.durable, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 64))
	pub := func(q string, mode uint8, body string) {
		if err := ch.Publish("", q, false, false, amqp.Publishing{DeliveryMode: mode, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
		select {
		case c := <-confirms:
			if !c.Ack {
				t.Fatalf("publish %q nacked", body)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no confirm for %q", body)
		}
	}
	for i := 0; i < 5; i++ {
		pub("orders", amqp.Persistent, fmt.Sprintf("p%d", i))
	}
	pub("orders", amqp.Transient, "transient")
	pub("scratch", amqp.Persistent, "in a transient queue")
	// p0 is acked, p1 delivered and left unacked when the node goes down.
	get, _ := conn.Channel()
	m, ok, err := get.Get("orders", false)
	if err != nil || !ok || string(m.Body) != "p0" {
		t.Fatalf("get p0: %v %v %q", ok, err, m.Body)
	}
	if err := m.Ack(false); err != nil {
		t.Fatal(err)
	}
	if m, ok, _ := get.Get("orders", false); !ok || string(m.Body) != "p1" {
		t.Fatalf("get p1: %v %q", ok, m.Body)
	}
	_ = conn.Close()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n2, err := node.Start(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer n2.Close()
	conn2, err := amqp.Dial("amqp://guest:guest@" + n2.AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	ch2, _ := conn2.Channel()
	var got []string
	for {
		m, ok, err := ch2.Get("orders", true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if !m.Redelivered {
			t.Fatalf("recovered message %q not marked redelivered", m.Body)
		}
		got = append(got, string(m.Body))
	}
	if strings.Join(got, ",") != "p1,p2,p3,p4" {
		t.Fatalf("after restart the durable queue holds %v, want p1..p4 in order", got)
	}
	if _, err := ch2.QueueDeclarePassive("scratch", false, false, false, false, nil); err == nil {
		t.Fatal("the non-durable queue survived the restart")
	}
}

func TestDataDirBelongsToOneNode(t *testing.T) {
	cfg := diskConfig(t, "a")
	n, err := node.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = n.Close()
	cfg.ID = "b"
	if _, err := node.Start(cfg); err == nil || !strings.Contains(err.Error(), `belongs to node "a"`) {
		t.Fatalf("starting node b on node a's data dir: %v", err)
	}
}
