// Command chaos runs Warren's chaos suite against a cluster that is already up (scripts/chaos.sh
// brings one up around it): publishers and consumers of classic and replicated queues, RPC
// callers and topology churn for --duration while a seeded nemesis kills, pauses, wipes (kill,
// delete the data, forget, a fresh node joins) and (with --docker) partitions nodes through
// the cluster script; then it heals the cluster, drains every queue and checks the history.
// The last line of stdout is the verdict line; the exit code is 0 only if the run passed,
// 1 if it found a failure, 2 if it could not run or was interrupted.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/warrenmq/warren/chaos"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	duration := fs.Int("duration", 60, "seconds of workload under faults")
	seed := fs.Uint64("seed", 1, "seed of the fault schedule and the workload's choices")
	docker := fs.Bool("docker", false, "the cluster runs in containers (scripts/docker-cluster.sh): partitions too")
	script := fs.String("script", "", "cluster script driven by the nemesis (default scripts/cluster.sh, or scripts/docker-cluster.sh with --docker)")
	nodes := fs.Int("nodes", 3, "number of nodes")
	host := fs.String("host", "127.0.0.1", "host the nodes' ports are published on")
	amqpPort := fs.Int("amqp-port", 5672, "AMQP port of node 1 (node i: +i-1)")
	httpPort := fs.Int("http-port", 15672, "HTTP API port of node 1 (node i: +i-1)")
	user := fs.String("user", "guest", "AMQP and HTTP API user")
	pass := fs.String("password", "guest", "AMQP and HTTP API password")
	quorumKill := fs.Float64("quorum-kill-availability", 0, "fail the run unless this share (0..1) of replicated-queue publishes sent during kills was confirmed (0: no such floor)")
	verbose := fs.Bool("verbose", false, "debug logs, including the rpc library's reconnects")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "chaos: unexpected arguments %q\n", fs.Args())
		return 2
	case *duration < 1:
		fmt.Fprintf(stderr, "chaos: --duration must be at least 1 second, got %d\n", *duration)
		return 2
	case *quorumKill < 0 || *quorumKill > 1:
		fmt.Fprintf(stderr, "chaos: --quorum-kill-availability must be a share between 0 and 1, got %g\n", *quorumKill)
		return 2
	case *nodes < 3:
		// One node down at a time must leave a Raft quorum.
		fmt.Fprintf(stderr, "chaos: --nodes must be at least 3, got %d\n", *nodes)
		return 2
	}
	if *script == "" {
		*script = "scripts/cluster.sh"
		if *docker {
			*script = "scripts/docker-cluster.sh"
		}
	}
	if _, err := os.Stat(*script); err != nil {
		fmt.Fprintf(stderr, "chaos: cluster script: %v\n", err)
		return 2
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	rpcLevel := slog.LevelError
	if *verbose {
		rpcLevel = slog.LevelDebug
	}
	rpcLog := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: rpcLevel}))

	nem := chaos.NewProcessNemesis(*script)
	mode := "processes"
	if *docker {
		nem = chaos.NewDockerNemesis(*script)
		mode = "containers"
	}
	cfg := chaos.Config{
		Cluster:  chaos.NewCluster(*host, *nodes, *amqpPort, *httpPort, *user, *pass),
		Nemesis:  nem,
		Duration: time.Duration(*duration) * time.Second,
		Seed:     *seed,
		Log:      log,
		RPCLog:   rpcLog,
	}
	if *quorumKill > 0 {
		p := chaos.DefaultPolicy()
		p.Floors = append(p.Floors, chaos.QuorumKillAvailability(*quorumKill))
		cfg.Policy = &p
	}
	schedule := chaos.Schedule(*seed, *nodes, nem.Kinds(), 3)
	log.Info("chaos run", "mode", mode, "script", *script, "duration", cfg.Duration, "seed", *seed, "first_faults", fmt.Sprint(schedule))
	rep, err := chaos.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "chaos: %v\n", err)
		return 2
	}
	for _, l := range rep.Timeline {
		fmt.Fprintln(stdout, l)
	}
	for _, l := range rep.Result.Summary() {
		fmt.Fprintln(stdout, l)
	}
	fmt.Fprintln(stdout, rep.Result.FinalLine())
	switch {
	case !rep.Result.OK():
		return 1
	case ctx.Err() != nil:
		// A run cut short proves less than asked for: not a pass.
		fmt.Fprintf(stderr, "chaos: interrupted after %s; the report covers that part only\n", rep.Duration.Round(time.Second))
		return 2
	}
	return 0
}
