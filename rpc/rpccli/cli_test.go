package rpccli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmq/warren/rpc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testBroker is the first broker of WARREN_TEST_BROKERS, or the reference
// RabbitMQ of scripts/rabbitmq.sh.
func testBroker() string {
	env := strings.TrimSpace(os.Getenv("WARREN_TEST_BROKERS"))
	if env == "" {
		return "amqp://guest:guest@127.0.0.1:5682/"
	}
	return strings.TrimSpace(strings.Split(env, ",")[0])
}

const testExchange = "warren_rpccli_test"

// syncBuffer is a bytes.Buffer safe to read while run writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func runCLI(t *testing.T, ctx context.Context, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut syncBuffer
	code = run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func uniqueTopic(t *testing.T) string {
	return "cli_" + strings.NewReplacer("/", "_").Replace(t.Name()) + "_" + time.Now().Format("150405.000000")
}

type cliEndpoint struct{ casts chan string }

func (e *cliEndpoint) Add(_ context.Context, args struct{ A, B int }) (int, error) {
	return args.A + args.B, nil
}

func (e *cliEndpoint) Fail(_ context.Context, args struct{ Message string }) (any, error) {
	return nil, &rpc.RemoteError{Class: "ValueError", Module: "builtins", Message: args.Message}
}

func (e *cliEndpoint) Record(_ context.Context, args struct{ Value string }) error {
	e.casts <- args.Value
	return nil
}

// startServer serves cliEndpoint on topic until the test ends.
func startServer(t *testing.T, topic string) *cliEndpoint {
	t.Helper()
	tr, err := rpc.NewTransport(testBroker(), rpc.TransportOptions{ControlExchange: testExchange})
	if err != nil {
		t.Fatal(err)
	}
	ep := &cliEndpoint{casts: make(chan string, 10)}
	endpoint, err := rpc.NewEndpoint("", "", ep)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := rpc.NewServer(tr, rpc.Target{Topic: topic, Server: "cli1"}, []*rpc.Endpoint{endpoint}, rpc.ServerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		_ = tr.Close()
		t.Fatalf("start server on broker %s (is it running?): %v", testBroker(), err)
	}
	t.Cleanup(func() {
		srv.Stop()
		_ = tr.Close()
	})
	return ep
}

func TestUsageErrors(t *testing.T) {
	ctx := context.Background()
	cases := [][]string{
		{},
		{"frobnicate"},
		{"call", "--topic", "t"},
		{"call", "--method", "m"},
		{"call", "--topic", "t", "--method", "m", "--args", "[1]"},
		{"call", "--topic", "t", "--method", "m", "--args", "{bad"},
		{"call", "--topic", "t", "--method", "m", "--bogus"},
		{"call", "--topic", "t", "--method", "m", "--url", "http://x/"},
		{"cast", "--topic", "t"},
		{"notify", "--topic", "t"},
		{"notify", "--topic", "t", "--event-type", "e", "--priority", "loud"},
		{"notify", "--topic", "t", "--event-type", "e", "--payload", "nope"},
		{"listen"},
		{"listen", "--topic", "t", "extra"},
	}
	for _, args := range cases {
		if code, _, stderr := runCLI(t, ctx, args...); code != ExitUsage || stderr == "" {
			t.Errorf("node rpc %v: exit %d, stderr %q; want %d with a message", args, code, stderr, ExitUsage)
		}
	}
	if code, stdout, _ := runCLI(t, ctx, "help"); code != ExitOK || !strings.Contains(stdout, "--event-type") {
		t.Errorf("help: exit %d, stdout %q", code, stdout)
	}
}

func TestCall(t *testing.T) {
	topic := uniqueTopic(t)
	startServer(t, topic)
	ctx := context.Background()
	base := []string{"call", "--url", testBroker(), "--exchange", testExchange, "--topic", topic}

	code, stdout, stderr := runCLI(t, ctx, append(base, "--method", "add", "--args", `{"A": 2, "B": 40}`)...)
	if code != ExitOK || stdout != "42\n" {
		t.Fatalf("call add: exit %d, stdout %q, stderr %q; want 0 and 42", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, ctx, append(base, "--server", "cli1", "--method", "add", "--args", `{"A": 1, "B": 1}`)...)
	if code != ExitOK || stdout != "2\n" {
		t.Fatalf("call add on server cli1: exit %d, stdout %q", code, stdout)
	}
	code, stdout, stderr = runCLI(t, ctx, append(base, "--method", "fail", "--args", `{"Message": "nope"}`)...)
	if code != ExitFailure || stdout != "" || !strings.Contains(stderr, "ValueError") || !strings.Contains(stderr, "nope") {
		t.Fatalf("call fail: exit %d, stdout %q, stderr %q; want 1 with class and message", code, stdout, stderr)
	}
}

func TestCallTimeout(t *testing.T) {
	args := []string{"call", "--url", testBroker(), "--exchange", testExchange, "--topic", uniqueTopic(t),
		"--method", "add", "--timeout", "500ms"}
	start := time.Now()
	code, stdout, stderr := runCLI(t, context.Background(), args...)
	if code != ExitTimeout || stdout != "" || !strings.Contains(stderr, "timeout") {
		t.Fatalf("call without server: exit %d, stdout %q, stderr %q; want 2 and a timeout message", code, stdout, stderr)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("500ms timeout took %v", time.Since(start))
	}
}

func TestCallUnreachableBroker(t *testing.T) {
	code, _, stderr := runCLI(t, context.Background(), "call", "--url", "amqp://guest:guest@127.0.0.1:1/",
		"--topic", "t", "--method", "m", "--timeout", "1s")
	if code == ExitOK || stderr == "" {
		t.Fatalf("call to a closed port: exit %d, stderr %q; want a failure", code, stderr)
	}
}

func TestCast(t *testing.T) {
	topic := uniqueTopic(t)
	ep := startServer(t, topic)
	for _, extra := range [][]string{nil, {"--fanout"}, {"--server", "cli1"}} {
		args := append([]string{"cast", "--url", testBroker(), "--exchange", testExchange, "--topic", topic,
			"--method", "record", "--args", `{"Value": "v"}`}, extra...)
		if code, _, stderr := runCLI(t, context.Background(), args...); code != ExitOK {
			t.Fatalf("cast %v: exit %d, stderr %q", extra, code, stderr)
		}
		select {
		case v := <-ep.casts:
			if v != "v" {
				t.Fatalf("cast %v delivered %q", extra, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("cast %v never reached the server", extra)
		}
	}
}

func TestNotifyAndListen(t *testing.T) {
	topic := uniqueTopic(t)
	common := []string{"--url", testBroker(), "--exchange", testExchange, "--topic", topic}
	// The notifier declares "<topic>.<priority>", so this waits for the listener.
	code, _, stderr := runCLI(t, context.Background(), append([]string{"notify", "--priority", "error",
		"--event-type", "volume.delete", "--payload", `{"id": "v1"}`, "--publisher-id", "ops"}, common...)...)
	if code != ExitOK {
		t.Fatalf("notify: exit %d, stderr %q", code, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, append([]string{"listen"}, common...), &out, &errOut) }()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), "\n") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != ExitOK {
		t.Fatalf("listen: exit %d, stderr %q", code, errOut.String())
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	var n rpc.Notification
	if err := json.Unmarshal([]byte(line), &n); err != nil {
		t.Fatalf("listen printed %q: %v", out.String(), err)
	}
	if n.Priority != rpc.PriorityError || n.EventType != "volume.delete" || n.PublisherID != "ops" || string(n.Payload) != `{"id":"v1"}` {
		t.Fatalf("listen printed %+v", n)
	}
}
