package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// brokerCase is one test of the suite every broker runs.
type brokerCase struct {
	name string
	run  func(t *testing.T, brokerURL string)
}

// TestBrokers runs the whole library and interop suite against every
// broker of WARREN_TEST_BROKERS, one subtest per broker.
func TestBrokers(t *testing.T) {
	cases := append(libraryCases(), interopCases()...)
	for _, broker := range testBrokers() {
		t.Run(brokerName(broker), func(t *testing.T) {
			requireBroker(t, broker)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) { c.run(t, broker) })
			}
		})
	}
}

func libraryCases() []brokerCase {
	return []brokerCase{
		{"Call", testCall},
		{"CallNamedServer", testCallNamedServer},
		{"ContextValues", testContextValues},
		{"RemoteError", testRemoteError},
		{"NoSuchMethod", testNoSuchMethod},
		{"VersionAndNamespace", testVersionAndNamespace},
		{"Timeout", testTimeout},
		{"CallMonitorHeartbeat", testCallMonitorHeartbeat},
		{"Cast", testCast},
		{"Fanout", testFanout},
		{"LoadBalancing", testLoadBalancing},
		{"DuplicateSuppression", testDuplicateSuppression},
		{"ServerRestartMidCall", testServerRestartMidCall},
		{"FailoverToSecondHost", testFailover},
		{"ReconnectAfterDrop", testReconnectAfterDrop},
		{"ResubscribeAfterCancel", testResubscribeAfterCancel},
		{"Notify", testNotify},
		{"NotifyRequeue", testNotifyRequeue},
	}
}

// testEndpoint is the Go endpoint served in the tests; Python's
// testdata/oslo_peer.py serves the same methods.
type testEndpoint struct {
	server  string
	casts   chan castRecord
	started chan string // receives the tag of each sleep call as it starts
}

type castRecord struct {
	Value  any
	Server string
}

type addArgs struct {
	A int `json:"a"`
	B int `json:"b"`
}

func (e *testEndpoint) Add(_ context.Context, args addArgs) (int, error) {
	return args.A + args.B, nil
}

func (e *testEndpoint) Echo(ctx context.Context, args map[string]any) (map[string]any, error) {
	return map[string]any{"args": args, "context": ContextValues(ctx), "server": e.server}, nil
}

func (e *testEndpoint) Fail(_ context.Context, args struct {
	Message string `json:"message"`
}) (any, error) {
	return nil, &RemoteError{Class: "ValueError", Module: "builtins", Message: args.Message}
}

func (e *testEndpoint) Record(_ context.Context, args struct {
	Value any `json:"value"`
}) error {
	if e.casts != nil {
		e.casts <- castRecord{Value: args.Value, Server: e.server}
	}
	return nil
}

func (e *testEndpoint) Sleep(_ context.Context, args struct {
	Seconds float64 `json:"seconds"`
	Tag     string  `json:"tag"`
}) (string, error) {
	if e.started != nil {
		e.started <- args.Tag
	}
	time.Sleep(time.Duration(args.Seconds * float64(time.Second)))
	return args.Tag, nil
}

// startServer runs a Go server with testEndpoint until the test ends.
func startServer(t *testing.T, tr *Transport, target Target, ep *testEndpoint, version string) *Server {
	t.Helper()
	endpoint, err := NewEndpoint(target.Namespace, version, ep)
	if err != nil {
		t.Fatalf("endpoint: %v", err)
	}
	target.Namespace = ""
	srv, err := NewServer(tr, target, []*Endpoint{endpoint}, ServerOptions{Workers: 8})
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if err := srv.Start(testContext(t, 20*time.Second)); err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

func newTestClient(tr *Transport, target Target) *Client {
	c := NewClient(tr, target)
	c.Timeout = 10 * time.Second
	return c
}

func testCall(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("call")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	client := newTestClient(tr, Target{Topic: topic})
	ctx := testContext(t, 20*time.Second)

	got, err := client.Call(ctx, "add", map[string]any{"a": 2, "b": 3})
	if err != nil {
		t.Fatalf("call add: %v", err)
	}
	if n, ok := got.(json.Number); !ok || n.String() != "5" {
		t.Fatalf("add(2,3) = %#v, want json.Number 5", got)
	}
	var sum int
	if err := client.CallInto(ctx, "add", addArgs{A: 40, B: 2}, &sum); err != nil || sum != 42 {
		t.Fatalf("CallInto add = %d, %v; want 42", sum, err)
	}
	if _, err := client.Call(ctx, "add", []int{1, 2}); err == nil {
		t.Fatal("call with non-object args succeeded, want an error")
	}
}

func testCallNamedServer(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("named")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	startServer(t, tr, Target{Topic: topic, Server: "s2"}, &testEndpoint{server: "s2"}, "")
	ctx := testContext(t, 20*time.Second)
	for _, server := range []string{"s1", "s2", "s2", "s1"} {
		var out struct{ Server string }
		if err := newTestClient(tr, Target{Topic: topic, Server: server}).CallInto(ctx, "echo", nil, &out); err != nil {
			t.Fatalf("call echo on %s: %v", server, err)
		}
		if out.Server != server {
			t.Fatalf("call to server %s answered by %s", server, out.Server)
		}
	}
}

func testContextValues(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("ctx")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	ctx := WithContextValues(testContext(t, 20*time.Second), map[string]any{"user": "alice", "roles": []any{"admin"}})
	var out struct {
		Args    map[string]any
		Context map[string]any
	}
	if err := newTestClient(tr, Target{Topic: topic}).CallInto(ctx, "echo", map[string]any{"k": "v"}, &out); err != nil {
		t.Fatalf("call echo: %v", err)
	}
	if out.Context["user"] != "alice" || fmt.Sprint(out.Context["roles"]) != "[admin]" {
		t.Fatalf("server saw context %v, want user=alice roles=[admin]", out.Context)
	}
	if out.Args["k"] != "v" {
		t.Fatalf("server saw args %v", out.Args)
	}
}

func testRemoteError(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("err")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	_, err := newTestClient(tr, Target{Topic: topic}).Call(testContext(t, 20*time.Second), "fail", map[string]any{"message": "boom"})
	var remote *RemoteError
	if !errors.As(err, &remote) {
		t.Fatalf("call fail: err = %v, want *RemoteError", err)
	}
	if remote.Class != "ValueError" || remote.Module != "builtins" || remote.Message != "boom" {
		t.Fatalf("remote error = %+v, want builtins.ValueError boom", remote)
	}
}

func testNoSuchMethod(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("nsm")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	_, err := newTestClient(tr, Target{Topic: topic}).Call(testContext(t, 20*time.Second), "missing_method", nil)
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.Class != classNoSuchMethod {
		t.Fatalf("call missing_method: err = %v, want NoSuchMethod", err)
	}
}

func testVersionAndNamespace(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("ver")
	startServer(t, tr, Target{Topic: topic, Server: "s1", Namespace: "compute"}, &testEndpoint{server: "s1"}, "1.2")
	ctx := testContext(t, 30*time.Second)
	cases := []struct {
		namespace, version string
		wantClass          string // "" means success
	}{
		{"compute", "1.0", ""},
		{"compute", "1.2", ""},
		{"compute", "", ""},
		{"compute", "1.3", classUnsupportedVersion},
		{"compute", "2.0", classUnsupportedVersion},
		{"", "1.0", classUnsupportedVersion},
		{"network", "1.0", classUnsupportedVersion},
	}
	for _, c := range cases {
		client := newTestClient(tr, Target{Topic: topic, Namespace: c.namespace, Version: c.version})
		_, err := client.Call(ctx, "add", addArgs{A: 1, B: 1})
		var remote *RemoteError
		switch {
		case c.wantClass == "" && err != nil:
			t.Errorf("namespace %q version %q: %v, want success", c.namespace, c.version, err)
		case c.wantClass != "" && (!errors.As(err, &remote) || remote.Class != c.wantClass):
			t.Errorf("namespace %q version %q: err = %v, want %s", c.namespace, c.version, err, c.wantClass)
		}
	}
}

func testTimeout(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	client := newTestClient(tr, Target{Topic: uniqueName("nobody")})
	client.Timeout = 500 * time.Millisecond
	start := time.Now()
	_, err := client.Call(testContext(t, 20*time.Second), "add", nil)
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("call with no server: err = %v, want ErrTimeout", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Fatalf("timeout of 500ms took %v", elapsed)
	}
	// A context deadline shorter than Timeout wins and also reads as a timeout.
	client.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := client.Call(ctx, "add", nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("call with ctx deadline: err = %v, want ErrTimeout", err)
	}
}

func testCallMonitorHeartbeat(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("monitor")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	client := newTestClient(tr, Target{Topic: topic})
	client.CallMonitorTimeout = 2 * time.Second
	// The call outlives the monitor timeout; only heartbeats keep it alive.
	var tag string
	if err := client.CallInto(testContext(t, 20*time.Second), "sleep", map[string]any{"seconds": 3.5, "tag": "slow"}, &tag); err != nil || tag != "slow" {
		t.Fatalf("monitored slow call = %q, %v; want slow", tag, err)
	}
	// Without a server there are no heartbeats: the monitor fires early.
	lonely := newTestClient(tr, Target{Topic: uniqueName("nobody")})
	lonely.CallMonitorTimeout = 2 * time.Second
	lonely.Timeout = 30 * time.Second
	start := time.Now()
	if _, err := lonely.Call(testContext(t, 40*time.Second), "sleep", nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("monitored call without server: err = %v, want ErrTimeout", err)
	}
	if elapsed := time.Since(start); elapsed > 10*time.Second {
		t.Fatalf("call monitor should fail after ~2s, took %v", elapsed)
	}
}

// waitCasts collects n cast records or fails after d.
func waitCasts(t *testing.T, casts <-chan castRecord, n int, d time.Duration) []castRecord {
	t.Helper()
	var got []castRecord
	deadline := time.After(d)
	for len(got) < n {
		select {
		case c := <-casts:
			got = append(got, c)
		case <-deadline:
			t.Fatalf("received %d of %d casts within %v", len(got), n, d)
		}
	}
	return got
}

// expectNoCast fails if a cast arrives within d.
func expectNoCast(t *testing.T, casts <-chan castRecord, d time.Duration) {
	t.Helper()
	select {
	case c := <-casts:
		t.Fatalf("unexpected extra cast %+v", c)
	case <-time.After(d):
	}
}

func testCast(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("cast")
	casts := make(chan castRecord, 10)
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1", casts: casts}, "")
	if err := newTestClient(tr, Target{Topic: topic}).Cast(testContext(t, 20*time.Second), "record", map[string]any{"value": "hello"}); err != nil {
		t.Fatalf("cast: %v", err)
	}
	got := waitCasts(t, casts, 1, 10*time.Second)
	if got[0].Value != "hello" {
		t.Fatalf("cast delivered %v, want hello", got[0].Value)
	}
	expectNoCast(t, casts, 300*time.Millisecond)
}

func testFanout(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("fanout")
	casts := make(chan castRecord, 10)
	for _, s := range []string{"s1", "s2", "s3"} {
		startServer(t, tr, Target{Topic: topic, Server: s}, &testEndpoint{server: s, casts: casts}, "")
	}
	client := newTestClient(tr, Target{Topic: topic, Fanout: true})
	if err := client.Cast(testContext(t, 20*time.Second), "record", map[string]any{"value": 7}); err != nil {
		t.Fatalf("fanout cast: %v", err)
	}
	seen := map[string]int{}
	for _, c := range waitCasts(t, casts, 3, 10*time.Second) {
		seen[c.Server]++
	}
	if len(seen) != 3 || seen["s1"] != 1 || seen["s2"] != 1 || seen["s3"] != 1 {
		t.Fatalf("fanout reached %v, want each of s1, s2, s3 once", seen)
	}
	expectNoCast(t, casts, 300*time.Millisecond)
	if _, err := client.Call(testContext(t, 5*time.Second), "add", nil); err == nil {
		t.Fatal("call to a fanout target succeeded, want an error")
	}
}

func testLoadBalancing(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("balance")
	const total = 3000
	casts := make(chan castRecord, total)
	servers := []string{"s1", "s2", "s3"}
	for _, s := range servers {
		// A Transport per server, as separate processes would have.
		startServer(t, newTestTransport(t, broker), Target{Topic: topic, Server: s}, &testEndpoint{server: s, casts: casts}, "")
	}
	client := newTestClient(tr, Target{Topic: topic})
	ctx := testContext(t, 60*time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, total)
	const senders = 8
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < total; i += senders {
				if err := client.Cast(ctx, "record", map[string]any{"value": i}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("cast: %v", err)
	}
	count := map[string]int{}
	for _, c := range waitCasts(t, casts, total, 30*time.Second) {
		count[c.Server]++
	}
	for _, s := range servers {
		if n := count[s]; n < total/3*8/10 || n > total/3*12/10 {
			t.Errorf("server %s got %d of %d casts, want %d ±20%% (all: %v)", s, n, total, total/3, count)
		}
	}
}

func testDuplicateSuppression(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("dup")
	casts := make(chan castRecord, 10)
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1", casts: casts}, "")
	client := newTestClient(tr, Target{Topic: topic, Server: "s1"})
	ctx := testContext(t, 20*time.Second)
	inner, err := client.buildRequest(ctx, "record", map[string]any{"value": "once"})
	if err != nil {
		t.Fatal(err)
	}
	body, err := encodeEnvelope(inner)
	if err != nil {
		t.Fatal(err)
	}
	// The same message twice, as a redelivery after a lost ack would be.
	d, key := client.requestRoute()
	for i := 0; i < 2; i++ {
		if err := tr.publish(ctx, d, key, false, newPublishing(body, 0)); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	if err := client.Cast(ctx, "record", map[string]any{"value": "after"}); err != nil {
		t.Fatalf("cast: %v", err)
	}
	got := waitCasts(t, casts, 2, 10*time.Second)
	if got[0].Value != "once" || got[1].Value != "after" {
		t.Fatalf("server handled %v, want [once after]: the duplicate was not dropped", got)
	}
	expectNoCast(t, casts, 300*time.Millisecond)
}

func testServerRestartMidCall(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("restart")
	started := make(chan string, 4)
	first := startServer(t, newTestTransport(t, broker), Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1", started: started}, "")
	client := newTestClient(tr, Target{Topic: topic})
	client.Timeout = 3 * time.Second
	ctx := testContext(t, 30*time.Second)

	type outcome struct {
		tag string
		err error
	}
	firstDone := make(chan outcome, 1)
	go func() {
		var tag string
		err := client.CallInto(ctx, "sleep", map[string]any{"seconds": 1, "tag": "first"}, &tag)
		firstDone <- outcome{tag, err}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("first call never reached the server")
	}
	// Restart: stop the server while the call runs, then start another.
	stopped := make(chan struct{})
	go func() { first.Stop(); close(stopped) }()
	startServer(t, newTestTransport(t, broker), Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1b"}, "")
	var secondTag string
	if err := client.CallInto(ctx, "sleep", map[string]any{"seconds": 0, "tag": "second"}, &secondTag); err != nil {
		t.Fatalf("call after restart: %v", err)
	}
	if secondTag != "second" {
		t.Fatalf("second call got %q, another call's result", secondTag)
	}
	r := <-firstDone
	<-stopped
	if r.err == nil && r.tag != "first" {
		t.Fatalf("first call got %q, another call's result", r.tag)
	}
	if r.err != nil && !errors.Is(r.err, ErrTimeout) {
		t.Fatalf("first call failed with %v, want its result or a timeout", r.err)
	}
}

// withDeadHostFirst prefixes a broker URL with a host nobody listens on.
func withDeadHostFirst(t *testing.T, broker string) string {
	t.Helper()
	u, err := url.Parse(broker)
	if err != nil {
		t.Fatalf("parse broker url: %v", err)
	}
	creds := ""
	if u.User != nil {
		creds = u.User.String() + "@"
	}
	return u.Scheme + "://" + creds + "127.0.0.1:1," + creds + u.Host + u.Path
}

func testFailover(t *testing.T, broker string) {
	tr, err := NewTransport(withDeadHostFirst(t, broker), TransportOptions{ControlExchange: "warren_rpc_test", DialTimeout: time.Second, Logger: testLogger})
	if err != nil {
		t.Fatalf("new transport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	topic := uniqueName("failover")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	var sum int
	if err := newTestClient(tr, Target{Topic: topic}).CallInto(testContext(t, 20*time.Second), "add", addArgs{A: 1, B: 2}, &sum); err != nil || sum != 3 {
		t.Fatalf("call through failover url = %d, %v; want 3", sum, err)
	}
}

func testReconnectAfterDrop(t *testing.T, broker string) {
	serverTr := newTestTransport(t, broker)
	clientTr := newTestTransport(t, broker)
	topic := uniqueName("reconnect")
	startServer(t, serverTr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	client := newTestClient(clientTr, Target{Topic: topic})
	ctx := testContext(t, 30*time.Second)
	if _, err := client.Call(ctx, "add", addArgs{A: 1, B: 1}); err != nil {
		t.Fatalf("call before drop: %v", err)
	}
	serverTr.dropConnection()
	clientTr.dropConnection()
	var sum int
	if err := client.CallInto(ctx, "add", addArgs{A: 2, B: 2}, &sum); err != nil || sum != 4 {
		t.Fatalf("call after connections dropped = %d, %v; want 4", sum, err)
	}
}

// testResubscribeAfterCancel: the server's queues are deleted under it (as a cluster does when
// it re-homes the queues of a dead node), the broker cancels its consumers with basic.cancel on
// an open channel, and the server declares and subscribes again, so calls are served again.
func testResubscribeAfterCancel(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("cancel")
	startServer(t, tr, Target{Topic: topic, Server: "s1"}, &testEndpoint{server: "s1"}, "")
	client := newTestClient(tr, Target{Topic: topic})
	ctx := testContext(t, 40*time.Second)
	if _, err := client.Call(ctx, "add", addArgs{A: 1, B: 1}); err != nil {
		t.Fatalf("call before the cancel: %v", err)
	}
	conn, err := amqp.Dial(broker)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{topic, topic + ".s1"} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Fatalf("delete %s: %v", q, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		callCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		var sum int
		err := client.CallInto(callCtx, "add", addArgs{A: 20, B: 22}, &sum)
		cancel()
		if err == nil && sum == 42 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no call served after the server's consumers were cancelled: last %d, %v", sum, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// collectNotifications returns a handler that forwards notifications.
func collectNotifications(ch chan<- *Notification) NotificationHandler {
	return func(_ context.Context, n *Notification) error {
		ch <- n
		return nil
	}
}

func waitNotification(t *testing.T, ch <-chan *Notification, d time.Duration) *Notification {
	t.Helper()
	select {
	case n := <-ch:
		return n
	case <-time.After(d):
		t.Fatalf("no notification within %v", d)
		return nil
	}
}

func testNotify(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("notif")
	got := make(chan *Notification, 10)
	listener, err := NewNotificationListener(tr, []Target{{Topic: topic}}, collectNotifications(got), ListenerOptions{Priorities: []Priority{PriorityInfo, PriorityError}})
	if err != nil {
		t.Fatal(err)
	}
	if err := listener.Start(testContext(t, 20*time.Second)); err != nil {
		t.Fatalf("start listener: %v", err)
	}
	t.Cleanup(listener.Stop)
	notifier := NewNotifier(tr, "compute.host1", topic)
	ctx := WithContextValues(testContext(t, 20*time.Second), map[string]any{"request_id": "req-1"})
	if err := notifier.Info(ctx, "instance.create.end", map[string]any{"id": 42}); err != nil {
		t.Fatalf("notify info: %v", err)
	}
	// Not subscribed: must not reach the listener.
	if err := notifier.Debug(ctx, "instance.debug", nil); err != nil {
		t.Fatalf("notify debug: %v", err)
	}
	if err := notifier.Error(ctx, "instance.create.error", "bad"); err != nil {
		t.Fatalf("notify error: %v", err)
	}
	n := waitNotification(t, got, 10*time.Second)
	if n.Priority != PriorityInfo || n.EventType != "instance.create.end" || n.PublisherID != "compute.host1" ||
		string(n.Payload) != `{"id":42}` || n.Context["request_id"] != "req-1" || n.MessageID == "" || n.Timestamp == "" {
		t.Fatalf("notification = %+v", n)
	}
	if n2 := waitNotification(t, got, 10*time.Second); n2.Priority != PriorityError {
		t.Fatalf("second notification = %+v, want the error one (debug is not subscribed)", n2)
	}
	if err := notifier.Notify(ctx, "loud", "x", nil); err == nil {
		t.Fatal("unknown priority accepted")
	}
}

func testNotifyRequeue(t *testing.T, broker string) {
	tr := newTestTransport(t, broker)
	topic := uniqueName("requeue")
	var mu sync.Mutex
	attempts := 0
	handled := make(chan struct{}, 1)
	handler := func(_ context.Context, n *Notification) error {
		mu.Lock()
		defer mu.Unlock()
		attempts++
		if attempts == 1 {
			return errors.New("not yet")
		}
		handled <- struct{}{}
		return nil
	}
	listener, err := NewNotificationListener(tr, []Target{{Topic: topic}}, handler, ListenerOptions{Pool: topic + "_pool", AllowRequeue: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := listener.Start(testContext(t, 20*time.Second)); err != nil {
		t.Fatalf("start listener: %v", err)
	}
	t.Cleanup(listener.Stop)
	if err := NewNotifier(tr, "p", topic).Warn(testContext(t, 20*time.Second), "e", nil); err != nil {
		t.Fatalf("notify: %v", err)
	}
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("requeued notification was not redelivered")
	}
	mu.Lock()
	defer mu.Unlock()
	if attempts != 2 {
		t.Fatalf("handler ran %d times, want 2", attempts)
	}
}
