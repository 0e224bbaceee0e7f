package chaos

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Client connections use a short heartbeat so a paused (SIGSTOPped) node is noticed within
// a few seconds, as a real client with a tight heartbeat would; amqp091-go drops the
// connection after three missed intervals.
const (
	clientHeartbeat = 2 * time.Second
	dialTimeout     = 3 * time.Second
	backoffMin      = 200 * time.Millisecond
	backoffMax      = 2 * time.Second
)

func dial(n *Node, name string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName(name)
	conn, err := amqp.DialConfig(n.AMQPURL, amqp.Config{
		Heartbeat:  clientHeartbeat,
		Locale:     "en_US",
		Properties: props,
		// DefaultDial also bounds the AMQP handshake: a paused node accepts TCP but never answers.
		Dial: amqp.DefaultDial(dialTimeout),
	})
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", name, n.Name, err)
	}
	return conn, nil
}

// closeOnDone closes conn when ctx ends, which unblocks every call waiting on it; stop ends
// the watcher (and waits for it) when the session ends first.
func closeOnDone(ctx context.Context, conn *amqp.Connection) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ctx.Done():
			_ = conn.Close()
		case <-quit:
		}
	}()
	return func() { close(quit); <-done }
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff doubles from backoffMin to backoffMax between reconnects; a session that did some
// work resets it.
type backoff struct{ d time.Duration }

func (b *backoff) next() time.Duration {
	if b.d == 0 {
		b.d = backoffMin
	} else {
		b.d = min(2*b.d, backoffMax)
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }

// rotation hands out nodes in a client's order of preference, wrapping around, so a client
// whose node died moves on to the next one, as real clients with several hosts do.
type rotation struct {
	nodes []*Node
	i     int
}

func (r *rotation) next() *Node {
	n := r.nodes[r.i%len(r.nodes)]
	r.i++
	return n
}

// preferOthers orders nodes starting after skip, keeping skip (the queue's owner) last: a
// client of that queue goes through the other nodes and falls back to the owner only when
// both are down.
func preferOthers(nodes []*Node, owner, start int) []*Node {
	var out []*Node
	for k := 0; k < len(nodes); k++ {
		n := nodes[(start+k)%len(nodes)]
		if n.Index != owner {
			out = append(out, n)
		}
	}
	for _, n := range nodes {
		if n.Index == owner {
			out = append(out, n)
		}
	}
	return out
}

// startingAt orders all nodes starting with nodes[start mod len].
func startingAt(nodes []*Node, start int) []*Node {
	out := make([]*Node, 0, len(nodes))
	for k := range nodes {
		out = append(out, nodes[(start+k)%len(nodes)])
	}
	return out
}
