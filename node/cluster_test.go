package node_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/node"
)

// startCluster starts n nodes in this process on loopback with real Raft TCP transports,
// memberlist gossip and write forwarding: the first bootstraps, the others join through it.
func startCluster(t *testing.T, size int, secret string) []*node.Node {
	t.Helper()
	var nodes []*node.Node
	var seed string
	for i := 1; i <= size; i++ {
		cfg := node.Config{
			ID: fmt.Sprintf("c%d", i), DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0",
			RaftAddr: freeAddr(t), GossipAddr: freeAddr(t), ForwardAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
			HTTPAddr:      "127.0.0.1:0",
			ClusterSecret: secret,
			Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
		}
		if seed != "" {
			cfg.Join = []string{seed}
		} else {
			seed = cfg.GossipAddr
		}
		n, err := node.Start(cfg)
		if err != nil {
			t.Fatalf("start %s: %v", cfg.ID, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		nodes = append(nodes, n)
	}
	return nodes
}

func dialNode(t *testing.T, n *node.Node) *amqp.Channel {
	t.Helper()
	c, err := amqp.Dial("amqp://guest:guest@" + n.AMQPAddr() + "/")
	if err != nil {
		t.Fatalf("dial %s: %v", n.AMQPAddr(), err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestClusterSharesTopology: three nodes form one Raft cluster through gossip; a declare on a
// follower is visible on every node (read-your-writes on the declaring node), every FSM ends
// with the same digest, and a queue is owned by the node its declaring client is connected to.
func TestClusterSharesTopology(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch2 := dialNode(t, nodes[1])
	if err := ch2.ExchangeDeclare("orders", "topic", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch2.QueueDeclare("on-c2", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch2.QueueBind("on-c2", "eu.#", "orders", false, nil); err != nil {
		t.Fatal(err)
	}
	// The declaring node answers only after its own FSM applied the binding.
	if q, ok := nodes[1].FSM.Queue("/", "on-c2"); !ok || q.Owner != "c2" {
		t.Fatalf("queue on c2 after declare: %+v %v", q, ok)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		d1, d2, d3 := nodes[0].FSM.Digest(), nodes[1].FSM.Digest(), nodes[2].FSM.Digest()
		if d1 == d2 && d2 == d3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("digests differ: %s %s %s", d1, d2, d3)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ch3 := dialNode(t, nodes[2])
	if err := ch3.ExchangeDeclarePassive("orders", "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("exchange declared on c2 not visible on c3: %v", err)
	}
	// A publish on c2 into its own queue is confirmed and consumable there.
	if err := ch2.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch2.NotifyPublish(make(chan amqp.Confirmation, 1))
	if err := ch2.Publish("orders", "eu.paris", false, false, amqp.Publishing{Body: []byte("local")}); err != nil {
		t.Fatal(err)
	}
	if c := <-confirms; !c.Ack {
		t.Fatal("publish to the node's own queue was nacked")
	}
	if m, ok, err := ch2.Get("on-c2", true); err != nil || !ok || string(m.Body) != "local" {
		t.Fatalf("get on owner: %v %v", ok, err)
	}
}

// TestPublishForwardedToOwner: a persistent publish on c1 routed to a queue owned by c2 travels
// over the data link and is confirmed only once c2 has it (on disk); with c2 gone, the same
// publish is refused with basic.nack, never acked.
func TestPublishForwardedToOwner(t *testing.T) {
	nodes := startCluster(t, 2, "s3cret")
	ch2 := dialNode(t, nodes[1])
	if _, err := ch2.QueueDeclare("remote", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch2.ExchangeDeclare("fan", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch2.QueueBind("remote", "", "fan", false, nil); err != nil {
		t.Fatal(err)
	}
	ch1 := dialNode(t, nodes[0])
	if _, err := ch1.QueueDeclare("local", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch1.QueueBind("local", "", "fan", false, nil); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := nodes[0].FSM.Queue("/", "remote"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("queue never replicated to c1")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := ch1.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := ch1.NotifyPublish(make(chan amqp.Confirmation, 4))
	// confirm reports basic.ack (true) or basic.nack (false). A channel that closed gave no
	// answer at all: that is neither, and must not pass for "never acked".
	confirm := func() bool {
		t.Helper()
		select {
		case c, ok := <-confirms:
			if !ok {
				t.Fatal("the publisher's channel closed before the broker answered")
			}
			return c.Ack
		case <-time.After(15 * time.Second):
			t.Fatal("no confirm")
		}
		return false
	}
	if err := ch1.Publish("", "remote", false, false, amqp.Publishing{Body: []byte("direct"), DeliveryMode: amqp.Persistent}); err != nil {
		t.Fatal(err)
	}
	if !confirm() {
		t.Fatal("a publish forwarded to the owner was nacked")
	}
	// One publish into a fanout with a local and a remote queue: one confirm for both.
	if err := ch1.Publish("fan", "", false, false, amqp.Publishing{Body: []byte("both"), DeliveryMode: amqp.Persistent}); err != nil {
		t.Fatal(err)
	}
	if !confirm() {
		t.Fatal("fanout across owners nacked")
	}
	for _, want := range []string{"direct", "both"} {
		m, ok, err := ch2.Get("remote", true)
		if err != nil || !ok || string(m.Body) != want {
			t.Fatalf("on the owner: got %q ok=%v err=%v, want %q", m.Body, ok, err, want)
		}
	}
	if m, ok, _ := ch1.Get("local", true); !ok || string(m.Body) != "both" {
		t.Fatalf("local copy of the fanout: %q %v", m.Body, ok)
	}
	_ = nodes[1].Close()
	if err := ch1.Publish("", "remote", false, false, amqp.Publishing{Body: []byte("owner down"), DeliveryMode: amqp.Persistent}); err != nil {
		t.Fatal(err)
	}
	if confirm() {
		t.Fatal("a publish to a queue whose owner is down was confirmed with basic.ack")
	}
	// The nack left the channel usable: a publish to the local queue is still acked.
	if err := ch1.Publish("", "local", false, false, amqp.Publishing{Body: []byte("after"), DeliveryMode: amqp.Persistent}); err != nil {
		t.Fatal(err)
	}
	if !confirm() {
		t.Fatal("a publish to the local queue after the nack was nacked")
	}
}

func TestNodeWithoutSecretCannotJoin(t *testing.T) {
	nodes := startCluster(t, 1, "right")
	_, err := node.Start(node.Config{
		ID: "intruder", DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0", RaftAddr: freeAddr(t),
		GossipAddr: freeAddr(t), ForwardAddr: "127.0.0.1:0", ClusterSecret: "wrong",
		Join:   []string{nodes[0].Members.GossipAddr()},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
	})
	if err == nil {
		t.Fatal("a node with the wrong cluster secret joined")
	}
}

// TestConsumeFromAnotherNode: a consumer on c1 of a queue owned by c2 is served by c2 through
// c1: publish on c3, deliveries on c1 with acks, requeue (redelivered), prefetch respected, and
// round-robin with a consumer connected to the owner.
func TestConsumeFromAnotherNode(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	owner := dialNode(t, nodes[1])
	if _, err := owner.QueueDeclare("work", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, ok := n.FSM.Queue("/", "work"); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("queue not replicated")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	remote := dialNode(t, nodes[0])
	if err := remote.Qos(2, 0, false); err != nil {
		t.Fatal(err)
	}
	deliveries, err := remote.Consume("work", "far", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume on c1 from c2's queue: %v", err)
	}
	pub := dialNode(t, nodes[2])
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 8))
	for i := 0; i < 4; i++ {
		if err := pub.Publish("", "work", false, false, amqp.Publishing{Body: []byte(fmt.Sprint(i)), DeliveryMode: amqp.Persistent}); err != nil {
			t.Fatal(err)
		}
		if c := <-confirms; !c.Ack {
			t.Fatalf("publish %d nacked", i)
		}
	}
	recv := func() amqp.Delivery {
		t.Helper()
		select {
		case d := <-deliveries:
			return d
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery from the remote queue")
		}
		return amqp.Delivery{}
	}
	a, b := recv(), recv()
	if string(a.Body) != "0" || string(b.Body) != "1" {
		t.Fatalf("first deliveries %q %q", a.Body, b.Body)
	}
	select {
	case d := <-deliveries:
		t.Fatalf("delivery %q beyond prefetch 2", d.Body)
	case <-time.After(300 * time.Millisecond):
	}
	if err := a.Ack(false); err != nil {
		t.Fatal(err)
	}
	if err := b.Nack(false, true); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for len(seen) < 3 {
		d := recv()
		if string(d.Body) == "1" && !d.Redelivered {
			t.Fatal("requeued message not marked redelivered")
		}
		seen[string(d.Body)] = true
		if err := d.Ack(false); err != nil {
			t.Fatal(err)
		}
	}
	// Everything acked through c1 is gone from the owner.
	deadline := time.Now().Add(10 * time.Second)
	for {
		q, err := owner.QueueDeclarePassive("work", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if q.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages left on the owner", q.Messages)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Round-robin between a consumer on the owner and the one on c1.
	local, err := owner.Consume("work", "near", true, false, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := pub.Publish("", "work", false, false, amqp.Publishing{Body: []byte("rr")}); err != nil {
			t.Fatal(err)
		}
		<-confirms
	}
	gotLocal, gotRemote := 0, 0
	timeout := time.After(10 * time.Second)
	for gotLocal+gotRemote < 10 {
		select {
		case <-local:
			gotLocal++
		case d := <-deliveries:
			gotRemote++
			_ = d.Ack(false)
		case <-timeout:
			t.Fatalf("only %d local + %d remote deliveries", gotLocal, gotRemote)
		}
	}
	if gotLocal == 0 || gotRemote == 0 {
		t.Fatalf("no round-robin: %d local, %d remote", gotLocal, gotRemote)
	}
}

// TestOwnerDeathRehomesTransientQueues: when the owner of a transient queue dies, a consumer on
// another node gets basic.cancel, the queue is re-homed (empty) to a live node, and a client that
// re-subscribes is served again; a durable queue stays with the dead node.
func TestOwnerDeathRehomesTransientQueues(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	ch3 := dialNode(t, nodes[2])
	if _, err := ch3.QueueDeclare("transient", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch3.QueueDeclare("kept", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ch1 := dialNode(t, nodes[0])
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := nodes[0].FSM.Queue("/", "kept"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("queues not replicated")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancels := ch1.NotifyCancel(make(chan string, 1))
	if _, err := ch1.Consume("transient", "watcher", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = nodes[2].Close() // no graceful leave: gossip declares it dead
	select {
	case tag := <-cancels:
		if tag != "watcher" {
			t.Fatalf("cancelled %q", tag)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no basic.cancel after the owner died")
	}
	var owner string
	for {
		q, _ := nodes[0].FSM.Queue("/", "transient")
		if q.Owner != "c3" {
			owner = q.Owner
			break
		}
		if time.Since(killed) > 15*time.Second {
			t.Fatal("transient queue never re-homed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if owner != "c1" && owner != "c2" {
		t.Fatalf("re-homed to %q", owner)
	}
	if q, _ := nodes[0].FSM.Queue("/", "kept"); q.Owner != "c3" {
		t.Fatalf("durable queue moved to %q", q.Owner)
	}
	deliveries, err := ch1.Consume("transient", "again", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("re-subscribe: %v", err)
	}
	if err := ch1.Publish("", "transient", false, false, amqp.Publishing{Body: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	select {
	case d := <-deliveries:
		if string(d.Body) != "after" {
			t.Fatalf("got %q", d.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery after re-homing")
	}
	t.Logf("owner kill → delivery through a live node: %v", time.Since(killed))
}

// TestMinorityRefusesTopologyChanges: the minority side of a partition. With two of three
// nodes gone (stopped: from the survivor's side that is what a partition looks like, no Raft
// heartbeats, no gossip, no data links; containers partition for real in the docker chaos
// suite), a declare on the survivor fails within the apply timeout with a channel error 541
// naming the cause and the connection stays usable; meanwhile its own durable queue keeps
// taking persistent publishes (confirmed with basic.ack, then consumed), and a publish to a
// queue owned across the cut is nacked, never acked.
func TestMinorityRefusesTopologyChanges(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	conn, err := amqp.Dial("amqp://guest:guest@" + nodes[0].AMQPAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	setup, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.QueueDeclare("mine", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := dialNode(t, nodes[1]).QueueDeclare("theirs", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		if q, ok := nodes[0].FSM.Queue("/", "theirs"); ok && q.Owner == "c2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c1 never learnt of the queue c2 owns")
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = nodes[1].Close()
	_ = nodes[2].Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = ch.QueueDeclare("no-quorum", false, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != 541 || !strings.Contains(ae.Reason, "no raft leader") {
		t.Fatalf("declare without quorum: %v", err)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("refusal took %v", took)
	}
	pub, err := conn.Channel()
	if err != nil {
		t.Fatalf("the connection did not survive the channel error: %v", err)
	}
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	publish := func(queue, body string) bool {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		dc, err := pub.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false,
			amqp.Publishing{Body: []byte(body), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatalf("publish %s to %s: %v", body, queue, err)
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			t.Fatalf("no confirm for %s to %s: %v", body, queue, err)
		}
		return ok
	}
	for i := range 20 {
		if !publish("mine", fmt.Sprint("local-", i)) {
			t.Fatalf("publish local-%d to the minority node's own queue was nacked", i)
		}
	}
	if publish("theirs", "across") {
		t.Fatal("a publish to a queue owned across the partition was acked")
	}
	for i := range 20 {
		d, ok, err := pub.Get("mine", true)
		if err != nil || !ok || string(d.Body) != fmt.Sprint("local-", i) {
			t.Fatalf("get %d from the minority's own queue: %q ok=%v err=%v", i, d.Body, ok, err)
		}
	}
}

// TestBalancedPlacement: queues declared with x-queue-leader-locator=balanced through one node
// spread over all three; without it they stay on the declaring node.
func TestBalancedPlacement(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	deadline := time.Now().Add(10 * time.Second)
	for len(nodes[0].Members.Members()) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("members never converged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	ch := dialNode(t, nodes[0])
	for i := 0; i < 6; i++ {
		if _, err := ch.QueueDeclare(fmt.Sprintf("bal-%d", i), true, false, false, false, amqp.Table{"x-queue-leader-locator": "balanced"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ch.QueueDeclare("plain", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	owners := map[string]int{}
	for i := 0; i < 6; i++ {
		q, _ := nodes[0].FSM.Queue("/", fmt.Sprintf("bal-%d", i))
		owners[q.Owner]++
	}
	if owners["c1"] != 2 || owners["c2"] != 2 || owners["c3"] != 2 {
		t.Fatalf("balanced owners %v, want 2 each", owners)
	}
	if q, _ := nodes[0].FSM.Queue("/", "plain"); q.Owner != "c1" {
		t.Fatalf("a plain queue went to %q, not the declaring node", q.Owner)
	}
}

// TestForgetDeadNode: `node forget` through the HTTP API: refused for a live node and by a
// follower; on the leader, the dead node leaves Raft and its durable queue is re-homed.
func TestForgetDeadNode(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	var leader *node.Node
	var others []*node.Node
	for _, n := range nodes {
		if n.Store.IsLeader() {
			leader = n
		} else {
			others = append(others, n)
		}
	}
	if leader == nil || len(others) != 2 {
		t.Fatal("want one leader and two followers")
	}
	follower, victim := others[0], others[1]
	victimID := victim.Members.LocalID()
	if _, err := dialNode(t, victim).QueueDeclare("stranded", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	post := func(n *node.Node, id string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://"+n.HTTP.Addr()+"/api/cluster/forget/"+id, nil)
		req.SetBasicAuth("guest", "guest")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(leader, victimID); code != http.StatusConflict {
		t.Fatalf("forgetting a live node: HTTP %d", code)
	}
	_ = victim.Close()
	deadline := time.Now().Add(15 * time.Second)
	for post(leader, victimID) != http.StatusNoContent {
		if code := post(follower, victimID); code != http.StatusConflict {
			t.Fatalf("a follower answered %d, want 409 (not the leader)", code)
		}
		if time.Now().After(deadline) {
			t.Fatal("the dead node was never forgotten")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if q, _ := leader.FSM.Queue("/", "stranded"); q.Owner == victimID {
		t.Fatal("the forgotten node still owns its durable queue")
	}
	servers, err := leader.Store.Configuration()
	if err != nil || len(servers) != 2 {
		t.Fatalf("raft configuration after forget: %v %v", servers, err)
	}
}

// TestLeaderDeathRehomesItsTransientQueues: when the node that dies is the Raft leader, the
// failure event reaches the others before any of them leads; the new leader still re-homes the
// dead node's transient queues (its periodic look at dead members).
func TestLeaderDeathRehomesItsTransientQueues(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	waitAllAlive(t, nodes)
	var leader *node.Node
	var rest []*node.Node
	for _, n := range nodes {
		if n.Store.IsLeader() {
			leader = n
		} else {
			rest = append(rest, n)
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	ch := dialNode(t, leader)
	if _, err := ch.QueueDeclare("on-leader", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	waitDigests(t, nodes)
	dead := leader.Broker.ID()
	_ = leader.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		q, ok := rest[0].FSM.Queue("/", "on-leader")
		if ok && q.Owner != dead {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead leader's transient queue was never re-homed: %+v %v", q, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
