package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// drainQuiet is how long a draining consumer must see nothing before the queue is checked
// empty with basic.get on its owner.
const drainQuiet = 3 * time.Second

// Drain empties every workload queue after the cluster is whole again: a consumer through a
// node other than the owner takes messages until none came for drainQuiet, then basic.get on
// the owner (basic.get does not cross nodes) confirms the queue is empty. The owner is read
// from the cluster each round, not assumed: a wipe re-homes a classic queue and a failover
// moves a replicated queue's leader. Every message taken is recorded. It fails if a queue
// could not be confirmed empty before timeout.
func Drain(ctx context.Context, c *Cluster, queues []workQueue, rec *Recorder, log *slog.Logger, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(queues))
	for k, q := range queues {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[k] = drainQueue(ctx, c, q, rec, log)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func drainQueue(ctx context.Context, c *Cluster, q workQueue, rec *Recorder, log *slog.Logger) error {
	queue := q.Name
	total := 0
	var b backoff
	var n *Node
	for round := 0; ; round++ {
		owner, err := c.OwnerOf(ctx, queue)
		if err == nil {
			others := preferOthers(c.Nodes, owner.Index, owner.Index+round)
			n = others[0]
			var got int
			got, err = drainConsume(ctx, n, queue, rec)
			total += got
			if err == nil {
				var empty bool
				got, empty, err = drainGet(ctx, owner, queue, rec)
				total += got
				if err == nil && empty {
					// Requeues of consumers on other nodes travel to the owner asynchronously:
					// look once more after they have had time to land.
					sleep(ctx, time.Second)
					got, empty, err = drainGet(ctx, owner, queue, rec)
					total += got
				}
				if err == nil && empty && got == 0 {
					log.Info("queue drained", "queue", queue, "type", q.Type, "messages", total, "confirmed_empty_on", owner.Name)
					return nil
				}
			}
		}
		if ctx.Err() != nil {
			return fmt.Errorf("drain %s: not confirmed empty (%d messages taken): %w", queue, total, ctx.Err())
		}
		if err != nil {
			log.Info("drain retrying", "queue", queue, "err", err)
			if !sleep(ctx, b.next()) {
				return fmt.Errorf("drain %s: %w (last error: %v)", queue, ctx.Err(), err)
			}
		}
	}
}

// drainConsume consumes queue through n until nothing arrives for drainQuiet.
func drainConsume(ctx context.Context, n *Node, queue string, rec *Recorder) (int, error) {
	conn, err := dial(n, "chaos-drain")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stop := closeOnDone(ctx, conn)
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Qos(200, 0, false); err != nil {
		return 0, fmt.Errorf("basic.qos: %w", err)
	}
	deliveries, err := ch.Consume(queue, "chaos-drain", false, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("basic.consume %s via %s: %w", queue, n.Name, err)
	}
	got := 0
	quiet := time.NewTimer(drainQuiet)
	defer quiet.Stop()
	for {
		select {
		case d, ok := <-deliveries:
			if !ok {
				return got, fmt.Errorf("consumer of %s via %s ended (cancelled or connection lost)", queue, n.Name)
			}
			rec.Received(receipt(d, queue, n.Name))
			got++
			if err := d.Ack(false); err != nil {
				return got, fmt.Errorf("basic.ack: %w", err)
			}
			quiet.Reset(drainQuiet)
		case <-quiet.C:
			if err := ch.Cancel("chaos-drain", false); err != nil {
				return got, fmt.Errorf("basic.cancel: %w", err)
			}
			// Deliveries sent before the cancel took effect still arrive; they are ours.
			for d := range deliveries {
				rec.Received(receipt(d, queue, n.Name))
				got++
				if err := d.Ack(false); err != nil {
					return got, fmt.Errorf("basic.ack: %w", err)
				}
			}
			return got, nil
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

// drainGet takes what is left with basic.get through the owner until get-empty.
func drainGet(ctx context.Context, owner *Node, queue string, rec *Recorder) (int, bool, error) {
	conn, err := dial(owner, "chaos-drain-get")
	if err != nil {
		return 0, false, err
	}
	defer conn.Close()
	stop := closeOnDone(ctx, conn)
	defer stop()
	ch, err := conn.Channel()
	if err != nil {
		return 0, false, fmt.Errorf("open channel: %w", err)
	}
	got := 0
	for {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			return got, false, fmt.Errorf("basic.get %s on %s: %w", queue, owner.Name, err)
		}
		if !ok {
			return got, true, nil
		}
		rec.Received(receipt(d, queue, owner.Name))
		got++
		if err := d.Ack(false); err != nil {
			return got, false, fmt.Errorf("basic.ack: %w", err)
		}
	}
}
