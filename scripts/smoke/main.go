// Command smoke is the AMQP client of scripts/docker-smoke.sh. Each run is one step against one
// node through the real amqp091-go client (declare a durable queue, publish one persistent
// message and wait for its confirm, or consume one message and check it), so the shell script
// can put cluster faults (a killed or restarted container) between the steps. It owns only its
// own connection, closed before it exits.
//
//	smoke declare -url URL -queue Q
//	smoke publish -url URL -queue Q -body B
//	smoke consume -url URL -queue Q -body B
//
// With an amqps URL, -ca FILE is the CA the node's certificate must chain to, and -cert/-key
// (a client certificate of that CA) log in with SASL EXTERNAL instead of the URL's password.
//
// Steps are retried until -wait passes only where a retry cannot duplicate a message: failing to
// connect or declare (a node still starting, a Raft election under way), a queue this node does
// not know yet (its Raft replica lags the node that declared it; the publish comes back
// unroutable), or a connection lost before the message was delivered.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = "usage: smoke declare|publish|consume -url URL -queue Q [-body B] [-wait DURATION] [-ca FILE [-cert FILE -key FILE]]"

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return 2
	}
	cmd := args[0]
	fs := flag.NewFlagSet("smoke "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "amqp://guest:guest@127.0.0.1:5672/", "AMQP URL of the node to talk to")
	queue := fs.String("queue", "", "queue name")
	body := fs.String("body", "", "body to publish, or the body the consumed message must have")
	wait := fs.Duration("wait", 30*time.Second, "give up on the step after this long")
	caFile := fs.String("ca", "", "PEM CA that signed the node's certificate (amqps URLs)")
	certFile := fs.String("cert", "", "PEM client certificate: log in with EXTERNAL as its CN")
	keyFile := fs.String("key", "", "PEM key of -cert")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "smoke %s: unexpected argument %q\n%s\n", cmd, fs.Arg(0), usage)
		return 2
	}
	uri, err := amqp.ParseURI(*url)
	if err != nil {
		fmt.Fprintf(stderr, "smoke %s: bad -url: %v\n", cmd, err)
		return 2
	}
	switch {
	case *queue == "":
		fmt.Fprintf(stderr, "smoke %s: -queue is required\n", cmd)
		return 2
	case *body == "" && cmd != "declare":
		fmt.Fprintf(stderr, "smoke %s: -body is required\n", cmd)
		return 2
	case *wait <= 0:
		fmt.Fprintf(stderr, "smoke %s: -wait must be positive\n", cmd)
		return 2
	}
	tlsCfg, sasl, err := tlsSettings(*caFile, *certFile, *keyFile)
	if err != nil {
		fmt.Fprintf(stderr, "smoke %s: %v\n", cmd, err)
		return 2
	}
	s := step{
		tls: tlsCfg, sasl: sasl,
		url: *url, node: fmt.Sprintf("%s:%d", uri.Host, uri.Port), queue: *queue, body: *body,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	switch cmd {
	case "declare":
		err = s.retry(ctx, "declare", s.declare)
	case "publish":
		err = s.retry(ctx, "publish", func() error { return s.publish(ctx) })
	case "consume":
		err = s.retry(ctx, "consume", func() error { return s.consume(ctx) })
	default:
		fmt.Fprintf(stderr, "smoke: unknown step %q\n%s\n", cmd, usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "smoke %s: queue %q on %s: %v\n", cmd, *queue, s.node, err)
		return 1
	}
	fmt.Fprintf(stdout, "smoke %s: queue %q on %s: ok\n", cmd, *queue, s.node)
	return 0
}

type step struct {
	url, node, queue, body string
	log                    *slog.Logger
	tls                    *tls.Config           // nil: the URL's scheme decides
	sasl                   []amqp.Authentication // nil: the URL's user and password
}

// final marks an error that a retry could turn into a duplicate or hide: the step fails at once.
type final struct{ err error }

func (f final) Error() string { return f.err.Error() }
func (f final) Unwrap() error { return f.err }

func (s step) retry(ctx context.Context, what string, f func() error) error {
	start := time.Now()
	last := ""
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		var fe final
		if errors.As(err, &fe) {
			return fe.err
		}
		// Once per distinct error: a node that is down for 20s would otherwise fill the log.
		if err.Error() != last {
			last = err.Error()
			s.log.Info("smoke: step failed, retrying", "step", what, "node", s.node, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gave up after %s and %d attempts: %w", time.Since(start).Round(time.Millisecond), attempt, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// open connects with a short dial and handshake timeout: a frozen node accepts the TCP
// connection (through docker's port forwarding) but never answers.
func (s step) open() (*amqp.Connection, *amqp.Channel, error) {
	conn, err := amqp.DialConfig(s.url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second), TLSClientConfig: s.tls, SASL: s.sasl})
	if err != nil {
		return nil, nil, fmt.Errorf("connect: %w", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	return conn, ch, nil
}

func (s step) declare() error {
	conn, ch, err := s.open()
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := ch.QueueDeclare(s.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("queue.declare: %w", err)
	}
	return nil
}

func (s step) publish(ctx context.Context) error {
	conn, ch, err := s.open()
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := ch.Confirm(false); err != nil {
		return fmt.Errorf("confirm.select: %w", err)
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", s.queue, true, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, ContentType: "text/plain", Body: []byte(s.body),
	})
	if err != nil {
		return final{fmt.Errorf("basic.publish: %w", err)}
	}
	acked, err := dc.WaitContext(ctx)
	if err != nil {
		// The broker may or may not hold the message: publishing again could duplicate it.
		return final{fmt.Errorf("waiting for the confirm: %w", err)}
	}
	if !acked {
		return final{errors.New("the broker nacked the message")}
	}
	// The client library hands a basic.return over before it reads the ack that follows it.
	select {
	case r := <-returns:
		return fmt.Errorf("returned unroutable (%d %s): this node does not know the queue yet", r.ReplyCode, r.ReplyText)
	default:
	}
	return nil
}

func (s step) consume(ctx context.Context) error {
	conn, ch, err := s.open()
	if err != nil {
		return err
	}
	defer conn.Close()
	// Passive: a node whose replica has not applied the declare yet must not create the queue.
	if _, err := ch.QueueDeclarePassive(s.queue, true, false, false, false, nil); err != nil {
		return fmt.Errorf("queue.declare passive: %w", err)
	}
	if err := ch.Qos(1, 0, false); err != nil {
		return fmt.Errorf("basic.qos: %w", err)
	}
	deliveries, err := ch.Consume(s.queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("basic.consume: %w", err)
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	select {
	case <-ctx.Done():
		return final{fmt.Errorf("no message within the deadline: %w", ctx.Err())}
	case e := <-closed:
		return fmt.Errorf("connection closed while waiting for the message: %v", e)
	case d, ok := <-deliveries:
		if !ok {
			return errors.New("the broker cancelled the consumer before a message arrived")
		}
		if string(d.Body) != s.body {
			_ = d.Nack(false, true)
			return final{fmt.Errorf("got message %q, want %q", d.Body, s.body)}
		}
		if d.DeliveryMode != amqp.Persistent {
			return final{fmt.Errorf("message %q arrived with delivery mode %d, want %d (persistent)", d.Body, d.DeliveryMode, amqp.Persistent)}
		}
		if err := d.Ack(false); err != nil {
			return final{fmt.Errorf("basic.ack: %w", err)}
		}
		// channel.close waits for close-ok, which the broker sends after handling the ack.
		if err := ch.Close(); err != nil {
			return final{fmt.Errorf("closing the channel after the ack: %w", err)}
		}
		return nil
	}
}
