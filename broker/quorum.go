package broker

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/placement"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/replica"
)

// Replicated (quorum) queues on this node. The topology FSM says which nodes hold a queue, which
// one leads it, in which epoch, and which replicas are in sync; this file runs the data side of
// docs/replication.md: the leader stores each message on its own disk and sends it to every
// follower over the data link; a publish is confirmed once the leader's disk and every in-sync
// follower hold it (and at least a majority of the replicas are in sync). Settlements follow the
// same ordered stream. A follower stores what it receives under the queue's key in its own
// message store and serves nothing until the FSM makes it leader.
//
// Locks: r.mu orders what is sent to followers (and guards the index and each follower's send
// state); r.ackMu guards what comes back (acks, waiters, the in-sync set). Reply callbacks may run
// inside ReplicateAsync, so they take only ackMu; r.mu may be held while taking ackMu, never
// the other way round. A queue's own lock may be held while calling r.mu (Ack from the queue).

// replicated is one replicated queue's replica on this node (leading or following).
type replicated struct {
	n           *Node
	key         string
	vhost, name string

	mu        sync.Mutex
	idx       replica.Index
	loaded    bool   // idx holds what the store has for key
	leading   bool   // this node leads epoch
	epoch     uint64 // leading: the epoch led; following: the newest seen from a leader
	nextSeq   uint64
	followers map[string]*follower
	q         *queue.Queue // leading: the queue object serving clients

	ackMu  sync.Mutex
	inSync []string
	// joining are followers this leader proposed for the in-sync set: they count for commits
	// from the moment of the proposal (Kafka's "maximal ISR", KIP-497), so nothing is
	// committed without them that a newly elected one of them could lack.
	joining   map[string]bool
	replicas  int
	waiters   []waiter
	committed replica.Ident

	claiming atomic.Bool // an ElectLeader for this node is under way

	// returns are the return counts of messages this replica holds, while it does not lead
	// (under mu): received from the leader, or kept from the queue object when it stopped
	// leading. The new leader's queue object starts from them.
	returns map[replica.Ident]uint32

	// ackFollowers is the followers map as reply callbacks read it (they cannot take mu).
	ackFollowers atomic.Pointer[map[string]*follower]
}

type followerState uint8

const (
	followerIdle    followerState = iota // needs a sync before anything is sent
	followerSyncing                      // a sync is under way; new entries wait in pending
	followerLive                         // entries go out as they happen
)

// follower is the leader's view of one follower.
type follower struct {
	node    string
	state   followerState
	gen     uint64          // bumped by every sync, so a superseded sync gives up
	sent    replica.Ident   // newest message sent in this stream (the next Append's Prev)
	pending []replica.Entry // entries to send once the running sync finished

	acked     atomic.Uint64 // newest message the follower has on disk (replica.Ident)
	broken    atomic.Bool   // a request failed: sync again
	proposing atomic.Bool   // a SetInSync naming this follower is under way
	oldest    atomic.Int64  // unix nanos since an Append has been waiting for its answer (0: none)
	inflight  atomic.Int64
	retryAt   int64 // unix nanos; under r.mu: no sync before then
	downSince int64 // unix nanos; under r.mu: when it stopped being live (0: live)
}

type waiter struct {
	ident replica.Ident
	done  func(error)
}

// Errors a follower answers with; the leader syncs it again after any of them.
var (
	errStaleLeader = errors.New("not the leader of the current epoch")
	errOutOfSync   = errors.New("replica out of sync")
	errNotReplica  = errors.New("not a replica of this queue")
	// ErrLeaderChanged nacks publishes that were waiting for replication when this node
	// stopped leading the queue: their outcome is unknown.
	ErrLeaderChanged = errors.New("the replicated queue's leader changed")
)

// Timing of the leader's upkeep; see docs/replication.md.
const (
	quorumTick    = 100 * time.Millisecond
	followerLag   = 1500 * time.Millisecond // unanswered this long: out of the in-sync set
	catchUpBatch  = 512
	catchUpBytes  = 4 << 20
	resyncBackoff = 200 * time.Millisecond
)

func (n *Node) replicatedFor(key string) *replicated {
	n.qmu.RLock()
	r := n.quorum[key]
	n.qmu.RUnlock()
	return r
}

func (n *Node) ensureReplicated(qd fsm.Queue) *replicated {
	key := StoreKey(qd.Vhost, qd.Name)
	n.qmu.Lock()
	defer n.qmu.Unlock()
	if r := n.quorum[key]; r != nil {
		return r
	}
	r := &replicated{n: n, key: key, vhost: qd.Vhost, name: qd.Name, followers: map[string]*follower{}, returns: map[replica.Ident]uint32{}}
	n.quorum[key] = r
	return r
}

// onReplicatedEvent applies a topology change of a replicated queue to this node's replica.
func (n *Node) onReplicatedEvent(ev fsm.Event) {
	qd := ev.Queue
	key := StoreKey(qd.Vhost, qd.Name)
	if ev.Kind == fsm.QueueDeleted {
		n.dropReplicated(key, qd)
		return
	}
	if !slices.Contains(qd.Replicas, n.id) {
		n.dropReplicated(key, qd) // repaired away (a forgotten node never gets here)
		return
	}
	r := n.ensureReplicated(qd)
	if qd.Owner == n.id {
		r.lead(qd)
		return
	}
	r.follow(qd)
}

func (n *Node) dropReplicated(key string, qd fsm.Queue) {
	n.qmu.Lock()
	r := n.quorum[key]
	delete(n.quorum, key)
	n.qmu.Unlock()
	if r != nil {
		r.stopLeading(ErrLeaderChanged)
	}
	if n.msgs != nil && n.recovered.Load() {
		n.msgs.DropQueue(key)
	}
}

// lead makes this node serve the queue (a new queue, a promotion, or a new in-sync set). While
// Raft replays the log at start-up it does nothing: the restarted leader claims a new epoch
// once its store is recovered (claimLeadership), and serves from then on.
func (r *replicated) lead(qd fsm.Queue) {
	if !r.n.recovered.Load() {
		return
	}
	r.mu.Lock()
	promoted := !r.leading || r.epoch != qd.Epoch
	var held takeOver
	if promoted {
		// What this replica holds now is what the queue object will read back from the store;
		// anything published from here on reaches the queue directly. Taken before leading is
		// set, so the two never overlap (a publish meanwhile finds no queue object: nack).
		if err := r.loadLocked(); err != nil {
			r.n.log.Error("replicated queue: loading the replica failed", "queue", r.name, "err", err)
		}
		held = takeOver{count: r.idx.Len(), lastID: r.idx.LastID(), base: r.n.storePublished(r.key)}
		r.leading, r.epoch, r.nextSeq = true, qd.Epoch, 1
		for _, f := range r.followers {
			f.state, f.downSince = followerIdle, time.Now().UnixNano()
		}
	}
	for _, id := range qd.Replicas {
		if id != r.n.id && r.followers[id] == nil {
			r.followers[id] = &follower{node: id, downSince: time.Now().UnixNano()}
		}
	}
	for id, f := range r.followers {
		if !slices.Contains(qd.Replicas, id) {
			delete(r.followers, id)
		}
		if promoted {
			f.acked.Store(0) // acknowledgements of another epoch's stream say nothing now
		}
	}
	fs := maps.Clone(r.followers)
	r.ackFollowers.Store(&fs)
	needQueue := promoted && r.q == nil
	r.mu.Unlock()

	r.ackMu.Lock()
	r.inSync, r.replicas = qd.InSync, len(qd.Replicas)
	released := r.releaseLocked()
	r.ackMu.Unlock()
	finish(released, nil)

	if needQueue {
		r.n.createLocalQueue(qd)
	}
	if promoted {
		r.restore(held)
	}
	r.n.wakeQuorum()
}

// follow makes this node a follower of qd.Owner: if it led before, its queue object goes away
// (consumers are cancelled and subscribe again through the new leader) and publishes still
// waiting for replication are nacked.
func (r *replicated) follow(qd fsm.Queue) {
	r.stopLeading(ErrLeaderChanged)
	r.mu.Lock()
	if qd.Epoch > r.epoch {
		r.epoch = qd.Epoch
	}
	r.mu.Unlock()
}

func (r *replicated) stopLeading(cause error) {
	r.mu.Lock()
	wasLeading := r.leading
	r.leading = false
	r.q = nil
	r.mu.Unlock()
	if !wasLeading {
		return
	}
	n := r.n
	k := queueKey{r.vhost, r.name}
	n.mu.Lock()
	q := n.queues[k]
	delete(n.queues, k)
	n.mu.Unlock()
	if q != nil {
		r.keepReturns(q.ReturnCounts())
		q.Delete()
		if ps, ok := n.msgs.(*pagedStore); ok {
			ps.pager.DoneReading(r.key) // its read position means nothing to a follower
		}
	}
	r.ackMu.Lock()
	ws := r.waiters
	r.waiters = nil
	r.ackMu.Unlock()
	for _, w := range ws {
		w.done(cause)
	}
}

// leaderQueue is the queue object this node serves the queue through while it leads (else nil).
func (r *replicated) leaderQueue() *queue.Queue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.q
}

// attachQueue is called by createLocalQueue for a queue this node leads: the queue's store is
// the replicated view of the message store.
func (r *replicated) attachQueue(q *queue.Queue) {
	r.mu.Lock()
	r.q = q
	r.mu.Unlock()
}

// loadLocked fills the index from what the store holds for the queue (after a restart).
func (r *replicated) loadLocked() error {
	if r.loaded {
		return nil
	}
	pager, ok := r.n.msgs.(*pagedStore)
	if !ok {
		return errors.New("the message store cannot read messages back")
	}
	upTo := r.n.recoveredLast(r.key)
	for after := uint64(0); after < upTo; {
		got, through, err := pager.pager.ReadQueueCopy(r.key, after, upTo, 4096, 16<<20)
		for _, m := range got {
			ident, _, err := replica.SplitStored(m.Data)
			if err != nil || !r.idx.Add(ident, m.ID) {
				r.n.log.Error("replicated queue: unreadable or out-of-order stored message dropped", "queue", r.name, "id", m.ID, "err", err)
				r.n.msgs.Ack(r.key, m.ID)
			}
		}
		if err != nil {
			return fmt.Errorf("load replica of %q: %w", r.name, err)
		}
		if through <= after && len(got) == 0 {
			break
		}
		after = through
	}
	r.loaded = true
	return nil
}

// keepReturns records, by identity, the return counts of the queue object this replica served
// through until it stopped leading (keyed by store id).
func (r *replicated) keepReturns(counts map[uint64]uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range counts {
		if ident, ok := r.idx.IdentOf(id); ok {
			r.returns[ident] = n
		}
	}
}

// takeReturns hands the return counts this replica holds to the queue object it now leads
// through, by store id; from then on that queue keeps them.
func (r *replicated) takeReturns() map[uint64]uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[uint64]uint32, len(r.returns))
	for ident, n := range r.returns {
		if id, ok := r.idx.ID(ident); ok {
			out[id] = n
		}
	}
	clear(r.returns)
	return out
}

// forgetGoneReturnsLocked drops the counts of messages the index no longer holds.
func (r *replicated) forgetGoneReturnsLocked() {
	for ident := range r.returns {
		if _, ok := r.idx.ID(ident); !ok {
			delete(r.returns, ident)
		}
	}
}

// takeOver is what a replica holds when it starts leading.
type takeOver struct {
	count  int
	lastID uint64 // newest store id among them
	base   uint64 // store publishes to the queue's key so far (StopPaging's accounting)
}

// restore hands the messages this replica held when it took over to the queue object it now
// serves through; they are read back from the store as the queue drains, marked redelivered.
func (r *replicated) restore(held takeOver) {
	r.mu.Lock()
	q := r.q
	r.mu.Unlock()
	if q == nil {
		return
	}
	q.SeedReturns(r.takeReturns())
	if st, ok := q.Store().(*quorumStore); ok {
		st.base.Store(held.base)
		// A queue object this node served the queue through before (an earlier epoch) may
		// have left its read position in the store: the new one starts from a clean reader.
		st.pager.DoneReading(r.key)
	}
	if held.count > 0 {
		q.RestoreStored(held.count, 0, held.lastID)
	}
}

// publish stores msg for the queue this node leads, sends it to the followers and returns the
// copy to enqueue (its own store id); the join gets one part for the local disk and one for
// replication.
func (r *replicated) publish(msg *queue.Message, stored []byte, join *confirmJoin) (*queue.Message, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leading {
		return nil, ErrLeaderChanged
	}
	if r.nextSeq > replica.MaxSeq {
		return nil, fmt.Errorf("queue %q: epoch %d is out of message numbers", r.name, r.epoch)
	}
	ident := replica.MakeIdent(r.epoch, r.nextSeq)
	r.nextSeq++
	data := replica.StoredIdent(stored, ident)
	join.add()
	id := r.n.msgs.Publish([]string{r.key}, data, join.finish)
	if id == 0 || !r.idx.Add(ident, id) {
		return nil, fmt.Errorf("queue %q: message store refused the message", r.name)
	}
	join.add()
	r.ackMu.Lock()
	r.waiters = append(r.waiters, waiter{ident: ident, done: join.finish})
	released := r.releaseLocked()
	r.ackMu.Unlock()
	r.sendLocked([]replica.Entry{{Ident: ident, Data: data}})
	finish(released, nil)
	cp := *msg
	cp.StoreID = id
	return &cp, nil
}

// settle tells the followers that messages (by local store id) left the queue for good.
func (r *replicated) settle(ids []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leading {
		return
	}
	var entries []replica.Entry
	for _, id := range ids {
		if ident, ok := r.idx.RemoveID(id); ok {
			entries = append(entries, replica.Entry{Ident: ident, Settle: true})
		}
	}
	if len(entries) > 0 {
		r.sendLocked(entries)
	}
}

// sendLocked sends entries to every live follower and queues them for syncing ones.
func (r *replicated) sendLocked(entries []replica.Entry) {
	for _, f := range r.followers {
		switch f.state {
		case followerLive:
			r.appendLocked(f, entries)
		case followerSyncing:
			f.pending = append(f.pending, entries...)
		}
	}
}

// appendLocked sends one Append to f; its reply acknowledges everything up to the newest
// message sent.
func (r *replicated) appendLocked(f *follower, entries []replica.Entry) {
	r.appendThroughLocked(f, entries, 0)
}

// appendThroughLocked is appendLocked that also moves the follower's position to through (if
// beyond its newest message): the end of a sync, when what lies between was settled.
func (r *replicated) appendThroughLocked(f *follower, entries []replica.Entry, through replica.Ident) {
	prev := f.sent
	for _, e := range entries {
		if e.Stores() {
			f.sent = e.Ident
		}
	}
	f.sent = max(f.sent, through)
	upTo := f.sent
	req := replica.AppendRequest(nil, &replica.Request{Kind: replica.Append, Epoch: r.epoch, Prev: prev, UpTo: upTo, Entries: entries})
	if f.inflight.Add(1) == 1 {
		f.oldest.Store(time.Now().UnixNano())
	}
	r.n.replicate(f.node, r.key, req, func(_ []byte, err error) { r.appended(f, upTo, err) })
}

// appended handles an Append's reply (maybe inside ReplicateAsync: ackMu only).
func (r *replicated) appended(f *follower, upTo replica.Ident, err error) {
	if f.inflight.Add(-1) == 0 {
		f.oldest.Store(0)
	} else {
		f.oldest.Store(time.Now().UnixNano())
	}
	if err != nil {
		if f.broken.CompareAndSwap(false, true) {
			r.n.log.Debug("replicated queue: follower needs a sync", "queue", r.name, "follower", f.node, "err", err)
			r.n.wakeQuorum()
		}
		return
	}
	for {
		cur := f.acked.Load()
		if uint64(upTo) <= cur || f.acked.CompareAndSwap(cur, uint64(upTo)) {
			break
		}
	}
	r.ackMu.Lock()
	released := r.releaseLocked()
	r.ackMu.Unlock()
	finish(released, nil)
}

// releaseLocked pops the waiters whose messages are committed.
func (r *replicated) releaseLocked() []waiter {
	if len(r.waiters) == 0 {
		return nil
	}
	last := r.waiters[len(r.waiters)-1].ident
	set := r.inSync
	if len(r.joining) > 0 {
		set = slices.Clone(set)
		for id := range r.joining {
			if !slices.Contains(set, id) {
				set = append(set, id)
			}
		}
	}
	c := replica.Committed(last, r.n.id, set, r.replicas, func(node string) replica.Ident {
		if f := r.followerAcked(node); f != nil {
			return replica.Ident(f.acked.Load())
		}
		return 0
	})
	if c > r.committed {
		r.committed = c
	}
	i := 0
	for i < len(r.waiters) && r.waiters[i].ident <= r.committed {
		i++
	}
	if i == 0 {
		return nil
	}
	out := slices.Clone(r.waiters[:i])
	r.waiters = slices.Delete(r.waiters, 0, i)
	return out
}

func (r *replicated) followerAcked(node string) *follower {
	if fs := r.ackFollowers.Load(); fs != nil {
		return (*fs)[node]
	}
	return nil
}

func finish(ws []waiter, err error) {
	for _, w := range ws {
		w.done(err)
	}
}

// loadReplicas reads the index of every replicated queue this node holds a replica of, once
// the store is recovered (Recover): a leader that restarted then claims a new epoch and
// serves them; a follower answers its leader's sync with its position.
func (n *Node) loadReplicas() error {
	if n.msgs == nil {
		return nil
	}
	for _, qd := range n.fsm.Queues("") {
		if qd.Type == fsm.QueueTypeQuorum && slices.Contains(qd.Replicas, n.id) {
			n.ensureReplicated(qd)
		}
	}
	n.qmu.RLock()
	rs := slices.Collect(maps.Values(n.quorum))
	n.qmu.RUnlock()
	var errs []error
	for _, r := range rs {
		r.mu.Lock()
		errs = append(errs, r.loadLocked())
		r.mu.Unlock()
	}
	return errors.Join(errs...)
}

func (n *Node) recoveredLast(key string) uint64 { return n.lastIDs[key] }

func (n *Node) storePublished(key string) uint64 {
	if ps, ok := n.msgs.(*pagedStore); ok {
		if st, ok := ps.MessageStore.(interface{ Published(string) uint64 }); ok {
			return st.Published(key)
		}
	}
	return 0
}

func without(set []string, node string) []string {
	out := make([]string, 0, len(set))
	for _, s := range set {
		if s != node {
			out = append(out, s)
		}
	}
	return out
}

// LeadsFollowedQueues reports whether node leads a replicated queue this node follows (so this
// node would notice its death first).
func (n *Node) LeadsFollowedQueues(node string) bool {
	for _, q := range n.fsm.Queues("") {
		if q.Type == fsm.QueueTypeQuorum && q.Owner == node && slices.Contains(q.InSync, n.id) {
			return true
		}
	}
	return false
}

// ReplicaSet chooses the replicas of a new replicated queue led by leader: size nodes (fewer
// if fewer are live), the leader first, then the live nodes holding the fewest replicas.
func (n *Node) ReplicaSet(leader string, size int) []string {
	live, ok := n.liveNodeIDs()
	if !ok {
		live = []string{leader}
	}
	return placement.Replicas(leader, live, n.replicaLoad(), size)
}

// replicaLoad counts the replicas each node holds.
func (n *Node) replicaLoad() map[string]int {
	load := map[string]int{}
	for _, q := range n.fsm.Queues("") {
		for _, r := range q.Replicas {
			load[r]++
		}
	}
	return load
}

// ReplicaMessages counts the messages this node's replica of a replicated queue holds (false
// when it holds none: not a replica, or its index is not loaded yet).
func (n *Node) ReplicaMessages(vhost, name string) (int, bool) {
	r := n.replicatedFor(StoreKey(vhost, name))
	if r == nil {
		return 0, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.idx.Len(), r.loaded
}
