package queue

import "maps"

// Return counts (Config.CountReturns): how often each stored message came back to the queue,
// for x-delivery-count and x-delivery-limit. Kept under retMu, apart from the queue's lock,
// so a delivery can mark a message without the queue's lock held.

// returned counts one more return of m and reports whether it is past the delivery limit.
func (q *Queue) returned(m *Message) (past bool) {
	if !q.cfg.CountReturns || m.StoreID == 0 {
		return false
	}
	q.retMu.Lock()
	defer q.retMu.Unlock()
	if q.returns == nil {
		q.returns = map[uint64]uint32{}
	}
	n := q.returns[m.StoreID] + 1
	q.returns[m.StoreID] = n
	if rc, ok := q.cfg.Store.(ReturnCounter); ok {
		rc.Returned(q.cfg.StoreKey, m.StoreID, n)
	}
	return q.cfg.DeliveryLimit >= 0 && int64(n) > q.cfg.DeliveryLimit
}

// ReturnCounts returns how often each stored message still in the queue has come back so far
// (CountReturns), by store id: what a replicated queue's leader hands on when it steps down.
func (q *Queue) ReturnCounts() map[uint64]uint32 {
	q.retMu.Lock()
	defer q.retMu.Unlock()
	return maps.Clone(q.returns)
}

// ReturnCount is how often the stored message id has come back so far.
func (q *Queue) ReturnCount(id uint64) uint32 {
	q.retMu.Lock()
	defer q.retMu.Unlock()
	return q.returns[id]
}

// SeedReturns sets the return counts of stored messages the queue takes over (a replicated
// queue's new leader), so x-delivery-count and x-delivery-limit carry on from them.
func (q *Queue) SeedReturns(counts map[uint64]uint32) {
	if !q.cfg.CountReturns || len(counts) == 0 {
		return
	}
	q.retMu.Lock()
	defer q.retMu.Unlock()
	if q.returns == nil {
		q.returns = make(map[uint64]uint32, len(counts))
	}
	for id, n := range counts {
		q.returns[id] = max(q.returns[id], n)
	}
}

// marked is the message a delivery hands out: m itself, or m marked with its return count.
func (q *Queue) marked(m *Message) *Message {
	if !q.cfg.CountReturns || q.cfg.Redelivering == nil || m.StoreID == 0 {
		return m
	}
	q.retMu.Lock()
	n := q.returns[m.StoreID]
	q.retMu.Unlock()
	if n == 0 {
		return m
	}
	return q.cfg.Redelivering(m, n)
}
