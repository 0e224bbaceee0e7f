package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// FaultKind is one kind of failure the nemesis causes.
type FaultKind int

const (
	// Kill: SIGKILL (or docker kill) the node, restart it on its data after Hold.
	Kill FaultKind = iota
	// Pause: SIGSTOP (or docker pause) the node for Hold, then resume it.
	Pause
	// Partition: cut the node off from the others for Hold, then heal (containers only).
	Partition
	// Wipe: destroy the node for good (SIGKILL, delete its data dir, `node forget` it through
	// a live node), then after Hold start a fresh, empty node in its place, which joins as a
	// new member. Classic durable queues it owned lose their messages (their documented
	// limit); replicated queues must lose nothing.
	Wipe
)

// Fault is one scheduled failure: wait Gap, break Node, hold it broken for Hold, repair.
type Fault struct {
	Kind FaultKind
	Node int // 1-based
	Hold time.Duration
	Gap  time.Duration
}

func (f Fault) String() string {
	return fmt.Sprintf("%s n%d for %s after %s", f.Kind, f.Node, f.Hold, f.Gap)
}

// Schedule draws count faults from seed: a kind among kinds, a node among 1..nodes, a hold
// of 2–5 s (kill and wipe: time until the (fresh) node starts; pause) or 5–10 s (partition) and a quiet gap of 3–6 s
// before each. The first faults are one of each kind, in a seeded order, so even a short run
// exercises every kind. The same seed gives the same schedule.
func Schedule(seed uint64, nodes int, kinds []FaultKind, count int) []Fault {
	rng := rand.New(rand.NewPCG(seed, 0x6e656d65736973))
	between := func(lo, hi time.Duration) time.Duration {
		ms := lo.Milliseconds() + rng.Int64N(hi.Milliseconds()-lo.Milliseconds()+1)
		return time.Duration(ms) * time.Millisecond
	}
	out := make([]Fault, 0, count)
	first := rng.Perm(len(kinds))
	for i := range count {
		kind := kinds[rng.IntN(len(kinds))]
		if i < len(first) {
			kind = kinds[first[i]]
		}
		f := Fault{Kind: kind, Node: 1 + rng.IntN(nodes)}
		if f.Kind == Partition {
			f.Hold = between(5*time.Second, 10*time.Second)
		} else {
			f.Hold = between(2*time.Second, 5*time.Second)
		}
		f.Gap = between(3*time.Second, 6*time.Second)
		out = append(out, f)
	}
	return out
}

// Nemesis breaks and repairs one node at a time.
type Nemesis interface {
	// Kinds lists the faults this nemesis can cause.
	Kinds() []FaultKind
	// Inject breaks f.Node as f.Kind says.
	Inject(ctx context.Context, f Fault) error
	// Repair undoes Inject.
	Repair(ctx context.Context, f Fault) error
	// Start starts a node that is not running (one that was killed, or died by itself);
	// ErrAlreadyRunning when it runs.
	Start(ctx context.Context, node int) error
	// HealAll undoes whatever may be left broken (resume every node, heal partitions); it
	// does not start nodes that are down.
	HealAll(ctx context.Context, nodes int) error
}

// ErrAlreadyRunning: Start found the node running.
var ErrAlreadyRunning = errors.New("node is already running")

// scriptNemesis drives a cluster script's subcommands (kill/start/pause/unpause/wipe and, for
// containers, partition/heal), so process and container clusters share one code path.
type scriptNemesis struct {
	script     string
	partitions bool
}

// NewProcessNemesis drives scripts/cluster.sh (local processes: kill -9, SIGSTOP/SIGCONT).
func NewProcessNemesis(script string) Nemesis { return &scriptNemesis{script: script} }

// NewDockerNemesis drives scripts/docker-cluster.sh, which can also partition a node.
func NewDockerNemesis(script string) Nemesis {
	return &scriptNemesis{script: script, partitions: true}
}

func (s *scriptNemesis) Kinds() []FaultKind {
	if s.partitions {
		return []FaultKind{Kill, Pause, Partition, Wipe}
	}
	return []FaultKind{Kill, Pause, Wipe}
}

// run runs one script subcommand; a restart waits for the node to rejoin, so it gets longer.
func (s *scriptNemesis) run(ctx context.Context, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{s.script}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", s.script, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func (s *scriptNemesis) Inject(ctx context.Context, f Fault) error {
	n := strconv.Itoa(f.Node)
	switch f.Kind {
	case Kill:
		return s.run(ctx, "kill", n)
	case Wipe:
		return s.run(ctx, "wipe", n)
	case Pause:
		return s.run(ctx, "pause", n)
	case Partition:
		if !s.partitions {
			return fmt.Errorf("this cluster cannot partition nodes")
		}
		return s.run(ctx, "partition", n)
	}
	return fmt.Errorf("unknown fault %v", f.Kind)
}

func (s *scriptNemesis) Repair(ctx context.Context, f Fault) error {
	n := strconv.Itoa(f.Node)
	switch f.Kind {
	case Kill, Wipe:
		// A killed process can look alive for a moment (cluster.sh's kill -0 also sees a
		// zombie not reaped yet): retry "already running" for a while before believing it.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := s.Start(ctx, f.Node)
			if !errors.Is(err, ErrAlreadyRunning) || time.Now().After(deadline) {
				return err
			}
			if !sleep(ctx, 500*time.Millisecond) {
				return err
			}
		}
	case Pause:
		return s.run(ctx, "unpause", n)
	case Partition:
		return s.run(ctx, "heal")
	}
	return fmt.Errorf("unknown fault %v", f.Kind)
}

// Start runs the script's start, which refuses a running node with "already running" (both
// cluster.sh and docker-cluster.sh say so).
func (s *scriptNemesis) Start(ctx context.Context, node int) error {
	err := s.run(ctx, "start", strconv.Itoa(node))
	if err != nil && strings.Contains(err.Error(), "already running") {
		return fmt.Errorf("start node %d: %w", node, ErrAlreadyRunning)
	}
	return err
}

func (s *scriptNemesis) HealAll(ctx context.Context, nodes int) error {
	// Resuming a node that is not paused is harmless, and "not running" is not an error here.
	for i := 1; i <= nodes; i++ {
		_ = s.run(ctx, "unpause", strconv.Itoa(i))
	}
	if s.partitions {
		return s.run(ctx, "heal")
	}
	return nil
}
