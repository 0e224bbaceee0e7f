package mgmt_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type reply struct {
	status int
	body   string
}

func call(t *testing.T, addr, method, path, user, pass, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, pass)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, strings.TrimSpace(string(b))}
}

// TestHTTPAccessLikeRabbitMQ: users with each of RabbitMQ's tags (none, management,
// monitoring) and with or without permissions get the same status codes and error bodies from
// Warren (a request to a node other than the one that created them) as from Debian's RabbitMQ,
// and a refused change changes nothing.
func TestHTTPAccessLikeRabbitMQ(t *testing.T) {
	_, rMgmt := startRabbit(t)
	nodes := startCluster(t, 2)
	rAddr, wWrite, wRead := "127.0.0.1:"+rMgmt, nodes[0].HTTP.Addr(), nodes[1].HTTP.Addr()
	setup := []struct{ method, path, body string }{
		{"PUT", "/api/vhosts/a-vh", "{}"},
		{"PUT", "/api/users/a-none", `{"password":"p","tags":""}`},
		{"PUT", "/api/users/a-mgmt", `{"password":"p","tags":"management"}`},
		{"PUT", "/api/users/a-mon", `{"password":"p","tags":"monitoring"}`},
		{"PUT", "/api/users/a-scoped", `{"password":"p","tags":"management"}`},
		{"PUT", "/api/permissions/a-vh/a-scoped", `{"configure":"^a-","write":"^a-","read":"^a-"}`},
		{"PUT", "/api/queues/a-vh/b-q", `{"durable":true}`},
	}
	for _, s := range setup {
		for _, addr := range []string{rAddr, wWrite} {
			if r := call(t, addr, s.method, s.path, "guest", "guest", s.body); r.status >= 300 {
				t.Fatalf("%s %s %s: %v", addr, s.method, s.path, r)
			}
		}
	}
	t.Cleanup(func() {
		for _, p := range []string{"/api/vhosts/a-vh", "/api/users/a-none", "/api/users/a-mgmt", "/api/users/a-mon", "/api/users/a-scoped"} {
			call(t, rAddr, "DELETE", p, "guest", "guest", "")
		}
	})
	cases := []struct{ user, method, path, body string }{
		{"a-none", "GET", "/api/overview", ""},
		{"a-mgmt", "GET", "/api/whoami", ""},
		{"a-mgmt", "GET", "/api/queues", ""},
		{"a-mgmt", "GET", "/api/queues/a-vh", ""},
		{"a-mgmt", "GET", "/api/users", ""},
		{"a-mgmt", "PUT", "/api/vhosts/a-other", "{}"},
		{"a-mgmt", "PUT", "/api/queues/a-vh/a-q", "{}"},
		{"a-mgmt", "PUT", "/api/queues/no-vh/a-q", "{}"},
		{"a-mgmt", "GET", "/api/definitions", ""},
		{"a-mgmt", "GET", "/api/connections", ""},
		{"a-mon", "GET", "/api/users", ""},
		{"a-mon", "GET", "/api/queues/a-vh", ""},
		{"a-mon", "PUT", "/api/queues/a-vh/a-q", "{}"},
		{"a-mon", "DELETE", "/api/users/a-mgmt", ""},
		{"a-mon", "PUT", "/api/permissions/a-vh/a-mon", `{"configure":".*","write":".*","read":".*"}`},
		{"a-scoped", "GET", "/api/vhosts", ""},
		{"a-scoped", "PUT", "/api/queues/a-vh/a-q", `{"durable":true}`},
		{"a-scoped", "GET", "/api/queues/a-vh/a-q", ""},
		{"a-scoped", "DELETE", "/api/queues/a-vh/b-q", ""},
		{"a-scoped", "PUT", "/api/exchanges/a-vh/b-x", `{"type":"direct"}`},
		{"a-scoped", "DELETE", "/api/queues/a-vh/a-q", ""},
		{"nobody", "GET", "/api/overview", ""},
		{"a-mgmt", "GET", "/api/overview", "wrong-password"},
	}
	for _, c := range cases {
		pass := "p"
		if c.body == "wrong-password" {
			pass, c.body = "nope", ""
		}
		want := call(t, rAddr, c.method, c.path, c.user, pass, c.body)
		got := call(t, wRead, c.method, c.path, c.user, pass, c.body)
		if want.status != got.status {
			t.Errorf("%s %s %s: Warren %d %s, RabbitMQ %d %s", c.user, c.method, c.path, got.status, got.body, want.status, want.body)
			continue
		}
		if want.status >= 400 && want.body != got.body && !strings.Contains(want.body, "Access refused") {
			t.Errorf("%s %s %s: Warren %s, RabbitMQ %s", c.user, c.method, c.path, got.body, want.body)
		}
		if c.method == "GET" && want.status == 200 && c.path != "/api/overview" && c.path != "/api/queues/a-vh/a-q" {
			if names(t, want.body) != names(t, got.body) {
				t.Errorf("%s GET %s: Warren %s, RabbitMQ %s", c.user, c.path, names(t, got.body), names(t, want.body))
			}
		}
	}
	// Refused changes changed nothing; the allowed one is there.
	if _, ok := nodes[1].FSM.Queue("a-vh", "b-q"); !ok {
		t.Fatal("refused delete removed b-q")
	}
	if _, ok := nodes[1].FSM.Exchange("a-vh", "b-x"); ok {
		t.Fatal("refused declare created b-x")
	}
	if _, ok := nodes[1].FSM.Permissions("a-mon", "a-vh"); ok {
		t.Fatal("monitoring user granted itself permissions")
	}
}

// names lists the "name" (or "user") fields of a JSON list, or the JSON object itself.
func names(t *testing.T, body string) string {
	t.Helper()
	var items []map[string]any
	if err := json.Unmarshal([]byte(body), &items); err != nil {
		return body
	}
	var out []string
	for _, it := range items {
		if n, ok := it["name"].(string); ok {
			out = append(out, n)
		}
	}
	return strings.Join(out, ",")
}

// TestClusterOperationsNeedAdministrator: a monitoring user may read the cluster but not make
// it rebalance, forget a node or make a node leave; an administrator may.
func TestClusterOperationsNeedAdministrator(t *testing.T) {
	nodes := startCluster(t, 2)
	addr := nodes[1].HTTP.Addr()
	if r := call(t, nodes[0].HTTP.Addr(), "PUT", "/api/users/ops-mon", "guest", "guest", `{"password":"p","tags":"monitoring"}`); r.status != 201 {
		t.Fatalf("create user: %v", r)
	}
	for _, path := range []string{"/api/cluster/rebalance", "/api/cluster/leave", "/api/cluster/forget/w1", "/api/cluster/join"} {
		if r := call(t, addr, "POST", path, "ops-mon", "p", `{"seeds":["127.0.0.1:1"]}`); r.status != 401 || !strings.Contains(r.body, "Not administrator user") {
			t.Fatalf("monitoring user POST %s: %v", path, r)
		}
	}
	if r := call(t, addr, "GET", "/api/nodes", "ops-mon", "p", ""); r.status != 200 || names(t, r.body) != "w1,w2" {
		t.Fatalf("monitoring user GET /api/nodes: %v", r)
	}
	if r := call(t, addr, "POST", "/api/cluster/rebalance", "guest", "guest", ""); r.status != 200 {
		t.Fatalf("administrator rebalance: %v", r)
	}
	if len(nodes[1].Members.Members()) != 2 {
		t.Fatal("a refused leave changed the membership")
	}
}

// TestLoopbackUserOnHTTP: guest (loopback-only) is refused over a non-loopback address with
// RabbitMQ's reason, and accepted over loopback; another administrator is accepted on both.
func TestLoopbackUserOnHTTP(t *testing.T) {
	var ip string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			ip = n.IP.String()
			break
		}
	}
	if ip == "" {
		t.Skip("needs a non-loopback IPv4 address on this machine to reach the API from off loopback")
	}
	nodes := startClusterOn(t, "0.0.0.0:0")
	_, port, _ := net.SplitHostPort(nodes.HTTP.Addr())
	local, remote := "127.0.0.1:"+port, net.JoinHostPort(ip, port)
	if r := call(t, local, "PUT", "/api/users/admin2", "guest", "guest", `{"password":"p","tags":"administrator"}`); r.status != 201 {
		t.Fatalf("create admin2: %v", r)
	}
	if r := call(t, remote, "GET", "/api/overview", "guest", "guest", ""); r.status != 401 || !strings.Contains(r.body, "User can only log in via localhost") {
		t.Fatalf("guest off loopback: %v", r)
	}
	for _, addr := range []string{local, remote} {
		if r := call(t, addr, "GET", "/api/whoami", "admin2", "p", ""); r.status != 200 {
			t.Fatalf("admin2 via %s: %v", addr, r)
		}
	}
	if r := call(t, local, "GET", "/api/whoami", "guest", "guest", ""); r.status != 200 {
		t.Fatalf("guest via loopback: %v", r)
	}
}

// TestDeletingVhostOrUserClosesItsConnections: as RabbitMQ, deleting a vhost or a user through
// one node closes their connections on any node with 320 and RabbitMQ's reasons.
func TestDeletingVhostOrUserClosesItsConnections(t *testing.T) {
	nodes := startCluster(t, 2)
	h1 := nodes[0].HTTP.Addr()
	for _, s := range []struct{ method, path, body string }{
		{"PUT", "/api/vhosts/gone-vh", "{}"},
		{"PUT", "/api/users/gone-user", `{"password":"p","tags":""}`},
		{"PUT", "/api/permissions/%2F/gone-user", `{"configure":".*","write":".*","read":".*"}`},
	} {
		if r := call(t, h1, s.method, s.path, "guest", "guest", s.body); r.status != 201 {
			t.Fatalf("%s %s: %v", s.method, s.path, r)
		}
	}
	dial := func(url string) chan *amqp.Error {
		c, err := amqp.Dial(url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c.NotifyClose(make(chan *amqp.Error, 1))
	}
	inVhost := dial("amqp://guest:guest@" + nodes[1].AMQPAddr() + "/gone-vh")
	asUser := dial("amqp://gone-user:p@" + nodes[1].AMQPAddr() + "/")
	other := dial("amqp://guest:guest@" + nodes[1].AMQPAddr() + "/")
	for _, s := range []struct {
		path   string
		closed chan *amqp.Error
		reason string
	}{
		{"/api/vhosts/gone-vh", inVhost, "CONNECTION_FORCED - vhost 'gone-vh' is down"},
		{"/api/users/gone-user", asUser, "CONNECTION_FORCED - user 'gone-user' is deleted"},
	} {
		if r := call(t, h1, "DELETE", s.path, "guest", "guest", ""); r.status != 204 {
			t.Fatalf("DELETE %s: %v", s.path, r)
		}
		select {
		case e := <-s.closed:
			if e == nil || e.Code != 320 || e.Reason != s.reason {
				t.Fatalf("DELETE %s closed with %v", s.path, e)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("DELETE %s left its connection open", s.path)
		}
	}
	select {
	case e := <-other:
		t.Fatalf("an unrelated connection closed: %v", e)
	default:
	}
}
