package node_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

func overviewOf(t *testing.T, n *node.Node) map[string]any {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.HTTP.Addr()+"/api/overview", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestMajorityLostTopologyReadOnly: 2 of 3 nodes die. A client that reconnects to the
// survivor re-declares its exchange, queue and binding (equal to what exists: answered from the
// survivor's replica), publishes with confirms and consumes from the queue the survivor owns;
// a new declaration gets a prompt 541 that says why; the API says topology is read-only.
func TestMajorityLostTopologyReadOnly(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	survivor := nodes[2]
	declare := func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare("ro-x", "direct", true, false, false, false, amqp.Table{"alternate-exchange": "ro-ae"}); err != nil {
			return err
		}
		if _, err := ch.QueueDeclare("ro-q", true, false, false, false, amqp.Table{"x-message-ttl": int32(60000)}); err != nil {
			return err
		}
		return ch.QueueBind("ro-q", "k", "ro-x", false, nil)
	}
	if err := declare(dialNode(t, survivor)); err != nil {
		t.Fatal(err)
	}
	if topo := overviewOf(t, survivor)["topology"].(map[string]any); topo["writable"] != true {
		t.Fatalf("topology with all nodes up: %v", topo)
	}
	_ = nodes[0].Close()
	_ = nodes[1].Close()
	deadline := time.Now().Add(15 * time.Second)
	var topo map[string]any
	for {
		topo = overviewOf(t, survivor)["topology"].(map[string]any)
		if topo["writable"] == false && strings.Contains(topo["reason"].(string), "1 of 3 Raft voters are alive") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("survivor never reported read-only topology: %v", topo)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A client reconnecting to the survivor, as oslo.messaging does after its node died.
	ch := dialNode(t, survivor)
	if err := declare(ch); err != nil {
		t.Fatalf("re-declare equal to what exists, without a majority: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	acks := ch.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch.Publish("ro-x", "k", true, false, amqp.Publishing{Body: []byte("still serving")}); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-acks:
		if !c.Ack {
			t.Fatal("publish to the survivor's queue nacked")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no confirm")
	}
	select {
	case r := <-returns:
		t.Fatalf("publish returned: %s", r.ReplyText)
	default:
	}
	deliveries, err := ch.Consume("ro-q", "", false, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "still serving" {
			t.Fatalf("got %q", d.Body)
		}
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery from the survivor's queue")
	}

	// Something new needs the majority: a prompt, readable 541 on the channel only.
	ch2 := dialNode(t, survivor)
	start := time.Now()
	_, err = ch2.QueueDeclare("ro-new", false, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.InternalError || !strings.Contains(ae.Reason, "read-only: 1 of 3 Raft voters are alive") {
		t.Fatalf("new declaration without a majority: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("refusal took %s", took)
	}
	// A re-declare that differs is a change too.
	ch3 := dialNode(t, survivor)
	if _, err := ch3.QueueDeclare("ro-q", true, false, false, false, nil); !errors.As(err, &ae) || ae.Code != amqp.InternalError {
		t.Fatalf("inequivalent re-declare without a majority: %v", err)
	}
}
