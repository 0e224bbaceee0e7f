package broker

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/replica"
)

// The follower side: requests from a queue's leader arrive in order on the leader's data link
// (Handler.Replicate). A follower accepts them only from the leader its own FSM names for the
// request's epoch, so a deposed leader's stream is refused as soon as this node has applied the
// change; an Append is answered once every message in it is on this node's disk.

// Replicate serves a replication request from another node (the queue's leader).
func (h linkHandler) Replicate(from, key string, payload []byte, reply func([]byte, error)) {
	n := h.n
	req, err := replica.DecodeRequest(payload)
	if err != nil {
		reply(nil, &datalink.RemoteError{Code: fsm.CodePreconditionFailed, Text: err.Error()})
		return
	}
	vhost, name, _ := splitStoreKey(key)
	qd, ok := n.fsm.Queue(vhost, name)
	switch {
	case !ok || qd.Type != fsm.QueueTypeQuorum || !containsNode(qd.Replicas, n.id):
		reply(nil, remoteRefusal(errNotReplica, name))
		return
	case req.Epoch != qd.Epoch || qd.Owner != from || qd.Owner == n.id:
		// Older: a deposed leader. Newer: this node has not applied the election yet; the
		// leader syncs again shortly.
		reply(nil, remoteRefusal(fmt.Errorf("%w (request epoch %d from %s, here epoch %d led by %s)", errStaleLeader, req.Epoch, from, qd.Epoch, qd.Owner), name))
		return
	case n.msgs == nil || !n.recovered.Load():
		reply(nil, remoteRefusal(errors.New("message store not ready"), name))
		return
	}
	r := n.ensureReplicated(qd)
	r.mu.Lock()
	if r.leading {
		r.mu.Unlock()
		reply(nil, remoteRefusal(errStaleLeader, name))
		return
	}
	if err := r.loadLocked(); err != nil {
		r.mu.Unlock()
		reply(nil, remoteRefusal(err, name))
		return
	}
	r.epoch = max(r.epoch, req.Epoch)
	switch req.Kind {
	case replica.Sync:
		pos := r.idx.Last()
		r.mu.Unlock()
		reply(replica.EncodePosition(pos), nil)
	case replica.Truncate:
		dropped := r.idx.Truncate(req.UpTo, req.Keep)
		r.forgetGoneReturnsLocked()
		r.mu.Unlock()
		if len(dropped) > 0 {
			n.msgs.AckMany(key, dropped)
		}
		reply(nil, nil)
	case replica.Append:
		r.followAppendLocked(req, reply)
	default:
		r.mu.Unlock()
		reply(nil, remoteRefusal(fmt.Errorf("unexpected request kind %d", req.Kind), name))
	}
}

// followAppendLocked stores an Append's messages and applies its settlements; it unlocks r.mu.
func (r *replicated) followAppendLocked(req *replica.Request, reply func([]byte, error)) {
	if req.Prev != r.idx.Last() {
		last := r.idx.Last()
		r.mu.Unlock()
		reply(nil, remoteRefusal(fmt.Errorf("%w: leader sent after %v, this replica ends at %v", errOutOfSync, req.Prev, last), r.name))
		return
	}
	var settled []uint64
	last := -1
	prev := r.idx.Last()
	for i, e := range req.Entries {
		if !e.Stores() {
			continue
		}
		if e.Ident <= prev {
			r.mu.Unlock()
			reply(nil, remoteRefusal(fmt.Errorf("%w: %v does not follow %v", errOutOfSync, e.Ident, prev), r.name))
			return
		}
		prev, last = e.Ident, i
	}
	for i, e := range req.Entries {
		if e.Settle {
			if id, ok := r.idx.Remove(e.Ident); ok {
				settled = append(settled, id)
			}
			delete(r.returns, e.Ident)
			continue
		}
		if e.Returns > 0 {
			if _, ok := r.idx.ID(e.Ident); ok {
				r.returns[e.Ident] = e.Returns
			}
			continue
		}
		// Records reach the disk in order, and a failed write fails every later one: the
		// last message's callback answers for the whole Append.
		done := func(error) {}
		if i == last {
			done = func(err error) { reply(nil, err) }
		}
		id := r.n.msgs.Publish([]string{r.key}, e.Data, done)
		if id == 0 {
			// The store is broken or closing; the last callback (or this one) reports it.
			r.mu.Unlock()
			if i != last {
				reply(nil, remoteRefusal(errors.New("message store refused the message"), r.name))
			}
			return
		}
		r.idx.Add(e.Ident, id)
	}
	r.idx.SetPosition(req.UpTo)
	r.mu.Unlock()
	if len(settled) > 0 {
		r.n.msgs.AckMany(r.key, settled)
	}
	if last < 0 {
		reply(nil, nil)
	}
}

func containsNode(list []string, id string) bool {
	for _, s := range list {
		if s == id {
			return true
		}
	}
	return false
}

func remoteRefusal(err error, queueName string) error {
	return &datalink.RemoteError{Code: fsm.CodePreconditionFailed, Text: fmt.Sprintf("replica of queue '%s': %v", queueName, err)}
}

// quorumStore is the message store as a replicated queue's leader sees it: settlements also go
// to the followers, and stored records carry the message identity in front.
type quorumStore struct {
	*pagedStore
	r    *replicated
	base atomic.Uint64 // store publishes to the key before this node took the queue over
}

var _ queue.PagingStore = (*quorumStore)(nil)

func (s *quorumStore) Ack(key string, id uint64) {
	if !s.r.settleIfLeading([]uint64{id}) {
		return
	}
	s.pagedStore.Ack(key, id)
}

func (s *quorumStore) AckMany(key string, ids []uint64) {
	if !s.r.settleIfLeading(ids) {
		return
	}
	s.pagedStore.AckMany(key, ids)
}

func (s *quorumStore) AckRange(key string, after, upTo uint64) {
	r := s.r
	r.mu.Lock()
	_, ids := r.idx.After(0, 1<<62)
	r.mu.Unlock()
	var in []uint64
	for _, id := range ids {
		if id > after && id <= upTo {
			in = append(in, id)
		}
	}
	if !r.settleIfLeading(in) {
		return
	}
	s.pagedStore.AckRange(key, after, upTo)
}

func (s *quorumStore) StopPaging(key string, announced uint64) bool {
	return s.pagedStore.StopPaging(key, announced+s.base.Load())
}

func (s *quorumStore) PageIn(key string, after, upTo uint64, maxMsgs, maxBytes int) ([]*queue.Message, uint64, error) {
	got, through, err := s.pager.ReadQueue(key, after, upTo, maxMsgs, maxBytes)
	msgs := make([]*queue.Message, 0, len(got))
	for _, sm := range got {
		_, data, serr := replica.SplitStored(sm.Data)
		m, derr := DecodeStored(data)
		if serr != nil || derr != nil {
			_, name, _ := splitStoreKey(key)
			s.log.Error("stored message of a replicated queue cannot be decoded; dropping it", "queue", name, "id", sm.ID, "err", errors.Join(serr, derr))
			s.Ack(key, sm.ID)
			continue
		}
		m.StoreID = sm.ID
		msgs = append(msgs, m)
	}
	return msgs, through, err
}

// settleIfLeading replicates settlements; false when this node no longer leads (the queue
// object is stale: the new leader owns the messages, and this replica's copy must stay).
// Returned passes a stored message's return count on to the followers (queue.ReturnCounter).
func (s *quorumStore) Returned(_ string, id uint64, count uint32) {
	r := s.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leading {
		return
	}
	if ident, ok := r.idx.IdentOf(id); ok {
		r.sendLocked([]replica.Entry{{Ident: ident, Returns: count}})
	}
}

func (r *replicated) settleIfLeading(ids []uint64) bool {
	r.mu.Lock()
	leading := r.leading
	r.mu.Unlock()
	if !leading {
		return false
	}
	r.settle(ids)
	return true
}
