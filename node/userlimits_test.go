package node_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
)

// waitCluster waits until cond holds on every node (what another node applied through Raft,
// or saw through gossip, arrives a little later than on the node that proposed it).
func waitCluster(t *testing.T, nodes []*node.Node, what string, cond func(*node.Node) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range nodes {
		for !cond(n) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not on %s after 10s", what, n.Broker.ID())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// waitMembers waits until every node sees every node alive: the cluster-wide counts ask the
// live members.
func waitMembers(t *testing.T, nodes []*node.Node) {
	t.Helper()
	waitCluster(t, nodes, "all members alive", func(n *node.Node) bool {
		alive := 0
		for _, m := range n.Members.Members() {
			if m.State == cluster.MemberAlive {
				alive++
			}
		}
		return alive == len(nodes)
	})
}

// wantClosed asserts err is RabbitMQ's refusal: 530 with reason.
func wantClosed(t *testing.T, what string, err error, reason string) {
	t.Helper()
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.NotAllowed || ae.Reason != reason {
		t.Fatalf("%s: %v, want 530 %q", what, err, reason)
	}
}

// TestUserLimitsAcrossNodes: RabbitMQ 3.10's user limits, set through one node's API, count
// the user's connections and channels on every node of the cluster: with max-connections 2 and
// one connection on each of c2 and c3, c1 refuses the third with RabbitMQ's 530 text and admits
// it once one of the others closed; with max-channels 2, a channel on c1 and one on c2 leave
// no room for a third on either node (530 closes that connection, as RabbitMQ). Other users
// are not limited. The API lists, shows and clears the limits.
func TestUserLimitsAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	api := func(i int) string { return "http://" + nodes[i].HTTP.Addr() }
	waitMembers(t, nodes)
	for _, req := range []struct{ method, path, body string }{
		{"PUT", "/api/users/lim", `{"password": "pw", "tags": ""}`},
		{"PUT", "/api/permissions/%2F/lim", `{"configure": ".*", "write": ".*", "read": ".*"}`},
		{"PUT", "/api/user-limits/lim/max-connections", `{"value": 2}`},
	} {
		if r := apiDo(t, req.method, api(0)+req.path, req.body); r.StatusCode/100 != 2 {
			t.Fatalf("%s %s: %s", req.method, req.path, r.Status)
		}
	}
	waitCluster(t, nodes, "limit applied", func(n *node.Node) bool {
		_, ok := n.Broker.FSM().UserLimit("lim", fsm.LimitMaxConnections)
		return ok
	})
	url := func(i int) string { return "amqp://lim:pw@" + nodes[i].AMQPAddr() + "/" }
	dial := func(i int) *amqp.Connection {
		t.Helper()
		c, err := amqp.Dial(url(i))
		if err != nil {
			t.Fatalf("dial c%d: %v", i+1, err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	on2 := dial(1)
	on3 := dial(2)
	_, err := amqp.Dial(url(0))
	wantClosed(t, "third connection of the user, on c1", err, "NOT_ALLOWED - connection refused for user 'lim': user connection limit (2) is reached")
	dialNode(t, nodes[0]) // guest has no limit
	if err := on3.Close(); err != nil {
		t.Fatal(err)
	}
	// The closed connection is given back when c3 has cleaned it up, just after close-ok.
	var on1 *amqp.Connection
	for deadline := time.Now().Add(5 * time.Second); on1 == nil; {
		if on1, err = amqp.Dial(url(0)); err != nil && time.Now().After(deadline) {
			t.Fatalf("connection after another closed: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() { _ = on1.Close() })

	if r := apiDo(t, "PUT", api(2)+"/api/user-limits/lim/max-channels", `{"value": 2}`); r.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT max-channels: %s", r.Status)
	}
	waitCluster(t, nodes, "max-channels applied", func(n *node.Node) bool {
		_, ok := n.Broker.FSM().UserLimit("lim", fsm.LimitMaxChannels)
		return ok
	})
	if _, err := on1.Channel(); err != nil {
		t.Fatal(err)
	}
	if _, err := on2.Channel(); err != nil {
		t.Fatal(err)
	}
	closed := on1.NotifyClose(make(chan *amqp.Error, 1))
	_, err = on1.Channel()
	const chanReason = "NOT_ALLOWED - number of channels opened for user 'lim' has reached the maximum allowed user limit of (2)"
	wantClosed(t, "third channel of the user, on c1", err, chanReason)
	select {
	case e := <-closed:
		if e == nil || e.Code != amqp.NotAllowed {
			t.Fatalf("connection close after the channel refusal: %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the refused channel's connection stayed open")
	}
	// c1's connection took its channel away with it: room for one more on c2, then none.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err = on2.Channel(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel after another closed: %v", err)
		}
		on2 = dial(1) // the refusal closed the connection
		time.Sleep(10 * time.Millisecond)
	}
	_, err = dial(2).Channel()
	wantClosed(t, "third channel of the user, on c3", err, chanReason)

	var listed []struct {
		User  string         `json:"user"`
		Value map[string]int `json:"value"`
	}
	if err := json.NewDecoder(apiDo(t, "GET", api(1)+"/api/user-limits", "").Body).Decode(&listed); err != nil ||
		len(listed) != 1 || listed[0].User != "lim" || listed[0].Value["max-connections"] != 2 || listed[0].Value["max-channels"] != 2 {
		t.Fatalf("GET /api/user-limits: %+v %v", listed, err)
	}
	var user struct {
		Limits map[string]int `json:"limits"`
	}
	if err := json.NewDecoder(apiDo(t, "GET", api(2)+"/api/users/lim", "").Body).Decode(&user); err != nil || user.Limits["max-channels"] != 2 {
		t.Fatalf("limits in /api/users/lim: %+v %v", user, err)
	}
	if r := apiDo(t, "GET", api(1)+"/api/user-limits/nobody", ""); r.StatusCode != http.StatusNotFound {
		t.Fatalf("limits of a missing user: %s", r.Status)
	}
	if r := apiDo(t, "PUT", api(1)+"/api/user-limits/lim/max-queues", `{"value": 1}`); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown user limit: %s", r.Status)
	}
	for _, name := range []string{"max-connections", "max-channels"} {
		if r := apiDo(t, "DELETE", api(1)+"/api/user-limits/lim/"+name, ""); r.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE %s: %s", name, r.Status)
		}
	}
	var left []any
	if err := json.NewDecoder(apiDo(t, "GET", api(1)+"/api/user-limits/lim", "").Body).Decode(&left); err != nil || len(left) != 0 {
		t.Fatalf("limits after DELETE: %v %v", left, err)
	}
	dial(0) // no limit any more
}

// TestVhostConnectionLimitAcrossNodes: a vhost's max-connections counts the vhost's
// connections on every node, as RabbitMQ: with the limit at 1 and a connection on c2, c1
// refuses one with RabbitMQ's text, and admits it once c2's has closed.
func TestVhostConnectionLimitAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	waitMembers(t, nodes)
	if r := apiDo(t, "PUT", "http://"+nodes[1].HTTP.Addr()+"/api/vhost-limits/%2F/max-connections", `{"value": 1}`); r.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT vhost limit: %s", r.Status)
	}
	waitCluster(t, nodes, "limit applied", func(n *node.Node) bool {
		_, ok := n.Broker.FSM().VhostLimit("/", fsm.LimitMaxConnections)
		return ok
	})
	url := func(i int) string { return "amqp://guest:guest@" + nodes[i].AMQPAddr() + "/" }
	on2, err := amqp.Dial(url(1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = amqp.Dial(url(0))
	wantClosed(t, "second connection to the vhost, on c1", err, "NOT_ALLOWED - access to vhost '/' refused for user 'guest': connection limit (1) is reached")
	if err := on2.Close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := amqp.Dial(url(0))
		if err == nil {
			_ = c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connection after the other closed: %v", err)
		}
	}
}
