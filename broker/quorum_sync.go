package broker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/replica"
)

// The leader's upkeep of its followers, run by one goroutine per node for all replicated queues:
// sync followers that are new, restarted or broke their stream; drop from the in-sync set a
// follower that stopped answering; add one that caught up; and claim a new epoch for queues this
// node leads in the FSM but does not serve yet (it restarted).

func (n *Node) wakeQuorum() {
	select {
	case n.quorumWake <- struct{}{}:
	default:
	}
}

// runQuorum is started by StartReplication and stops with Close.
func (n *Node) runQuorum() {
	defer n.bg.Done()
	t := time.NewTicker(quorumTick)
	defer t.Stop()
	for {
		select {
		case <-n.closing:
			return
		case <-t.C:
		case <-n.quorumWake:
		}
		n.qmu.RLock()
		rs := slices.Collect(maps.Values(n.quorum))
		n.qmu.RUnlock()
		now := time.Now()
		for _, r := range rs {
			r.upkeep(now)
		}
	}
}

// StartReplication starts the upkeep of replicated queues; call it once the message store is
// recovered (Recover), so a leader never syncs followers from an index it has not loaded.
func (n *Node) StartReplication() {
	n.startQuorum.Do(func() {
		n.bg.Add(1)
		go n.runQuorum()
	})
}

func (r *replicated) upkeep(now time.Time) {
	qd, ok := r.n.fsm.Queue(r.vhost, r.name)
	if !ok || qd.Type != fsm.QueueTypeQuorum {
		return
	}
	r.mu.Lock()
	if !r.leading {
		claim := qd.Owner == r.n.id && r.loaded
		r.mu.Unlock()
		if claim {
			r.claimLeadership(qd)
		}
		return
	}
	if !r.loaded {
		r.mu.Unlock()
		return
	}
	type job struct {
		f   *follower
		gen uint64
	}
	var jobs []job
	for _, f := range r.followers {
		if f.state == followerLive && f.broken.Load() {
			f.state, f.downSince = followerIdle, now.UnixNano()
		}
		if f.state == followerIdle && now.UnixNano() >= f.retryAt {
			f.state, f.pending = followerSyncing, nil
			f.gen++
			f.broken.Store(false)
			jobs = append(jobs, job{f, f.gen})
		}
	}
	epoch := r.epoch
	r.mu.Unlock()
	for _, j := range jobs {
		r.n.bg.Add(1)
		go r.syncFollower(j.f, j.gen, epoch)
	}
	r.reviewInSync(qd, now)
}

// reviewInSync proposes in-sync set changes: out with a follower that is broken or has not
// answered for followerLag, in with a live follower that holds everything committed.
func (r *replicated) reviewInSync(qd fsm.Queue, now time.Time) {
	r.mu.Lock()
	live := map[string]bool{}
	down := map[string]bool{} // not live for longer than followerLag
	for id, f := range r.followers {
		live[id] = f.state == followerLive && !f.broken.Load()
		down[id] = !live[id] && f.downSince != 0 && now.UnixNano()-f.downSince > int64(followerLag)
	}
	r.mu.Unlock()
	set := slices.Clone(qd.InSync)
	var changed *follower
	adding := ""
	for _, id := range qd.Replicas {
		f := r.followerAcked(id)
		if f == nil || f.proposing.Load() {
			continue
		}
		in := slices.Contains(set, id)
		oldest := f.oldest.Load()
		lagging := down[id] || oldest != 0 && now.UnixNano()-oldest > int64(followerLag)
		switch {
		case in && lagging:
			set = without(set, id)
			changed = f
			f.broken.Store(true) // stop streaming to it; it is synced again when it answers
		case !in && live[id] && !lagging:
			// Checked and recorded under ackMu: no commit can pass this follower from here on.
			r.ackMu.Lock()
			ok := replica.Ident(f.acked.Load()) >= r.committed
			if ok {
				if r.joining == nil {
					r.joining = map[string]bool{}
				}
				r.joining[id] = true
			}
			r.ackMu.Unlock()
			if ok {
				set = append(set, id)
				changed, adding = f, id
			}
		}
		if changed != nil {
			break // one change at a time: each is judged against the set it replaces
		}
	}
	if changed == nil {
		return
	}
	changed.proposing.Store(true)
	r.n.bg.Add(1)
	go func() {
		defer r.n.bg.Done()
		defer changed.proposing.Store(false)
		_, err := r.n.Apply(fsm.SetInSync{Vhost: r.vhost, Name: r.name, Leader: r.n.id, Epoch: qd.Epoch, InSync: set})
		if adding != "" {
			// Applied (the event put it in inSync) or refused: either way no longer pending.
			r.ackMu.Lock()
			delete(r.joining, adding)
			released := r.releaseLocked()
			r.ackMu.Unlock()
			finish(released, nil)
		}
		if err != nil {
			r.n.log.Warn("replicated queue: in-sync set change refused", "queue", r.name, "follower", changed.node, "err", err)
			return
		}
		r.n.log.Info("replicated queue: in-sync set changed", "queue", r.name, "in_sync", set)
	}()
}

// claimLeadership asks for a new epoch for a queue this node leads in the FSM but does not
// serve: it restarted, and must not number messages again from where an earlier run of the
// same epoch might have left some with followers.
func (r *replicated) claimLeadership(qd fsm.Queue) {
	if !r.claiming.CompareAndSwap(false, true) {
		return
	}
	r.n.bg.Add(1)
	go func() {
		defer r.n.bg.Done()
		defer r.claiming.Store(false)
		if _, err := r.n.Apply(fsm.ElectLeader{Vhost: r.vhost, Name: r.name, Leader: r.n.id, Epoch: qd.Epoch}); err != nil {
			r.n.log.Warn("replicated queue: claiming a new epoch failed", "queue", r.name, "err", err)
		}
	}()
}

// syncFollower brings one follower in line with this leader: learn its position, make it
// drop what this leader does not hold, send it what it lacks from the store, then switch it
// to live streaming with whatever happened meanwhile.
func (r *replicated) syncFollower(f *follower, gen, epoch uint64) {
	defer r.n.bg.Done()
	target, err := r.doSync(f, gen, epoch)
	r.mu.Lock()
	defer r.mu.Unlock()
	if f.gen != gen {
		return
	}
	if err != nil || !r.leading || r.epoch != epoch {
		f.state, f.pending = followerIdle, nil
		f.retryAt = time.Now().Add(resyncBackoff).UnixNano()
		if err != nil {
			r.n.log.Debug("replicated queue: follower sync failed", "queue", r.name, "follower", f.node, "err", err)
		}
		return
	}
	// Everything up to target the follower lacks was sent (what was settled meanwhile need
	// not be): its position moves there, so its acknowledgement covers those messages' confirms.
	r.appendThroughLocked(f, f.pending, target)
	f.pending = nil
	f.state, f.downSince = followerLive, 0
	r.n.wakeQuorum() // it may join the in-sync set now
}

var errSyncAbandoned = errors.New("sync abandoned")

func (r *replicated) doSync(f *follower, gen, epoch uint64) (replica.Ident, error) {
	current := func() bool { return f.gen == gen && r.leading && r.epoch == epoch }
	body, err := r.n.replicateWait(f.node, r.key, &replica.Request{Kind: replica.Sync, Epoch: epoch})
	if err != nil {
		return 0, fmt.Errorf("position: %w", err)
	}
	pos, err := replica.DecodePosition(body)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	if !current() {
		r.mu.Unlock()
		return 0, errSyncAbandoned
	}
	keep := r.idx.Live(pos)
	target := r.idx.Last()
	f.sent = pos
	// Messages published since the sync began are both in the store (read below, up to
	// target) and in pending: keep only the later ones (and every settlement) in pending.
	kept := f.pending[:0]
	for _, e := range f.pending {
		if !e.Stores() || e.Ident > target {
			kept = append(kept, e)
		}
	}
	f.pending = kept
	r.mu.Unlock()
	if _, err := r.n.replicateWait(f.node, r.key, &replica.Request{Kind: replica.Truncate, Epoch: epoch, UpTo: pos, Keep: keep}); err != nil {
		return 0, fmt.Errorf("truncate: %w", err)
	}
	pager, ok := r.n.msgs.(*pagedStore)
	if !ok {
		return 0, errors.New("the message store cannot read messages back")
	}
	for after := pos; after < target; {
		r.mu.Lock()
		if !current() {
			r.mu.Unlock()
			return 0, errSyncAbandoned
		}
		idents, ids := r.idx.After(after, catchUpBatch)
		r.mu.Unlock()
		for len(idents) > 0 && idents[len(idents)-1] > target {
			idents, ids = idents[:len(idents)-1], ids[:len(ids)-1]
		}
		if len(idents) == 0 {
			break
		}
		got, _, err := pager.pager.ReadQueueCopy(r.key, ids[0]-1, ids[len(ids)-1], len(ids), catchUpBytes)
		if err != nil {
			return 0, fmt.Errorf("read stored messages: %w", err)
		}
		entries := make([]replica.Entry, 0, len(got))
		var counts []replica.Entry // return counts of these messages, sent after them
		q := r.leaderQueue()
		for _, m := range got {
			ident, _, err := replica.SplitStored(m.Data)
			if err != nil {
				return 0, fmt.Errorf("stored message %d: %w", m.ID, err)
			}
			entries = append(entries, replica.Entry{Ident: ident, Data: m.Data})
			if q != nil {
				if n := q.ReturnCount(m.ID); n > 0 {
					counts = append(counts, replica.Entry{Ident: ident, Returns: n})
				}
			}
		}
		next := idents[len(idents)-1]
		if len(got) > 0 && len(got) < len(ids) {
			// The byte limit cut the read short: continue after what was read.
			next = entries[len(entries)-1].Ident
		}
		r.mu.Lock()
		if !current() {
			r.mu.Unlock()
			return 0, errSyncAbandoned
		}
		// Every message of the range the leader still holds must be in the answer (the
		// follower's acknowledgement will cover the whole range); one that was settled
		// meanwhile may be missing, one moved by compaction meanwhile must not be: retry.
		j := 0
		for i, ident := range idents {
			if ident > next {
				break
			}
			for j < len(entries) && entries[j].Ident < ident {
				j++
			}
			if j < len(entries) && entries[j].Ident == ident {
				continue
			}
			if _, live := r.idx.ID(ident); live {
				r.mu.Unlock()
				return 0, fmt.Errorf("catch-up read missed message %v (store id %d)", ident, ids[i])
			}
		}
		if len(entries) > 0 {
			r.appendLocked(f, append(entries, counts...))
		}
		r.mu.Unlock()
		after = next
	}
	return target, nil
}

// replicate sends one request to a node's Handler.Replicate over the data link.
func (n *Node) replicate(node, key string, req []byte, done func([]byte, error)) {
	var p interface {
		ReplicateAsync(string, []byte, func([]byte, error))
	}
	if peer := n.peerOf(node); peer != nil {
		p = peer
	}
	if p == nil {
		done(nil, fmt.Errorf("%w %q", errNoLink, node))
		return
	}
	p.ReplicateAsync(key, req, done)
}

// replicateWait sends a request and waits (bounded) for its reply.
func (n *Node) replicateWait(node, key string, req *replica.Request) ([]byte, error) {
	type answer struct {
		body []byte
		err  error
	}
	ch := make(chan answer, 1)
	n.replicate(node, key, replica.AppendRequest(nil, req), func(b []byte, err error) { ch <- answer{b, err} })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case a := <-ch:
		return a.body, a.err
	case <-ctx.Done():
		return nil, fmt.Errorf("replication request to %s: %w", node, ctx.Err())
	case <-n.closing:
		return nil, errors.New("node closing")
	}
}
