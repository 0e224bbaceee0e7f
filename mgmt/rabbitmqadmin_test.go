package mgmt_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// target is one broker under rabbitmqadmin: changes go to write, reads to read (for Warren,
// two different nodes of a cluster; for RabbitMQ the same node).
type target struct {
	name        string
	write, read string // management ports
	amqp        string // AMQP address of the read node
}

func (tg target) run(t *testing.T, onWrite bool, args ...string) (string, string, bool) {
	t.Helper()
	port := tg.read
	if onWrite {
		port = tg.write
	}
	return admin(t, port, args...)
}

// must runs a change and wants rabbitmqadmin's success line.
func (tg target) must(t *testing.T, want string, args ...string) {
	t.Helper()
	out, errOut, ok := tg.run(t, true, args...)
	if !ok || strings.TrimSpace(out) != want {
		t.Fatalf("%s: rabbitmqadmin %v: ok=%v out=%q err=%q", tg.name, args, ok, out, errOut)
	}
}

// tsv lists with -f tsv on the read node, rows sorted (the header first).
func (tg target) tsv(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, ok := tg.run(t, false, append([]string{"-f", "tsv"}, args...)...)
	if !ok {
		t.Fatalf("%s: rabbitmqadmin %v: %s", tg.name, args, errOut)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) > 1 {
		sort.Strings(lines[1:])
	}
	return strings.Join(lines, "\n")
}

// same wants both brokers to print the same for a read, waiting (bounded) for RabbitMQ's
// statistics, which trail its state by up to 5 s; Warren's answer must not change meanwhile.
func same(t *testing.T, w, r target, args ...string) string {
	t.Helper()
	warren := w.tsv(t, args...)
	var rabbit string
	deadline := time.Now().Add(20 * time.Second)
	for {
		rabbit = r.tsv(t, args...)
		if rabbit == warren || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	if rabbit != warren {
		t.Fatalf("rabbitmqadmin %v differs:\nWarren:\n%s\nRabbitMQ:\n%s", args, warren, rabbit)
	}
	if again := w.tsv(t, args...); again != warren {
		t.Fatalf("Warren's answer to %v changed:\n%s\nthen\n%s", args, warren, again)
	}
	return warren
}

// TestRabbitmqadminAgainstWarrenAndRabbitMQ runs Debian's rabbitmqadmin against a 3-node Warren
// (changes through w1's API, reads through w2's and w3's) and against Debian's RabbitMQ 3.10, and
// wants the same output from both: vhosts, users, permissions, exchanges, queues, bindings,
// publish and get, purge, connections, channels, consumers, close connection, deletes, and the
// errors for a missing queue and an inequivalent redeclare.
func TestRabbitmqadminAgainstWarrenAndRabbitMQ(t *testing.T) {
	rAMQP, rMgmt := startRabbit(t)
	nodes := startCluster(t, 3)
	port := func(i int) string { _, p, _ := net.SplitHostPort(nodes[i].HTTP.Addr()); return p }
	w := target{name: "Warren", write: port(0), read: port(1), amqp: nodes[2].AMQPAddr()}
	r := target{name: "RabbitMQ", write: rMgmt, read: rMgmt, amqp: "127.0.0.1:" + rAMQP}

	for _, tg := range []target{w, r} {
		tg.must(t, "vhost declared", "declare", "vhost", "name=t-vh")
		tg.must(t, "user declared", "declare", "user", "name=t-user", "password=t-pw", "tags=monitoring")
		tg.must(t, "permission declared", "declare", "permission", "vhost=t-vh", "user=t-user", "configure=^t-", "write=.*", "read=.*")
		tg.must(t, "exchange declared", "-V", "t-vh", "declare", "exchange", "name=t-x", "type=topic")
		tg.must(t, "exchange declared", "-V", "t-vh", "declare", "exchange", "name=t-fan", "type=fanout", "durable=false")
		tg.must(t, "queue declared", "-V", "t-vh", "declare", "queue", "name=t-q", `arguments={"x-max-length":10}`)
		tg.must(t, "queue declared", "-V", "t-vh", "declare", "queue", "name=t-q2", "durable=false")
		tg.must(t, "binding declared", "-V", "t-vh", "declare", "binding", "source=t-x", "destination=t-q", "routing_key=a.#")
		tg.must(t, "binding declared", "-V", "t-vh", "declare", "binding", "source=t-x", "destination=t-fan", "destination_type=exchange", "routing_key=b.*")
		tg.must(t, "binding declared", "-V", "t-vh", "declare", "binding", "source=t-fan", "destination=t-q2")
		tg.must(t, "Message published", "-V", "t-vh", "publish", "exchange=t-x", "routing_key=a.one", "payload=one")
		tg.must(t, "Message published", "-V", "t-vh", "publish", "exchange=t-x", "routing_key=b.two", "payload=two",
			`properties={"content_type":"text/plain","delivery_mode":2,"headers":{"h":"v"}}`)
		tg.must(t, "Message published", "-V", "t-vh", "publish", "routing_key=t-q", "payload=three")
		tg.must(t, "Message published but NOT routed", "-V", "t-vh", "publish", "exchange=t-x", "routing_key=nowhere", "payload=lost")
	}

	same(t, w, r, "list", "vhosts", "name")
	same(t, w, r, "list", "users", "name", "tags")
	same(t, w, r, "list", "permissions", "vhost", "user", "configure", "write", "read")
	same(t, w, r, "-V", "t-vh", "list", "exchanges", "name", "type", "durable", "auto_delete", "internal")
	same(t, w, r, "-V", "t-vh", "list", "queues", "name", "durable", "auto_delete", "arguments.x-max-length", "messages", "messages_ready")
	same(t, w, r, "-V", "t-vh", "list", "bindings", "source", "destination", "destination_type", "routing_key", "properties_key")
	same(t, w, r, "list", "vhosts", "name", "messages")

	// get with the default ackmode (ack_requeue_true) leaves the messages; compared as JSON.
	get := func(tg target, queue, ackmode string) []map[string]any {
		out, errOut, ok := tg.run(t, false, "-V", "t-vh", "-f", "raw_json", "get", "queue="+queue, "count=5", "ackmode="+ackmode)
		if !ok {
			t.Fatalf("%s get: %s", tg.name, errOut)
		}
		var msgs []map[string]any
		if err := json.Unmarshal([]byte(out), &msgs); err != nil {
			t.Fatalf("%s get: %v in %q", tg.name, err, out)
		}
		return msgs
	}
	for _, step := range []struct {
		queue, mode string
		n           int
	}{{"t-q", "ack_requeue_true", 2}, {"t-q", "reject_requeue_true", 2}, {"t-q2", "ack_requeue_true", 1}, {"t-q", "ack_requeue_false", 2}, {"t-q", "ack_requeue_true", 0}} {
		wm, rm := get(w, step.queue, step.mode), get(r, step.queue, step.mode)
		wj, _ := json.Marshal(wm)
		rj, _ := json.Marshal(rm)
		if string(wj) != string(rj) || len(wm) != step.n {
			t.Fatalf("get %s ackmode=%s differs (want %d messages):\nWarren:   %s\nRabbitMQ: %s", step.queue, step.mode, step.n, wj, rj)
		}
	}
	same(t, w, r, "-V", "t-vh", "list", "queues", "name", "messages")
	for _, tg := range []target{w, r} {
		tg.must(t, "Message published", "-V", "t-vh", "publish", "routing_key=t-q", "payload=again")
		tg.must(t, "queue purged", "-V", "t-vh", "purge", "queue", "name=t-q")
	}
	same(t, w, r, "-V", "t-vh", "list", "queues", "name", "messages")

	// A client of the read node (Warren: a third node) with a consumer.
	clients := map[string]*amqp.Connection{}
	for _, tg := range []target{w, r} {
		c, err := amqp.DialConfig("amqp://t-user:t-pw@"+tg.amqp+"/t-vh", amqp.Config{Properties: amqp.Table{"connection_name": "t-client"}})
		if err != nil {
			t.Fatalf("%s: t-user login: %v", tg.name, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		ch, err := c.Channel()
		if err != nil {
			t.Fatal(err)
		}
		if err := ch.Qos(7, 0, false); err != nil {
			t.Fatal(err)
		}
		if _, err := ch.Consume("t-q2", "t-tag", false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		clients[tg.name] = c
	}
	same(t, w, r, "list", "connections", "user", "vhost", "channels", "state", "client_properties.connection_name")
	same(t, w, r, "list", "channels", "user", "vhost", "prefetch_count", "consumer_count")
	same(t, w, r, "list", "consumers", "queue.name", "consumer_tag", "ack_required", "prefetch_count", "channel_details.user")
	for _, tg := range []target{w, r} {
		out, _, _ := tg.run(t, false, "-f", "raw_json", "list", "connections", "name")
		var conns []map[string]any
		if err := json.Unmarshal([]byte(out), &conns); err != nil || len(conns) != 1 {
			t.Fatalf("%s connections: %v %s", tg.name, err, out)
		}
		closed := clients[tg.name].NotifyClose(make(chan *amqp.Error, 1))
		tg.must(t, "connection closed", "close", "connection", "name="+conns[0]["name"].(string))
		select {
		case e := <-closed:
			if e == nil || e.Code != 320 {
				t.Fatalf("%s: close connection: %v", tg.name, e)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: connection not closed", tg.name)
		}
	}
	same(t, w, r, "list", "connections", "user")

	// Errors: the same message and exit status from both.
	for _, args := range [][]string{
		{"-V", "t-vh", "delete", "queue", "name=nope"},
		{"-V", "t-vh", "declare", "queue", "name=t-q", "durable=false"},
		{"-V", "t-vh", "declare", "exchange", "name=t-x", "type=direct"},
		{"-V", "no-such-vhost", "list", "queues"},
	} {
		wo, we, wok := w.run(t, true, args...)
		ro, re, rok := r.run(t, true, args...)
		if wok != rok || wo != ro || we != re {
			t.Fatalf("rabbitmqadmin %v differs:\nWarren:   ok=%v %q %q\nRabbitMQ: ok=%v %q %q", args, wok, wo, we, rok, ro, re)
		}
	}

	// show overview: t-q2 holds the message the closed consumer had unacked.
	if got := same(t, w, r, "show", "overview", "rabbitmq_version", "queue_totals.messages", "object_totals.queues"); got != "rabbitmq_version\tqueue_totals.messages\tobject_totals.queues\n3.10.8\t1\t2" {
		t.Fatalf("overview:\n%s", got)
	}

	for _, tg := range []target{w, r} {
		tg.must(t, "binding deleted", "-V", "t-vh", "delete", "binding", "source=t-x", "destination_type=queue", "destination=t-q", "properties_key=a.%23")
		tg.must(t, "queue deleted", "-V", "t-vh", "delete", "queue", "name=t-q")
		tg.must(t, "exchange deleted", "-V", "t-vh", "delete", "exchange", "name=t-fan")
		tg.must(t, "permission deleted", "delete", "permission", "vhost=t-vh", "user=t-user")
	}
	same(t, w, r, "-V", "t-vh", "list", "bindings", "source", "destination", "routing_key")
	same(t, w, r, "-V", "t-vh", "list", "queues", "name")
	same(t, w, r, "-V", "t-vh", "list", "exchanges", "name")
	same(t, w, r, "list", "permissions", "vhost", "user")
	for _, tg := range []target{w, r} {
		tg.must(t, "user deleted", "delete", "user", "name=t-user")
		tg.must(t, "vhost deleted", "delete", "vhost", "name=t-vh")
	}
	same(t, w, r, "list", "vhosts", "name")
	same(t, w, r, "list", "users", "name")
}

// TestDefinitionsFromRabbitMQIntoWarren: definitions exported from Debian's RabbitMQ with
// rabbitmqadmin and imported into Warren through one node come out of another node's export
// the same (users with RabbitMQ's password hashes, vhosts, permissions, exchanges, queues,
// bindings), and a user imported with RabbitMQ's hash logs in over AMQP on a third node.
func TestDefinitionsFromRabbitMQIntoWarren(t *testing.T) {
	_, rMgmt := startRabbit(t)
	nodes := startCluster(t, 3)
	port := func(i int) string { _, p, _ := net.SplitHostPort(nodes[i].HTTP.Addr()); return p }
	r := target{name: "RabbitMQ", write: rMgmt, read: rMgmt}
	r.must(t, "vhost declared", "declare", "vhost", "name=d-vh")
	r.must(t, "user declared", "declare", "user", "name=d-user", "password=d-pw", "tags=management,monitoring")
	r.must(t, "permission declared", "declare", "permission", "vhost=d-vh", "user=d-user", "configure=^d-", "write=.*", "read=^d-")
	r.must(t, "exchange declared", "-V", "d-vh", "declare", "exchange", "name=d-x", "type=headers", `arguments={"alternate-exchange":"d-ae"}`)
	r.must(t, "exchange declared", "-V", "d-vh", "declare", "exchange", "name=d-ae", "type=fanout")
	r.must(t, "queue declared", "-V", "d-vh", "declare", "queue", "name=d-q", `arguments={"x-message-ttl":60000,"x-dead-letter-exchange":"d-ae"}`)
	r.must(t, "queue declared", "-V", "d-vh", "declare", "queue", "name=d-lazy", "auto_delete=false", `arguments={"x-max-length":5,"x-overflow":"reject-publish"}`)
	r.must(t, "binding declared", "-V", "d-vh", "declare", "binding", "source=d-x", "destination=d-q", `arguments={"x-match":"any","k":"v"}`)
	r.must(t, "binding declared", "-V", "d-vh", "declare", "binding", "source=d-ae", "destination=d-lazy")
	r.must(t, "binding declared", "-V", "d-vh", "declare", "binding", "source=d-ae", "destination=d-x", "destination_type=exchange", "routing_key=r")
	defer func() {
		r.must(t, "vhost deleted", "delete", "vhost", "name=d-vh")
		r.must(t, "user deleted", "delete", "user", "name=d-user")
	}()

	dir := t.TempDir()
	fromRabbit, fromWarren := filepath.Join(dir, "rabbit.json"), filepath.Join(dir, "warren.json")
	if out, errOut, ok := admin(t, rMgmt, "export", fromRabbit); !ok {
		t.Fatalf("export from RabbitMQ: %s %s", out, errOut)
	}
	if out, errOut, ok := admin(t, port(0), "import", fromRabbit); !ok {
		t.Fatalf("import into Warren: %s %s", out, errOut)
	}
	if out, errOut, ok := admin(t, port(1), "export", fromWarren); !ok {
		t.Fatalf("export from Warren: %s %s", out, errOut)
	}
	want, got := normalizedDefs(t, fromRabbit), normalizedDefs(t, fromWarren)
	if want != got {
		t.Fatalf("definitions differ after the round trip:\nRabbitMQ:\n%s\nWarren:\n%s", want, got)
	}
	// And back: a user Warren hashed imports into RabbitMQ and logs in there.
	if r := call(t, nodes[1].HTTP.Addr(), "PUT", "/api/users/w-user", "guest", "guest", `{"password":"w-pw","tags":"management"}`); r.status != 201 {
		t.Fatalf("create w-user: %v", r)
	}
	if r := call(t, nodes[1].HTTP.Addr(), "PUT", "/api/permissions/d-vh/w-user", "guest", "guest", `{"configure":".*","write":".*","read":".*"}`); r.status != 201 {
		t.Fatalf("permit w-user: %v", r)
	}
	back := filepath.Join(dir, "back.json")
	if out, errOut, ok := admin(t, port(2), "export", back); !ok {
		t.Fatalf("export from Warren: %s %s", out, errOut)
	}
	if out, errOut, ok := admin(t, rMgmt, "import", back); !ok {
		t.Fatalf("import into RabbitMQ: %s %s", out, errOut)
	}
	defer r.must(t, "user deleted", "delete", "user", "name=w-user")
	if r := call(t, "127.0.0.1:"+rMgmt, "GET", "/api/whoami", "w-user", "w-pw", ""); r.status != 200 {
		t.Fatalf("a user hashed by Warren cannot log in to RabbitMQ: %v", r)
	}
	got = normalizedDefs(t, back)
	for _, line := range append(strings.Split(want, "\n"), `permissions {"configure":".*","read":".*","user":"w-user","vhost":"d-vh","write":".*"}`) {
		if !strings.Contains(got, line) {
			t.Fatalf("Warren's export from another node lacks %s:\n%s", line, got)
		}
	}

	c, err := amqp.Dial("amqp://d-user:d-pw@" + nodes[2].AMQPAddr() + "/d-vh")
	if err != nil {
		t.Fatalf("imported user with RabbitMQ's hash cannot log in: %v", err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclarePassive("d-q", true, false, false, false, amqp.Table{"x-message-ttl": int64(60000), "x-dead-letter-exchange": "d-ae"}); err != nil {
		t.Fatalf("imported queue: %v", err)
	}
	// Imported permissions hold: configure only ^d-.
	if _, err := ch.QueueDeclare("other", false, false, false, false, nil); err == nil || !strings.Contains(err.Error(), "access to queue 'other' in vhost 'd-vh' refused for user 'd-user'") {
		t.Fatalf("declare outside imported permissions: %v", err)
	}
}

// normalizedDefs reads a definitions file into sorted lines of what both brokers must agree
// on: users (hash and tags), vhosts, permissions, queues, exchanges and bindings.
func normalizedDefs(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string][]map[string]any
	var whole map[string]json.RawMessage
	if err := json.Unmarshal(raw, &whole); err != nil {
		t.Fatal(err)
	}
	d = map[string][]map[string]any{}
	for _, k := range []string{"users", "vhosts", "permissions", "queues", "exchanges", "bindings"} {
		var items []map[string]any
		if err := json.Unmarshal(whole[k], &items); err != nil {
			t.Fatalf("%s: %s: %v", path, k, err)
		}
		d[k] = items
	}
	var lines []string
	for k, items := range d {
		for _, it := range items {
			if k == "users" {
				delete(it, "limits")
			}
			if k == "vhosts" {
				it = map[string]any{"name": it["name"]} // RabbitMQ adds limits and metadata
			}
			b, _ := json.Marshal(it) // map keys sorted
			lines = append(lines, fmt.Sprintf("%s %s", k, b))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestDeclareQueueOnNode: rabbitmqadmin's node= places a queue on that node whichever node's API
// is asked; an unknown node is refused with RabbitMQ's reason.
func TestDeclareQueueOnNode(t *testing.T) {
	if _, err := os.Stat("/usr/bin/rabbitmqadmin"); err != nil {
		t.Skipf("needs Debian's rabbitmqadmin: %v", err)
	}
	nodes := startCluster(t, 3)
	_, p1, _ := net.SplitHostPort(nodes[0].HTTP.Addr())
	if out, errOut, ok := admin(t, p1, "declare", "queue", "name=placed", "node=w3"); !ok || strings.TrimSpace(out) != "queue declared" {
		t.Fatalf("declare on w3 through w1: %q %q", out, errOut)
	}
	for _, n := range nodes {
		if q, ok := n.FSM.Queue("/", "placed"); !ok || q.Owner != "w3" {
			t.Fatalf("queue placed: %+v %v", q, ok)
		}
	}
	_, errOut, ok := admin(t, p1, "declare", "queue", "name=lost", "node=nosuch")
	if ok || strings.TrimSpace(errOut) != "*** Node nosuch could not be contacted" {
		t.Fatalf("declare on an unknown node: %v %q", ok, errOut)
	}
}
