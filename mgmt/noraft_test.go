package mgmt_test

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/broker/brokertest"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/mgmt"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/server"
)

// startWithoutRaft serves the HTTP API (and the AMQP listener it makes its changes through) for
// a broker node on an in-memory log: no Raft, no gossip. Users: guest (administrator), mgr
// (management), plain (no tags); every password is "pw" except guest's.
func startWithoutRaft(t *testing.T) (*broker.Node, string) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	n := brokertest.NewNode(t, &brokertest.Log{}, "solo", brokertest.Options{})
	brokertest.AddUser(t, n, "guest", "guest", "administrator")
	brokertest.AddUser(t, n, "mgr", "pw", "management")
	brokertest.AddUser(t, n, "plain", "pw")
	amqpSrv := server.New(server.Config{Node: n, Logger: quiet})
	if err := amqpSrv.Listen("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(amqpSrv.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := mgmt.Serve(ln, mgmt.Source{Node: n, AMQP: amqpSrv, Version: server.Version}, quiet)
	t.Cleanup(api.Close)
	return n, api.Addr()
}

// TestAPIReadsWithoutRaft: overview, vhosts and queues describe the node's FSM and queues.
func TestAPIReadsWithoutRaft(t *testing.T) {
	n, addr := startWithoutRaft(t)
	if _, err := n.Apply(fsm.DeclareQueue{Vhost: "/", Name: "q", Durable: true, Owner: "solo"}); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"1", "2"} {
		m := &queue.Message{RoutingKey: "q", Body: []byte(body), ExpirationMs: -1}
		if res, err := n.Publish("/", "", m, nil, &broker.Scratch{}, nil); err != nil || res.Routed != 1 {
			t.Fatalf("publish: %+v, %v", res, err)
		}
	}

	var overview struct {
		Node         string         `json:"node"`
		ClusterName  string         `json:"cluster_name"`
		ObjectTotals map[string]int `json:"object_totals"`
		QueueTotals  map[string]int `json:"queue_totals"`
	}
	if st := api(t, addr, "GET", "/api/overview", "guest", "guest", "", &overview); st != 200 {
		t.Fatalf("GET /api/overview: %d", st)
	}
	if overview.Node != "solo" || overview.ClusterName != "warren" || overview.ObjectTotals["queues"] != 1 ||
		overview.QueueTotals["messages_ready"] != 2 {
		t.Fatalf("overview %+v", overview)
	}

	var vhosts []struct{ Name string }
	if st := api(t, addr, "GET", "/api/vhosts", "mgr", "pw", "", &vhosts); st != 200 || len(vhosts) != 1 || vhosts[0].Name != "/" {
		t.Fatalf("GET /api/vhosts: %d %+v", st, vhosts)
	}

	var queues []struct {
		Name     string
		Vhost    string
		Durable  bool
		Node     string
		Messages int
	}
	if st := api(t, addr, "GET", "/api/queues/%2F", "guest", "guest", "", &queues); st != 200 || len(queues) != 1 {
		t.Fatalf("GET /api/queues/%%2F: %d %+v", st, queues)
	}
	if q := queues[0]; q.Name != "q" || q.Vhost != "/" || !q.Durable || q.Node != "solo" || q.Messages != 2 {
		t.Fatalf("queue %+v", q)
	}
}

// TestAPIRefusesWithoutRaft: RabbitMQ's 401s for no or wrong credentials, a user without a
// management tag, and a management user on an administrator endpoint.
func TestAPIRefusesWithoutRaft(t *testing.T) {
	_, addr := startWithoutRaft(t)
	for _, c := range []struct{ user, pass, path, reason string }{
		{"", "", "/api/overview", "Login failed"},
		{"guest", "wrong", "/api/overview", "Login failed"},
		{"plain", "pw", "/api/overview", "Not management user"},
		{"mgr", "pw", "/api/users", "Not administrator user"},
	} {
		r := call(t, addr, "GET", c.path, c.user, c.pass, "")
		if r.status != 401 || !strings.Contains(r.body, c.reason) {
			t.Errorf("%s:%s GET %s: %d %s, want 401 %q", c.user, c.pass, c.path, r.status, r.body, c.reason)
		}
	}
}

// TestAPIChangesWithoutRaft: vhosts are created and deleted through the broker's log, queues
// through an AMQP connection to the node as the requesting user.
func TestAPIChangesWithoutRaft(t *testing.T) {
	n, addr := startWithoutRaft(t)
	if r := call(t, addr, "PUT", "/api/vhosts/v2", "guest", "guest", "{}"); r.status != 201 {
		t.Fatalf("PUT vhost: %v", r)
	}
	if !n.FSM().VhostExists("v2") {
		t.Fatal("vhost v2 not in the FSM")
	}
	if r := call(t, addr, "PUT", "/api/queues/%2F/made", "guest", "guest", `{"durable":true,"arguments":{"x-max-length":5}}`); r.status != 201 {
		t.Fatalf("PUT queue: %v", r)
	}
	q, ok := n.FSM().Queue("/", "made")
	lq := n.LocalQueue("/", "made")
	if !ok || !q.Durable || lq == nil {
		t.Fatalf("queue made: %+v (exists %v)", q, ok)
	}
	if got := lq.Config().MaxLength; got != 5 {
		t.Fatalf("queue made has x-max-length %d, want 5", got)
	}
	// RabbitMQ's management API answers a refused re-declare with 400 and the channel's reason.
	r := call(t, addr, "PUT", "/api/queues/%2F/made", "mgr", "pw", `{"durable":false}`)
	if r.status != 400 || !strings.Contains(r.body, "inequivalent arg 'durable' for queue 'made' in vhost '/'") {
		t.Fatalf("inequivalent re-declare: %v, want 400 inequivalent arg", r)
	}
	if r := call(t, addr, "DELETE", "/api/queues/%2F/made", "guest", "guest", ""); r.status != 204 {
		t.Fatalf("DELETE queue: %v", r)
	}
	if _, ok := n.FSM().Queue("/", "made"); ok {
		t.Fatal("queue still in the FSM after DELETE")
	}
	if r := call(t, addr, "DELETE", "/api/vhosts/v2", "guest", "guest", ""); r.status != 204 {
		t.Fatalf("DELETE vhost: %v", r)
	}
	if n.FSM().VhostExists("v2") {
		t.Fatal("vhost v2 still in the FSM after DELETE")
	}
	if r := call(t, addr, "DELETE", "/api/vhosts/v2", "guest", "guest", ""); r.status != 404 {
		t.Fatalf("DELETE of a missing vhost: %v, want 404", r)
	}
}
