package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TransportOptions tune a Transport. The zero value gives oslo's defaults.
type TransportOptions struct {
	// ControlExchange is the topic exchange used when a Target names none
	// (oslo's control_exchange, default "openstack").
	ControlExchange string
	// DialTimeout bounds each TCP+AMQP handshake attempt (default 5s).
	DialTimeout time.Duration
	// Heartbeat is the AMQP heartbeat interval proposed (default 30s, as
	// oslo's 60 s threshold divided by its rate of 2).
	Heartbeat time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// rounds over all hosts (defaults 100ms and 5s).
	ReconnectMin, ReconnectMax time.Duration
	// Logger receives connection and dispatch events (default slog.Default()).
	Logger *slog.Logger
}

func (o *TransportOptions) withDefaults() {
	if o.ControlExchange == "" {
		o.ControlExchange = "openstack"
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 5 * time.Second
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = 30 * time.Second
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = 100 * time.Millisecond
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Transport is a connection to an AMQP 0-9-1 broker shared by clients,
// servers, notifiers and listeners. It connects lazily, reconnects when the
// connection drops and fails over round-robin between the hosts of its URL
// with exponential backoff. It is safe for concurrent use.
type Transport struct {
	hosts []string
	opts  TransportOptions
	log   *slog.Logger

	// dialing is a one-slot semaphore so a single goroutine (re)connects
	// while the others wait for it, each within its own context.
	dialing chan struct{}

	mu        sync.Mutex
	conn      *amqp.Connection
	gen       uint64 // increments on every new connection
	nextHost  int
	closed    bool
	freePubs  []*pubChannel
	declared  map[string]bool // exchanges/queues declared on connection gen
	replies   *replyWaiter
	stopAll   chan struct{}
	consumers sync.WaitGroup
}

// NewTransport parses rawURL (oslo's form, several comma-separated hosts
// allowed: "amqp://u:p@h1:5672,u:p@h2:5673/vhost") and returns a Transport.
// It does not connect; use Connect to check the broker is reachable.
func NewTransport(rawURL string, opts TransportOptions) (*Transport, error) {
	hosts, err := parseTransportURL(rawURL)
	if err != nil {
		return nil, err
	}
	opts.withDefaults()
	return &Transport{
		hosts:    hosts,
		opts:     opts,
		log:      opts.Logger.With("component", "rpc"),
		dialing:  make(chan struct{}, 1),
		declared: map[string]bool{},
		stopAll:  make(chan struct{}),
	}, nil
}

// Connect makes sure a connection is open, trying every host with backoff
// until ctx ends.
func (t *Transport) Connect(ctx context.Context) error {
	_, _, err := t.connection(ctx)
	return err
}

// Close stops every server, listener and reply consumer started on the
// Transport and closes the connection.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	close(t.stopAll)
	conn := t.conn
	t.conn = nil
	t.freePubs = nil
	t.mu.Unlock()
	var err error
	if conn != nil {
		err = conn.Close()
		if errors.Is(err, amqp.ErrClosed) {
			err = nil
		}
	}
	t.consumers.Wait()
	if err != nil {
		return fmt.Errorf("close amqp connection: %w", err)
	}
	return nil
}

// exchangeFor returns the exchange a target publishes to.
func (t *Transport) exchangeFor(target Target) string {
	if target.Exchange != "" {
		return target.Exchange
	}
	return t.opts.ControlExchange
}

// connection returns the open connection and its generation, dialling (with
// failover and backoff) when there is none.
func (t *Transport) connection(ctx context.Context) (*amqp.Connection, uint64, error) {
	if conn, gen, ok := t.current(); ok {
		return conn, gen, nil
	}
	select {
	case t.dialing <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("connect to broker: %w", ctx.Err())
	case <-t.stopAll:
		return nil, 0, ErrClosed
	}
	defer func() { <-t.dialing }()
	// Another goroutine may have connected while this one waited.
	if conn, gen, ok := t.current(); ok {
		return conn, gen, nil
	}
	backoff := t.opts.ReconnectMin
	for {
		var lastErr error
		for range t.hosts {
			t.mu.Lock()
			if t.closed {
				t.mu.Unlock()
				return nil, 0, ErrClosed
			}
			idx := t.nextHost % len(t.hosts)
			t.mu.Unlock()
			conn, err := t.dial(t.hosts[idx])
			if err == nil {
				return t.install(conn, idx)
			}
			lastErr = err
			t.log.Warn("rpc: broker connection failed", "host", redactURL(t.hosts[idx]), "err", err)
			t.mu.Lock()
			t.nextHost = idx + 1
			t.mu.Unlock()
		}
		timer := time.NewTimer(backoff)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil, 0, fmt.Errorf("connect to broker (last error: %v): %w", lastErr, ctx.Err())
		case <-t.stopAll:
			timer.Stop()
			return nil, 0, ErrClosed
		}
		backoff = min(backoff*2, t.opts.ReconnectMax)
	}
}

// current returns the connection if it is open.
func (t *Transport) current() (*amqp.Connection, uint64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conn != nil && !t.conn.IsClosed() {
		return t.conn, t.gen, true
	}
	return nil, 0, false
}

func (t *Transport) dial(uri string) (*amqp.Connection, error) {
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("warren-rpc")
	conn, err := amqp.DialConfig(uri, amqp.Config{
		Heartbeat:  t.opts.Heartbeat,
		Locale:     "en_US",
		Properties: props,
		Dial: func(network, addr string) (net.Conn, error) {
			c, err := net.DialTimeout(network, addr, t.opts.DialTimeout)
			if err != nil {
				return nil, err
			}
			// The deadline covers the AMQP handshake; amqp091-go clears it
			// once the connection is open.
			if err := c.SetDeadline(time.Now().Add(t.opts.DialTimeout)); err != nil {
				_ = c.Close()
				return nil, err
			}
			return c, nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", redactURL(uri), err)
	}
	return conn, nil
}

func (t *Transport) install(conn *amqp.Connection, hostIdx int) (*amqp.Connection, uint64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		_ = conn.Close()
		return nil, 0, ErrClosed
	}
	t.conn = conn
	t.gen++
	// Next failover starts with the host after this one, as kombu's
	// round-robin strategy does.
	t.nextHost = hostIdx + 1
	t.freePubs = nil
	t.declared = map[string]bool{}
	t.log.Info("rpc: connected to broker", "host", redactURL(t.hosts[hostIdx]))
	return conn, t.gen, nil
}

// dropConnection closes the current connection; the next use reconnects
// to the following host. Tests use it to simulate a broker failure.
func (t *Transport) dropConnection() {
	t.mu.Lock()
	conn := t.conn
	t.mu.Unlock()
	if conn != nil {
		_ = conn.Close()
	}
}

// pubChannel is a confirm-mode channel used by one publish at a time, so
// a basic.return it receives belongs to the publish in progress.
type pubChannel struct {
	ch      *amqp.Channel
	gen     uint64
	returns chan amqp.Return
	closed  chan *amqp.Error
}

func (t *Transport) acquirePublisher(ctx context.Context) (*pubChannel, error) {
	conn, gen, err := t.connection(ctx)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	for len(t.freePubs) > 0 {
		pc := t.freePubs[len(t.freePubs)-1]
		t.freePubs = t.freePubs[:len(t.freePubs)-1]
		if pc.gen == gen && !pc.ch.IsClosed() {
			t.mu.Unlock()
			return pc, nil
		}
	}
	t.mu.Unlock()
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publisher channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable publisher confirms: %w", err)
	}
	pc := &pubChannel{ch: ch, gen: gen, returns: make(chan amqp.Return, 4), closed: make(chan *amqp.Error, 1)}
	ch.NotifyReturn(pc.returns)
	ch.NotifyClose(pc.closed)
	return pc, nil
}

// maxIdlePublishers bounds the channels kept open for reuse.
const maxIdlePublishers = 32

func (t *Transport) releasePublisher(pc *pubChannel) {
	t.mu.Lock()
	if pc.gen == t.gen && !t.closed && len(t.freePubs) < maxIdlePublishers && !pc.ch.IsClosed() {
		t.freePubs = append(t.freePubs, pc)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	_ = pc.ch.Close()
}

// declaration is something a publisher makes sure exists first, as oslo
// declares the exchange (and for notifications a default queue) once per
// connection before publishing.
type declaration struct {
	exchange     string
	kind         string
	durable      bool
	autoDelete   bool
	defaultQueue string // declared and bound with its own name as key, if set
}

func (d declaration) key() string {
	return d.exchange + "\x00" + d.kind + "\x00" + d.defaultQueue
}

func (t *Transport) declareOnce(pc *pubChannel, d declaration) error {
	if d.exchange == "" {
		return nil
	}
	t.mu.Lock()
	done := t.declared[d.key()] && pc.gen == t.gen
	t.mu.Unlock()
	if done {
		return nil
	}
	if err := pc.ch.ExchangeDeclare(d.exchange, d.kind, d.durable, d.autoDelete, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", d.exchange, err)
	}
	if d.defaultQueue != "" {
		if _, err := pc.ch.QueueDeclare(d.defaultQueue, d.durable, d.autoDelete, false, false, nil); err != nil {
			return fmt.Errorf("declare queue %q: %w", d.defaultQueue, err)
		}
		if err := pc.ch.QueueBind(d.defaultQueue, d.defaultQueue, d.exchange, false, nil); err != nil {
			return fmt.Errorf("bind queue %q: %w", d.defaultQueue, err)
		}
	}
	t.mu.Lock()
	if pc.gen == t.gen {
		t.declared[d.key()] = true
	}
	t.mu.Unlock()
	return nil
}

// errUnroutable is returned for a mandatory publish the broker returned.
var errUnroutable = errors.New("message returned as unroutable")

// publish sends one message and waits for its publisher confirm. It retries
// on a lost connection until ctx ends (oslo retries forever by default; a
// duplicate is harmless because receivers drop repeated _unique_id values).
// A mandatory message that no queue accepted yields errUnroutable.
func (t *Transport) publish(ctx context.Context, d declaration, routingKey string, mandatory bool, msg amqp.Publishing) error {
	for {
		err := t.publishOnce(ctx, d, routingKey, mandatory, msg)
		if err == nil || !isRetryable(err) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publish to %q/%q: %w (after: %v)", d.exchange, routingKey, ctx.Err(), err)
		}
		t.log.Debug("rpc: retrying publish", "exchange", d.exchange, "key", routingKey, "err", err)
		select {
		case <-time.After(t.opts.ReconnectMin):
		case <-ctx.Done():
		case <-t.stopAll:
			return ErrClosed
		}
	}
}

// errConsumerCancelled ends one consumer session when the broker sent basic.cancel.
var errConsumerCancelled = errors.New("consumer cancelled by the broker")

// errConnectionLost marks failures worth retrying on a new connection.
var errConnectionLost = errors.New("connection lost")

func isRetryable(err error) bool {
	return errors.Is(err, errConnectionLost) || errors.Is(err, amqp.ErrClosed)
}

func (t *Transport) publishOnce(ctx context.Context, d declaration, routingKey string, mandatory bool, msg amqp.Publishing) error {
	pc, err := t.acquirePublisher(ctx)
	if err != nil {
		if ctx.Err() != nil || errors.Is(err, ErrClosed) {
			return err
		}
		return fmt.Errorf("%w: %v", errConnectionLost, err)
	}
	if err := t.declareOnce(pc, d); err != nil {
		_ = pc.ch.Close()
		return t.classify(pc, err)
	}
	for len(pc.returns) > 0 {
		<-pc.returns
	}
	confirm, err := pc.ch.PublishWithDeferredConfirmWithContext(ctx, d.exchange, routingKey, mandatory, false, msg)
	if err != nil {
		_ = pc.ch.Close()
		return t.classify(pc, fmt.Errorf("publish to %q/%q: %w", d.exchange, routingKey, err))
	}
	select {
	case <-confirm.Done():
	case <-ctx.Done():
		// The confirm may still arrive; the channel cannot be reused safely.
		_ = pc.ch.Close()
		return fmt.Errorf("wait for publisher confirm: %w", ctx.Err())
	}
	if !confirm.Acked() {
		if pc.ch.IsClosed() {
			return t.classify(pc, fmt.Errorf("publish to %q/%q: channel closed before confirm", d.exchange, routingKey))
		}
		t.releasePublisher(pc)
		return fmt.Errorf("publish to %q/%q: broker nacked the message", d.exchange, routingKey)
	}
	// RabbitMQ sends basic.return before the basic.ack of the same publish,
	// and amqp091-go hands both over in order, so a return is already here.
	select {
	case ret := <-pc.returns:
		t.releasePublisher(pc)
		return fmt.Errorf("publish to %q/%q: %w (%d %s)", d.exchange, routingKey, errUnroutable, ret.ReplyCode, ret.ReplyText)
	default:
	}
	t.releasePublisher(pc)
	return nil
}

// classify decides whether a failed publish should be retried: a channel
// closed by a broker error (wrong exchange type, access refused) is final;
// a connection that went away is not.
func (t *Transport) classify(pc *pubChannel, err error) error {
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && !amqpErr.Server {
		return fmt.Errorf("%w: %v", errConnectionLost, err)
	}
	if errors.As(err, &amqpErr) {
		if isConnectionLevel(amqpErr.Code) {
			return fmt.Errorf("%w: %v", errConnectionLost, err)
		}
		return err
	}
	select {
	case reason, ok := <-pc.closed:
		if ok && reason != nil && reason.Server && !isConnectionLevel(reason.Code) {
			return fmt.Errorf("%v: %w", err, reason)
		}
	case <-time.After(50 * time.Millisecond):
	}
	return fmt.Errorf("%w: %v", errConnectionLost, err)
}

// isConnectionLevel reports AMQP reply codes that close the whole
// connection (320 connection-forced, 501-541 frame and internal errors).
func isConnectionLevel(code int) bool {
	return code == amqp.ConnectionForced || code >= 500
}

// consumerSetup declares what a consumer needs on a fresh channel and
// starts consuming, returning one delivery stream per queue.
type consumerSetup func(ch *amqp.Channel) ([]<-chan amqp.Delivery, error)

// runConsumer keeps a consumer alive across reconnects: on each connection
// it opens a channel, runs setup and feeds every delivery to handle. The
// first setup's outcome is sent on ready. It returns when stop is closed or
// the Transport is closed.
func (t *Transport) runConsumer(name string, stop <-chan struct{}, setup consumerSetup, handle func(amqp.Delivery), ready chan<- error) {
	defer t.consumers.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stop:
		case <-t.stopAll:
		case <-ctx.Done():
		}
		cancel()
	}()
	backoff := t.opts.ReconnectMin
	for ctx.Err() == nil {
		err := t.consumeOnce(ctx, setup, handle, ready)
		ready = nil
		if ctx.Err() != nil {
			return
		}
		t.log.Warn("rpc: consumer interrupted, re-establishing", "consumer", name, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, t.opts.ReconnectMax)
	}
}

func (t *Transport) consumeOnce(ctx context.Context, setup consumerSetup, handle func(amqp.Delivery), ready chan<- error) error {
	conn, _, err := t.connection(ctx)
	if err != nil {
		if ready != nil {
			ready <- err
		}
		return err
	}
	ch, err := conn.Channel()
	if err != nil {
		if ready != nil {
			ready <- fmt.Errorf("open consumer channel: %w", err)
		}
		return fmt.Errorf("open consumer channel: %w", err)
	}
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	// A broker cancels a consumer (basic.cancel) when its queue is deleted or moved, e.g. a
	// cluster re-homing the queues of a dead node: the channel stays open but its delivery
	// stream ends, so the consumer must declare and subscribe again.
	cancelled := ch.NotifyCancel(make(chan string, 8))
	streams, err := setup(ch)
	if err != nil {
		_ = ch.Close()
		if ready != nil {
			ready <- err
		}
		return err
	}
	if ready != nil {
		ready <- nil
	}
	var readers sync.WaitGroup
	for _, stream := range streams {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for d := range stream {
				handle(d)
			}
		}()
	}
	var reason error = errConnectionLost
	select {
	case <-ctx.Done():
		_ = ch.Close()
	case e, ok := <-closed:
		if ok && e != nil {
			reason = e
		}
	case tag := <-cancelled:
		reason = fmt.Errorf("%w (consumer %s)", errConsumerCancelled, tag)
		_ = ch.Close()
	}
	readers.Wait()
	return reason
}
