package node_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestLeaderLocatorsAndClusterName: RabbitMQ 3.10's placement arguments through a follower —
// x-queue-leader-locator client-local keeps the queue on the client's node, balanced (and the
// classic x-queue-master-locator min-masters) spread over the live nodes, an unknown value is a
// 406 — and every node sends the same cluster_name in connection.start.
func TestLeaderLocatorsAndClusterName(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	waitAllAlive(t, nodes)
	conn, err := amqp.Dial("amqp://guest:guest@" + nodes[1].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, n := range nodes {
		c, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Properties["cluster_name"]; got != "warren" {
			t.Fatalf("cluster_name from %s: %v", n.Broker.ID(), got)
		}
		_ = c.Close()
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("local", true, false, false, false, amqp.Table{"x-queue-leader-locator": "client-local"}); err != nil {
		t.Fatal(err)
	}
	if q, _ := nodes[2].FSM.Queue("/", "local"); q.Owner != "c2" {
		t.Fatalf("client-local queue declared through c2 owned by %q", q.Owner)
	}
	owners := map[string]int{}
	for i := 0; i < 6; i++ {
		name := fmt.Sprintf("mm-%d", i)
		if _, err := ch.QueueDeclare(name, true, false, false, false, amqp.Table{"x-queue-master-locator": "min-masters"}); err != nil {
			t.Fatal(err)
		}
		q, _ := nodes[0].FSM.Queue("/", name)
		owners[q.Owner]++
	}
	// c2 already owns "local": balanced placement fills c1 and c3 first.
	if owners["c1"]+owners["c2"]+owners["c3"] != 6 || owners["c1"] < 2 || owners["c3"] < 2 {
		t.Fatalf("min-masters owners %v", owners)
	}
	_, err = ch.QueueDeclare("bad", true, false, false, false, amqp.Table{"x-queue-leader-locator": "nearest"})
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed ||
		!strings.Contains(ae.Reason, "invalid arg 'x-queue-leader-locator' for queue 'bad' in vhost '/': invalid_queue_locator_arg") {
		t.Fatalf("unknown locator: %v", err)
	}
}
