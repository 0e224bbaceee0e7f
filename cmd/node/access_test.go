package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

func loopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startInProcess starts a cluster of size nodes in this process, with HTTP APIs.
func startInProcess(t *testing.T, prefix string, size int) []*node.Node {
	t.Helper()
	var nodes []*node.Node
	var seed string
	for i := 1; i <= size; i++ {
		cfg := node.Config{
			ID: fmt.Sprintf("%s%d", prefix, i), DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			RaftAddr: loopbackAddr(t), GossipAddr: loopbackAddr(t), ForwardAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
			ClusterSecret: "cli", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
		}
		if seed != "" {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.GossipAddr
		}
		n, err := node.Start(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	return nodes
}

func cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// TestUserVhostPermissionCommands: users, vhosts and permissions made with the CLI through one
// node take effect on another (an AMQP login, a refused declare); bad input and non-admin callers
// get clear errors and exit 1; definitions exported from one cluster import into another.
func TestUserVhostPermissionCommands(t *testing.T) {
	nodes := startInProcess(t, "u", 2)
	h1, h2 := nodes[0].HTTP.Addr(), nodes[1].HTTP.Addr()
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"vhost", "add", "--http", h1, "apps"}, "vhost apps added"},
		{[]string{"user", "add", "--http", h1, "--tags", "monitoring", "carol", "s3cret"}, "user carol added"},
		{[]string{"permissions", "set", "--http", h1, "--vhost", "apps", "carol", "^carol-", ".*", ".*"}, "permissions of carol in vhost apps set"},
		{[]string{"user", "tags", "--http", h1, "carol", "management"}, "tags of carol set to [management]"},
	}
	for _, s := range steps {
		out, errOut, code := cli(t, s.args...)
		if code != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("node %v: exit %d\n%s%s", s.args, code, out, errOut)
		}
	}
	out, _, code := cli(t, "user", "list", "--http", h2)
	if code != 0 || !strings.Contains(out, "carol  management") {
		t.Fatalf("user list on the other node:\n%s", out)
	}
	out, _, _ = cli(t, "permissions", "list", "--http", h2, "--vhost", "apps")
	if !strings.Contains(out, "carol  apps   ^carol-") {
		t.Fatalf("permissions list:\n%s", out)
	}
	c, err := amqp.Dial("amqp://carol:s3cret@" + nodes[1].AMQPAddr() + "/apps")
	if err != nil {
		t.Fatalf("carol cannot log in on the other node: %v", err)
	}
	ch, _ := c.Channel()
	if _, err := ch.QueueDeclare("carol-q", false, false, false, false, nil); err != nil {
		t.Fatalf("declare within carol's permissions: %v", err)
	}
	ch, _ = c.Channel()
	if _, err := ch.QueueDeclare("bob-q", false, false, false, false, nil); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("declare outside carol's permissions: %v", err)
	}
	c.Close()

	if out, _, code := cli(t, "user", "passwd", "--http", h2, "carol", "n3w"); code != 0 {
		t.Fatalf("passwd: %s", out)
	}
	if _, err := amqp.Dial("amqp://carol:s3cret@" + nodes[0].AMQPAddr() + "/apps"); err == nil {
		t.Fatal("old password still works")
	}
	// A management user may not manage users: a clear error, exit 1.
	_, errOut, code := cli(t, "user", "add", "--http", h1, "--user", "carol", "--password", "n3w", "eve", "x")
	if code != 1 || !strings.Contains(errOut, "Not administrator user") {
		t.Fatalf("non-admin user add: exit %d %q", code, errOut)
	}
	for _, bad := range [][]string{
		{"user", "delete", "--http", h1, "nobody"},
		{"permissions", "set", "--http", h1, "--vhost", "nope", "carol", ".*", ".*", ".*"},
		{"permissions", "set", "--http", h1, "carol", "(", ".*", ".*"},
		{"user", "add", "--http", h1, "carol", "x"},
	} {
		if _, errOut, code := cli(t, bad...); code != 1 || errOut == "" {
			t.Fatalf("node %v: exit %d %q", bad, code, errOut)
		}
	}
	if _, _, code := cli(t, "user", "frobnicate"); code != 2 {
		t.Fatal("unknown verb is not a usage error")
	}

	file := filepath.Join(t.TempDir(), "defs.json")
	if out, errOut, code := cli(t, "definitions", "export", "--http", h2, file); code != 0 {
		t.Fatalf("export: %s%s", out, errOut)
	}
	other := startInProcess(t, "o", 1)
	if out, errOut, code := cli(t, "definitions", "import", "--http", other[0].HTTP.Addr(), file); code != 0 {
		t.Fatalf("import: %s%s", out, errOut)
	}
	if _, err := amqp.Dial("amqp://carol:n3w@" + other[0].AMQPAddr() + "/apps"); err != nil {
		t.Fatalf("imported user cannot log in: %v", err)
	}
	if _, ok := other[0].FSM.Queue("apps", "carol-q"); !ok {
		t.Fatal("queue not imported")
	}
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, "definitions", "import", "--http", h1, file); code != 1 || !strings.Contains(errOut, "not JSON") {
		t.Fatalf("import of garbage: exit %d %q", code, errOut)
	}
	if out, _, code := cli(t, "vhost", "delete", "--http", h1, "apps"); code != 0 || !strings.Contains(out, "vhost apps deleted") {
		t.Fatalf("vhost delete: %s", out)
	}
	if out, _, _ := cli(t, "vhost", "list", "--http", h2); strings.Contains(out, "apps") {
		t.Fatalf("vhost still listed:\n%s", out)
	}
}

// TestRebalancePrintsProgress: `node rebalance` reports the queues moved and then follows the
// messages until they all reached the new owner, with rates.
func TestRebalancePrintsProgress(t *testing.T) {
	nodes := startInProcess(t, "r", 2)
	c, err := amqp.Dial("amqp://guest:guest@" + nodes[0].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	for _, q := range []string{"r-a", "r-b"} {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 200; i++ {
			if err := ch.Publish("", q, false, false, amqp.Publishing{Body: []byte("m")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for nodes[1].FSM.Digest() != nodes[0].FSM.Digest() || queueDepth(nodes[0], "r-b") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("declares and publishes did not settle")
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, errOut, code := cli(t, "rebalance", "--http", nodes[1].HTTP.Addr())
	if code != 0 || !strings.Contains(out, "1 queues moved") || !strings.Contains(out, "rebalance: 1 queues and 200 messages moved") {
		t.Fatalf("rebalance: exit %d\n%s%s", code, out, errOut)
	}
}

func queueDepth(n *node.Node, name string) int {
	if q := n.Broker.LocalQueue("/", name); q != nil {
		r, u, _ := q.Counts()
		return r + u
	}
	return -1
}
