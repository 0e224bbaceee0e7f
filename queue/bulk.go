package queue

// Purge removes every ready message and returns how many there were.
func (q *Queue) Purge() int {
	q.mu.Lock()
	n := q.ready
	if q.cfg.Store != nil {
		var ids []uint64
		for i := range q.levels {
			l := &q.levels[i]
			for j := 0; j < l.len(); j++ {
				if id := l.buf[(l.head+j)%len(l.buf)].msg.StoreID; id != 0 {
					ids = append(ids, id)
				}
			}
		}
		if q.pg != nil {
			ids = q.purgeTailLocked(ids)
		}
		if len(ids) > 0 {
			q.cfg.Store.AckMany(q.cfg.StoreKey, ids)
		}
	}
	for i := range q.levels {
		q.levels[i].clear()
	}
	q.ready, q.readyBytes, q.expiring = 0, 0, 0
	q.releaseFlowLocked()
	q.mu.Unlock()
	return n
}

// Restore loads messages recovered from the store at start-up, in their original order. They
// are marked redelivered: the broker cannot know whether a consumer saw them before the restart.
func (q *Queue) Restore(msgs []*Message) {
	var dead []DeadLetter
	var now int64
	q.mu.Lock()
	for _, m := range msgs {
		e := entry{msg: m, seq: q.nextSeq, redelivered: true}
		q.nextSeq++
		if ttl := q.ttlFor(m); ttl >= 0 {
			// The TTL counts again from the restart: the publish time was not stored.
			if now == 0 {
				now = q.now()
			}
			e.expiresAt = now + ttl
			q.expiring++
		}
		q.pushReadyLocked(e, false)
	}
	q.dispatchLocked(&now, &dead)
	q.armTTLLocked()
	q.mu.Unlock()
	q.sendDeadLetters(dead)
}
