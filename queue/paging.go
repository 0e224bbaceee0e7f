package queue

import "log/slog"

// Paging: a durable queue holding persistent messages keeps only a window of them in
// memory; the rest stay in the message store, which already has every one of them on disk
// (written before the message reached the queue), and are read back in order as the head
// drains (RabbitMQ's lazy / CQv2 behaviour). Nothing is written to page out.
//
// The store hands out message ids in publish order and a queue receives its stored
// messages in that order (up to concurrent publishers racing, handled below), so the part
// of the queue that is on disk is described by id ranges, not per message: a run (a, b]
// stands for "every message this queue holds in the store with an id in (a, b]". The tail
// behind the window is a sequence of such runs and of the few messages that must stay in
// memory (transient ones, ones with a TTL, ones the store refused), in queue order.
//
// Runs are contiguous: each starts where the previous one (or a message kept in memory)
// ended. A publisher that got its id from the store before another but reaches the queue
// after it (a late arrival) therefore always falls into a run already covering its id, and
// is read back from disk with that run — or, if its id is below where paging started, it
// joins the window. The era of paging ends only when the tail is empty and the store
// confirms that every message published to this queue has reached it (StopPaging), so no
// late arrival can be misplaced across eras.

// PagingStore is a Store that can give a durable queue its messages back (the broker's
// adapter over the message store). Its methods are called with the queue's lock held.
type PagingStore interface {
	Store
	// PageIn returns, in publish order, up to maxMsgs messages (fewer past maxBytes, at
	// least one) the queue holds with store ids in (after, upTo], and through: all messages
	// with ids in (after, through] are returned; through == upTo when the range is done.
	PageIn(queue string, after, upTo uint64, maxMsgs, maxBytes int) (msgs []*Message, through uint64, err error)
	// AckRange releases every message the queue holds with an id in (after, upTo].
	AckRange(queue string, after, upTo uint64)
	// StartPaging: the queue keeps its messages with ids above after on disk only.
	StartPaging(queue string, after uint64)
	// StopPaging ends paging if announced (stored messages the queue received) equals
	// what the store published to it; false while one is still on its way.
	StopPaging(queue string, announced uint64) bool
}

// Default window of a paging queue: RabbitMQ's CQv2 keeps a couple of thousand messages of
// a queue in memory; a few MiB bounds queues of large messages.
const (
	DefaultPageWindow      = 2048
	DefaultPageWindowBytes = 4 << 20
)

type pagingState struct {
	store       PagingStore
	window      int
	windowBytes int64
	log         *slog.Logger

	active    bool   // an era of paging: stored messages go to the tail
	eraLo     uint64 // ids up to here reach the window even now (late arrivals from before the era)
	covered   uint64 // the tail's runs and in-memory messages cover ids up to here
	ramHi     uint64 // highest store id placed in the window outside an era
	announced uint64 // stored messages handed to this queue (Publish), for StopPaging

	tail      ring[tailItem]
	tailCount int   // messages in the tail (the runs' part is counted at publish: an estimate)
	tailBytes int64 // their body bytes (likewise)

	// Messages recovered after a restart are marked redelivered, and their TTL counts from
	// the restart, also when they are read back long after it.
	restoredHi uint64
	restoredAt int64

	lastErr string // last page-in failure, logged once
}

// tailItem is a run of on-disk messages (run) or one message kept in memory.
type tailItem struct {
	run       bool
	after, hi uint64
	e         entry
}

func newPaging(cfg Config) *pagingState {
	ps, ok := cfg.Store.(PagingStore)
	if !ok || cfg.MaxPriority > 0 {
		// Priority queues keep every message in memory: one run per priority level would
		// need the store to filter by priority.
		return nil
	}
	p := &pagingState{store: ps, window: cfg.PageWindow, windowBytes: cfg.PageWindowBytes, log: cfg.Logger}
	if p.window <= 0 {
		p.window = DefaultPageWindow
	}
	if p.windowBytes <= 0 {
		p.windowBytes = DefaultPageWindowBytes
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	return p
}

// Pages reports whether the queue keeps its backlog of persistent messages on disk.
func (q *Queue) Pages() bool { return q.pg != nil }

func (q *Queue) windowFullLocked() bool {
	p := q.pg
	return q.levels[0].len() >= p.window || q.readyBytes-p.tailBytes >= p.windowBytes
}

// enqueueLocked places a newly published message: in the window, or in the tail, where a
// stored message without TTL is just counted (its run covers it on disk).
func (q *Queue) enqueueLocked(e entry) {
	p := q.pg
	if p == nil {
		q.pushReadyLocked(e, false)
		return
	}
	id := e.msg.StoreID
	if !p.active {
		if id == 0 || e.expiresAt != 0 || !q.windowFullLocked() {
			q.pushReadyLocked(e, false)
			p.ramHi = max(p.ramHi, id)
			return
		}
		p.active = true
		p.eraLo = max(p.ramHi, p.covered)
		p.covered = p.eraLo
		p.store.StartPaging(q.cfg.StoreKey, p.eraLo)
	}
	switch {
	case id != 0 && id <= p.eraLo:
		q.pushReadyLocked(e, false) // published before the era, arrived after it began
		return
	case id != 0 && id <= p.covered:
		// A late arrival inside a run: read back (or already read) with the run.
		if e.expiresAt != 0 {
			q.expiring-- // counted in Publish; counted again when read back
		}
		q.countTailLocked(e, 1)
		return
	case id != 0 && e.expiresAt == 0:
		q.extendRunLocked(id)
		q.countTailLocked(e, 1)
	default:
		// Kept in memory (transient, TTL, not stored), in its place behind the runs. A
		// stored one ends the runs before it, so no run re-reads it.
		if id != 0 {
			q.extendRunLocked(id - 1)
			p.covered = id
		}
		if p.tail.len() == 0 && !q.windowFullLocked() {
			q.pushReadyLocked(e, false)
			return
		}
		p.tail.pushBack(tailItem{e: e})
		q.countTailLocked(e, 1)
	}
}

// countTailLocked adds d messages like e to the tail's share of the ready counts. (Tail
// messages kept in memory stay counted in q.expiring, like window ones.)
func (q *Queue) countTailLocked(e entry, d int) {
	n := int64(d) * int64(len(e.msg.Body))
	q.pg.tailCount += d
	q.pg.tailBytes += n
	q.ready += d
	q.readyBytes += n
}

func (q *Queue) extendRunLocked(hi uint64) {
	p := q.pg
	if hi <= p.covered {
		return
	}
	if p.tail.len() > 0 {
		if last := p.tail.back(); last.run && last.hi == p.covered {
			last.hi, p.covered = hi, hi
			return
		}
	}
	p.tail.pushBack(tailItem{run: true, after: p.covered, hi: hi})
	p.covered = hi
}

// headLocked returns the level of the next ready message, reading the tail back into the
// window first when the window is empty; -1 when there is none.
func (q *Queue) headLocked() int {
	if lvl := q.headLevelLocked(); lvl >= 0 || q.pg == nil {
		return lvl
	}
	q.fillLocked()
	return q.headLevelLocked()
}

// fillLocked moves tail messages into the window until it is full or the tail is empty.
func (q *Queue) fillLocked() {
	p := q.pg
	var now int64
	for p.tail.len() > 0 && !q.windowFullLocked() {
		it := p.tail.front()
		if !it.run {
			e := p.tail.popFront().e
			q.countTailLocked(e, -1)
			e.seq = q.nextSeq // window order is delivery order, also for requeues
			q.nextSeq++
			q.pushReadyLocked(e, false)
			continue
		}
		room := p.window - q.levels[0].len()
		roomBytes := int(p.windowBytes - (q.readyBytes - p.tailBytes))
		msgs, through, err := p.store.PageIn(q.cfg.StoreKey, it.after, it.hi, room, roomBytes)
		if err != nil {
			// The messages stay where they are (on disk, in the store's accounting); the
			// queue serves what it has and retries on the next demand.
			if msg := err.Error(); msg != p.lastErr {
				p.lastErr = msg
				p.log.Error("queue: reading messages back from the message store failed", "queue", q.cfg.Name, "vhost", q.cfg.Vhost, "err", err)
			}
			return
		}
		p.lastErr = ""
		for _, m := range msgs {
			e := entry{msg: m, seq: q.nextSeq, redelivered: m.StoreID <= p.restoredHi}
			q.nextSeq++
			if ttl := q.ttlFor(m); ttl >= 0 {
				base := p.restoredAt
				if m.StoreID > p.restoredHi {
					if now == 0 {
						now = q.now()
					}
					base = now
				}
				e.expiresAt = max(base+ttl, 1)
				q.expiring++
			}
			q.countTailLocked(e, -1)
			q.pushReadyLocked(e, false)
		}
		if through >= it.hi {
			p.tail.popFront()
		} else if through <= it.after && len(msgs) == 0 {
			return // no progress: never loop
		} else {
			it.after = through
		}
	}
	if p.tail.len() == 0 {
		q.endTailLocked()
	}
}

// endTailLocked: with nothing left behind the window, the tail's estimated counts are reset
// to the truth (zero), and the era ends once no stored message is still on its way here.
func (q *Queue) endTailLocked() {
	p := q.pg
	q.ready -= p.tailCount
	q.readyBytes -= p.tailBytes
	p.tailCount, p.tailBytes = 0, 0
	if p.active && p.store.StopPaging(q.cfg.StoreKey, p.announced) {
		p.active = false
		p.ramHi = max(p.ramHi, p.covered)
	}
}

// purgeTailLocked releases every message behind the window (queue.purge).
func (q *Queue) purgeTailLocked(ids []uint64) []uint64 {
	p := q.pg
	for p.tail.len() > 0 {
		it := p.tail.popFront()
		switch {
		case it.run:
			p.store.AckRange(q.cfg.StoreKey, it.after, it.hi)
		case it.e.msg.StoreID != 0:
			ids = append(ids, it.e.msg.StoreID)
		}
	}
	p.tail.clear()
	q.endTailLocked()
	return ids
}

// RestoreStored makes the queue hold the messages the store recovered for it (count
// messages of about bytes data bytes, ids up to lastID) without reading them: they are read
// back in order as the queue drains, marked redelivered, their TTL counting from now. The
// queue must page (Pages); messages it already holds go after the recovered ones.
func (q *Queue) RestoreStored(count int, bytes int64, lastID uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	p := q.pg
	if p == nil || q.deleted || count <= 0 {
		return
	}
	if !p.active {
		p.active = true
		p.eraLo = max(p.ramHi, p.covered)
		p.covered = p.eraLo
	}
	// Anything published before the restore goes behind the recovered messages.
	for q.levels[0].len() > 0 {
		e := q.levels[0].popBack()
		q.ready--
		q.readyBytes -= int64(len(e.msg.Body))
		p.tail.pushFront(tailItem{e: e})
		q.countTailLocked(e, 1)
	}
	p.tail.pushFront(tailItem{run: true, after: 0, hi: lastID})
	// The run covers every id up to lastID: a later publish starts its run after it, never
	// at 0 (which would read the restored messages a second time).
	p.covered = max(p.covered, lastID)
	p.tailCount += count
	p.tailBytes += bytes
	q.ready += count
	q.readyBytes += bytes
	p.restoredHi = max(p.restoredHi, lastID)
	p.restoredAt = q.now()
	p.store.StartPaging(q.cfg.StoreKey, 0)
}
