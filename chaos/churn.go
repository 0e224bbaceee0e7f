package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// churner declares, binds, unbinds and deletes temporary exchanges and queues through random
// nodes, so the Raft log keeps moving while nodes die; the digests compared at the end show
// whether every node applied the same history. Refusals (541 without quorum, 404 for a queue
// whose owner is gone) are expected under faults: the channel or connection is reopened.
type churner struct {
	nodes    []*Node
	rng      *rand.Rand
	log      *slog.Logger
	interval time.Duration

	ok, failed atomic.Int64
	round      int
}

func (c *churner) run(ctx context.Context) {
	var b backoff
	for ctx.Err() == nil {
		n := c.nodes[c.rng.IntN(len(c.nodes))]
		worked, err := c.session(ctx, n)
		if ctx.Err() != nil {
			return
		}
		if worked {
			b.reset()
		}
		c.log.Debug("churn reconnecting", "from", n.Name, "err", err)
		if !sleep(ctx, b.next()) {
			return
		}
	}
}

// session runs a few churn rounds on one connection, then moves to another node (so the
// churn goes through every node), or returns early on a connection failure.
func (c *churner) session(ctx context.Context, n *Node) (worked bool, err error) {
	conn, err := dial(n, "chaos-churn")
	if err != nil {
		return false, err
	}
	defer conn.Close()
	stop := closeOnDone(ctx, conn)
	defer stop()
	for rounds := 5 + c.rng.IntN(10); rounds > 0 && ctx.Err() == nil; rounds-- {
		ch, err := conn.Channel()
		if err != nil {
			return worked, fmt.Errorf("open channel: %w", err)
		}
		err = c.round1(ch)
		_ = ch.Close()
		if err == nil {
			c.ok.Add(1)
			worked = true
		} else {
			c.failed.Add(1)
			c.log.Debug("churn round failed", "via", n.Name, "err", err)
			var ae *amqp.Error
			if conn.IsClosed() || (errors.As(err, &ae) && !ae.Server) {
				return worked, err
			}
		}
		if !sleep(ctx, c.interval) {
			return worked, nil
		}
	}
	return worked, nil
}

// round1 creates a small topology (an exchange, an exchange bound to it, a queue bound to
// both) and tears it down again, in a random mix of durable and transient objects. Some rounds
// leave their objects behind, so the final topology is not empty.
func (c *churner) round1(ch *amqp.Channel) error {
	c.round++
	base := fmt.Sprintf("chaos.churn.%d", c.round)
	kinds := []string{amqp.ExchangeDirect, amqp.ExchangeTopic, amqp.ExchangeFanout}
	x, x2, q := base+".x", base+".x2", base+".q"
	durable := c.rng.IntN(2) == 0
	steps := []struct {
		what string
		do   func() error
	}{
		{"declare " + x, func() error {
			return ch.ExchangeDeclare(x, kinds[c.rng.IntN(len(kinds))], durable, false, false, false, nil)
		}},
		{"declare " + x2, func() error { return ch.ExchangeDeclare(x2, amqp.ExchangeTopic, false, false, false, false, nil) }},
		{"bind " + x2 + " to " + x, func() error { return ch.ExchangeBind(x2, "k.#", x, false, nil) }},
		{"declare " + q, func() error {
			_, err := ch.QueueDeclare(q, durable, false, false, false, nil)
			return err
		}},
		{"bind " + q + " to " + x, func() error { return ch.QueueBind(q, "k", x, false, nil) }},
		{"bind " + q + " to " + x2, func() error { return ch.QueueBind(q, "k.*", x2, false, nil) }},
	}
	if c.rng.IntN(5) != 0 {
		steps = append(steps, []struct {
			what string
			do   func() error
		}{
			{"unbind " + q + " from " + x, func() error { return ch.QueueUnbind(q, "k", x, nil) }},
			{"unbind " + x2 + " from " + x, func() error { return ch.ExchangeUnbind(x2, "k.#", x, false, nil) }},
			{"delete " + q, func() error {
				_, err := ch.QueueDelete(q, false, false, false)
				return err
			}},
			{"delete " + x2, func() error { return ch.ExchangeDelete(x2, false, false) }},
			{"delete " + x, func() error { return ch.ExchangeDelete(x, false, false) }},
		}...)
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			return fmt.Errorf("%s: %w", s.what, err)
		}
	}
	return nil
}
