package cluster

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// MemberSource is what the Reconciler reads membership from (*Membership in production).
type MemberSource interface {
	Members() []Member
	Subscribe() (events <-chan MemberEvent, cancel func())
}

// ReconcilerConfig configures the leader's membership → Raft reconciliation.
type ReconcilerConfig struct {
	Store   *Store
	Members MemberSource
	// Interval between full reconciles (default 5s); events may be dropped, this catches up.
	Interval time.Duration
	// ReapAfter removes a member that has been dead this long from Raft; 0 (the default) never
	// does, because a dead node usually comes back with its data (its durable queues are still
	// owned by it) and removing it would also shrink the quorum that protects the others.
	ReapAfter time.Duration
	// ChangeTimeout bounds each AddVoter/RemoveServer (default 5s).
	ChangeTimeout time.Duration
	Logger        *slog.Logger
}

// Reconciler turns gossip membership into Raft configuration while this node is the leader,
// Consul-style: on each member event and periodically, alive members missing from the Raft
// configuration are added as voters, members that left gracefully are removed, and dead
// members stay voters unless ReapAfter is set and has passed.
type Reconciler struct {
	cfg  ReconcilerConfig
	log  *slog.Logger
	stop chan struct{}
	done sync.WaitGroup
	once sync.Once
}

// retryAfterFailure is how soon a failed reconcile is tried again instead of waiting Interval.
const retryAfterFailure = 500 * time.Millisecond

// StartReconciler starts the reconciling goroutine; it acts only while this node leads.
func StartReconciler(cfg ReconcilerConfig) *Reconciler {
	if cfg.Interval <= 0 {
		cfg.Interval = 5 * time.Second
	}
	if cfg.ChangeTimeout <= 0 {
		cfg.ChangeTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger.With("component", "reconciler"), stop: make(chan struct{})}
	events, cancel := cfg.Members.Subscribe()
	states := make(chan raft.Observation, 16)
	observer := raft.NewObserver(states, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	cfg.Store.r().RegisterObserver(observer)
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		defer cancel()
		defer cfg.Store.r().DeregisterObserver(observer)
		r.run(events, states)
	}()
	return r
}

// Stop ends reconciliation and waits for the goroutine; call it before closing the Store.
func (r *Reconciler) Stop() {
	r.once.Do(func() { close(r.stop) })
	r.done.Wait()
}

func (r *Reconciler) run(events <-chan MemberEvent, states <-chan raft.Observation) {
	ticker := time.NewTicker(r.cfg.Interval)
	defer ticker.Stop()
	retry := time.NewTimer(0) // reconcile at once if already leader
	defer retry.Stop()
	for {
		select {
		case <-r.stop:
			return
		case ev, ok := <-events:
			if !ok {
				events = nil // membership shut down; keep serving periodic reconciles
				continue
			}
			r.log.Debug("member event", "kind", ev.Kind.String(), "member", ev.Member.ID)
		case <-states:
		case <-ticker.C:
		case <-retry.C:
		}
		if !r.cfg.Store.IsLeader() {
			continue
		}
		if err := r.Reconcile(); err != nil {
			r.log.Warn("reconcile membership with raft failed; retrying", "err", err)
			retry.Reset(retryAfterFailure)
		}
	}
}

// Reconcile makes one full pass; it is a no-op error-free pass on a follower.
func (r *Reconciler) Reconcile() error {
	store := r.cfg.Store
	if !store.IsLeader() {
		return nil
	}
	servers, err := store.Configuration()
	if err != nil {
		return err
	}
	inRaft := make(map[string]string, len(servers))
	for _, s := range servers {
		inRaft[string(s.ID)] = string(s.Address)
	}
	now := time.Now()
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, mem := range r.cfg.Members.Members() {
		if mem.ID == store.NodeID() {
			continue
		}
		addr, present := inRaft[mem.ID]
		switch mem.State {
		case MemberAlive, MemberSuspect:
			if mem.Meta.RaftAddr == "" {
				continue
			}
			if !present || addr != mem.Meta.RaftAddr {
				r.log.Info("adding raft voter", "member", mem.ID, "raft", mem.Meta.RaftAddr, "previous_addr", addr)
				note(store.AddVoter(mem.ID, mem.Meta.RaftAddr, r.cfg.ChangeTimeout))
			}
		case MemberLeft:
			if present {
				r.log.Info("removing raft server that left", "member", mem.ID)
				note(store.RemoveServer(mem.ID, r.cfg.ChangeTimeout))
			}
		case MemberDead:
			if present && r.cfg.ReapAfter > 0 && now.Sub(mem.Since) >= r.cfg.ReapAfter {
				r.log.Info("reaping raft server dead too long", "member", mem.ID, "dead_for", now.Sub(mem.Since).Round(time.Second))
				note(store.RemoveServer(mem.ID, r.cfg.ChangeTimeout))
			}
		}
	}
	if firstErr != nil {
		return fmt.Errorf("reconcile: %w", firstErr)
	}
	return nil
}
