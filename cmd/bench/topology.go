package main

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// runDeclare measures metadata operations, which in Warren go through Raft: one op is a
// queue.declare of a new queue followed by a queue.bind of it, serially on one channel.
func runDeclare(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (res result, err error) {
	exchange := names.name("direct")
	var created createdTopology
	defer created.cleanup(cfg.url, &err)
	conn, ch, err := openChannel(ctx, cfg.url, "declare")
	if err != nil {
		return res, err
	}
	defer closeConnection(conn, "declare")
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeDirect, false, false, false, false, nil); err != nil {
		return res, fmt.Errorf("declaring exchange %s: %w", exchange, err)
	}
	created.addExchange(exchange)

	clients := max(cfg.declarers, 1)
	channels := []*amqp.Channel{ch}
	for i := 1; i < clients; i++ {
		c, extra, err := openChannel(ctx, cfg.url, "declare")
		if err != nil {
			return res, err
		}
		defer closeConnection(c, "declare")
		channels = append(channels, extra)
	}
	type outcome struct {
		latency  latencyHistogram
		declared []string
		err      error
	}
	outcomes := make([]outcome, clients)
	var namesMu sync.Mutex
	start := time.Now()
	deadline := start.Add(cfg.duration)
	var wg sync.WaitGroup
	for i, ch := range channels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := &outcomes[i]
			for time.Now().Before(deadline) && ctx.Err() == nil {
				namesMu.Lock()
				queue := names.name("q")
				namesMu.Unlock()
				opStart := time.Now()
				if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
					out.err = fmt.Errorf("declaring queue %s: %w", queue, err)
					return
				}
				out.declared = append(out.declared, queue)
				if err := ch.QueueBind(queue, queue, exchange, false, nil); err != nil {
					out.err = fmt.Errorf("binding queue %s: %w", queue, err)
					return
				}
				out.latency.record(time.Since(opStart))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var latency latencyHistogram
	declared := 0
	for i := range outcomes {
		latency.merge(&outcomes[i].latency)
		for _, q := range outcomes[i].declared {
			created.addQueue(q)
		}
		declared += len(outcomes[i].declared)
		if err == nil {
			err = outcomes[i].err
		}
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("declare interrupted: %w", ctx.Err())
	}
	if rss != nil {
		rss.finish()
	}
	res.DurationSec = round(elapsed.Seconds(), 3)
	res.OpsPerSec = perSecond(int64(latency.total), elapsed.Seconds())
	res.QueuesDeclared = intPtr(declared)
	latency.fillPercentiles(&res.P50Micros, &res.P99Micros)
	return res, err
}

// runEmptyQueues measures what an idle, empty queue costs the broker in memory.
func runEmptyQueues(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (res result, err error) {
	var created createdTopology
	defer created.cleanup(cfg.url, &err)
	conn, ch, err := openChannel(ctx, cfg.url, "empty-queues")
	if err != nil {
		return res, err
	}
	defer closeConnection(conn, "empty-queues")

	before, err := settledRSS(ctx, rss, cfg.settle)
	if err != nil {
		return res, err
	}
	start := time.Now()
	for i := range cfg.emptyQueues {
		if ctx.Err() != nil {
			return res, fmt.Errorf("declaring empty queues: %w", ctx.Err())
		}
		queue := names.name("q")
		if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
			return res, fmt.Errorf("declaring queue %d of %d: %w", i+1, cfg.emptyQueues, err)
		}
		created.addQueue(queue)
	}
	elapsed := time.Since(start)
	after, err := settledRSS(ctx, rss, cfg.settle)
	if err != nil {
		return res, err
	}
	rss.finish()
	res.DurationSec = round(elapsed.Seconds(), 3)
	res.OpsPerSec = perSecond(int64(cfg.emptyQueues), elapsed.Seconds())
	res.QueuesDeclared = intPtr(cfg.emptyQueues)
	res.RSSDeltaMBPer10kQ = num(float64(after-before) / 1024 * 10000 / float64(cfg.emptyQueues))

	// Delete now rather than in the deferred cleanup so the broker's memory after deleting
	// (does it give the memory back?) can be read.
	var deleteErr error
	created.cleanup(cfg.url, &deleteErr)
	if deleteErr != nil {
		return res, deleteErr
	}
	if afterCleanup, err := settledRSS(ctx, rss, cfg.settle); err == nil {
		res.RSSAfterCleanupMB = mb(afterCleanup)
	}
	return res, nil
}

// runIdleConnections measures what an idle client connection costs the broker in memory.
func runIdleConnections(ctx context.Context, cfg config, names *runNames, rss *rssSampler) (result, error) {
	var res result
	before, err := settledRSS(ctx, rss, cfg.settle)
	if err != nil {
		return res, err
	}
	start := time.Now()
	conns, dialErr := dialMany(ctx, cfg.url, cfg.idleConns)
	elapsed := time.Since(start)
	defer closeMany(conns)
	res.ConnsOpened = intPtr(len(conns))
	res.DurationSec = round(elapsed.Seconds(), 3)
	if dialErr != nil {
		// A broker that refuses connections past its file-descriptor limit still tells us what
		// each accepted one costs; say so instead of dropping the figure.
		res.Note = fmt.Sprintf("opened %d of %d connections: %v", len(conns), cfg.idleConns, dialErr)
		slog.Warn("not every connection opened", "opened", len(conns), "wanted", cfg.idleConns, "err", dialErr)
		if len(conns) < cfg.idleConns/10 {
			return res, fmt.Errorf("opening idle connections: %w", dialErr)
		}
	}
	after, err := settledRSS(ctx, rss, cfg.settle)
	if err != nil {
		return res, err
	}
	rss.finish()
	res.RSSDeltaMBPer1kConns = num(float64(after-before) / 1024 * 1000 / float64(len(conns)))
	return res, nil
}

// idleHandshakeTimeout is short because a broker out of file descriptors accepts the TCP
// connection and then never answers the handshake; waiting the usual 30 s per try adds nothing.
const idleHandshakeTimeout = 5 * time.Second

// dialMany opens n connections a few at a time (a handshake storm would measure accept
// queues, not memory) and returns the ones that opened along with the first failure.
func dialMany(ctx context.Context, brokerURL string, n int) ([]*amqp.Connection, error) {
	const parallel = 8
	var mu sync.Mutex
	var conns []*amqp.Connection
	var firstErr error
	next := make(chan int)
	var wg sync.WaitGroup
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				conn, err := dial(ctx, brokerURL, fmt.Sprintf("idle-%d", i), idleHandshakeTimeout)
				mu.Lock()
				if err != nil {
					firstErr = cmpErr(firstErr, err)
				} else {
					conns = append(conns, conn)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range n {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	return conns, firstErr
}

func cmpErr(first, next error) error {
	if first != nil {
		return first
	}
	return next
}

func closeMany(conns []*amqp.Connection) {
	var wg sync.WaitGroup
	work := make(chan *amqp.Connection)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for conn := range work {
				closeConnection(conn, "idle")
			}
		}()
	}
	for _, conn := range conns {
		work <- conn
	}
	close(work)
	wg.Wait()
}

// settledRSS waits for the broker to finish reacting (allocators, garbage collection of an
// earlier workload's messages) and returns its RSS once readings stop moving, so before/after
// deltas measure this workload rather than the tail of the previous one.
func settledRSS(ctx context.Context, rss *rssSampler, settle time.Duration) (int64, error) {
	const (
		poll        = 250 * time.Millisecond
		stableReads = 8
		maxWait     = 30 * time.Second
	)
	select {
	case <-time.After(settle):
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for broker memory to settle: %w", ctx.Err())
	}
	var readings []int64
	giveUp := time.Now().Add(maxWait)
	for {
		kB, err := rss.current()
		if err != nil {
			return 0, err
		}
		readings = append(readings, kB)
		if isSteady(readings, stableReads) || time.Now().After(giveUp) {
			return kB, nil
		}
		select {
		case <-time.After(poll):
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for broker memory to settle: %w", ctx.Err())
		}
	}
}

// isSteady reports whether the last n readings lie within max(0.5 MB, 0.5%) of each other.
func isSteady(readingsKB []int64, n int) bool {
	if len(readingsKB) < n {
		return false
	}
	last := readingsKB[len(readingsKB)-n:]
	lo, hi := last[0], last[0]
	for _, v := range last[1:] {
		lo, hi = min(lo, v), max(hi, v)
	}
	return hi-lo <= max(512, hi/200)
}

func intPtr(v int) *int { return &v }
