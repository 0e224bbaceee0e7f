package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestOsloRPCAcrossNodes: Debian's python3-oslo.messaging RPC server connected to node 2 and
// its caller connected to node 1 (the reply queue lives on node 1, the topic queues on node 2):
// the call's request and its reply both cross the cluster.
func TestOsloRPCAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	_, file, _, _ := runtime.Caller(0)
	peer := filepath.Join(filepath.Dir(file), "..", "rpc", "testdata", "oslo_peer.py")
	url := func(i int) string { return "amqp://guest:guest@" + nodes[i].AMQPAddr() + "/" }

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	server := exec.CommandContext(ctx, "/usr/bin/python3", peer, "server", "--url", url(1),
		"--topic", "xnode", "--server", "s2", "--exchange", "xnode_test")
	stdin, err := server.StdinPipe() // the peer serves until its stdin closes
	if err != nil {
		t.Fatal(err)
	}
	out, err := server.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stdin.Close(); _ = server.Wait() }()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.Contains(sc.Text(), `"ready"`) {
				ready <- true
				return
			}
		}
		ready <- false
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("python oslo server exited before it was ready")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("python oslo server not ready")
	}
	call := exec.CommandContext(ctx, "/usr/bin/python3", peer, "call", "--url", url(0), "--topic", "xnode",
		"--exchange", "xnode_test", "--method", "add", "--args", `{"a": 20, "b": 22}`, "--timeout", "30")
	res, err := call.Output()
	if err != nil {
		t.Fatalf("python caller: %v\n%s", err, res)
	}
	lines := strings.Split(strings.TrimSpace(string(res)), "\n")
	var got struct {
		Result any `json:"result"`
	}
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil || got.Result != float64(42) {
		t.Fatalf("call result %s (err %v), want 42", res, err)
	}
}
