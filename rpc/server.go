package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Handler serves one RPC method. args is the JSON object of keyword
// arguments the caller sent. The result is encoded to JSON for the caller;
// a returned error reaches the caller as a remote exception (return a
// *RemoteError to choose its class and module).
type Handler func(ctx context.Context, args json.RawMessage) (any, error)

// Endpoint is a set of methods served under one namespace and version, like
// an oslo endpoint object with its `target` attribute. An empty Version
// means oslo's default "1.0"; an empty Namespace is oslo's None.
type Endpoint struct {
	Namespace string
	Version   string
	Methods   map[string]Handler
}

var (
	contextType = reflect.TypeFor[context.Context]()
	errorType   = reflect.TypeFor[error]()
)

// NewEndpoint builds an Endpoint from the exported methods of receiver that
// look like
//
//	func (r *T) GetInstance(ctx context.Context, args A) (R, error)
//	func (r *T) Reboot(ctx context.Context, args A) error
//
// where A is anything encoding/json can decode the keyword-argument object
// into (usually a struct with json tags). Each method is served under its
// name in snake_case ("GetInstance" → "get_instance"), the naming Python
// callers use. Methods of other shapes are ignored.
func NewEndpoint(namespace, version string, receiver any) (*Endpoint, error) {
	v := reflect.ValueOf(receiver)
	if !v.IsValid() {
		return nil, errors.New("rpc: nil endpoint receiver")
	}
	ep := &Endpoint{Namespace: namespace, Version: version, Methods: map[string]Handler{}}
	for i := 0; i < v.NumMethod(); i++ {
		m := v.Type().Method(i)
		h, ok := reflectHandler(v.Method(i))
		if ok {
			ep.Methods[snakeCase(m.Name)] = h
		}
	}
	if len(ep.Methods) == 0 {
		return nil, fmt.Errorf("rpc: %T has no method of the form func(context.Context, Args) (Result, error)", receiver)
	}
	return ep, nil
}

func reflectHandler(fn reflect.Value) (Handler, bool) {
	ft := fn.Type()
	if ft.NumIn() != 2 || ft.In(0) != contextType {
		return nil, false
	}
	switch {
	case ft.NumOut() == 1 && ft.Out(0) == errorType:
	case ft.NumOut() == 2 && ft.Out(1) == errorType:
	default:
		return nil, false
	}
	argType := ft.In(1)
	return func(ctx context.Context, args json.RawMessage) (any, error) {
		argPtr := reflect.New(argType)
		if len(args) > 0 {
			if err := json.Unmarshal(args, argPtr.Interface()); err != nil {
				return nil, &RemoteError{Class: "TypeError", Module: "builtins", Message: fmt.Sprintf("bad arguments: %v", err)}
			}
		}
		out := fn.Call([]reflect.Value{reflect.ValueOf(ctx), argPtr.Elem()})
		errVal := out[len(out)-1]
		if !errVal.IsNil() {
			return nil, errVal.Interface().(error)
		}
		if len(out) == 2 {
			return out[0].Interface(), nil
		}
		return nil, nil
	}, true
}

// snakeCase turns a Go method name into Python style: "GetHTTPStatus" →
// "get_http_status".
func snakeCase(name string) string {
	runes := []rune(name)
	var b strings.Builder
	for i, r := range runes {
		if unicode.IsUpper(r) {
			prevLower := i > 0 && (unicode.IsLower(runes[i-1]) || unicode.IsDigit(runes[i-1]))
			nextLower := i+1 < len(runes) && unicode.IsLower(runes[i+1])
			if i > 0 && (prevLower || (nextLower && unicode.IsUpper(runes[i-1]))) {
				b.WriteByte('_')
			}
			b.WriteRune(unicode.ToLower(r))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ServerOptions tune a Server.
type ServerOptions struct {
	// Workers is how many requests run at once (default 16; oslo's
	// executor_thread_pool_size is 64).
	Workers int
	// Prefetch limits deliveries in flight per consumer channel; 0 means
	// unlimited, oslo's rabbit_qos_prefetch_count default. Requests are
	// acknowledged before dispatch, so it bounds little.
	Prefetch int
	// ReplyRetry is how long a reply is retried while the caller's reply
	// queue is missing (oslo's kombu_missing_consumer_retry_timeout, 60s).
	ReplyRetry time.Duration
}

// Server consumes a Target's queues and dispatches requests to endpoints:
// the shared topic queue (load-balanced between servers), the queue of its
// own server name and a private queue bound to the topic's fanout exchange.
type Server struct {
	transport *Transport
	target    Target
	endpoints []*Endpoint
	opts      ServerOptions

	dups    recentIDs
	work    chan amqp.Delivery
	stop    chan struct{}
	done    chan struct{}
	mu      sync.Mutex
	started bool
	stopped bool
	workers sync.WaitGroup
}

// NewServer returns a Server for target (Topic required; Server defaults to
// the host name, as oslo's `host` option does).
func NewServer(t *Transport, target Target, endpoints []*Endpoint, opts ServerOptions) (*Server, error) {
	if target.Topic == "" {
		return nil, errors.New("rpc: server target has no topic")
	}
	if len(endpoints) == 0 {
		return nil, errors.New("rpc: server has no endpoints")
	}
	if target.Server == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("rpc: server name from host name: %w", err)
		}
		target.Server = host
	}
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.ReplyRetry <= 0 {
		opts.ReplyRetry = 60 * time.Second
	}
	return &Server{
		transport: t, target: target, endpoints: endpoints, opts: opts,
		work: make(chan amqp.Delivery), stop: make(chan struct{}), done: make(chan struct{}),
	}, nil
}

// Start declares the server's exchanges and queues, starts consuming and
// returns once the broker accepted the consumers (or ctx ended).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return errors.New("rpc: server already started")
	}
	s.started = true
	s.mu.Unlock()

	for i := 0; i < s.opts.Workers; i++ {
		s.workers.Add(1)
		go s.worker()
	}
	exchange := s.transport.exchangeFor(s.target)
	fanoutExchange := s.target.Topic + "_fanout"
	fanoutQueue := s.target.Topic + "_fanout_" + newHexID()
	serverKey := s.target.Topic + "." + s.target.Server
	setup := func(ch *amqp.Channel) ([]<-chan amqp.Delivery, error) {
		if err := ch.Qos(s.opts.Prefetch, 0, false); err != nil {
			return nil, fmt.Errorf("set prefetch: %w", err)
		}
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
			return nil, fmt.Errorf("declare exchange %q: %w", exchange, err)
		}
		if err := ch.ExchangeDeclare(fanoutExchange, amqp.ExchangeFanout, false, true, false, false, nil); err != nil {
			return nil, fmt.Errorf("declare exchange %q: %w", fanoutExchange, err)
		}
		type queueSpec struct {
			name, key, exchange string
			args                amqp.Table
		}
		specs := []queueSpec{
			{s.target.Topic, s.target.Topic, exchange, nil},
			{serverKey, serverKey, exchange, nil},
			{fanoutQueue, s.target.Topic, fanoutExchange, amqp.Table{"x-expires": transientQueueTTL}},
		}
		var streams []<-chan amqp.Delivery
		for _, q := range specs {
			if _, err := ch.QueueDeclare(q.name, false, false, false, false, q.args); err != nil {
				return nil, fmt.Errorf("declare queue %q: %w", q.name, err)
			}
			if err := ch.QueueBind(q.name, q.key, q.exchange, false, nil); err != nil {
				return nil, fmt.Errorf("bind queue %q to %q: %w", q.name, q.exchange, err)
			}
			stream, err := ch.Consume(q.name, "", false, false, false, false, nil)
			if err != nil {
				return nil, fmt.Errorf("consume queue %q: %w", q.name, err)
			}
			streams = append(streams, stream)
		}
		return streams, nil
	}
	ready := make(chan error, 1)
	s.transport.consumers.Add(1)
	go func() {
		defer close(s.done)
		s.transport.runConsumer("server "+serverKey, s.stop, setup, s.receive, ready)
		// No reader is left to feed work: let the workers drain and exit,
		// which also happens when the Transport is closed under the server.
		close(s.work)
	}()
	select {
	case err := <-ready:
		if err != nil {
			s.Stop()
			return fmt.Errorf("start rpc server %s: %w", serverKey, err)
		}
		return nil
	case <-ctx.Done():
		s.Stop()
		return fmt.Errorf("start rpc server %s: %w", serverKey, ctx.Err())
	}
}

// Stop stops consuming, lets running requests finish and send their
// replies, and returns. It is safe to call more than once.
func (s *Server) Stop() {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	close(s.stop)
	s.mu.Unlock()
	<-s.done
	s.workers.Wait()
}

// receive acknowledges a request before dispatching it, as oslo does: a
// request is never run twice, and a server dying mid-call makes the caller
// time out rather than run the call again elsewhere.
func (s *Server) receive(d amqp.Delivery) {
	if err := d.Ack(false); err != nil {
		s.transport.log.Warn("rpc: discarding request, ack failed", "err", err)
		return
	}
	select {
	case s.work <- d:
	case <-s.stop:
		// Stopping: the request was acked; oslo loses it the same way.
	}
}

func (s *Server) worker() {
	defer s.workers.Done()
	for d := range s.work {
		s.handle(d)
	}
}

// request is a decoded RPC request.
type request struct {
	method, namespace, version string
	args                       json.RawMessage
	msgID, replyQueue          string
	monitorTimeout             time.Duration
	context                    map[string]any
}

func (s *Server) handle(d amqp.Delivery) {
	log := s.transport.log
	inner, err := decodeEnvelope(d.Body)
	if err != nil {
		log.Warn("rpc: dropping undecodable request", "err", err)
		return
	}
	if s.dups.checkAndAdd(stringField(inner, keyUniqueID)) {
		log.Info("rpc: ignoring duplicate request", "unique_id", stringField(inner, keyUniqueID))
		return
	}
	req := request{
		method:     stringField(inner, "method"),
		namespace:  stringField(inner, "namespace"),
		version:    stringField(inner, "version"),
		args:       inner["args"],
		msgID:      stringField(inner, keyMsgID),
		replyQueue: stringField(inner, keyReplyQueue),
	}
	if req.version == "" {
		req.version = "1.0"
	}
	if isNull(req.args) {
		req.args = json.RawMessage("{}")
	}
	var monitorSeconds float64
	if raw, ok := inner[keyTimeout]; ok && json.Unmarshal(raw, &monitorSeconds) == nil {
		req.monitorTimeout = time.Duration(monitorSeconds * float64(time.Second))
	}
	req.context = splitContext(inner)

	ctx := WithContextValues(context.Background(), req.context)
	stopHeartbeat := s.startHeartbeat(req)
	result, callErr := s.dispatch(ctx, req)
	stopHeartbeat()
	if req.msgID == "" || req.replyQueue == "" {
		if callErr != nil {
			log.Warn("rpc: cast failed", "method", req.method, "err", callErr)
		}
		return
	}
	s.reply(req, result, callErr, true)
}

// dispatch finds the endpoint for a request the way oslo's RPCDispatcher
// does: namespace must match and version be compatible; then the first
// endpoint having the method serves it.
func (s *Server) dispatch(ctx context.Context, req request) (result any, err error) {
	foundCompatible := false
	for _, ep := range s.endpoints {
		version := ep.Version
		if version == "" {
			version = "1.0"
		}
		if ep.Namespace != req.namespace || !versionCompatible(version, req.version) {
			continue
		}
		if h, ok := ep.Methods[req.method]; ok {
			defer func() {
				// A panicking handler must not take the server down.
				if p := recover(); p != nil {
					err = &RemoteError{Class: "RuntimeError", Module: "builtins", Message: fmt.Sprintf("panic in %s: %v", req.method, p)}
				}
			}()
			return h(ctx, req.args)
		}
		foundCompatible = true
	}
	if foundCompatible {
		msg := "Endpoint does not support RPC method " + req.method
		return nil, &RemoteError{Class: classNoSuchMethod, Module: dispatcherModule, Message: msg, Args: []any{msg}}
	}
	msg := fmt.Sprintf("Endpoint does not support RPC version %s. Attempted method: %s", req.version, req.method)
	return nil, &RemoteError{Class: classUnsupportedVersion, Module: dispatcherModule, Message: msg, Args: []any{msg}}
}

// startHeartbeat sends call-monitor heartbeats (replies with ending=false)
// every half of the caller's monitor timeout while the request runs, as
// oslo's dispatcher watchdog does. Intervals under a second are ignored,
// as in oslo.
func (s *Server) startHeartbeat(req request) (stop func()) {
	interval := req.monitorTimeout / 2
	if req.msgID == "" || interval < time.Second {
		return func() {}
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-quit:
				return
			case <-ticker.C:
				s.sendReply(req, nil, nil, false)
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// reply sends the final reply, retrying every 250ms while the caller's
// reply queue is missing (returned as unroutable), up to ReplyRetry.
func (s *Server) reply(req request, result any, callErr error, ending bool) {
	deadline := time.Now().Add(s.opts.ReplyRetry)
	for {
		err := s.sendReply(req, result, callErr, ending)
		if err == nil {
			return
		}
		if !errors.Is(err, errUnroutable) || time.Now().After(deadline) {
			s.transport.log.Warn("rpc: abandoning reply", "msg_id", req.msgID, "reply_q", req.replyQueue, "err", err)
			return
		}
		select {
		case <-time.After(250 * time.Millisecond):
		case <-s.transport.stopAll:
			return
		}
	}
}

func (s *Server) sendReply(req request, result any, callErr error, ending bool) error {
	msg := map[string]any{"result": result, "failure": nil, "ending": ending, keyMsgID: req.msgID, keyUniqueID: newHexID()}
	if callErr != nil {
		msg["result"] = nil
		msg["failure"] = encodeFailure(callErr)
	}
	body, err := encodeEnvelope(msg)
	if err != nil {
		// The result is not JSON-encodable: tell the caller instead.
		msg["result"] = nil
		msg["failure"] = encodeFailure(&RemoteError{Class: "TypeError", Module: "builtins", Message: err.Error()})
		if body, err = encodeEnvelope(msg); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go func() {
		select {
		case <-s.transport.stopAll:
			cancel()
		case <-ctx.Done():
		}
	}()
	return s.transport.publish(ctx, declaration{}, req.replyQueue, true, newPublishing(body, 0))
}
