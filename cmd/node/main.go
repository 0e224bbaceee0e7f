// Command node runs a Warren node and talks to running ones. `node` or `node run` starts a
// node; `node rpc ...` pokes a live message bus with oslo.messaging-style calls.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/warrenmq/warren/node"
	"github.com/warrenmq/warren/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "run":
		return runNode(args, stderr)
	case "rpc":
		return runRPC(args, stdout, stderr)
	case "status":
		return runStatus(args, stdout, stderr)
	case "forget":
		return runForget(args, stdout, stderr)
	case "leave":
		return runLeave(args, stdout, stderr)
	case "join":
		return runJoin(args, stdout, stderr)
	case "rebalance":
		return runRebalance(args, stdout, stderr)
	case "user":
		return runUser(args, stdout, stderr)
	case "vhost":
		return runVhost(args, stdout, stderr)
	case "permissions":
		return runPermissions(args, stdout, stderr)
	case "definitions":
		return runDefinitions(args, stdout, stderr)
	case "certs":
		return runCerts(args, stdout, stderr)
	case "help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "node: unknown command %q\n", cmd)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: node [run] [flags]       start a node (flags also from WARREN_<FLAG> env vars)
       node status [--http ADDR] [--json]   show the cluster as a node sees it
       node forget [--http ADDR] NODE-ID    remove a dead node for good (its queues re-homed, empty)
       node leave [--http ADDR]             hand this node's queues to the others, leave, exit
       node join [--http ADDR] GOSSIP-ADDR  make a new, empty node join the cluster at GOSSIP-ADDR
       node rebalance [--http ADDR]         spread queues (and their messages) evenly over live nodes
       node user add|delete|list|passwd|tags [--http ADDR] ...   manage users (administrator only)
       node vhost add|delete|list [--http ADDR] ...              manage vhosts
       node permissions set|clear|list [--http ADDR] [--vhost V] ... configure/write/read regexes
       node definitions export|import [--http ADDR] FILE         RabbitMQ's definitions JSON
       node certs [--dir DIR] [--nodes N1,N2] [--hosts H1,H2] [--clients USER,...]
                                            write a throw-away CA and node/client certificates (dev, tests)
       node rpc call|cast|notify|listen [flags]
`)
}

func envKey(name string) string {
	return "WARREN_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// envDefault reads WARREN_<NAME> (dashes become underscores) or returns def.
func envDefault(name, def string) string {
	if v, ok := os.LookupEnv(envKey(name)); ok {
		return v
	}
	return def
}

// durationEnv reads WARREN_<NAME> as a duration; a malformed value is reported by flag parsing
// only for the flag itself, so it is ignored here with a message.
func durationEnv(name string) time.Duration {
	v := envDefault(name, "")
	if v == "" {
		return 0
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: ignoring WARREN_%s=%q: %v\n", strings.ToUpper(strings.ReplaceAll(name, "-", "_")), v, err)
		return 0
	}
	return d
}

func durationEnvOr(name string, def time.Duration) time.Duration {
	if d := durationEnv(name); d > 0 {
		return d
	}
	return def
}

func intEnvOr(name string, def int) int {
	v := envDefault(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "node: ignoring WARREN_%s=%q: %v\n", strings.ToUpper(strings.ReplaceAll(name, "-", "_")), v, err)
		return def
	}
	return n
}

func splitList(s string) []string {
	out := []string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func runNode(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("node run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	str := func(name, def, help string) *string {
		return fs.String(name, envDefault(name, def), help+" (env WARREN_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+")")
	}
	id := str("id", host, "node id, unique in the cluster")
	dataDir := str("data-dir", "./data", "directory for Raft state and messages")
	amqpAddr := str("amqp-addr", "127.0.0.1:5672", "AMQP listen address")
	httpAddr := str("http-addr", "127.0.0.1:15672", "HTTP API listen address")
	raftAddr := str("raft-addr", "127.0.0.1:7000", "Raft listen address")
	gossipAddr := str("gossip-addr", "127.0.0.1:7946", "gossip (membership) listen address")
	forwardAddr := str("forward-addr", "127.0.0.1:0", "address serving topology writes forwarded by other nodes (port 0: any; announced by gossip)")
	dataAddr := str("data-addr", "127.0.0.1:0", "node-to-node data link address for publishes forwarded to queue owners (port 0: any; announced by gossip)")
	join := str("join", "", "comma-separated gossip addresses of running nodes to join (empty: start a cluster of its own)")
	secret := str("cluster-secret", "", "shared secret of the cluster: nodes without it cannot speak Raft, gossip, join, forward writes or open data links (empty: a random one, generated at first start and kept in the data dir; required with --join)")
	advertiseHost := str("advertise-host", "", "host or IP other nodes reach this one on, for addresses that listen on 0.0.0.0 (containers)")
	bootstrap := fs.Bool("bootstrap", envDefault("bootstrap", "") == "true", "start a new cluster if this node has no state, even with --join set (one node of a static deployment; env WARREN_BOOTSTRAP=true)")
	joinWait := fs.Duration("join-wait", durationEnvOr("join-wait", 60*time.Second), "how long a new node keeps dialling the --join seeds before it gives up (env WARREN_JOIN_WAIT)")
	reapAfter := fs.Duration("reap-after", durationEnv("reap-after"), "remove a node dead this long from Raft (0: never; env WARREN_REAP_AFTER)")
	logLevel := str("log-level", "info", "debug, info, warn or error")
	loopbackUsers := str("loopback-users", "guest", "comma-separated users allowed to log in only from loopback (empty: none)")
	defaultQueueType := str("default-queue-type", "classic", "classic or quorum: the type of durable, non-exclusive, non-auto-delete queues declared without x-queue-type")
	consumerMax := fs.Int("consumer-max-per-channel", intEnvOr("consumer-max-per-channel", 0), "most consumers per channel, as RabbitMQ's consumer_max_per_channel (0: no limit; env WARREN_CONSUMER_MAX_PER_CHANNEL)")
	bodyTimeout := fs.Duration("body-timeout", durationEnvOr("body-timeout", 60*time.Second), "close a channel whose message body made no progress this long (env WARREN_BODY_TIMEOUT)")
	clusterName := str("cluster-name", "warren", "cluster name sent to clients (connection.start cluster_name) and shown by the API; give every node the same")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file until shutdown (profiling the broker)")
	tf := addTLSFlags(fs, str)
	lf := addLimitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *defaultQueueType != "classic" && *defaultQueueType != "quorum" {
		fmt.Fprintf(stderr, "node: bad --default-queue-type %q: want classic or quorum\n", *defaultQueueType)
		return 2
	}
	if *consumerMax < 0 || *bodyTimeout <= 0 {
		fmt.Fprintf(stderr, "node: --consumer-max-per-channel must be >= 0, --body-timeout > 0\n")
		return 2
	}
	if err := lf.check(); err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return 2
	}
	if err := tf.settle(fs, amqpAddr, httpAddr); err != nil {
		fmt.Fprintf(stderr, "node: %v\n", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "node: bad --log-level %q: %v\n", *logLevel, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	slog.SetDefault(log)

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "node: --cpuprofile: %v\n", err)
			return 2
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "node: --cpuprofile: %v\n", err)
			return 2
		}
		defer func() { pprof.StopCPUProfile(); _ = f.Close() }()
	}
	n, err := node.Start(node.Config{
		ID: *id, DataDir: *dataDir, AMQPAddr: *amqpAddr, HTTPAddr: *httpAddr,
		RaftAddr: *raftAddr, GossipAddr: *gossipAddr, Logger: log,
		ForwardAddr: *forwardAddr, DataAddr: *dataAddr, Join: splitList(*join), ClusterSecret: *secret, ReapAfter: *reapAfter,
		AdvertiseHost: *advertiseHost, Bootstrap: *bootstrap, JoinWait: *joinWait,
		Server: server.Config{LoopbackUsers: splitList(*loopbackUsers),
			MaxConnections: *lf.maxConns, ChannelMax: uint16(*lf.channelMax), DiskFreeLimit: *lf.diskFree,
			MemoryHighWatermark: *lf.memHigh, ConsumerMaxPerChannel: *consumerMax, BodyTimeout: *bodyTimeout,
			DefaultQueueType: *defaultQueueType, ClusterName: *clusterName},
		AMQPSAddr: *tf.amqpsAddr, HTTPSAddr: *tf.httpsAddr, TLS: tf.files(), TLSOnly: *tf.only, ClusterTLS: tf.clusterFiles(),
	})
	if err != nil {
		log.Error("node failed to start", "err", err)
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
wait:
	select {
	case s := <-sig:
		if s == syscall.SIGHUP {
			// Certificates renewed on disk: new TLS handshakes use them, connections stay.
			switch err := n.ReloadTLS(); {
			case errors.Is(err, node.ErrNoTLS):
				log.Info("SIGHUP: no certificates to reload")
			case err != nil:
				log.Error("SIGHUP: certificates not reloaded; the previous ones stay in use", "err", err)
			}
			goto wait
		}
		log.Info("shutting down", "signal", s.String())
	case <-n.Done():
		log.Info("left the cluster; exiting")
		return 0
	}
	if err := n.Close(); err != nil {
		log.Warn("shutdown", "err", err)
	}
	return 0
}
