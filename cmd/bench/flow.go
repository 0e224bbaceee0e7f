package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// flowSpec describes a publisher → exchange → queues → consumers workload; 1p1c, 1p1c-confirm,
// fanout and slow-consumer are all instances of it.
type flowSpec struct {
	fanout      bool // publish to a fanout exchange bound to every queue, else to the one queue
	queues      int
	confirm     bool
	window      int  // unconfirmed publishes in flight when confirm is set
	boundedLead bool // the publisher may be at most lead messages ahead of every consumer
	lead        int
	prefetch    int
	ackDelay    time.Duration
	durable     bool // durable queues and persistent (delivery-mode 2) messages
	publishers  int  // concurrent publishers (0 means 1)
}

// flowStats is what a flow measured inside its window.
type flowStats struct {
	elapsed   time.Duration
	published int64
	delivered int64
	nacked    int64
	blocked   int64
	latency   latencyHistogram
	confirm   latencyHistogram
}

func runOnePublisherOneConsumer(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	return flowResult(ctx, cfg, names, rss, flowSpec{
		queues: 1, boundedLead: true, lead: cfg.publisherLead, prefetch: cfg.prefetch,
	})
}

func runOnePublisherOneConsumerConfirm(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	return flowResult(ctx, cfg, names, rss, flowSpec{
		queues: 1, confirm: true, window: cfg.confirmWindow,
		boundedLead: true, lead: cfg.publisherLead, prefetch: cfg.prefetch,
	})
}

// runPersistent is 1p1c-confirm with durable queues and persistent messages: every confirm
// waits for the broker's disk (fsync), so it measures the message store and its group commit.
func runPersistent(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	return flowResult(ctx, cfg, names, rss, flowSpec{
		queues: 1, confirm: true, window: cfg.confirmWindow, durable: true, publishers: 1,
		boundedLead: true, lead: cfg.publisherLead, prefetch: cfg.prefetch,
	})
}

// runPersistent4 is runPersistent with 4 concurrent publishers (one connection each) into the
// same durable queue: their fsyncs can be shared.
func runPersistent4(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	return flowResult(ctx, cfg, names, rss, flowSpec{
		queues: 1, confirm: true, window: cfg.confirmWindow, durable: true, publishers: 4,
		boundedLead: true, lead: cfg.publisherLead, prefetch: cfg.prefetch,
	})
}

func runFanout(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	return flowResult(ctx, cfg, names, rss, flowSpec{
		fanout: true, queues: cfg.fanoutQueues, boundedLead: true, lead: cfg.publisherLead, prefetch: cfg.prefetch,
	})
}

// runSlowConsumer publishes as fast as the broker lets it while the consumer takes ackDelay per
// message, so the queue grows; the interesting figures are the broker's peak and final RSS.
func runSlowConsumer(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	// A small prefetch keeps the backlog in the broker, where flow control is meant to act,
	// rather than in this process's delivery buffer.
	return flowResult(ctx, cfg, names, rss, flowSpec{queues: 1, prefetch: 100, ackDelay: cfg.ackDelay})
}

func flowResult(ctx context.Context, cfg config, names *runNames, rss *rssSampler, spec flowSpec) (result, error) {
	stats, err := runFlow(ctx, cfg, names, rss, spec)
	res := result{SizeBytes: cfg.messageSize}
	if stats.elapsed > 0 {
		elapsed := stats.elapsed.Seconds()
		res.DurationSec = round(elapsed, 3)
		res.MsgsPerSec = perSecond(stats.delivered, elapsed)
		res.PublishedPerSec = perSecond(stats.published, elapsed)
		res.Published, res.Delivered = count(stats.published), count(stats.delivered)
		stats.latency.fillPercentiles(&res.P50Micros, &res.P99Micros)
		if spec.confirm {
			stats.confirm.fillPercentiles(&res.ConfirmP50Micros, &res.ConfirmP99Micros)
			res.Nacked = count(stats.nacked)
		}
		res.BlockedNotices = count(stats.blocked)
	}
	// A throughput of a broker that refused messages, or delivered none, is no throughput.
	if err == nil && spec.confirm && stats.nacked > 0 {
		err = fmt.Errorf("%d of %d publishes nacked by the broker", stats.nacked, stats.published)
	}
	if err == nil && stats.delivered == 0 {
		err = fmt.Errorf("nothing delivered in %s (published %d)", stats.elapsed.Round(time.Millisecond), stats.published)
	}
	return res, err
}

// flowConsumer is one consumer and its share of the bounded lead.
type flowConsumer struct {
	role    string
	conn    *amqp.Connection
	ch      *amqp.Channel
	queue   string
	credits chan struct{} // the publisher puts a token in per message; the consumer takes it out
	latency latencyHistogram
	err     error
}

func runFlow(ctx context.Context, cfg config, names *runNames, rss *rssSampler, spec flowSpec) (stats flowStats, err error) {
	queues := make([]string, spec.queues)
	for i := range queues {
		queues[i] = names.name("q")
	}
	var exchange string
	if spec.fanout {
		exchange = names.name("fanout")
	}
	var created createdTopology
	defer created.cleanup(cfg.ownerURL(), &err)
	if err := declareFlowTopology(ctx, cfg.ownerURL(), exchange, queues, spec.durable, cfg.queueArgs(), &created); err != nil {
		return stats, err
	}
	if err := sleepCtx(ctx, cfg.afterDeclare); err != nil {
		return stats, err
	}

	// Measuring starts when every consumer is attached, so that no workload pays for setup.
	var measuring, stopping atomic.Bool
	var delivered atomic.Int64
	stop := make(chan struct{})
	consumers := make([]*flowConsumer, len(queues))
	var consumersDone sync.WaitGroup
	defer func() {
		for _, c := range consumers {
			if c != nil {
				closeConnection(c.conn, c.role)
			}
		}
	}()
	for i, q := range queues {
		c, err := startFlowConsumer(ctx, cfg.consumerURL(), q, i, spec)
		if err != nil {
			close(stop)
			return stats, err
		}
		consumers[i] = c
	}
	deliveriesOf := make([]<-chan amqp.Delivery, len(consumers))
	for i, c := range consumers {
		tag := fmt.Sprintf("bench-consumer-%d", i)
		deliveries, err := c.ch.Consume(c.queue, tag, false, false, false, false, nil)
		if err != nil {
			close(stop)
			return stats, fmt.Errorf("consuming from %s: %w", c.queue, err)
		}
		deliveriesOf[i] = deliveries
	}
	consumerFailed := make(chan struct{}, len(consumers))
	for i, c := range consumers {
		consumersDone.Add(1)
		go func() {
			defer consumersDone.Done()
			c.consume(deliveriesOf[i], stop, &measuring, &stopping, &delivered, spec.ackDelay)
			if c.err != nil {
				consumerFailed <- struct{}{}
			}
		}()
	}

	npub := max(spec.publishers, 1)
	pubs := make([]*flowPublisher, 0, npub)
	defer func() {
		for _, p := range pubs {
			closeConnection(p.conn, "publisher")
		}
	}()
	for i := 0; i < npub; i++ {
		pub, err := startFlowPublisher(ctx, cfg, exchange, queues, spec)
		if err != nil {
			close(stop)
			consumersDone.Wait()
			return stats, err
		}
		pubs = append(pubs, pub)
	}
	pubFailed := make(chan struct{}, npub)

	start := time.Now()
	measuring.Store(true)
	var publisherDone sync.WaitGroup
	for _, pub := range pubs {
		publisherDone.Add(1)
		go func() {
			defer publisherDone.Done()
			pub.run(consumers, stop)
			if pub.err != nil {
				pubFailed <- struct{}{}
			}
		}()
	}

	timer := time.NewTimer(cfg.duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
		err = fmt.Errorf("flow interrupted: %w", ctx.Err())
	case <-pubFailed:
		timer.Stop()
	case <-consumerFailed:
		timer.Stop()
	}
	measuring.Store(false)
	stats.elapsed = time.Since(start)
	stats.delivered = delivered.Load()
	for _, pub := range pubs {
		stats.published += pub.published.Load()
	}
	if rss != nil {
		rss.finish() // the final RSS is the broker's state at the end of the window, before cleanup
	}

	stopping.Store(true)
	close(stop)
	// A publisher held by TCP back-pressure sits in a socket write that only a deadline breaks.
	if !waitTimeout(&publisherDone, 3*time.Second) {
		for _, pub := range pubs {
			closeConnection(pub.conn, "publisher")
		}
		publisherDone.Wait()
	}
	consumersDone.Wait()

	for _, pub := range pubs {
		stats.nacked += pub.nacked.Load()
		stats.blocked += pub.blocked.Load()
		stats.confirm.merge(&pub.confirmLatency)
		err = errors.Join(err, pub.err)
	}
	for _, c := range consumers {
		stats.latency.merge(&c.latency)
		err = errors.Join(err, c.err)
	}
	return stats, err
}

func declareFlowTopology(ctx context.Context, brokerURL, exchange string, queues []string, durable bool, durableArgs amqp.Table, created *createdTopology) error {
	conn, ch, err := openChannel(ctx, brokerURL, "setup")
	if err != nil {
		return err
	}
	defer closeConnection(conn, "setup")
	if exchange != "" {
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeFanout, false, false, false, false, nil); err != nil {
			return fmt.Errorf("declaring exchange %s: %w", exchange, err)
		}
		created.addExchange(exchange)
	}
	var args amqp.Table
	if durable {
		args = durableArgs // x-queue-type quorum needs a durable queue; transient ones keep the default
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, durable, false, false, false, args); err != nil {
			return fmt.Errorf("declaring queue %s: %w", q, err)
		}
		created.addQueue(q)
		if exchange != "" {
			if err := ch.QueueBind(q, "", exchange, false, nil); err != nil {
				return fmt.Errorf("binding queue %s to %s: %w", q, exchange, err)
			}
		}
	}
	return nil
}

func startFlowConsumer(ctx context.Context, brokerURL, queue string, index int, spec flowSpec) (*flowConsumer, error) {
	role := fmt.Sprintf("consumer-%d", index)
	conn, ch, err := openChannel(ctx, brokerURL, role)
	if err != nil {
		return nil, err
	}
	if err := ch.Qos(spec.prefetch, 0, false); err != nil {
		closeConnection(conn, role)
		return nil, fmt.Errorf("setting prefetch on %s: %w", role, err)
	}
	c := &flowConsumer{role: role, conn: conn, ch: ch, queue: queue}
	if spec.boundedLead {
		c.credits = make(chan struct{}, spec.lead)
	}
	return c, nil
}

// consume counts deliveries inside the window and acks each one individually, as most
// applications do.
func (c *flowConsumer) consume(deliveries <-chan amqp.Delivery, stop <-chan struct{},
	measuring, stopping *atomic.Bool, delivered *atomic.Int64, ackDelay time.Duration) {
	for {
		select {
		case <-stop:
			return
		case d, ok := <-deliveries:
			if !ok {
				if !stopping.Load() {
					c.err = fmt.Errorf("%s: broker closed the delivery stream early", c.role)
				}
				return
			}
			if measuring.Load() {
				delivered.Add(1)
				if age, ok := bodyAge(d.Body); ok {
					c.latency.record(age)
				}
			}
			if c.credits != nil {
				select {
				case <-c.credits:
				default: // messages published before the window did not take a credit
				}
			}
			if ackDelay > 0 {
				time.Sleep(ackDelay)
			}
			if err := d.Ack(false); err != nil {
				if !stopping.Load() {
					c.err = fmt.Errorf("%s: acking: %w", c.role, err)
				}
				return
			}
		}
	}
}

// flowPublisher publishes stamped messages until stopped.
type flowPublisher struct {
	conn       *amqp.Connection
	ch         *amqp.Channel
	exchange   string
	routingKey string
	size       int
	spec       flowSpec

	published atomic.Int64
	nacked    atomic.Int64
	blocked   atomic.Int64
	failed    chan struct{} // closed when the publisher gives up before the window ends
	err       error

	confirmLatency latencyHistogram
}

type pendingConfirm struct {
	confirmation *amqp.DeferredConfirmation
	sentAt       time.Time
}

func startFlowPublisher(ctx context.Context, cfg config, exchange string, queues []string, spec flowSpec) (*flowPublisher, error) {
	conn, ch, err := openChannel(ctx, cfg.url, "publisher")
	if err != nil {
		return nil, err
	}
	p := &flowPublisher{conn: conn, ch: ch, exchange: exchange, size: cfg.messageSize, spec: spec, failed: make(chan struct{})}
	if exchange == "" {
		p.routingKey = queues[0]
	}
	if spec.confirm {
		if err := ch.Confirm(false); err != nil {
			closeConnection(conn, "publisher")
			return nil, fmt.Errorf("enabling publisher confirms: %w", err)
		}
	}
	blocked := conn.NotifyBlocked(make(chan amqp.Blocking, 16))
	go func() {
		// The library closes this channel when the connection closes, which ends the goroutine.
		for b := range blocked {
			if b.Active {
				p.blocked.Add(1)
				slog.Info("broker blocked the publisher", "reason", b.Reason)
			}
		}
	}()
	return p, nil
}

func (p *flowPublisher) run(consumers []*flowConsumer, stop <-chan struct{}) {
	defer func() {
		if p.err != nil {
			close(p.failed)
		}
	}()
	// window holds one token per unconfirmed publish, so at most spec.window are in flight;
	// pending carries them to the goroutine that waits for their confirms in order.
	var window chan struct{}
	var pending chan pendingConfirm
	var confirmsDone sync.WaitGroup
	if p.spec.confirm {
		window = make(chan struct{}, p.spec.window)
		pending = make(chan pendingConfirm, p.spec.window)
		confirmsDone.Add(1)
		go func() {
			defer confirmsDone.Done()
			p.awaitConfirms(pending, window, stop)
		}()
		defer confirmsDone.Wait()
	}
	for {
		if p.spec.boundedLead {
			for _, c := range consumers {
				select {
				case c.credits <- struct{}{}:
				case <-stop:
					return
				}
			}
		}
		if window != nil {
			select {
			case window <- struct{}{}:
			case <-stop:
				return
			}
		}
		select {
		case <-stop:
			return
		default:
		}
		msg := amqp.Publishing{Body: stampedBody(p.size)}
		if p.spec.durable {
			msg.DeliveryMode = amqp.Persistent
		}
		sentAt := time.Now()
		confirmation, err := p.ch.PublishWithDeferredConfirm(p.exchange, p.routingKey, false, false, msg)
		if err != nil {
			select {
			case <-stop: // the connection was closed under us to end the run
			default:
				p.err = fmt.Errorf("publishing: %w", err)
			}
			return
		}
		p.published.Add(1)
		if pending != nil {
			// Never blocks: pending has room for every token in window.
			pending <- pendingConfirm{confirmation: confirmation, sentAt: sentAt}
		}
	}
}

// awaitConfirms waits for confirms in publish order (the broker confirms in order too, so
// waiting on the oldest first costs nothing) and frees a window slot for each.
func (p *flowPublisher) awaitConfirms(pending <-chan pendingConfirm, window <-chan struct{}, stop <-chan struct{}) {
	for {
		var next pendingConfirm
		select {
		case next = <-pending:
		case <-stop:
			return
		}
		select {
		case <-next.confirmation.Done():
		case <-stop:
			// Confirms still outstanding when the window closes are not part of the figures.
			return
		}
		p.confirmLatency.record(time.Since(next.sentAt))
		if !next.confirmation.Acked() {
			p.nacked.Add(1)
		}
		<-window
	}
}

// waitTimeout waits for wg and reports whether it finished within d.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// sleepCtx waits d, or less if ctx ends first (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting after declare: %w", ctx.Err())
	}
}
