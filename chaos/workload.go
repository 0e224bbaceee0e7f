package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmTimeout bounds the wait for one publisher confirm. Past it the message counts as
// unconfirmed and the publisher drops the connection: a confirm that never comes means the
// path to the broker is stuck (a paused node), and a new connection is the client's remedy.
const confirmTimeout = 8 * time.Second

// QueueName is the classic durable queue owned by node i.
func QueueName(i int) string { return fmt.Sprintf("chaos.q%d", i) }

// QuorumQueueName is the replicated queue (x-queue-type quorum) first led by node i.
func QuorumQueueName(i int) string { return fmt.Sprintf("chaos.qq%d", i) }

// Queue types as the summary names them.
const (
	TypeClassic = "classic"
	TypeQuorum  = "quorum"
)

// workQueue is one queue of the workload: declared through node Home, which owns (classic) or
// first leads (quorum) it.
type workQueue struct {
	Name string
	Home int // 1-based node index
	Type string
}

// workQueues lists the workload's queues: a classic and a replicated queue homed on each node.
func workQueues(c *Cluster) []workQueue {
	var out []workQueue
	for _, n := range c.Nodes {
		out = append(out, workQueue{Name: QueueName(n.Index), Home: n.Index, Type: TypeClassic})
	}
	for _, n := range c.Nodes {
		out = append(out, workQueue{Name: QuorumQueueName(n.Index), Home: n.Index, Type: TypeQuorum})
	}
	return out
}

// DeclareQueues declares the workload's queues, each through its home node, so node i owns
// QueueName(i) and leads QuorumQueueName(i), and reports the owners the cluster records.
func DeclareQueues(ctx context.Context, c *Cluster, log *slog.Logger) error {
	for _, q := range workQueues(c) {
		n := c.Nodes[q.Home-1]
		var err error
		for attempt := 0; attempt < 10; attempt++ {
			if err = declareDurable(n, q.Name, q.Type); err == nil {
				break
			}
			if !sleep(ctx, 500*time.Millisecond) {
				return ctx.Err()
			}
		}
		if err != nil {
			return fmt.Errorf("declare %s through %s: %w", q.Name, n.Name, err)
		}
	}
	owners, err := c.QueueOwners(ctx, c.Nodes[0])
	if err != nil {
		return fmt.Errorf("read queue owners: %w", err)
	}
	for _, q := range workQueues(c) {
		home := c.Nodes[q.Home-1].Name
		if owners[q.Name] != home {
			// Left over from an earlier run on the same cluster: the run still checks it, but
			// the owner layout is not the intended one.
			log.Warn("queue is not owned by the node that declared it", "queue", q.Name, "type", q.Type, "owner", owners[q.Name], "declared_through", home)
		} else {
			log.Info("durable queue ready", "queue", q.Name, "type", q.Type, "owner", owners[q.Name])
		}
	}
	return nil
}

func declareDurable(n *Node, queue, typ string) error {
	conn, err := dial(n, "chaos-setup")
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	var args amqp.Table
	if typ == TypeQuorum {
		args = amqp.Table{"x-queue-type": "quorum"}
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("queue.declare %s: %w", queue, err)
	}
	return nil
}

// publisher sends uniquely numbered persistent messages with confirms to one durable queue,
// one at a time, through its preferred nodes. A number is never published twice: whatever
// happens to message N, the next publish is N+1.
type publisher struct {
	name     string
	queue    string
	nodes    rotation
	rec      *Recorder
	log      *slog.Logger
	interval time.Duration

	seq                                 int
	confirmed, nacked, returned, others atomic.Int64
}

func (p *publisher) run(ctx context.Context) {
	var b backoff
	for ctx.Err() == nil {
		n := p.nodes.next()
		worked, err := p.session(ctx, n)
		if ctx.Err() != nil {
			return
		}
		if worked {
			b.reset()
		}
		p.log.Info("publisher reconnecting", "publisher", p.name, "queue", p.queue, "from", n.Name, "err", err)
		if !sleep(ctx, b.next()) {
			return
		}
	}
}

// session publishes through one connection until it fails; worked reports whether any
// message was confirmed on it.
func (p *publisher) session(ctx context.Context, n *Node) (worked bool, err error) {
	conn, err := dial(n, "chaos-"+p.name)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	stop := closeOnDone(ctx, conn)
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return false, fmt.Errorf("confirm.select: %w", err)
	}
	// amqp091-go hands a basic.return to this channel before it processes the ack that
	// follows it, so by the time a confirm is done its return (if any) is already here.
	returns := ch.NotifyReturn(make(chan amqp.Return, 64))
	for ctx.Err() == nil {
		p.seq++
		id := fmt.Sprintf("%s-%d", p.name, p.seq)
		s := Sent{ID: id, Queue: p.queue, Via: n.Name, At: time.Now()}
		dc, err := ch.PublishWithDeferredConfirm("", p.queue, true, false, amqp.Publishing{
			DeliveryMode: amqp.Persistent, MessageId: id, ContentType: "text/plain", Body: []byte(id),
		})
		if err != nil {
			p.record(s)
			return worked, fmt.Errorf("publish %s: %w", id, err)
		}
		timer := time.NewTimer(confirmTimeout)
		select {
		case <-dc.Done():
			timer.Stop()
		case <-timer.C:
			p.record(s)
			return worked, fmt.Errorf("no confirm for %s within %s", id, confirmTimeout)
		}
		s.Outcome = Nacked
		if dc.Acked() {
			s.Outcome = Confirmed
		} else if ch.IsClosed() {
			s.Outcome = Unconfirmed
		}
		for len(returns) > 0 {
			if r := <-returns; r.MessageId == id {
				s.Outcome = Returned
			}
		}
		p.record(s)
		switch s.Outcome {
		case Confirmed:
			worked = true
			if p.interval > 0 && !sleep(ctx, p.interval) {
				return worked, nil
			}
		case Unconfirmed:
			return worked, errors.New("channel closed while waiting for a confirm")
		default:
			// A nack means the owner is unreachable: keep publishing, but slowly.
			if !sleep(ctx, 100*time.Millisecond) {
				return worked, nil
			}
		}
	}
	return worked, nil
}

func (p *publisher) record(s Sent) {
	p.rec.Sent(s)
	switch s.Outcome {
	case Confirmed:
		p.confirmed.Add(1)
	case Nacked:
		p.nacked.Add(1)
	case Returned:
		p.returned.Add(1)
	default:
		p.others.Add(1)
	}
}

// consumer consumes one durable queue with manual acks through nodes other than the owner,
// re-subscribing on basic.cancel and reconnecting when its connection dies.
type consumer struct {
	name     string
	queue    string
	nodes    rotation
	rec      *Recorder
	log      *slog.Logger
	prefetch int

	received atomic.Int64
}

func (c *consumer) run(ctx context.Context) {
	var b backoff
	for ctx.Err() == nil {
		n := c.nodes.next()
		worked, err := c.session(ctx, n)
		if ctx.Err() != nil {
			return
		}
		if worked {
			b.reset()
		}
		c.log.Info("consumer re-subscribing", "consumer", c.name, "queue", c.queue, "from", n.Name, "err", err)
		if !sleep(ctx, b.next()) {
			return
		}
	}
}

func (c *consumer) session(ctx context.Context, n *Node) (worked bool, err error) {
	conn, err := dial(n, "chaos-"+c.name)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	stop := closeOnDone(ctx, conn)
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return false, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(c.prefetch, 0, false); err != nil {
		return false, fmt.Errorf("basic.qos: %w", err)
	}
	cancelled := ch.NotifyCancel(make(chan string, 1))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	deliveries, err := ch.Consume(c.queue, c.name, false, false, false, false, nil)
	if err != nil {
		return false, fmt.Errorf("basic.consume %s: %w", c.queue, err)
	}
	for d := range deliveries {
		c.rec.Received(receipt(d, c.queue, n.Name))
		c.received.Add(1)
		worked = true
		if err := d.Ack(false); err != nil {
			return worked, fmt.Errorf("basic.ack: %w", err)
		}
	}
	// amqp091-go closes the delivery stream on basic.cancel and on channel/connection close.
	select {
	case tag := <-cancelled:
		return worked, fmt.Errorf("basic.cancel from the broker (consumer %s)", tag)
	case e := <-closed:
		if e != nil {
			return worked, fmt.Errorf("channel closed: %w", e)
		}
		return worked, errors.New("channel closed")
	case <-time.After(time.Second):
		return worked, errors.New("delivery stream ended")
	}
}

// receipt turns a delivery into a history record. A body that differs from the message id
// is corruption: the record gets an id no publisher used, so the checker flags it.
func receipt(d amqp.Delivery, queue, via string) Received {
	id := d.MessageId
	if string(d.Body) != id {
		id = fmt.Sprintf("corrupt(id=%q body=%.40q)", d.MessageId, d.Body)
	}
	return Received{ID: id, Queue: queue, Via: via, At: time.Now(), Redelivered: d.Redelivered}
}
