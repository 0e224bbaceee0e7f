package rpc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Target says where a message goes, as oslo_messaging.Target does.
// Exchange defaults to the Transport's control exchange; Server picks one
// server of the topic; Fanout sends a cast to every server of the topic;
// Namespace and Version select the endpoint on the server.
type Target struct {
	Exchange  string
	Topic     string
	Server    string
	Fanout    bool
	Namespace string
	Version   string
}

// DefaultCallTimeout is oslo's rpc_response_timeout.
const DefaultCallTimeout = 60 * time.Second

// Client sends calls and casts to a Target. Its fields may be set after
// NewClient and before first use; copy the struct to vary them.
type Client struct {
	transport *Transport
	Target    Target
	// Timeout bounds a Call when ctx has no earlier deadline
	// (default DefaultCallTimeout). It also becomes the message expiration.
	Timeout time.Duration
	// CallMonitorTimeout, when set, asks the server for heartbeats every
	// half of it while the call runs (oslo's call_monitor_timeout): the call
	// fails early if the server stops answering, yet a long call that still
	// sends heartbeats may run up to Timeout.
	CallMonitorTimeout time.Duration
}

// NewClient returns a Client for target on t.
func NewClient(t *Transport, target Target) *Client {
	return &Client{transport: t, Target: target, Timeout: DefaultCallTimeout}
}

type contextValuesKey struct{}

// WithContextValues attaches request-context values to ctx. Call and Cast
// send them as oslo's `_context_<key>` fields; on a server, ContextValues
// returns those of the request being handled.
func WithContextValues(ctx context.Context, values map[string]any) context.Context {
	return context.WithValue(ctx, contextValuesKey{}, values)
}

// ContextValues returns the request-context values carried by ctx.
func ContextValues(ctx context.Context) map[string]any {
	values, _ := ctx.Value(contextValuesKey{}).(map[string]any)
	return values
}

// encodeArgs turns call arguments into the JSON object oslo sends as
// keyword arguments. nil means no arguments.
func encodeArgs(args any) (json.RawMessage, error) {
	if args == nil {
		return json.RawMessage("{}"), nil
	}
	raw, err := json.Marshal(args)
	if err != nil {
		return nil, fmt.Errorf("encode rpc args: %w", err)
	}
	trimmed := bytes.TrimSpace(raw)
	if string(trimmed) == "null" {
		return json.RawMessage("{}"), nil
	}
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("rpc args must encode to a JSON object (keyword arguments), got %.40s", trimmed)
	}
	return raw, nil
}

// buildRequest returns the inner message of a call or cast.
func (c *Client) buildRequest(ctx context.Context, method string, args any) (map[string]any, error) {
	if method == "" {
		return nil, errors.New("rpc: empty method name")
	}
	if c.Target.Topic == "" {
		return nil, errors.New("rpc: target has no topic")
	}
	rawArgs, err := encodeArgs(args)
	if err != nil {
		return nil, err
	}
	inner := map[string]any{"method": method, "args": rawArgs, keyUniqueID: newHexID()}
	if c.Target.Namespace != "" {
		inner["namespace"] = c.Target.Namespace
	}
	if c.Target.Version != "" {
		inner["version"] = c.Target.Version
	}
	packContext(inner, ContextValues(ctx))
	return inner, nil
}

// requestRoute returns the exchange declaration and routing key of a
// request, following oslo's topic_send and fanout_send.
func (c *Client) requestRoute() (declaration, string) {
	if c.Target.Fanout {
		return declaration{exchange: c.Target.Topic + "_fanout", kind: amqp.ExchangeFanout, autoDelete: true}, ""
	}
	key := c.Target.Topic
	if c.Target.Server != "" {
		key += "." + c.Target.Server
	}
	return declaration{exchange: c.transport.exchangeFor(c.Target), kind: amqp.ExchangeTopic}, key
}

func newPublishing(body []byte, expiration time.Duration) amqp.Publishing {
	p := amqp.Publishing{
		ContentType:     jsonContent,
		ContentEncoding: utf8Encoding,
		DeliveryMode:    persistentMode,
		Body:            body,
	}
	if expiration > 0 {
		p.Expiration = strconv.FormatInt(expiration.Milliseconds(), 10)
	}
	return p
}

// Cast sends method(args) without waiting for a result. With Target.Fanout
// every server of the topic receives it; otherwise one server does (or the
// named Target.Server). It returns once the broker confirmed the message.
func (c *Client) Cast(ctx context.Context, method string, args any) error {
	inner, err := c.buildRequest(ctx, method, args)
	if err != nil {
		return err
	}
	body, err := encodeEnvelope(inner)
	if err != nil {
		return err
	}
	d, key := c.requestRoute()
	if err := c.transport.publish(ctx, d, key, false, newPublishing(body, 0)); err != nil {
		return fmt.Errorf("rpc cast %s to %q: %w", method, c.Target.Topic, err)
	}
	return nil
}

// Call sends method(args) to one server and waits for its result, decoded
// from JSON with numbers kept as json.Number. A failure raised by the
// endpoint comes back as *RemoteError; no reply in time gives an error
// matching ErrTimeout. args must encode to a JSON object (or be nil).
func (c *Client) Call(ctx context.Context, method string, args any) (any, error) {
	raw, err := c.CallRaw(ctx, method, args)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var result any
	if err := dec.Decode(&result); err != nil {
		return nil, fmt.Errorf("rpc call %s: decode result: %w", method, err)
	}
	return result, nil
}

// CallInto is Call that decodes the result into out (a pointer).
func (c *Client) CallInto(ctx context.Context, method string, args any, out any) error {
	raw, err := c.CallRaw(ctx, method, args)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("rpc call %s: decode result: %w", method, err)
	}
	return nil
}

// CallRaw is Call returning the result's JSON as received ("null" when
// the endpoint returned nothing).
func (c *Client) CallRaw(ctx context.Context, method string, args any) (json.RawMessage, error) {
	if c.Target.Fanout {
		return nil, errors.New("rpc: call to a fanout target is not allowed")
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < timeout {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	inner, err := c.buildRequest(ctx, method, args)
	if err != nil {
		return nil, err
	}
	waiter, err := c.transport.replyWaiter(ctx)
	if err != nil {
		return nil, fmt.Errorf("rpc call %s: %w", method, err)
	}
	msgID := newHexID()
	inner[keyMsgID] = msgID
	inner[keyReplyQueue] = waiter.queue
	if c.CallMonitorTimeout > 0 {
		inner[keyTimeout] = int(c.CallMonitorTimeout.Seconds())
	} else {
		inner[keyTimeout] = nil
	}
	body, err := encodeEnvelope(inner)
	if err != nil {
		return nil, err
	}
	replies := waiter.listen(msgID)
	defer waiter.unlisten(msgID)

	callCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	timeoutErr := &TimeoutError{Topic: c.Target.Topic, Method: method, MsgID: msgID}
	d, key := c.requestRoute()
	if err := c.transport.publish(callCtx, d, key, false, newPublishing(body, timeout)); err != nil {
		if callCtx.Err() != nil && !errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("rpc call %s: %w", method, timeoutErr)
		}
		return nil, fmt.Errorf("rpc call %s to %q: %w", method, c.Target.Topic, err)
	}
	var monitor <-chan time.Time
	var monitorTimer *time.Timer
	if c.CallMonitorTimeout > 0 {
		monitorTimer = time.NewTimer(c.CallMonitorTimeout)
		defer monitorTimer.Stop()
		monitor = monitorTimer.C
	}
	for {
		select {
		case r := <-replies:
			if r.failure != nil {
				return nil, r.failure
			}
			if !r.ending {
				// A call-monitor heartbeat: the server is still working.
				if monitorTimer != nil {
					monitorTimer.Reset(c.CallMonitorTimeout)
				}
				continue
			}
			return r.result, nil
		case <-monitor:
			return nil, timeoutErr
		case <-callCtx.Done():
			// A deadline, ours or the caller's, is a timeout; a cancelled
			// ctx is the caller giving up.
			if errors.Is(ctx.Err(), context.Canceled) {
				return nil, fmt.Errorf("rpc call %s: %w", method, ctx.Err())
			}
			return nil, timeoutErr
		}
	}
}

// reply is one decoded reply message.
type reply struct {
	result  json.RawMessage
	failure *RemoteError
	ending  bool
}

// replyWaiter consumes the Transport's reply queue and routes replies to
// the waiting calls by _msg_id, as oslo's ReplyWaiter does.
type replyWaiter struct {
	queue   string
	log     *slog.Logger
	mu      sync.Mutex
	waiting map[string]chan reply
	dups    recentIDs
}

// replyWaiter returns the Transport's reply consumer, starting it on first
// use (oslo also creates its reply queue on the first call).
func (t *Transport) replyWaiter(ctx context.Context) (*replyWaiter, error) {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	if w := t.replies; w != nil {
		t.mu.Unlock()
		return w, nil
	}
	t.mu.Unlock()

	// Several first callers may race here; the loser's consumer is stopped.
	w := &replyWaiter{queue: "reply_" + newHexID(), log: t.log, waiting: map[string]chan reply{}}
	stop := make(chan struct{})
	ready := make(chan error, 1)
	setup := func(ch *amqp.Channel) ([]<-chan amqp.Delivery, error) {
		args := amqp.Table{"x-expires": transientQueueTTL}
		if _, err := ch.QueueDeclare(w.queue, false, false, false, false, args); err != nil {
			return nil, fmt.Errorf("declare reply queue %s: %w", w.queue, err)
		}
		stream, err := ch.Consume(w.queue, "", false, false, false, false, nil)
		if err != nil {
			return nil, fmt.Errorf("consume reply queue %s: %w", w.queue, err)
		}
		return []<-chan amqp.Delivery{stream}, nil
	}
	t.consumers.Add(1)
	go t.runConsumer("reply "+w.queue, stop, setup, w.handle, ready)
	select {
	case err := <-ready:
		if err != nil {
			close(stop)
			return nil, fmt.Errorf("start reply consumer: %w", err)
		}
	case <-ctx.Done():
		close(stop)
		return nil, fmt.Errorf("start reply consumer: %w", ctx.Err())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.replies != nil {
		close(stop)
		return t.replies, nil
	}
	t.replies = w
	return w, nil
}

func (w *replyWaiter) listen(msgID string) <-chan reply {
	ch := make(chan reply, 8)
	w.mu.Lock()
	w.waiting[msgID] = ch
	w.mu.Unlock()
	return ch
}

func (w *replyWaiter) unlisten(msgID string) {
	w.mu.Lock()
	delete(w.waiting, msgID)
	w.mu.Unlock()
}

func (w *replyWaiter) handle(d amqp.Delivery) {
	_ = d.Ack(false)
	inner, err := decodeEnvelope(d.Body)
	if err != nil {
		w.log.Debug("rpc: dropping undecodable reply", "err", err)
		return
	}
	if w.dups.checkAndAdd(stringField(inner, keyUniqueID)) {
		w.log.Debug("rpc: dropping duplicate reply", "unique_id", stringField(inner, keyUniqueID))
		return
	}
	msgID := stringField(inner, keyMsgID)
	r := reply{result: inner["result"], ending: true}
	if len(r.result) == 0 {
		r.result = json.RawMessage("null")
	}
	if raw, ok := inner["ending"]; ok {
		var ending bool
		if json.Unmarshal(raw, &ending) == nil {
			r.ending = ending
		}
	}
	if !isNull(inner["failure"]) {
		r.failure = decodeFailure(inner["failure"])
	}
	w.mu.Lock()
	ch := w.waiting[msgID]
	w.mu.Unlock()
	if ch == nil {
		// The caller gave up (timeout) or the reply belongs to nobody here.
		w.log.Debug("rpc: no caller waiting for reply", "msg_id", msgID)
		return
	}
	select {
	case ch <- r:
	default:
		w.log.Debug("rpc: reply buffer full, dropping", "msg_id", msgID)
	}
}
