package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Event is one nemesis action, kept for the timeline printed at the end of a run.
type Event struct {
	At     time.Time
	Action string // "kill", "start", "pause", "unpause", "partition", "heal"
	Node   int
	Leader string // the Raft leader just before a fault, just after a repair
	Err    error
}

// Runner runs a schedule against a cluster, one fault at a time, and waits for the cluster to
// be whole again after each repair, so quorum always survives the next fault.
type Runner struct {
	Nemesis Nemesis
	Cluster *Cluster
	Log     *slog.Logger
	// Patience is how long the cluster may take to become whole after a repair before the
	// runner looks for nodes that died by themselves (default 20 s); it then waits twice as
	// long again.
	Patience time.Duration
	// EffectTimeout is how long a fault may take to show (the node's API stops answering)
	// before the runner calls it not injected (default 5 s).
	EffectTimeout time.Duration

	// Counts holds the faults injected and seen to take effect, by kind.
	Counts Faults
	// FaultErrors describes every fault that could not be injected, did not take effect, or
	// could not be repaired; the run fails on any (a nemesis that does nothing proves nothing).
	FaultErrors []string
	Events      []Event
	// Crashes describes nodes found down that the nemesis had not left down: they died by
	// themselves (for example a restart that exited during start-up). The run fails on any.
	Crashes []string
	// Windows are the spans during which a fault was in force: from its injection until its
	// repair was done (the node back as a member). Availability is measured over them.
	Windows []Window
	// Wiped lists, per wipe, the classic durable queues the wiped node owned and when its
	// data was gone for good: their messages confirmed before then went with the disk.
	Wiped  []WipedQueue
	broken *Fault
}

// Window is one span during which a fault of Kind was in force.
type Window struct {
	Kind     FaultKind
	From, To time.Time
}

// WipedQueue is a classic durable queue whose owner's data dir was deleted at Before.
type WipedQueue struct {
	Queue  string
	Before time.Time
}

func (r *Runner) event(at time.Time, action string, f Fault, leader string, err error) {
	r.Events = append(r.Events, Event{At: at, Action: action, Node: f.Node, Leader: leader, Err: err})
	if err != nil {
		r.Log.Error("nemesis "+action+" failed", "node", f.Node, "err", err)
		return
	}
	r.Log.Info("nemesis "+action, "node", f.Node, "hold", f.Hold, "raft_leader", leader)
}

// leader asks the cluster for its Raft leader within a second: a fault that hits the leader
// behaves differently (an election follows), so the timeline says which node led.
func (r *Runner) leader() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return r.Cluster.Leader(ctx)
}

// Run injects faults from schedule until ctx ends or the next fault could not be repaired
// before deadline, then repairs whatever is still broken. It returns once no fault is left.
func (r *Runner) Run(ctx context.Context, schedule []Fault, deadline time.Time) {
	for _, f := range schedule {
		if time.Now().Add(f.Gap + f.Hold).After(deadline) {
			break
		}
		if !sleep(ctx, f.Gap) {
			break
		}
		var wiped []string
		if f.Kind == Wipe {
			var ok bool
			if wiped, ok = r.readyToWipe(f); !ok {
				continue
			}
		}
		leader := r.leader()
		at := time.Now()
		err := r.Nemesis.Inject(context.Background(), f)
		if err == nil && f.Kind == Wipe {
			gone := time.Now()
			for _, q := range wiped {
				r.Wiped = append(r.Wiped, WipedQueue{Queue: q, Before: gone})
			}
		}
		if err == nil {
			err = r.tookEffect(context.Background(), f)
			if err != nil {
				// Whatever the script did, repair it as if the fault were in force.
				r.broken = &f
			}
		}
		r.event(at, f.Kind.String(), f, leader, err)
		if err != nil {
			r.FaultErrors = append(r.FaultErrors, fmt.Sprintf("%s at %s: %v", f, at.Format("15:04:05.000"), err))
			if !r.repair(context.Background()) {
				break
			}
			continue
		}
		if r.Counts == nil {
			r.Counts = Faults{}
		}
		r.Counts[f.Kind]++
		r.broken = &f
		sleep(ctx, f.Hold)
		if f.Kind == Kill || f.Kind == Wipe {
			r.checkRehomed(f)
		}
		repaired := r.repair(context.Background())
		r.Windows = append(r.Windows, Window{Kind: f.Kind, From: at, To: time.Now()})
		if !repaired {
			break
		}
		if !r.settle(context.Background()) {
			// Another fault could cost the quorum: stop breaking things.
			r.Log.Error("nemesis: cluster not whole after repair; no more faults this run")
			break
		}
	}
	r.repair(context.Background())
}

// readyToWipe checks that a wipe of f.Node leaves a majority: every node must be up and a
// member (one fault at a time should guarantee it; a node that died by itself would not), and
// reads the classic durable queues f.Node owns, whose messages the wipe destroys. A wipe that
// is not safe, or whose victims cannot be listed, is skipped and logged, not injected.
func (r *Runner) readyToWipe(f Fault) ([]string, bool) {
	if f.Node < 1 || f.Node > len(r.Cluster.Nodes) {
		return nil, true // Inject's effect check reports the bad node
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.Cluster.WaitHealthy(ctx, 5*time.Second); err != nil {
		r.Log.Warn("nemesis: wipe skipped: not every node is up, a wipe could cost the majority", "node", f.Node, "err", err)
		return nil, false
	}
	name := r.Cluster.Nodes[f.Node-1].Name
	qs, err := r.Cluster.ClassicQueuesOn(ctx, name)
	if err != nil {
		r.Log.Warn("nemesis: wipe skipped: cannot list the node's classic queues", "node", name, "err", err)
		return nil, false
	}
	return qs, true
}

// tookEffect waits for the broken node's management API to stop answering: a killed or
// paused node cannot answer, and a partitioned container cannot be reached from outside
// either (docker-cluster.sh). A script that exits 0 without breaking anything (say, a kill
// that signals the wrong process) is caught here.
func (r *Runner) tookEffect(ctx context.Context, f Fault) error {
	if f.Node < 1 || f.Node > len(r.Cluster.Nodes) {
		return fmt.Errorf("no node %d in the cluster", f.Node)
	}
	n := r.Cluster.Nodes[f.Node-1]
	timeout := r.EffectTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	deadline := time.Now().Add(timeout)
	for {
		probe, cancel := context.WithTimeout(ctx, time.Second)
		var o overview
		err := r.Cluster.get(probe, n, "/api/overview", &o)
		cancel()
		if err != nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no effect: %s still answers its API %s after the %s", n.Name, timeout, f.Kind)
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

func (r *Runner) patience() time.Duration {
	if r.Patience > 0 {
		return r.Patience
	}
	return 20 * time.Second
}

// settle waits for the cluster to be whole again; if it is not within Patience, nodes that
// died by themselves are started again and it waits once more.
func (r *Runner) settle(ctx context.Context) bool {
	err := r.Cluster.WaitHealthy(ctx, r.patience())
	if err == nil {
		r.waitInSync(ctx)
		return true
	}
	r.Log.Warn("nemesis: cluster not whole after repair", "waited", r.patience(), "err", err)
	r.reviveCrashed(ctx)
	if err := r.Cluster.WaitHealthy(ctx, 2*r.patience()); err != nil {
		r.Log.Error("nemesis: cluster still not whole", "err", err)
		return false
	}
	r.waitInSync(ctx)
	return true
}

// waitInSync waits (up to Patience) for every replicated queue to have all its replicas in
// sync again before the next fault: "one node at a time" means the queues are whole again, not
// only the membership; a fault while a replica is still catching up can leave a queue without
// a majority in sync, and it then stops confirming, as it should. How long the catch-up took
// is logged; a queue that does not catch up is logged and the run goes on.
func (r *Runner) waitInSync(ctx context.Context) {
	start := time.Now()
	if err := r.Cluster.WaitInSync(ctx, r.patience()); err != nil {
		r.Log.Warn("nemesis: replicated queues not back in sync before the next fault", "err", err)
		return
	}
	r.Log.Info("nemesis: replicated queues in sync", "waited", time.Since(start).Round(time.Millisecond))
}

// reviveCrashed starts every node the nemesis is not holding down that does not answer its
// HTTP API. The script refuses to start a running node, so a start that succeeds proves the
// node had died: that is recorded as a crash.
func (r *Runner) reviveCrashed(ctx context.Context) {
	for _, n := range r.Cluster.Nodes {
		if r.broken != nil && r.broken.Node == n.Index {
			continue
		}
		probe, cancel := context.WithTimeout(ctx, 2*time.Second)
		var o overview
		err := r.Cluster.get(probe, n, "/api/overview", &o)
		cancel()
		if err == nil {
			continue
		}
		at := time.Now()
		startErr := r.Nemesis.Start(ctx, n.Index)
		switch {
		case errors.Is(startErr, ErrAlreadyRunning):
			r.Log.Warn("nemesis: node does not answer but is running", "node", n.Name, "err", err)
		default:
			crash := fmt.Sprintf("%s was down at %s though the nemesis had not left it down (died by itself); restart: %v",
				n.Name, at.Format("15:04:05.000"), errOrOK(startErr))
			r.Crashes = append(r.Crashes, crash)
			r.Log.Error("nemesis: node died by itself; started it again", "node", n.Name, "start_err", startErr)
			r.Events = append(r.Events, Event{At: at, Action: "revive", Node: n.Index, Leader: r.leader(), Err: startErr})
		}
	}
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// checkRehomed logs the transient queues the cluster still places on a node killed Hold ago
// (at least 2 s: gossip declares a dead node within about a second on loopback). It does not
// fail the run (availability is not what the checker judges) but explains RPC timeouts.
func (r *Runner) checkRehomed(f Fault) {
	if f.Node < 1 || f.Node > len(r.Cluster.Nodes) {
		return
	}
	dead := r.Cluster.Nodes[f.Node-1].Name
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stranded, err := r.Cluster.StrandedQueues(ctx, dead)
	switch {
	case err != nil:
		r.Log.Warn("nemesis: cannot list queues of the killed node", "node", dead, "err", err)
	case len(stranded) > 0:
		r.Log.Warn("nemesis: transient queues of the killed node not re-homed", "node", dead,
			"after", f.Hold, "queues", fmt.Sprint(stranded[:min(len(stranded), 10)]), "count", len(stranded))
	}
}

// repair undoes the fault in force, if any; false if that failed.
func (r *Runner) repair(ctx context.Context) bool {
	if r.broken == nil {
		return true
	}
	f := *r.broken
	at := time.Now()
	err := r.Nemesis.Repair(ctx, f)
	r.event(at, f.Kind.repairAction(), f, r.leader(), err)
	if err != nil && (f.Kind == Kill || f.Kind == Wipe) {
		// The restarted node either exited during start-up or was only slow to rejoin; a
		// second start tells which (the script refuses to start a running node).
		again := time.Now()
		err2 := r.Nemesis.Start(ctx, f.Node)
		if errors.Is(err2, ErrAlreadyRunning) {
			r.Log.Warn("nemesis: restarted node is running, only slow to rejoin", "node", f.Node)
			err = nil
		} else {
			r.Crashes = append(r.Crashes, fmt.Sprintf("n%d exited while restarting after its kill (%v); started again at %s: %s",
				f.Node, err, again.Format("15:04:05.000"), errOrOK(err2)))
			r.Events = append(r.Events, Event{At: again, Action: "revive", Node: f.Node, Leader: r.leader(), Err: err2})
			err = err2
		}
	}
	if err != nil {
		r.FaultErrors = append(r.FaultErrors, fmt.Sprintf("%s %s at %s: %v", f.Kind.repairAction(), f, at.Format("15:04:05.000"), err))
		return false
	}
	r.broken = nil
	return true
}

// HealAll repairs anything still broken (a kill whose restart failed is retried) and heals
// what the nemesis may have left behind.
func (r *Runner) HealAll(ctx context.Context) error {
	var errs []error
	for attempt := 0; attempt < 3 && r.broken != nil; attempt++ {
		if !r.repair(ctx) {
			sleep(ctx, 2*time.Second)
		}
	}
	if r.broken != nil {
		errs = append(errs, fmt.Errorf("could not repair %s", r.broken))
	}
	if err := r.Nemesis.HealAll(ctx, len(r.Cluster.Nodes)); err != nil {
		errs = append(errs, err)
	}
	if err := r.Cluster.WaitHealthy(ctx, r.patience()); err != nil {
		r.reviveCrashed(ctx)
	}
	if len(errs) > 0 {
		return fmt.Errorf("heal: %v", errs)
	}
	return nil
}

// Timeline renders the events, one per line, for the end-of-run report.
func (r *Runner) Timeline(start time.Time) []string {
	out := make([]string, 0, len(r.Events))
	for _, e := range r.Events {
		line := fmt.Sprintf("nemesis: %s (+%5.1fs) %-9s n%d  (raft leader: %s)", e.At.Format("15:04:05.000"),
			e.At.Sub(start).Seconds(), e.Action, e.Node, orNone(e.Leader))
		if e.Err != nil {
			line += " FAILED: " + e.Err.Error()
		}
		out = append(out, line)
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "none known"
	}
	return s
}
