package cluster

import (
	"errors"
	"net"
	"slices"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// A follower finds out that the Raft leader died only when its heartbeat timeout runs out:
// 500 ms, randomised up to 1 s, before anyone even asks for votes. Every replicated queue whose
// leader died with the Raft leader waits that long for its failover (NodeFailed is a Raft
// command). But a process killed outright closes its sockets at once: the followers' Raft
// connections from it break and its Raft port refuses connections. So when a Raft connection
// breaks, a follower checks whether the leader's port now refuses, and if it does, shortens its
// own heartbeat and election timeouts (raft.ReloadConfig, which wakes the follower loop) until
// a new leader is known. A leader that is alive but slow or cut off still listens, so this
// never fires for it: that case keeps the normal timeouts and Raft's own safety.
//
// Followers act in turn, in ID order, expediteStagger apart. A candidate's pre-vote is refused
// by any node that still knows a leader, so if all survivors went at the same instant they
// would refuse one another and fall back on the election timeout; in turn, the survivor whose
// turn completes a majority finds the others already leaderless and wins at once.
const (
	expediteStagger = 40 * time.Millisecond
	// expediteLimit bounds the shortened timeouts: if no leader emerges, the normal ones return.
	expediteLimit = 3 * time.Second
)

// electionExpediter runs the check above on one goroutine owned by the Store. It exists from
// the Store's construction (the Raft transport may report a broken connection before Open
// returns) and runs from start, once Raft does, until close.
type electionExpediter struct {
	s       *Store
	kick    chan struct{}
	stop    chan struct{}
	done    chan struct{}
	started bool
}

func newElectionExpediter(s *Store) *electionExpediter {
	return &electionExpediter{s: s, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
}

func (e *electionExpediter) start() {
	e.started = true
	go e.run()
}

// SuspectLeaderGone tells the store that the Raft leader's process may have died (a connection
// from it broke). It never blocks; checks already pending absorb it.
func (s *Store) SuspectLeaderGone() {
	select {
	case s.expedite.kick <- struct{}{}:
	default:
	}
}

func (e *electionExpediter) close() {
	if !e.started {
		return
	}
	close(e.stop)
	<-e.done
}

func (e *electionExpediter) run() {
	defer close(e.done)
	for {
		select {
		case <-e.stop:
			return
		case <-e.kick:
			e.check()
		}
	}
}

func (e *electionExpediter) check() {
	r := e.s.r()
	if r == nil || r.State() != raft.Follower {
		return
	}
	addr, leader := r.LeaderWithID()
	if addr == "" || !ProcessGone(string(addr), e.stop) {
		return
	}
	rank, ok := e.rank(leader)
	if !ok {
		return
	}
	fast := e.s.rc.LeaderLeaseTimeout // raft refuses a heartbeat timeout below the lease
	if !e.sleep(time.Until(r.LastContact().Add(fast + time.Duration(rank)*expediteStagger))) {
		return
	}
	if _, cur := r.LeaderWithID(); cur != leader || r.State() != raft.Follower {
		return // a new leader already, or an election under way
	}
	normal := r.ReloadableConfig()
	short := normal
	short.HeartbeatTimeout, short.ElectionTimeout = fast, fast
	if err := r.ReloadConfig(short); err != nil {
		e.s.log.Warn("raft: shorten timeouts after the leader died", "err", err)
		return
	}
	e.s.log.Info("raft leader's process is gone: calling an election now", "leader", string(leader), "turn", rank)
	defer func() {
		if err := r.ReloadConfig(normal); err != nil {
			e.s.log.Warn("raft: restore timeouts", "err", err)
		}
	}()
	deadline := time.Now().Add(expediteLimit)
	for time.Now().Before(deadline) {
		if _, cur := r.LeaderWithID(); cur != "" && cur != leader {
			return
		}
		if !e.sleep(10 * time.Millisecond) {
			return
		}
	}
}

// rank is this node's turn among the voters other than the dead leader, in ID order.
func (e *electionExpediter) rank(dead raft.ServerID) (int, bool) {
	servers, err := e.s.Configuration()
	if err != nil {
		return 0, false
	}
	var voters []string
	for _, srv := range servers {
		if srv.Suffrage == raft.Voter && srv.ID != dead {
			voters = append(voters, string(srv.ID))
		}
	}
	slices.Sort(voters)
	i := slices.Index(voters, e.s.id)
	return i, i >= 0
}

func (e *electionExpediter) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-e.stop:
		return false
	}
}

// ProcessGone reports whether nothing listens at addr any more: two connection attempts in a
// row refused. A dying process may still accept for a moment after its other sockets closed, so
// up to three accepted attempts, 30 ms apart, are allowed before the process counts as alive. A
// host that vanished or a partition does not refuse: both answer false, and are left to
// timeouts. stop (may be nil) ends the probing early with false.
func ProcessGone(addr string, stop <-chan struct{}) bool {
	refused, accepted := 0, 0
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		switch {
		case err == nil:
			_ = c.Close()
			if accepted++; accepted == 3 {
				return false
			}
			refused = 0
		case errors.Is(err, syscall.ECONNREFUSED):
			if refused++; refused == 2 {
				return true
			}
		default:
			return false
		}
		select {
		case <-stop:
			return false
		case <-time.After(30 * time.Millisecond):
		}
	}
}
