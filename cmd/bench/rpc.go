package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// runRPC measures request/reply round trips the way oslo.messaging makes them: every caller owns
// a named exclusive reply queue, publishes a request with reply_to and correlation_id to the
// server's queue, and waits for the reply before sending the next request.
func runRPC(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (res result, err error) {
	serverQueue := names.name("rpc-server")
	// Reply queues are exclusive and vanish with their connections; the server queue does not.
	var created createdTopology
	defer created.cleanup(cfg.url, &err)

	stop := make(chan struct{})
	var stopping atomic.Bool
	server, err := startRPCServer(ctx, cfg.url, serverQueue, &created)
	if err != nil {
		return res, err
	}
	defer closeConnection(server.conn, "rpc-server")
	var serverDone sync.WaitGroup
	serverDone.Add(1)
	go func() {
		defer serverDone.Done()
		server.serve(stop, &stopping)
	}()

	callers := make([]*rpcCaller, cfg.rpcCallers)
	defer func() {
		for _, c := range callers {
			if c != nil {
				closeConnection(c.conn, c.role)
			}
		}
	}()
	for i := range callers {
		c, err := startRPCCaller(ctx, cfg, names, serverQueue, i)
		if err != nil {
			stopping.Store(true)
			close(stop)
			serverDone.Wait()
			return res, err
		}
		callers[i] = c
	}

	var measuring atomic.Bool
	var roundTrips atomic.Int64
	var callersDone sync.WaitGroup
	failed := make(chan struct{}, len(callers))
	start := time.Now()
	measuring.Store(true)
	for _, c := range callers {
		callersDone.Add(1)
		go func() {
			defer callersDone.Done()
			if c.call(stop, &measuring, &roundTrips, &stopping); c.err != nil {
				failed <- struct{}{}
			}
		}()
	}

	timer := time.NewTimer(cfg.duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
		err = fmt.Errorf("rpc interrupted: %w", ctx.Err())
	case <-failed:
		timer.Stop()
	}
	measuring.Store(false)
	elapsed := time.Since(start)
	trips := roundTrips.Load()
	if rss != nil {
		rss.finish()
	}
	stopping.Store(true)
	close(stop)
	callersDone.Wait()
	serverDone.Wait()

	var latency latencyHistogram
	for _, c := range callers {
		latency.merge(&c.latency)
		err = errors.Join(err, c.err)
	}
	err = errors.Join(err, server.err)

	res.SizeBytes = cfg.messageSize
	res.DurationSec = round(elapsed.Seconds(), 3)
	res.OpsPerSec = perSecond(trips, elapsed.Seconds())
	latency.fillPercentiles(&res.P50Micros, &res.P99Micros)
	return res, err
}

type rpcServer struct {
	conn       *amqp.Connection
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	err        error
}

func startRPCServer(ctx context.Context, brokerURL, queue string, created *createdTopology) (*rpcServer, error) {
	conn, ch, err := openChannel(ctx, brokerURL, "rpc-server")
	if err != nil {
		return nil, err
	}
	s := &rpcServer{conn: conn, ch: ch}
	if err := s.setup(queue, created); err != nil {
		closeConnection(conn, "rpc-server")
		return nil, err
	}
	return s, nil
}

func (s *rpcServer) setup(queue string, created *createdTopology) error {
	if _, err := s.ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
		return fmt.Errorf("declaring rpc server queue: %w", err)
	}
	created.addQueue(queue)
	if err := s.ch.Qos(64, 0, false); err != nil {
		return fmt.Errorf("setting rpc server prefetch: %w", err)
	}
	deliveries, err := s.ch.Consume(queue, "bench-rpc-server", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consuming rpc server queue: %w", err)
	}
	s.deliveries = deliveries
	return nil
}

// serve echoes every request to its reply_to queue through the default exchange.
func (s *rpcServer) serve(stop <-chan struct{}, stopping *atomic.Bool) {
	for {
		select {
		case <-stop:
			return
		case d, ok := <-s.deliveries:
			if !ok {
				if !stopping.Load() {
					s.err = errors.New("rpc server: broker closed the delivery stream early")
				}
				return
			}
			reply := amqp.Publishing{CorrelationId: d.CorrelationId, Body: d.Body}
			if err := s.ch.Publish("", d.ReplyTo, false, false, reply); err != nil {
				if !stopping.Load() {
					s.err = fmt.Errorf("rpc server: replying: %w", err)
				}
				return
			}
			if err := d.Ack(false); err != nil {
				if !stopping.Load() {
					s.err = fmt.Errorf("rpc server: acking: %w", err)
				}
				return
			}
		}
	}
}

type rpcCaller struct {
	role        string
	conn        *amqp.Connection
	ch          *amqp.Channel
	serverQueue string
	replyQueue  string
	replies     <-chan amqp.Delivery
	size        int
	latency     latencyHistogram
	err         error
}

func startRPCCaller(ctx context.Context, cfg config, names *runNames, serverQueue string, index int) (*rpcCaller, error) {
	role := fmt.Sprintf("rpc-caller-%d", index)
	conn, ch, err := openChannel(ctx, cfg.url, role)
	if err != nil {
		return nil, err
	}
	c := &rpcCaller{role: role, conn: conn, ch: ch, serverQueue: serverQueue, replyQueue: names.name("reply"), size: cfg.messageSize}
	if _, err := ch.QueueDeclare(c.replyQueue, false, true, true, false, nil); err != nil {
		closeConnection(conn, role)
		return nil, fmt.Errorf("%s: declaring reply queue: %w", role, err)
	}
	replies, err := ch.Consume(c.replyQueue, "bench-"+role, false, true, false, false, nil)
	if err != nil {
		closeConnection(conn, role)
		return nil, fmt.Errorf("%s: consuming reply queue: %w", role, err)
	}
	c.replies = replies
	return c, nil
}

// call makes one round trip after another until stopped.
func (c *rpcCaller) call(stop <-chan struct{}, measuring *atomic.Bool, roundTrips *atomic.Int64, stopping *atomic.Bool) {
	for seq := 1; ; seq++ {
		correlationID := strconv.Itoa(seq)
		sentAt := time.Now()
		request := amqp.Publishing{ReplyTo: c.replyQueue, CorrelationId: correlationID, Body: stampedBody(c.size)}
		if err := c.ch.Publish("", c.serverQueue, false, false, request); err != nil {
			if !stopping.Load() {
				c.err = fmt.Errorf("%s: publishing request: %w", c.role, err)
			}
			return
		}
		if !c.awaitReply(correlationID, stop, stopping) {
			return
		}
		if measuring.Load() {
			roundTrips.Add(1)
			c.latency.record(time.Since(sentAt))
		}
	}
}

// awaitReply waits for the reply carrying correlationID, dropping stale ones, and reports
// whether the caller should go on.
func (c *rpcCaller) awaitReply(correlationID string, stop <-chan struct{}, stopping *atomic.Bool) bool {
	for {
		select {
		case <-stop:
			return false
		case d, ok := <-c.replies:
			if !ok {
				if !stopping.Load() {
					c.err = fmt.Errorf("%s: broker closed the reply stream early", c.role)
				}
				return false
			}
			if err := d.Ack(false); err != nil {
				if !stopping.Load() {
					c.err = fmt.Errorf("%s: acking reply: %w", c.role, err)
				}
				return false
			}
			if d.CorrelationId == correlationID {
				return true
			}
		}
	}
}
