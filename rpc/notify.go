package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Priority is a notification priority. The routing key of a notification
// is "<topic>.<priority>" in lower case; the message carries it upper case.
type Priority string

// The priorities oslo.messaging knows.
const (
	PriorityAudit    Priority = "audit"
	PriorityDebug    Priority = "debug"
	PriorityInfo     Priority = "info"
	PriorityWarn     Priority = "warn"
	PriorityError    Priority = "error"
	PriorityCritical Priority = "critical"
	PrioritySample   Priority = "sample"
)

// AllPriorities lists every priority, in oslo's order.
var AllPriorities = []Priority{PriorityAudit, PriorityDebug, PriorityInfo, PriorityWarn, PriorityError, PriorityCritical, PrioritySample}

// ParsePriority accepts a priority name in any case.
func ParsePriority(s string) (Priority, error) {
	p := Priority(strings.ToLower(s))
	for _, known := range AllPriorities {
		if p == known {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown notification priority %q", s)
}

// DefaultNotificationTopic is oslo's notification topic default.
const DefaultNotificationTopic = "notifications"

// Notifier publishes notifications in oslo's messagingv2 format.
type Notifier struct {
	transport *Transport
	// PublisherID identifies the sender, e.g. "compute.host1".
	PublisherID string
	// Topics are the notification topics (default "notifications").
	Topics []string
	// Exchange overrides the Transport's control exchange.
	Exchange string
}

// NewNotifier returns a Notifier on t; no topics means "notifications".
func NewNotifier(t *Transport, publisherID string, topics ...string) *Notifier {
	if len(topics) == 0 {
		topics = []string{DefaultNotificationTopic}
	}
	return &Notifier{transport: t, PublisherID: publisherID, Topics: topics}
}

// Notify publishes one notification to every topic and waits for the
// broker's confirms. Context values of ctx travel as `_context_*`.
func (n *Notifier) Notify(ctx context.Context, priority Priority, eventType string, payload any) error {
	priority, err := ParsePriority(string(priority))
	if err != nil {
		return err
	}
	exchange := n.transport.exchangeFor(Target{Exchange: n.Exchange})
	var errs []error
	for _, topic := range n.Topics {
		inner := map[string]any{
			"message_id":   newUUID(),
			"publisher_id": n.PublisherID,
			"event_type":   eventType,
			"priority":     strings.ToUpper(string(priority)),
			"payload":      payload,
			"timestamp":    pythonTimestamp(time.Now()),
			keyUniqueID:    newHexID(),
		}
		packContext(inner, ContextValues(ctx))
		body, err := encodeEnvelope(inner)
		if err != nil {
			return err
		}
		key := topic + "." + string(priority)
		// oslo declares a queue named after the routing key so that
		// notifications sent before any listener exists are kept.
		d := declaration{exchange: exchange, kind: amqp.ExchangeTopic, defaultQueue: key}
		if err := n.transport.publish(ctx, d, key, false, newPublishing(body, 0)); err != nil {
			errs = append(errs, fmt.Errorf("notify %s to %q: %w", eventType, key, err))
		}
	}
	return errors.Join(errs...)
}

// Audit sends an audit notification.
func (n *Notifier) Audit(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityAudit, eventType, payload)
}

// Debug sends a debug notification.
func (n *Notifier) Debug(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityDebug, eventType, payload)
}

// Info sends an info notification.
func (n *Notifier) Info(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityInfo, eventType, payload)
}

// Warn sends a warn notification.
func (n *Notifier) Warn(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityWarn, eventType, payload)
}

// Error sends an error notification.
func (n *Notifier) Error(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityError, eventType, payload)
}

// Critical sends a critical notification.
func (n *Notifier) Critical(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PriorityCritical, eventType, payload)
}

// Sample sends a sample notification.
func (n *Notifier) Sample(ctx context.Context, eventType string, payload any) error {
	return n.Notify(ctx, PrioritySample, eventType, payload)
}

// Notification is a received notification.
type Notification struct {
	MessageID   string          `json:"message_id"`
	PublisherID string          `json:"publisher_id"`
	EventType   string          `json:"event_type"`
	Priority    Priority        `json:"priority"`
	Payload     json.RawMessage `json:"payload"`
	Timestamp   string          `json:"timestamp"`
	Context     map[string]any  `json:"context,omitempty"`
}

// NotificationHandler processes one notification. A non-nil error asks
// for the message to be requeued when the listener allows it (oslo's
// NotificationResult.REQUEUE); otherwise it is acknowledged.
type NotificationHandler func(ctx context.Context, n *Notification) error

// ListenerOptions tune a NotificationListener.
type ListenerOptions struct {
	// Pool names a shared queue: listeners of the same pool split the
	// notifications between them; listeners of different pools each get
	// all. Empty means the per-priority queues "<topic>.<priority>".
	Pool string
	// AllowRequeue makes a handler error requeue the notification.
	AllowRequeue bool
	// Priorities to receive (default all).
	Priorities []Priority
	// Workers is how many notifications are handled at once (default 1,
	// which keeps their order).
	Workers int
	// Prefetch limits unacknowledged notifications (default Workers*4).
	Prefetch int
}

// NotificationListener consumes notifications of one or more targets
// (Exchange and Topic of each are used) and hands them to a handler.
type NotificationListener struct {
	transport *Transport
	targets   []Target
	handler   NotificationHandler
	opts      ListenerOptions

	dups    recentIDs
	work    chan amqp.Delivery
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	started bool
	stopped bool
	workers sync.WaitGroup
}

// NewNotificationListener returns a listener; call Start to consume.
func NewNotificationListener(t *Transport, targets []Target, handler NotificationHandler, opts ListenerOptions) (*NotificationListener, error) {
	if len(targets) == 0 {
		return nil, errors.New("rpc: notification listener needs at least one target")
	}
	for _, target := range targets {
		if target.Topic == "" {
			return nil, errors.New("rpc: notification target has no topic")
		}
	}
	if handler == nil {
		return nil, errors.New("rpc: nil notification handler")
	}
	requested := opts.Priorities
	if len(requested) == 0 {
		requested = AllPriorities
	}
	opts.Priorities = make([]Priority, 0, len(requested))
	for _, p := range requested {
		parsed, err := ParsePriority(string(p))
		if err != nil {
			return nil, err
		}
		opts.Priorities = append(opts.Priorities, parsed)
	}
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	if opts.Prefetch <= 0 {
		opts.Prefetch = opts.Workers * 4
	}
	return &NotificationListener{
		transport: t, targets: targets, handler: handler, opts: opts,
		work: make(chan amqp.Delivery), stop: make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// Start declares and binds the listener's queues and starts consuming.
func (l *NotificationListener) Start(ctx context.Context) error {
	l.mu.Lock()
	if l.started {
		l.mu.Unlock()
		return errors.New("rpc: listener already started")
	}
	l.started = true
	l.mu.Unlock()
	for i := 0; i < l.opts.Workers; i++ {
		l.workers.Add(1)
		go l.worker()
	}
	setup := func(ch *amqp.Channel) ([]<-chan amqp.Delivery, error) {
		if err := ch.Qos(l.opts.Prefetch, 0, false); err != nil {
			return nil, fmt.Errorf("set prefetch: %w", err)
		}
		consumed := map[string]bool{}
		var streams []<-chan amqp.Delivery
		for _, target := range l.targets {
			exchange := l.transport.exchangeFor(target)
			if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
				return nil, fmt.Errorf("declare exchange %q: %w", exchange, err)
			}
			for _, p := range l.opts.Priorities {
				key := target.Topic + "." + string(p)
				queue := key
				if l.opts.Pool != "" {
					queue = l.opts.Pool
				}
				if _, err := ch.QueueDeclare(queue, false, false, false, false, nil); err != nil {
					return nil, fmt.Errorf("declare queue %q: %w", queue, err)
				}
				if err := ch.QueueBind(queue, key, exchange, false, nil); err != nil {
					return nil, fmt.Errorf("bind queue %q to %q: %w", queue, exchange, err)
				}
				if consumed[queue] {
					continue
				}
				consumed[queue] = true
				stream, err := ch.Consume(queue, "", false, false, false, false, nil)
				if err != nil {
					return nil, fmt.Errorf("consume queue %q: %w", queue, err)
				}
				streams = append(streams, stream)
			}
		}
		return streams, nil
	}
	ready := make(chan error, 1)
	l.transport.consumers.Add(1)
	go func() {
		defer close(l.done)
		l.transport.runConsumer("notification listener", l.stop, setup, l.receive, ready)
		close(l.work)
	}()
	select {
	case err := <-ready:
		if err != nil {
			l.Stop()
			return fmt.Errorf("start notification listener: %w", err)
		}
		return nil
	case <-ctx.Done():
		l.Stop()
		return fmt.Errorf("start notification listener: %w", ctx.Err())
	}
}

// Stop stops consuming and waits for running handlers. Notifications
// received but not yet handled are requeued by the broker.
func (l *NotificationListener) Stop() {
	l.mu.Lock()
	if !l.started || l.stopped {
		l.mu.Unlock()
		return
	}
	l.stopped = true
	close(l.stop)
	l.mu.Unlock()
	<-l.done
	l.workers.Wait()
}

func (l *NotificationListener) receive(d amqp.Delivery) {
	select {
	case l.work <- d:
	case <-l.stop:
		// Unacked: the broker redelivers it when the channel closes.
	}
}

func (l *NotificationListener) worker() {
	defer l.workers.Done()
	for d := range l.work {
		l.handle(d)
	}
}

func (l *NotificationListener) handle(d amqp.Delivery) {
	log := l.transport.log
	inner, err := decodeEnvelope(d.Body)
	if err != nil {
		log.Warn("rpc: dropping undecodable notification", "err", err)
		_ = d.Ack(false)
		return
	}
	uniqueID := stringField(inner, keyUniqueID)
	// As in oslo, only notifications already acknowledged count as seen,
	// so a requeued one is handled again.
	if l.dups.seen(uniqueID) {
		log.Info("rpc: ignoring duplicate notification", "unique_id", uniqueID)
		_ = d.Ack(false)
		return
	}
	n := &Notification{
		MessageID:   stringField(inner, "message_id"),
		PublisherID: stringField(inner, "publisher_id"),
		EventType:   stringField(inner, "event_type"),
		Priority:    Priority(strings.ToLower(stringField(inner, "priority"))),
		Payload:     inner["payload"],
		Timestamp:   stringField(inner, "timestamp"),
	}
	if len(n.Payload) == 0 {
		n.Payload = json.RawMessage("null")
	}
	n.Context = splitContext(inner)
	ctx := WithContextValues(context.Background(), n.Context)
	handlerErr := l.callHandler(ctx, n)
	if handlerErr != nil && l.opts.AllowRequeue {
		if err := d.Reject(true); err != nil {
			log.Warn("rpc: requeue notification failed", "err", err)
		}
		return
	}
	if handlerErr != nil {
		log.Warn("rpc: notification handler failed", "event_type", n.EventType, "err", handlerErr)
	}
	if err := d.Ack(false); err != nil {
		log.Warn("rpc: ack notification failed", "err", err)
		return
	}
	l.dups.add(uniqueID)
}

func (l *NotificationListener) callHandler(ctx context.Context, n *Notification) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("notification handler panicked: %v", p)
		}
	}()
	return l.handler(ctx, n)
}
