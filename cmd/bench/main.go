// Command bench owns Warren's comparative benchmark: it runs one amqp091-go workload against one
// broker URL and prints one JSON line with the measured figures, so that scripts/bench.sh can run
// the same workload against RabbitMQ and Warren in one go and report Warren/RabbitMQ ratios. The
// machine the benchmark runs on is shared and noisy, so figures are only meaningful as ratios
// between two brokers measured in the same run; nothing here asserts a speed.
//
// With -table it instead reads the JSON lines of a run and prints them as Markdown tables.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// config is everything a workload may read from the command line.
type config struct {
	tlsCA         string // -tls-ca: trust for amqps:// brokers
	url           string
	label         string
	workload      string
	duration      time.Duration
	messageSize   int
	brokerPID     int
	prefetch      int
	publisherLead int
	confirmWindow int
	declareURL    string
	consumeURL    string
	fillCount     int
	fillQueue     string
	rpcCallers    int
	fanoutQueues  int
	ackDelay      time.Duration
	idleConns     int
	emptyQueues   int
	declarers     int
	settle        time.Duration
	// queueType, when set, is sent as x-queue-type on the durable queues of the persistent
	// workloads, fill and failover ("quorum" benchmarks replicated queues).
	queueType string
	// killCmd, killAfter and failoverTimeout drive the failover workload (failover.go).
	// afterDeclare is a pause between declaring a flow's queues and starting its clients.
	afterDeclare    time.Duration
	killCmd         string
	killAfter       time.Duration
	failoverTimeout time.Duration
	// teardownSlack bounds setup and cleanup on top of the measured duration, so a broker that
	// stops answering cannot hang a whole benchmark run.
	teardownSlack time.Duration
}

// workloadFunc runs one workload and fills in its figures; the caller adds the common fields.
type workloadFunc func(ctx context.Context, cfg config, run *runNames, rss *rssSampler) (result, error)

var workloads = map[string]workloadFunc{
	"1p1c":          runOnePublisherOneConsumer,
	"1p1c-confirm":  runOnePublisherOneConsumerConfirm,
	"persistent":    runPersistent,
	"persistent-4p": runPersistent4,
	"fill":          runFill,
	"rpc":           runRPC,
	"fanout":        runFanout,
	"declare":       runDeclare,
	"slow-consumer": runSlowConsumer,
	"idle-conns":    runIdleConnections,
	"empty-queues":  runEmptyQueues,
	"failover":      runFailover,
}

// workloadNames lists the workloads in a stable order for usage text.
func workloadNames() []string {
	names := make([]string, 0, len(workloads))
	for name := range workloads {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, so tests can drive the whole command.
func run(args []string, stdout, stderr io.Writer) int {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	slog.SetDefault(logger)

	cfg, tablePath, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if tablePath != "" {
		if err := printTablesFromFile(tablePath, stdout); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 1
		}
		return 0
	}

	if cfg.tlsCA != "" {
		if err := loadClientTLS(cfg.tlsCA); err != nil {
			fmt.Fprintf(stderr, "bench: %v\n", err)
			return 2
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res := runWorkload(ctx, cfg)
	line, err := json.Marshal(res)
	if err != nil {
		fmt.Fprintf(stderr, "bench: encoding result: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(line))
	if res.Error != "" {
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (config, string, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg config
	var tablePath string
	fs.StringVar(&cfg.url, "url", "amqp://guest:guest@127.0.0.1:5672/", "AMQP URL of the broker under test")
	fs.StringVar(&cfg.declareURL, "owner-url", "", "flow workloads: declare the queues through this node, so it owns them (default -url)")
	fs.StringVar(&cfg.consumeURL, "consumer-url", "", "flow workloads: consumers connect here (default -url); the publisher uses -url")
	fs.StringVar(&cfg.label, "label", "", "broker label copied into the result (scripts/bench.sh uses rabbitmq / warren)")
	fs.StringVar(&cfg.workload, "workload", "", fmt.Sprintf("workload to run: %v", workloadNames()))
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "measured duration of time-based workloads")
	fs.IntVar(&cfg.messageSize, "size", 256, "message body size in bytes (at least 8: the body carries its send time)")
	fs.IntVar(&cfg.brokerPID, "pid", 0, "broker process id whose RSS is sampled from /proc (required by idle-conns and empty-queues)")
	fs.IntVar(&cfg.prefetch, "prefetch", 1000, "consumer prefetch (basic.qos) for 1p1c, 1p1c-confirm and fanout")
	fs.IntVar(&cfg.publisherLead, "lead", 1000, "most messages the publisher may be ahead of each consumer (1p1c, 1p1c-confirm, fanout)")
	fs.IntVar(&cfg.confirmWindow, "confirm-window", 256, "unconfirmed publishes in flight for 1p1c-confirm")
	fs.IntVar(&cfg.fillCount, "count", 1_000_000, "persistent messages published by fill")
	fs.IntVar(&cfg.declarers, "declarers", 1, "declare: concurrent clients, each on its own connection, declaring and binding in a loop")
	fs.StringVar(&cfg.fillQueue, "queue", "bench-fill", "durable queue fill publishes into (and leaves filled)")
	fs.IntVar(&cfg.rpcCallers, "callers", 8, "concurrent callers for rpc")
	fs.IntVar(&cfg.fanoutQueues, "fanout-queues", 8, "queues bound to the fanout exchange (one consumer each)")
	fs.DurationVar(&cfg.ackDelay, "ack-delay", time.Millisecond, "time the slow consumer spends on each message before acking")
	fs.IntVar(&cfg.idleConns, "conns", 1000, "connections opened by idle-conns")
	fs.IntVar(&cfg.emptyQueues, "queues", 10000, "queues declared by empty-queues")
	fs.DurationVar(&cfg.settle, "settle", 2*time.Second, "wait before reading RSS in idle-conns and empty-queues")
	fs.DurationVar(&cfg.teardownSlack, "slack", 5*time.Minute, "time allowed for setup and cleanup on top of -duration")
	fs.StringVar(&cfg.tlsCA, "tls-ca", "", "PEM CA that signed the broker's certificate, for amqps:// URLs")
	fs.StringVar(&cfg.queueType, "queue-type", "", "x-queue-type of the durable queues of persistent, persistent-4p, fill and failover (classic or quorum; default: the broker's default)")
	fs.DurationVar(&cfg.afterDeclare, "after-declare", 0, "persistent workloads, fill and failover: pause between declaring the queue and starting the clients (lets a replicated queue's followers finish their first sync)")
	fs.StringVar(&cfg.killCmd, "kill-cmd", "", "failover: shell command run with the queue name as its last argument; it kills the queue leader's node and prints 'killed UNIX_NANOS [WHAT]'")
	fs.DurationVar(&cfg.killAfter, "kill-after", 3*time.Second, "failover: publish this long before running -kill-cmd")
	fs.DurationVar(&cfg.failoverTimeout, "failover-timeout", 30*time.Second, "failover: longest wait for the first confirm after the kill")
	fs.StringVar(&tablePath, "table", "", "print Markdown tables from a file of result lines ('-' for stdin) instead of running a workload")
	if err := fs.Parse(args); err != nil {
		return config{}, "", err
	}
	if fs.NArg() > 0 {
		return config{}, "", fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if tablePath != "" {
		return cfg, tablePath, nil
	}
	if err := cfg.validate(); err != nil {
		return config{}, "", err
	}
	return cfg, "", nil
}

func (cfg config) validate() error {
	if _, ok := workloads[cfg.workload]; !ok {
		return fmt.Errorf("unknown -workload %q; want one of %v", cfg.workload, workloadNames())
	}
	if _, err := url.Parse(cfg.url); err != nil {
		return fmt.Errorf("bad -url: %w", err)
	}
	switch {
	case cfg.duration <= 0:
		return errors.New("-duration must be positive")
	case cfg.messageSize < timestampBytes:
		return fmt.Errorf("-size must be at least %d bytes", timestampBytes)
	case cfg.prefetch < 1 || cfg.prefetch > 65535:
		return errors.New("-prefetch must be in 1..65535")
	case cfg.publisherLead < 1:
		return errors.New("-lead must be positive")
	case cfg.confirmWindow < 1:
		return errors.New("-confirm-window must be positive")
	case cfg.rpcCallers < 1:
		return errors.New("-callers must be positive")
	case cfg.fanoutQueues < 1:
		return errors.New("-fanout-queues must be positive")
	case cfg.ackDelay < 0:
		return errors.New("-ack-delay must not be negative")
	case cfg.idleConns < 1:
		return errors.New("-conns must be positive")
	case cfg.emptyQueues < 1:
		return errors.New("-queues must be positive")
	case cfg.afterDeclare < 0:
		return errors.New("-after-declare must not be negative")
	case cfg.brokerPID < 0:
		return errors.New("-pid must not be negative")
	}
	switch cfg.queueType {
	case "", "classic", "quorum":
	default:
		return fmt.Errorf("-queue-type must be classic or quorum, got %q", cfg.queueType)
	}
	if cfg.workload == "failover" {
		switch {
		case cfg.killCmd == "":
			return errors.New("workload failover needs -kill-cmd (the command that kills the queue leader's node)")
		case cfg.killAfter <= 0 || cfg.failoverTimeout <= 0:
			return errors.New("-kill-after and -failover-timeout must be positive")
		}
	}
	if (cfg.workload == "idle-conns" || cfg.workload == "empty-queues") && cfg.brokerPID == 0 {
		return fmt.Errorf("workload %s measures broker memory and needs -pid", cfg.workload)
	}
	return nil
}

func (cfg config) ownerURL() string {
	if cfg.declareURL != "" {
		return cfg.declareURL
	}
	return cfg.url
}

// queueArgs are the declare arguments of the durable queues -queue-type applies to.
func (cfg config) queueArgs() amqp.Table {
	if cfg.queueType == "" {
		return nil
	}
	return amqp.Table{"x-queue-type": cfg.queueType}
}

func (cfg config) consumerURL() string {
	if cfg.consumeURL != "" {
		return cfg.consumeURL
	}
	return cfg.url
}

// runWorkload runs the chosen workload under an overall deadline and always returns a result,
// with Error set when the workload failed.
func runWorkload(ctx context.Context, cfg config) result {
	return runWorkloadNamed(ctx, cfg, newRunNames(cfg.workload))
}

// runWorkloadNamed is runWorkload with the run's name generator supplied, so tests can check
// afterwards that nothing the run created is left on the broker.
func runWorkloadNamed(ctx context.Context, cfg config, names *runNames) result {
	res := result{
		Workload:    cfg.workload,
		Broker:      cfg.label,
		BrokerURL:   redactURL(cfg.url),
		DurationSec: round(cfg.duration.Seconds(), 3),
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.duration+cfg.teardownSlack)
	defer cancel()

	var rss *rssSampler
	if cfg.brokerPID > 0 {
		var err error
		rss, err = startRSSSampler(cfg.brokerPID, rssSampleInterval)
		if err != nil {
			res.Error = err.Error()
			return res
		}
		defer rss.finish()
	}

	slog.Info("workload starting", "workload", cfg.workload, "broker", res.BrokerURL, "run", names.prefix)
	measured, err := workloads[cfg.workload](ctx, cfg, names, rss)
	measured.Workload, measured.Broker, measured.BrokerURL = res.Workload, res.Broker, res.BrokerURL
	if measured.DurationSec == 0 {
		measured.DurationSec = res.DurationSec
	}
	if rss != nil {
		measured.addRSS(rss.finish())
	}
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		slog.Error("workload failed", "workload", cfg.workload, "err", err)
		return withheld(measured, err)
	}
	return measured
}

// withheld is the result of a failed or partial run: its identity and the error, with the
// counts it reached written into the error for diagnosis, and no figure at all, so that no
// rate, latency or memory figure of a run that did not complete can reach a table.
func withheld(measured result, err error) result {
	msg := err.Error()
	var reached []string
	for _, c := range []struct {
		name string
		v    *int64
	}{{"published", measured.Published}, {"delivered", measured.Delivered}, {"nacked", measured.Nacked}} {
		if c.v != nil {
			reached = append(reached, fmt.Sprintf("%s=%d", c.name, *c.v))
		}
	}
	if len(reached) > 0 {
		msg += " (reached " + strings.Join(reached, " ") + "; figures withheld)"
	}
	return result{Workload: measured.Workload, Broker: measured.Broker, BrokerURL: measured.BrokerURL,
		DurationSec: measured.DurationSec, SizeBytes: measured.SizeBytes, Note: measured.Note, Error: msg}
}

// redactURL hides the password so result files can be shared.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable url)"
	}
	return u.Redacted()
}
