// Package rpccli implements `node rpc`, the operator's tool for poking a
// live oslo.messaging bus: make a call, send a cast, publish a
// notification, or print notifications as they arrive. It owns only the
// command-line surface; the work is done by package rpc.
//
// Exit codes: 0 success; 1 remote error or any other failure (broker
// unreachable, bad reply); 2 call timed out; 64 bad usage.
package rpccli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmq/warren/rpc"
)

// Exit codes scripts can rely on.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitTimeout = 2
	ExitUsage   = 64
)

const (
	defaultURL      = "amqp://guest:guest@127.0.0.1:5672/"
	defaultExchange = "openstack"
)

const usage = `usage: node rpc <command> [flags]

commands:
  call    --url U --topic T [--server S] --method M --args JSON [--timeout 30s]
  cast    --url U --topic T [--server S] [--fanout] --method M --args JSON
  notify  --url U --topic T --priority info --event-type E --payload JSON [--publisher-id P]
  listen  --url U --topic T [--pool P]

common flags: --url (default ` + defaultURL + `), --exchange (default ` + defaultExchange + `)
`

// Main runs `node rpc` with args (what follows "rpc") and returns the exit
// code. listen runs until SIGINT or SIGTERM.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, stdout, stderr)
}

// run is Main with the context that ends `listen`.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return ExitUsage
	}
	switch args[0] {
	case "call":
		return runCall(ctx, args[1:], stdout, stderr)
	case "cast":
		return runCast(ctx, args[1:], stderr)
	case "notify":
		return runNotify(ctx, args[1:], stderr)
	case "listen":
		return runListen(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return ExitOK
	default:
		fmt.Fprintf(stderr, "node rpc: unknown command %q\n%s", args[0], usage)
		return ExitUsage
	}
}

// common holds the flags every command shares.
type common struct {
	url, exchange, topic string
	timeout              time.Duration
}

func newFlagSet(name string, stderr io.Writer, c *common, timeoutHelp string) *flag.FlagSet {
	fs := flag.NewFlagSet("node rpc "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", defaultURL, "broker URL; several hosts allowed: amqp://u:p@h1:5672,u:p@h2:5672/vhost")
	fs.StringVar(&c.exchange, "exchange", defaultExchange, "control exchange")
	fs.StringVar(&c.topic, "topic", "", "topic (required)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, timeoutHelp)
	return fs
}

// parse parses flags and checks the required ones; it returns an exit
// code when the command must stop.
func parse(fs *flag.FlagSet, args []string, stderr io.Writer, required map[string]*string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, false
		}
		return ExitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return ExitUsage, false
	}
	for name, value := range required {
		if strings.TrimSpace(*value) == "" {
			fmt.Fprintf(stderr, "%s: --%s is required\n", fs.Name(), name)
			return ExitUsage, false
		}
	}
	return 0, true
}

// parseJSON checks a flag holds valid JSON; wantObject also requires an
// object (RPC keyword arguments).
func parseJSON(flagName, text string, wantObject bool) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		return nil, fmt.Errorf("--%s is not valid JSON: %w", flagName, err)
	}
	if _, isObject := v.(map[string]any); wantObject && !isObject {
		return nil, fmt.Errorf("--%s must be a JSON object of keyword arguments", flagName)
	}
	return json.RawMessage(text), nil
}

func openTransport(c common, stderr io.Writer) (*rpc.Transport, error) {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return rpc.NewTransport(c.url, rpc.TransportOptions{ControlExchange: c.exchange, Logger: logger})
}

func runCall(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c common
	var server, method, argsJSON string
	fs := newFlagSet("call", stderr, &c, "how long to wait for the reply")
	fs.StringVar(&server, "server", "", "send to this server of the topic only")
	fs.StringVar(&method, "method", "", "method name (required)")
	fs.StringVar(&argsJSON, "args", "{}", "keyword arguments as a JSON object")
	if code, ok := parse(fs, args, stderr, map[string]*string{"topic": &c.topic, "method": &method}); !ok {
		return code
	}
	callArgs, err := parseJSON("args", argsJSON, true)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc call: %v\n", err)
		return ExitUsage
	}
	tr, err := openTransport(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc call: %v\n", err)
		return ExitUsage
	}
	defer tr.Close()
	client := rpc.NewClient(tr, rpc.Target{Topic: c.topic, Server: server})
	client.Timeout = c.timeout
	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	result, err := client.CallRaw(callCtx, method, callArgs)
	var remote *rpc.RemoteError
	switch {
	case errors.As(err, &remote):
		fmt.Fprintf(stderr, "remote error: %s: %s\n", remote.Class, remote.Message)
		return ExitFailure
	case errors.Is(err, rpc.ErrTimeout):
		fmt.Fprintf(stderr, "timeout: no reply to %s on topic %q within %v\n", method, c.topic, c.timeout)
		return ExitTimeout
	case err != nil:
		fmt.Fprintf(stderr, "node rpc call: %v\n", err)
		return ExitFailure
	}
	var out bytes.Buffer
	if err := json.Compact(&out, result); err != nil {
		fmt.Fprintf(stderr, "node rpc call: reply is not valid JSON: %v\n", err)
		return ExitFailure
	}
	fmt.Fprintln(stdout, out.String())
	return ExitOK
}

func runCast(ctx context.Context, args []string, stderr io.Writer) int {
	var c common
	var server, method, argsJSON string
	var fanout bool
	fs := newFlagSet("cast", stderr, &c, "how long to wait for the broker to accept the cast")
	fs.StringVar(&server, "server", "", "send to this server of the topic only")
	fs.BoolVar(&fanout, "fanout", false, "send to every server of the topic")
	fs.StringVar(&method, "method", "", "method name (required)")
	fs.StringVar(&argsJSON, "args", "{}", "keyword arguments as a JSON object")
	if code, ok := parse(fs, args, stderr, map[string]*string{"topic": &c.topic, "method": &method}); !ok {
		return code
	}
	castArgs, err := parseJSON("args", argsJSON, true)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc cast: %v\n", err)
		return ExitUsage
	}
	tr, err := openTransport(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc cast: %v\n", err)
		return ExitUsage
	}
	defer tr.Close()
	castCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	client := rpc.NewClient(tr, rpc.Target{Topic: c.topic, Server: server, Fanout: fanout})
	if err := client.Cast(castCtx, method, castArgs); err != nil {
		fmt.Fprintf(stderr, "node rpc cast: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func runNotify(ctx context.Context, args []string, stderr io.Writer) int {
	var c common
	var priority, eventType, payloadJSON, publisherID string
	fs := newFlagSet("notify", stderr, &c, "how long to wait for the broker to accept the notification")
	fs.StringVar(&priority, "priority", "info", "audit, debug, info, warn, error, critical or sample")
	fs.StringVar(&eventType, "event-type", "", "event type, e.g. compute.instance.create.end (required)")
	fs.StringVar(&payloadJSON, "payload", "{}", "payload as JSON")
	fs.StringVar(&publisherID, "publisher-id", "warren.cli", "publisher id")
	if code, ok := parse(fs, args, stderr, map[string]*string{"topic": &c.topic, "event-type": &eventType}); !ok {
		return code
	}
	p, err := rpc.ParsePriority(priority)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc notify: %v\n", err)
		return ExitUsage
	}
	payload, err := parseJSON("payload", payloadJSON, false)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc notify: %v\n", err)
		return ExitUsage
	}
	tr, err := openTransport(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc notify: %v\n", err)
		return ExitUsage
	}
	defer tr.Close()
	notifyCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := rpc.NewNotifier(tr, publisherID, c.topic).Notify(notifyCtx, p, eventType, payload); err != nil {
		fmt.Fprintf(stderr, "node rpc notify: %v\n", err)
		return ExitFailure
	}
	return ExitOK
}

func runListen(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c common
	var pool string
	fs := newFlagSet("listen", stderr, &c, "how long to wait for the broker when starting")
	fs.StringVar(&pool, "pool", "", "listener pool: listeners of one pool share the notifications")
	if code, ok := parse(fs, args, stderr, map[string]*string{"topic": &c.topic}); !ok {
		return code
	}
	tr, err := openTransport(c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "node rpc listen: %v\n", err)
		return ExitUsage
	}
	defer tr.Close()
	lines := make(chan []byte, 64)
	handler := func(_ context.Context, n *rpc.Notification) error {
		line, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("encode notification: %w", err)
		}
		select {
		case lines <- line:
			return nil
		case <-ctx.Done():
			// Not printed: requeue it for the next listener.
			return ctx.Err()
		}
	}
	listener, err := rpc.NewNotificationListener(tr, []rpc.Target{{Topic: c.topic}}, handler, rpc.ListenerOptions{Pool: pool, AllowRequeue: true})
	if err != nil {
		fmt.Fprintf(stderr, "node rpc listen: %v\n", err)
		return ExitUsage
	}
	startCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := listener.Start(startCtx); err != nil {
		fmt.Fprintf(stderr, "node rpc listen: %v\n", err)
		return ExitFailure
	}
	defer listener.Stop()
	for {
		select {
		case line := <-lines:
			if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
				return ExitFailure
			}
		case <-ctx.Done():
			return ExitOK
		}
	}
}
