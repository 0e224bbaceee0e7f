package mgmt_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestProgressOfRebalanceAndImport: GET /api/progress reports a rebalance until the messages of
// the moved queue have all reached their new owner (queues and messages counted, with rates),
// and a definitions import with the number of definitions it applied.
func TestProgressOfRebalanceAndImport(t *testing.T) {
	nodes := startCluster(t, 2)
	c, err := amqp.Dial("amqp://guest:guest@" + nodes[0].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, _ := c.Channel()
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const perQueue = 300
	for _, q := range []string{"p-a", "p-b"} {
		if _, err := ch.QueueDeclare(q, true, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		var last *amqp.DeferredConfirmation
		for i := 0; i < perQueue; i++ {
			if last, err = ch.PublishWithDeferredConfirmWithContext(context.Background(), "", q, false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
		if !last.Wait() {
			t.Fatal("publishes not confirmed")
		}
	}
	// The declares went through w1's AMQP port; the rebalance is asked of w2.
	waitFor(t, 10*time.Second, "w2 to apply the declares", func() bool { return nodes[1].FSM.Digest() == nodes[0].FSM.Digest() })
	addr := nodes[1].HTTP.Addr()
	var out map[string]int
	if code := api(t, addr, "POST", "/api/cluster/rebalance", "guest", "guest", "", &out); code != 200 || out["moved"] != 1 {
		t.Fatalf("rebalance: %d %v", code, out)
	}
	var rep map[string]any
	waitFor(t, 20*time.Second, "the rebalance to finish", func() bool {
		var ps []map[string]any
		api(t, addr, "GET", "/api/progress", "guest", "guest", "", &ps)
		for _, p := range ps {
			if p["operation"] == "rebalance" {
				rep = p
			}
		}
		return rep != nil && rep["running"] == false
	})
	if rep["queues"] != float64(1) || rep["messages"] != float64(perQueue) || rep["error"] != nil || rep["messages_per_second"].(float64) <= 0 {
		t.Fatalf("rebalance report %v", rep)
	}
	defs := `{"vhosts":[{"name":"p-vh"}],"queues":[{"name":"q1","vhost":"p-vh","durable":true,"auto_delete":false,"arguments":{}},
		{"name":"q2","vhost":"p-vh","durable":true,"auto_delete":false,"arguments":{}}],"exchanges":[],"bindings":[]}`
	if code := api(t, nodes[0].HTTP.Addr(), "POST", "/api/definitions", "guest", "guest", defs, nil); code != 204 {
		t.Fatalf("import: %d", code)
	}
	var ps []map[string]any
	api(t, nodes[0].HTTP.Addr(), "GET", "/api/progress", "guest", "guest", "", &ps)
	var imp map[string]any
	for _, p := range ps {
		if p["operation"] == "import" {
			imp = p
		}
	}
	if imp == nil || imp["items"] != float64(3) || imp["total"] != float64(3) || imp["queues"] != float64(2) || imp["running"] != false {
		t.Fatalf("import report %v", imp)
	}
}
