package chaos

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config is one chaos run.
type Config struct {
	Cluster  *Cluster
	Nemesis  Nemesis
	Duration time.Duration
	Seed     uint64
	Log      *slog.Logger
	// RPCLog receives the rpc library's own logs (reconnects are noisy under faults).
	RPCLog *slog.Logger

	// PublishersPerQueue (default 3) publishers per queue (classic and replicated alike), the
	// k-th first connected to the k-th node from the queue's home node (the first through the
	// home node itself, the others forwarding).
	PublishersPerQueue int
	// ConsumersPerQueue (default 2) consumers per queue, each first through another node that
	// does not own it.
	ConsumersPerQueue int
	PublishInterval   time.Duration // pause after each confirmed message (default 5ms)
	CallInterval      time.Duration // pause between RPC calls of one caller (default 20ms)
	ChurnInterval     time.Duration // pause between topology churn rounds (default 50ms)
	// Policy is what the run must reach beyond "nothing lost" (default DefaultPolicy).
	Policy *Policy
}

func (c *Config) defaults() {
	if c.PublishersPerQueue <= 0 {
		c.PublishersPerQueue = 3
	}
	if c.ConsumersPerQueue <= 0 {
		c.ConsumersPerQueue = 2
	}
	if c.PublishInterval == 0 {
		c.PublishInterval = 5 * time.Millisecond
	}
	if c.CallInterval == 0 {
		c.CallInterval = 20 * time.Millisecond
	}
	if c.ChurnInterval == 0 {
		c.ChurnInterval = 50 * time.Millisecond
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.RPCLog == nil {
		c.RPCLog = c.Log
	}
}

// Report is what a run found.
type Report struct {
	Result   Result
	Duration time.Duration // how long the workload and nemesis ran
	Timeline []string      // the nemesis's actions with timestamps
}

// Run sets the cluster up for the workload, runs workload and nemesis for cfg.Duration,
// heals the cluster, drains every queue and checks the history. An error means the run could
// not be carried out (the cluster never became healthy, a malformed history); a broker that
// loses messages is a Report whose Result is not OK.
func Run(ctx context.Context, cfg Config) (Report, error) {
	cfg.defaults()
	log, c := cfg.Log, cfg.Cluster
	if err := c.WaitHealthy(ctx, 60*time.Second); err != nil {
		return Report{}, fmt.Errorf("before the run: %w", err)
	}
	if err := c.Identify(ctx); err != nil {
		return Report{}, err
	}
	if err := DeclareQueues(ctx, c, log); err != nil {
		return Report{}, err
	}
	// The load starts on whole queues: a replicated queue confirms only while a majority of its
	// replicas is in sync, and a fault before its followers caught up would stall it.
	syncStart := time.Now()
	if err := c.WaitInSync(ctx, 30*time.Second); err != nil {
		log.Warn("replicated queues not in sync before the load starts", "err", err)
	} else {
		log.Info("replicated queues in sync", "waited", time.Since(syncStart).Round(time.Millisecond))
	}
	rec := &Recorder{}
	rl := &rpcLoad{nodes: c.Nodes, rec: rec, log: log, rpcLog: cfg.RPCLog, seed: cfg.Seed, interval: cfg.CallInterval}
	defer rl.stop()
	if err := rl.start(ctx); err != nil {
		return Report{}, err
	}

	// Consumers outlive the load: they keep taking messages while the cluster heals.
	consumeCtx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	var consumers sync.WaitGroup
	var cons []*consumer
	queues := workQueues(c)
	for _, q := range queues {
		for k := 0; k < cfg.ConsumersPerQueue; k++ {
			cs := &consumer{name: clientName("c", q, k), queue: q.Name, rec: rec, log: log,
				prefetch: 50, nodes: rotation{nodes: preferOthers(c.Nodes, q.Home, q.Home+k)}}
			cons = append(cons, cs)
			consumers.Add(1)
			go func() { defer consumers.Done(); cs.run(consumeCtx) }()
		}
	}

	start := time.Now()
	deadline := start.Add(cfg.Duration)
	loadCtx, stopLoad := context.WithDeadline(ctx, deadline)
	defer stopLoad()
	var load sync.WaitGroup
	var pubs []*publisher
	for _, q := range queues {
		for k := 0; k < cfg.PublishersPerQueue; k++ {
			p := &publisher{name: clientName("p", q, k), queue: q.Name, rec: rec, log: log,
				interval: cfg.PublishInterval, nodes: rotation{nodes: startingAt(c.Nodes, q.Home-1+k)}}
			pubs = append(pubs, p)
			load.Add(1)
			go func() { defer load.Done(); p.run(loadCtx) }()
		}
	}
	load.Add(1)
	go func() { defer load.Done(); rl.runCallers(loadCtx) }()
	ch := &churner{nodes: c.Nodes, rng: rand.New(rand.NewPCG(cfg.Seed, 0x636875726e)), log: log, interval: cfg.ChurnInterval}
	load.Add(1)
	go func() { defer load.Done(); ch.run(loadCtx) }()

	runner := &Runner{Nemesis: cfg.Nemesis, Cluster: c, Log: log.With("component", "nemesis")}
	schedule := Schedule(cfg.Seed, len(c.Nodes), cfg.Nemesis.Kinds(), 1000)
	nemesisDone := make(chan struct{})
	go func() { defer close(nemesisDone); runner.Run(loadCtx, schedule, deadline) }()

	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		for sleep(loadCtx, 10*time.Second) {
			sent, received, calls := rec.Counts()
			log.Info("progress", "elapsed", time.Since(start).Round(time.Second), "sent", sent, "received", received,
				"rpc_calls", calls, "rpc_served", fmt.Sprint(rl.served()), "churn_ok", ch.ok.Load(), "churn_failed", ch.failed.Load())
		}
	}()

	load.Wait()
	<-progressDone
	<-nemesisDone
	elapsed := time.Since(start)
	log.Info("load stopped; healing", "elapsed", elapsed.Round(time.Millisecond))

	// From here on the run must finish even if ctx was cancelled: a half-healed cluster and an
	// unchecked history help nobody.
	bg := context.WithoutCancel(ctx)
	if err := runner.HealAll(bg); err != nil {
		log.Error("heal failed", "err", err)
	}
	if err := c.WaitHealthy(bg, 90*time.Second); err != nil {
		log.Error("cluster did not become whole after healing", "err", err)
	}
	reportIdleRPCQueues(bg, c, log)
	stopConsumers()
	consumers.Wait()
	rl.stop()
	for _, p := range pubs {
		log.Info("publisher", "name", p.name, "queue", p.queue, "confirmed", p.confirmed.Load(), "nacked", p.nacked.Load(),
			"returned", p.returned.Load(), "unconfirmed", p.others.Load())
	}
	for _, cs := range cons {
		log.Info("consumer", "name", cs.name, "queue", cs.queue, "received", cs.received.Load())
	}
	log.Info("topology churn", "rounds_ok", ch.ok.Load(), "rounds_failed", ch.failed.Load())
	log.Info("rpc servers", "served", fmt.Sprint(rl.served()), "failed_calls", rl.timeoutsByTarget())

	if err := Drain(bg, c, queues, rec, log, 60*time.Second); err != nil {
		log.Error("drain incomplete: messages still in a queue will show as lost", "err", err)
	}
	h := rec.History()
	h.Nodes = c.Names()
	h.Digests = c.Digests(bg, 15*time.Second)
	h.Crashes = runner.Crashes
	h.Duration = elapsed
	h.Kinds = cfg.Nemesis.Kinds()
	h.Faults = runner.Counts
	h.FaultErrors = runner.FaultErrors
	h.Windows = runner.Windows
	h.Wiped = runner.Wiped
	for _, q := range queues {
		h.StableQueues = append(h.StableQueues, q.Name)
		if q.Type == TypeQuorum {
			h.QuorumQueues = append(h.QuorumQueues, q.Name)
		}
	}
	policy := DefaultPolicy()
	if cfg.Policy != nil {
		policy = *cfg.Policy
	}
	res, err := CheckPolicy(h, policy)
	if err != nil {
		return Report{}, err
	}
	return Report{Result: res, Duration: elapsed, Timeline: runner.Timeline(start)}, nil
}

// reportIdleRPCQueues logs the RPC queues that have no consumer once the cluster is whole
// again: every server consumes its topic and server queues and every caller its reply queue,
// so an empty one means a client that stopped consuming (for example after a basic.cancel it
// never acted on) and explains RPC timeouts.
func reportIdleRPCQueues(ctx context.Context, c *Cluster, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var idle []string
	for name, n := range c.Consumers(ctx) {
		if n == 0 && (name == rpcTopic || strings.HasPrefix(name, rpcTopic+".s") || strings.HasPrefix(name, "reply_")) {
			idle = append(idle, name)
		}
	}
	sort.Strings(idle)
	if len(idle) > 0 {
		log.Warn("rpc queues without a consumer after healing", "queues", fmt.Sprint(idle))
	} else {
		log.Info("every rpc queue has a consumer after healing")
	}
}

// clientName names the k-th publisher or consumer of q: "p1a" for chaos.q1, "pq1a" for
// chaos.qq1 (message ids start with the publisher's name).
func clientName(role string, q workQueue, k int) string {
	if q.Type == TypeQuorum {
		role += "q"
	}
	return fmt.Sprintf("%s%d%c", role, q.Home, 'a'+k)
}
