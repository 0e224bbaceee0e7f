package node_test

import (
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/replica"
)

// restartableCluster is an in-process cluster whose nodes can be stopped and started again on
// their data dirs and addresses.
type restartableCluster struct {
	t     *testing.T
	mu    sync.Mutex
	cfgs  []node.Config
	nodes []*node.Node // nil while stopped
}

func newRestartableCluster(t *testing.T, size int) *restartableCluster {
	c := &restartableCluster{t: t, cfgs: make([]node.Config, size), nodes: make([]*node.Node, size)}
	gossip := make([]string, size)
	for i := range gossip {
		gossip[i] = freeAddr(t)
	}
	for i := range c.cfgs {
		c.cfgs[i] = node.Config{
			ID: fmt.Sprintf("r%d", i+1), DataDir: t.TempDir(), AMQPAddr: "127.0.0.1:0",
			RaftAddr: freeAddr(t), GossipAddr: gossip[i], ForwardAddr: "127.0.0.1:0", DataAddr: "127.0.0.1:0",
			ClusterSecret: "random", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard,
		}
		if i > 0 {
			c.cfgs[i].Join = gossip[:i]
		}
		c.start(i)
		c.cfgs[i].Join = gossip // a restarted node may find any of them
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

func (c *restartableCluster) start(i int) {
	n, err := node.Start(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("start %s: %v", c.cfgs[i].ID, err)
	}
	c.mu.Lock()
	c.nodes[i] = n
	c.mu.Unlock()
}

func (c *restartableCluster) stop(i int) {
	c.mu.Lock()
	n := c.nodes[i]
	c.nodes[i] = nil
	c.mu.Unlock()
	if n != nil {
		_ = n.Close()
	}
}

// url of a running node other than skip (-1: any), picked with r.
func (c *restartableCluster) url(r *rand.Rand) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, i := range r.Perm(len(c.nodes)) {
		if n := c.nodes[i]; n != nil {
			return "amqp://guest:guest@" + n.AMQPAddr() + "/"
		}
	}
	return ""
}

func (c *restartableCluster) running() *node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n != nil {
			return n
		}
	}
	return nil
}

// TestQuorumQueueRandomisedCrashes: a seeded nemesis stops and restarts random nodes of a
// 3-node cluster (the queue's leader among them, one node at a time, so a majority of the
// replicas always survives) while a publisher confirms messages through random live nodes;
// afterwards the queue is back to three in-sync replicas and every confirmed message is
// consumed. Replay a failure with WARREN_TEST_SEED.
func TestQuorumQueueRandomisedCrashes(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("WARREN_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (replay: WARREN_TEST_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	c := newRestartableCluster(t, 3)
	ch := dialNode(t, c.nodes[0])
	if _, err := ch.QueueDeclare("rq", true, false, false, false, quorumArgs); err != nil {
		t.Fatal(err)
	}
	waitQueue(t, c.nodes[2], "rq", "three in-sync replicas", func(q fsm.Queue) bool { return len(q.InSync) == 3 })

	var mu sync.Mutex
	confirmed := map[string]bool{}
	stop := make(chan struct{})
	done := make(chan struct{})
	pubRng := rand.New(rand.NewPCG(seed, 2))
	go func() {
		defer close(done)
		seq := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			url := c.url(pubRng)
			mu.Unlock()
			seq = publishRound(url, seq, func(body string) {
				mu.Lock()
				confirmed[body] = true
				mu.Unlock()
			})
			time.Sleep(10 * time.Millisecond)
		}
	}()

	faults := 5
	for f := 0; f < faults; f++ {
		time.Sleep(time.Duration(300+rng.IntN(900)) * time.Millisecond)
		victim := rng.IntN(3)
		if f%2 == 0 {
			// Every other fault takes the queue's leader down.
			if q, ok := c.running().FSM.Queue("/", "rq"); ok {
				for i, cfg := range c.cfgs {
					if cfg.ID == q.Owner {
						victim = i
					}
				}
			}
		}
		t.Logf("fault %d: stop %s", f+1, c.cfgs[victim].ID)
		c.stop(victim)
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		c.start(victim)
		// The next fault only once the queue is whole again: one failure at a time.
		waitQueue(t, c.running(), "rq", "three in-sync replicas after a restart", func(q fsm.Queue) bool { return len(q.InSync) == 3 })
	}
	close(stop)
	<-done
	mu.Lock()
	want := make([]string, 0, len(confirmed))
	for b := range confirmed {
		want = append(want, b)
	}
	mu.Unlock()
	if len(want) < 200 {
		t.Fatalf("only %d messages confirmed in %d faults: too few to mean anything", len(want), faults)
	}
	for _, n := range c.nodes {
		q, _ := n.FSM.Queue("/", "rq")
		held, _ := n.Broker.ReplicaMessages("/", "rq")
		ready := -1
		if lq := n.Broker.LocalQueue("/", "rq"); lq != nil {
			ready, _, _ = lq.Counts()
		}
		t.Logf("%s: leader %s epoch %d in sync %v; replica holds %d; queue ready %d; confirmed %d", n.Broker.ID(), q.Owner, q.Epoch, q.InSync, held, ready, len(want))
		distinct, total := storedBodies(t, n)
		t.Logf("%s: store holds %d records, %d distinct bodies", n.Broker.ID(), total, distinct)
	}
	via := c.nodes[rng.IntN(len(c.nodes))]
	t.Logf("draining through %s", via.Broker.ID())
	ch = dialNode(t, via)
	got, _ := drainUntil(t, ch, "rq", want)
	t.Logf("%d confirmed messages all consumed after %d crashes (%d deliveries)", len(want), faults, len(got))
}

// publishRound opens a connection to url, publishes up to 50 numbered persistent messages with
// confirms and reports the acked ones; any error ends the round (the caller tries again).
func publishRound(url string, seq int, acked func(string)) int {
	if url == "" {
		return seq
	}
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return seq
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil || ch.Confirm(false) != nil {
		return seq
	}
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 64))
	bodies := map[uint64]string{}
	for i := uint64(1); i <= 50; i++ {
		body := "p" + strconv.Itoa(seq)
		seq++
		if ch.Publish("", "rq", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)}) != nil {
			break
		}
		bodies[i] = body
	}
	for range bodies {
		select {
		case cf, ok := <-confirms:
			if !ok {
				return seq
			}
			if cf.Ack {
				acked(bodies[cf.DeliveryTag])
			}
		case <-time.After(10 * time.Second):
			return seq
		}
	}
	return seq
}

// storedBodies reads every record a node's message store holds for rq and counts bodies.
func storedBodies(t *testing.T, n *node.Node) (distinct, total int) {
	seen := map[string]bool{}
	key := broker.StoreKey("/", "rq")
	for after := uint64(0); ; {
		got, through, err := n.Messages.ReadQueueCopy(key, after, 1<<62, 4096, 16<<20)
		if err != nil {
			t.Logf("read store: %v", err)
			return
		}
		for _, m := range got {
			_, data, _ := replica.SplitStored(m.Data)
			msg, err := broker.DecodeStored(data)
			if err != nil {
				continue
			}
			total++
			seen[string(msg.Body)] = true
		}
		if len(got) == 0 || through <= after {
			break
		}
		after = through
	}
	return len(seen), total
}
