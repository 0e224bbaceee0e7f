package rpc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run Debian's python3-oslo.messaging (testdata/oslo_peer.py)
// against the Go library through the broker under test, both ways.

const pythonBin = "/usr/bin/python3"

// interopExchange is the control exchange both sides use, so the tests do
// not touch "openstack".
const interopExchange = "warren_rpc_test"

func interopCases() []brokerCase {
	return []brokerCase{
		{"InteropGoCallsPython", testGoCallsPython},
		{"InteropGoCastsToPython", testGoCastsToPython},
		{"InteropGoNotifiesPython", testGoNotifiesPython},
		{"InteropPythonCallsGo", testPythonCallsGo},
		{"InteropPythonCastsToGo", testPythonCastsToGo},
		{"InteropPythonNotifiesGo", testPythonNotifiesGo},
	}
}

// pyPeer is a running oslo_peer.py. Its JSON output lines arrive on lines.
type pyPeer struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan map[string]any
	stderr *lockedBuffer
	done   chan struct{}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startPeer runs oslo_peer.py with args. The process is bounded by a
// timeout and killed when the test ends.
func startPeer(t *testing.T, broker string, args ...string) *pyPeer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	full := append([]string{"-s", "testdata/oslo_peer.py"}, args...)
	full = append(full, "--url", broker, "--exchange", interopExchange)
	cmd := exec.CommandContext(ctx, pythonBin, full...)
	cmd.WaitDelay = 2 * time.Second
	p := &pyPeer{cmd: cmd, lines: make(chan map[string]any, 1000), stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatalf("python stdout: %v", err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		cancel()
		t.Fatalf("python stdin: %v", err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", pythonBin, err)
	}
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		scanner := bufio.NewScanner(stdout)
		scanner.Buffer(make([]byte, 1<<20), 1<<20)
		for scanner.Scan() {
			var line map[string]any
			if json.Unmarshal(scanner.Bytes(), &line) == nil {
				p.lines <- line
			}
		}
	}()
	go func() {
		<-readerDone
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		// Closing stdin asks a server or listener to stop; then kill.
		_ = p.stdin.Close()
		select {
		case <-p.done:
		case <-time.After(3 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		cancel()
		if t.Failed() {
			t.Logf("python peer %v stderr:\n%s", args, tail(p.stderr.String(), 3000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// next returns the next output line, failing after d.
func (p *pyPeer) next(t *testing.T, d time.Duration) map[string]any {
	t.Helper()
	select {
	case line := <-p.lines:
		return line
	case <-p.done:
		// The process ended; lines it printed may still be queued.
		select {
		case line := <-p.lines:
			return line
		default:
		}
		t.Fatalf("python peer exited without output; stderr:\n%s", tail(p.stderr.String(), 3000))
	case <-time.After(d):
		t.Fatalf("python peer printed nothing within %v; stderr:\n%s", d, tail(p.stderr.String(), 3000))
	}
	return nil
}

// waitReady waits for a server or listener peer to have declared its queues.
func (p *pyPeer) waitReady(t *testing.T) {
	t.Helper()
	if line := p.next(t, 30*time.Second); line["event"] != "ready" {
		t.Fatalf("python peer: got %v, want ready", line)
	}
}

func testGoCallsPython(t *testing.T, broker string) {
	topic := uniqueName("py_srv")
	startPeer(t, broker, "server", "--topic", topic, "--server", "py1", "--version", "1.1").waitReady(t)
	tr := newTestTransport(t, broker)
	ctx := WithContextValues(testContext(t, 40*time.Second), map[string]any{"user": "bob"})
	client := newTestClient(tr, Target{Topic: topic})

	var sum int
	if err := client.CallInto(ctx, "add", addArgs{A: 20, B: 22}, &sum); err != nil || sum != 42 {
		t.Fatalf("Go→Python add = %d, %v; want 42", sum, err)
	}
	var echo struct {
		Args    map[string]any
		Context map[string]any
		Server  string
	}
	named := newTestClient(tr, Target{Topic: topic, Server: "py1", Version: "1.1"})
	if err := named.CallInto(ctx, "echo", map[string]any{"x": "y"}, &echo); err != nil {
		t.Fatalf("Go→Python echo on named server: %v", err)
	}
	if echo.Server != "py1" || echo.Args["x"] != "y" || echo.Context["user"] != "bob" {
		t.Fatalf("Python echo = %+v", echo)
	}
	_, err := client.Call(ctx, "fail", map[string]any{"message": "python says no"})
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Class != "ValueError" || remote.Module != "builtins" || remote.Message != "python says no" || len(remote.Traceback) == 0 {
		t.Fatalf("Go→Python fail: err = %#v, want builtins.ValueError with traceback", err)
	}
	tooNew := newTestClient(tr, Target{Topic: topic, Version: "1.5"})
	if _, err := tooNew.Call(ctx, "add", addArgs{}); !errors.As(err, &remote) || remote.Class != classUnsupportedVersion {
		t.Fatalf("Go→Python version 1.5 against 1.1: err = %v, want UnsupportedVersion", err)
	}
}

func testGoCastsToPython(t *testing.T, broker string) {
	topic := uniqueName("py_cast")
	peers := []*pyPeer{
		startPeer(t, broker, "server", "--topic", topic, "--server", "py1"),
		startPeer(t, broker, "server", "--topic", topic, "--server", "py2"),
	}
	for _, p := range peers {
		p.waitReady(t)
	}
	tr := newTestTransport(t, broker)
	ctx := testContext(t, 40*time.Second)
	if err := newTestClient(tr, Target{Topic: topic, Server: "py2"}).Cast(ctx, "record", map[string]any{"value": "direct"}); err != nil {
		t.Fatalf("cast: %v", err)
	}
	if line := peers[1].next(t, 15*time.Second); line["event"] != "cast" || line["value"] != "direct" {
		t.Fatalf("py2 printed %v, want the direct cast", line)
	}
	if err := newTestClient(tr, Target{Topic: topic, Fanout: true}).Cast(ctx, "record", map[string]any{"value": "all"}); err != nil {
		t.Fatalf("fanout cast: %v", err)
	}
	for i, p := range peers {
		if line := p.next(t, 15*time.Second); line["event"] != "cast" || line["value"] != "all" {
			t.Fatalf("py%d printed %v, want the fanout cast", i+1, line)
		}
	}
}

func testGoNotifiesPython(t *testing.T, broker string) {
	topic := uniqueName("py_listen")
	listener := startPeer(t, broker, "listen", "--topic", topic)
	listener.waitReady(t)
	tr := newTestTransport(t, broker)
	ctx := WithContextValues(testContext(t, 40*time.Second), map[string]any{"request_id": "req-9"})
	if err := NewNotifier(tr, "go.publisher", topic).Critical(ctx, "disk.full", map[string]any{"free": 0}); err != nil {
		t.Fatalf("notify: %v", err)
	}
	line := listener.next(t, 15*time.Second)
	payload, _ := line["payload"].(map[string]any)
	ctxt, _ := line["context"].(map[string]any)
	if line["event"] != "notification" || line["priority"] != "critical" || line["event_type"] != "disk.full" ||
		line["publisher_id"] != "go.publisher" || payload["free"] != float64(0) || ctxt["request_id"] != "req-9" {
		t.Fatalf("Python listener printed %v", line)
	}
}

// runPeerOnce runs a one-shot peer (call, cast, notify) and returns its
// single output line.
func runPeerOnce(t *testing.T, broker string, args ...string) map[string]any {
	t.Helper()
	return startPeer(t, broker, args...).next(t, 40*time.Second)
}

func testPythonCallsGo(t *testing.T, broker string) {
	topic := uniqueName("go_srv")
	tr := newTestTransport(t, broker)
	startServer(t, tr, Target{Topic: topic, Server: "go1"}, &testEndpoint{server: "go1"}, "1.3")

	line := runPeerOnce(t, broker, "call", "--topic", topic, "--method", "add", "--args", `{"a": 5, "b": 6}`)
	if line["result"] != float64(11) {
		t.Fatalf("Python→Go add printed %v, want result 11", line)
	}
	line = runPeerOnce(t, broker, "call", "--topic", topic, "--server", "go1", "--method", "echo",
		"--args", `{"k": [1, 2]}`, "--context", `{"user": "carol"}`)
	result, _ := line["result"].(map[string]any)
	ctxt, _ := result["context"].(map[string]any)
	if result["server"] != "go1" || ctxt["user"] != "carol" {
		t.Fatalf("Python→Go echo printed %v", line)
	}
	line = runPeerOnce(t, broker, "call", "--topic", topic, "--method", "fail", "--args", `{"message": "go says no"}`)
	errInfo, _ := line["error"].(map[string]any)
	if errInfo["class"] != "ValueError" || !strings.Contains(errInfo["message"].(string), "go says no") {
		t.Fatalf("Python→Go fail printed %v, want ValueError", line)
	}
	line = runPeerOnce(t, broker, "call", "--topic", topic, "--method", "add", "--version", "2.0", "--args", `{"a": 1, "b": 1}`)
	if errInfo, _ = line["error"].(map[string]any); errInfo["class"] != classUnsupportedVersion {
		t.Fatalf("Python→Go call version 2.0 printed %v, want UnsupportedVersion", line)
	}
}

func testPythonCastsToGo(t *testing.T, broker string) {
	topic := uniqueName("go_cast")
	tr := newTestTransport(t, broker)
	casts := make(chan castRecord, 10)
	startServer(t, tr, Target{Topic: topic, Server: "go1"}, &testEndpoint{server: "go1", casts: casts}, "")
	startServer(t, tr, Target{Topic: topic, Server: "go2"}, &testEndpoint{server: "go2", casts: casts}, "")
	if line := runPeerOnce(t, broker, "cast", "--topic", topic, "--method", "record", "--args", `{"value": "py-fanout"}`, "--fanout"); line["event"] != "sent" {
		t.Fatalf("python cast printed %v", line)
	}
	seen := map[string]bool{}
	for _, c := range waitCasts(t, casts, 2, 15*time.Second) {
		if c.Value != "py-fanout" {
			t.Fatalf("Go server got %v", c.Value)
		}
		seen[c.Server] = true
	}
	if !seen["go1"] || !seen["go2"] {
		t.Fatalf("Python fanout reached %v, want go1 and go2", seen)
	}
	if line := runPeerOnce(t, broker, "cast", "--topic", topic, "--server", "go2", "--method", "record", "--args", `{"value": 3}`); line["event"] != "sent" {
		t.Fatalf("python cast printed %v", line)
	}
	if got := waitCasts(t, casts, 1, 15*time.Second); got[0].Server != "go2" || got[0].Value != float64(3) {
		t.Fatalf("Python direct cast delivered %+v, want value 3 on go2", got[0])
	}
}

func testPythonNotifiesGo(t *testing.T, broker string) {
	topic := uniqueName("go_listen")
	tr := newTestTransport(t, broker)
	got := make(chan *Notification, 10)
	listener, err := NewNotificationListener(tr, []Target{{Exchange: interopExchange, Topic: topic}}, collectNotifications(got), ListenerOptions{Pool: topic + "_pool"})
	if err != nil {
		t.Fatal(err)
	}
	if err := listener.Start(testContext(t, 20*time.Second)); err != nil {
		t.Fatalf("start listener: %v", err)
	}
	t.Cleanup(listener.Stop)
	line := runPeerOnce(t, broker, "notify", "--topic", topic, "--priority", "warn", "--event-type", "volume.attach",
		"--payload", `{"volume": "v1"}`, "--publisher-id", "py.volume", "--context", `{"request_id": "req-p"}`)
	if line["event"] != "sent" {
		t.Fatalf("python notify printed %v", line)
	}
	n := waitNotification(t, got, 15*time.Second)
	var payload map[string]any
	_ = json.Unmarshal(n.Payload, &payload)
	if n.Priority != PriorityWarn || n.EventType != "volume.attach" || n.PublisherID != "py.volume" ||
		payload["volume"] != "v1" || n.Context["request_id"] != "req-p" || n.MessageID == "" {
		t.Fatalf("Go listener got %+v", n)
	}
}
