package mgmt_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/node"
)

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freePort(t testing.TB) string {
	_, p, _ := net.SplitHostPort(freeAddr(t))
	return p
}

// startCluster starts size nodes in this process with HTTP APIs: the first bootstraps, the
// others join through it.
func startCluster(t testing.TB, size int) []*node.Node {
	t.Helper()
	var nodes []*node.Node
	var seed string
	for i := 1; i <= size; i++ {
		cfg := node.Config{
			ID: fmt.Sprintf("w%d", i), DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			RaftAddr: freeAddr(t), GossipAddr: freeAddr(t), ForwardAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
			ClusterSecret: "mgmt-test",
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
		}
		if seed != "" {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.GossipAddr
		}
		n, err := node.Start(cfg)
		if err != nil {
			t.Fatalf("start %s: %v", cfg.ID, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	// Every node sees every other alive (the API's cluster-wide views ask them).
	waitFor(t, 15*time.Second, "all nodes alive everywhere", func() bool {
		for _, n := range nodes {
			alive := 0
			for _, m := range n.Members.Members() {
				if m.State.String() == "alive" && m.Meta.HTTPAddr != "" {
					alive++
				}
			}
			if alive != size {
				return false
			}
		}
		return true
	})
	return nodes
}

// startClusterOn starts one node whose HTTP API listens on httpAddr.
func startClusterOn(t testing.TB, httpAddr string) *node.Node {
	t.Helper()
	n, err := node.Start(node.Config{
		ID: "solo", DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", HTTPAddr: httpAddr, RaftAddr: freeAddr(t),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// api calls a node's HTTP API and decodes the JSON answer into out (when not nil).
func api(t testing.TB, addr, method, path, user, pass, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

// Debian's RabbitMQ, started once for the package by scripts/rabbitmq.sh on free ports with
// the management plugin, and stopped by TestMain.
var rabbit struct {
	once               sync.Once
	amqpPort, mgmtPort string
	dir, name          string
	err                error
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func rabbitEnv() []string {
	return append(os.Environ(), "RABBIT_DIR="+rabbit.dir, "RABBIT_NODENAME="+rabbit.name)
}

// startRabbit returns the AMQP and management ports of the reference RabbitMQ.
func startRabbit(t testing.TB) (amqpPort, mgmtPort string) {
	t.Helper()
	for _, bin := range []string{"/usr/bin/rabbitmqadmin", "/usr/sbin/rabbitmq-server"} {
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("needs Debian's rabbitmq-server package (%s): %v", bin, err)
		}
	}
	rabbit.once.Do(func() {
		rabbit.amqpPort, rabbit.mgmtPort = freePort(t), freePort(t)
		rabbit.dir, rabbit.err = os.MkdirTemp("", "warren-mgmt-rabbit-")
		if rabbit.err != nil {
			return
		}
		rabbit.name = "warrenmgmt" + rabbit.amqpPort + "@localhost"
		cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "rabbitmq.sh"), "start", rabbit.amqpPort, rabbit.mgmtPort)
		cmd.Env = rabbitEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			rabbit.err = fmt.Errorf("scripts/rabbitmq.sh start: %v\n%s", err, out)
		}
	})
	if rabbit.err != nil {
		t.Fatal(rabbit.err)
	}
	return rabbit.amqpPort, rabbit.mgmtPort
}

func stopRabbit() {
	if rabbit.dir == "" {
		return
	}
	cmd := exec.Command(filepath.Join(repoRoot(), "scripts", "rabbitmq.sh"), "stop")
	cmd.Env = rabbitEnv()
	_ = cmd.Run()
	_ = os.RemoveAll(rabbit.dir)
}

func TestMain(m *testing.M) {
	code := m.Run()
	stopRabbit()
	os.Exit(code)
}

// admin runs Debian's rabbitmqadmin (under /usr/bin/python3, where its modules are) against the
// management API on port; it returns stdout, stderr and whether it exited 0.
func admin(t testing.TB, port string, args ...string) (string, string, bool) {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", append([]string{"/usr/bin/rabbitmqadmin", "-H", "127.0.0.1", "-P", port}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err == nil
}
