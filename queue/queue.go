// Package queue owns the messages of one queue on its owner node: the ready list (with
// priorities), dispatch round-robin over consumers within their credit, unacknowledged
// accounting, requeue, TTL expiry, length limits, the hand-off of dead letters, and for
// durable queues the paging of a long backlog to the message store (paging.go). It knows
// nothing of sockets or AMQP frames: consumers are an interface the AMQP server implements.
package queue

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Message is one published message. A message routed to several queues is shared by all of
// them, so it is never modified after publish.
type Message struct {
	Exchange   string
	RoutingKey string
	Props      []byte // raw property flags + list, sent to consumers as received
	Body       []byte
	Persistent bool
	Priority   uint8
	// ExpirationMs is the per-message TTL from the expiration property, -1 when absent.
	ExpirationMs int64
	// StoreID is the message's id in the node's message store (0: not stored). Set before the
	// message reaches any queue, never changed after.
	StoreID uint64
}

// Store is where a durable queue reports that stored messages left it for good (acked,
// rejected, expired, dropped by a length limit, purged), so a restart does not bring them back.
type Store interface {
	Ack(queue string, id uint64)
	AckMany(queue string, ids []uint64)
}

// ReturnCounter is a Store that also hears how often each stored message has come back
// (CountReturns): a replicated queue's leader passes the counts on to its followers.
type ReturnCounter interface {
	Returned(queue string, id uint64, count uint32)
}

// Overflow says what a full queue does with the next message.
type Overflow uint8

const (
	DropHead Overflow = iota
	RejectPublish
	RejectPublishDLX
)

// Config is a queue's behaviour, decoded from its declare arguments by the caller.
type Config struct {
	Vhost, Name    string
	MessageTTL     time.Duration // < 0: none
	Expires        time.Duration // 0: never
	MaxLength      int64         // < 0: unlimited
	MaxLengthBytes int64         // < 0: unlimited
	Overflow       Overflow
	DeadLetter     bool // true when x-dead-letter-exchange is set (it may be "")
	MaxPriority    uint8
	AutoDelete     bool
	// Store and StoreKey are set for durable queues: messages with a StoreID are acked in
	// Store under StoreKey when they leave the queue. A Store that is also a PagingStore
	// makes the queue keep only a window of them in memory (see paging.go).
	Store    Store
	StoreKey string
	// PageWindow and PageWindowBytes bound that window (0: DefaultPageWindow(Bytes)).
	PageWindow      int
	PageWindowBytes int64
	Logger          *slog.Logger // nil: slog.Default()
	// CountReturns makes the queue count how often each stored message came back (requeued,
	// or its consumer went away), as RabbitMQ's quorum queues do: a message returned more than
	// DeliveryLimit times (x-delivery-limit; < 0: no limit) is dead-lettered (reason
	// delivery_limit) or dropped, and Redelivering, if set, marks a returned message for its
	// next delivery (x-delivery-count) without changing the message the queue holds.
	CountReturns  bool
	DeliveryLimit int64
	Redelivering  func(m *Message, returns uint32) *Message
}

// DeadLetterReason follows RabbitMQ's x-death "reason" values.
type DeadLetterReason string

const (
	ReasonRejected      DeadLetterReason = "rejected"
	ReasonExpired       DeadLetterReason = "expired"
	ReasonMaxLen        DeadLetterReason = "maxlen"
	ReasonDeliveryLimit DeadLetterReason = "delivery_limit"
)

// DeadLetter is a message leaving the queue for its dead-letter exchange.
type DeadLetter struct {
	Msg    *Message
	Reason DeadLetterReason
}

// Hooks are how a queue asks its node to act outside the queue; each is called without the
// queue's lock held.
type Hooks struct {
	DeadLetter func(q *Queue, dead []DeadLetter)
	Expired    func(q *Queue) // x-expires: the queue was unused for its whole period
	AutoDelete func(q *Queue) // the last consumer of an auto-delete queue went away
}

// Delivery is one message handed to a consumer (or returned by Get).
type Delivery struct {
	Queue       *Queue
	Msg         *Message
	Redelivered bool
	// Seq orders the message in its queue; the consumer returns it with Requeue so requeued
	// messages go back in their original order.
	Seq uint64
	// ExpiresAt carries the message's expiry (unix ns, 0: never) through a requeue.
	ExpiresAt int64
	// Remaining is the ready count left after this delivery (basic.get-ok message-count).
	Remaining int
}

// Consumer receives messages. TryDeliver is called with the queue's lock held: it must not
// block or call back into the queue. It reserves credit and hands the message on, or returns
// false when the consumer cannot take a message now (the queue then tries the next consumer
// and is kicked again when credit returns).
type Consumer interface {
	TryDeliver(d Delivery) bool
	// Cancelled tells the consumer its queue was deleted (called without the queue lock).
	Cancelled(q *Queue)
}

// Errors returned to the AMQP layer, which maps them to reply codes.
var (
	ErrExclusiveConsumer = errors.New("queue has an exclusive consumer")
	ErrHasConsumers      = errors.New("queue has consumers; cannot consume exclusively")
	ErrInUse             = errors.New("queue in use")
	ErrNotEmpty          = errors.New("queue not empty")
	ErrDeleted           = errors.New("queue deleted")
)

type entry struct {
	msg         *Message
	seq         uint64
	expiresAt   int64 // unix nanoseconds; 0: never
	redelivered bool
}

// Queue is safe for concurrent use; every operation holds its mutex briefly and dispatches to
// consumers inline, so a publish to a queue with a waiting consumer costs no goroutine switch.
type Queue struct {
	cfg   Config
	hooks Hooks

	mu           sync.Mutex
	levels       []ring[entry] // index = priority; one level when MaxPriority is 0
	pg           *pagingState  // nil: every ready message is in levels
	ready        int           // including the paging tail
	readyBytes   int64
	unacked      int
	expiring     int // ready entries with an expiry: when 0 the clock is never read
	consumers    consumerRing
	exclusive    bool
	nextSeq      uint64
	deleted      bool
	hadConsumer  bool
	flow         chan struct{} // non-nil while the backlog is over its high-water mark
	ttlTimer     *time.Timer
	ttlAt        int64
	expiresTimer *time.Timer
	now          func() int64

	retMu   sync.Mutex        // guards returns; taken inside mu or alone (forget runs both ways)
	returns map[uint64]uint32 // CountReturns: store id → times returned
}

// New creates an empty queue.
func New(cfg Config, hooks Hooks) *Queue {
	q := &Queue{cfg: cfg, hooks: hooks, now: func() int64 { return time.Now().UnixNano() }}
	q.levels = make([]ring[entry], int(cfg.MaxPriority)+1)
	q.pg = newPaging(cfg)
	q.mu.Lock()
	q.armExpiresLocked()
	q.mu.Unlock()
	return q
}

// Name returns the queue's name; Vhost its vhost.
func (q *Queue) Name() string  { return q.cfg.Name }
func (q *Queue) Vhost() string { return q.cfg.Vhost }

// StoreKey returns the key under which the queue keeps persistent messages in its store, and
// false for a queue without a store (non-durable).
func (q *Queue) StoreKey() (string, bool) { return q.cfg.StoreKey, q.cfg.Store != nil }

// Config returns the queue's configuration.
func (q *Queue) Config() Config { return q.cfg }

// Store is the store the queue reports settlements to (nil for a queue without one).
func (q *Queue) Store() Store { return q.cfg.Store }

// Counts returns ready messages, unacknowledged messages and consumers.
func (q *Queue) Counts() (ready, unacked, consumers int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ready, q.unacked, q.consumers.len()
}

// Backlog marks for publisher flow control: a queue with consumers holding more than this many
// ready bytes or messages asks its publishers to wait until it has drained to half, so a fast
// publisher feeding a slow consumer cannot grow a node's memory without bound.
const (
	FlowHighBytes = 64 << 20
	FlowHighCount = 256 << 10
)

// Publish enqueues m and dispatches it if a consumer can take it. accepted is false when a
// full queue with x-overflow reject-publish(-dlx) refused it (the publisher gets a nack).
// throttle is non-nil while the queue's backlog is over its high-water mark: it is closed once
// the queue has drained, and a publisher should wait for it before sending more.
func (q *Queue) Publish(m *Message) (accepted bool, throttle <-chan struct{}) {
	var dead []DeadLetter
	q.mu.Lock()
	if q.pg != nil && m.StoreID != 0 {
		q.pg.announced++ // also when refused or deleted: the store counted it
	}
	if q.deleted {
		q.mu.Unlock()
		return true, nil // routed just before the delete: gone with the queue, as in RabbitMQ
	}
	if q.cfg.Overflow != DropHead && q.fullLocked(int64(len(m.Body))) {
		if q.cfg.Overflow == RejectPublishDLX && q.cfg.DeadLetter {
			dead = append(dead, DeadLetter{Msg: m, Reason: ReasonMaxLen})
		} else {
			q.forget(m) // refused: its store record does not belong to this queue
		}
		q.mu.Unlock()
		q.sendDeadLetters(dead)
		return false, nil
	}
	e := entry{msg: m, seq: q.nextSeq}
	q.nextSeq++
	var now int64
	if ttl := q.ttlFor(m); ttl >= 0 {
		now = q.now()
		e.expiresAt = now + ttl
		if e.expiresAt == 0 {
			e.expiresAt = 1
		}
		q.expiring++
	}
	q.enqueueLocked(e)
	q.dispatchLocked(&now, &dead)
	if q.cfg.Overflow == DropHead {
		for q.overLimitLocked() {
			lvl := q.headLocked()
			if lvl < 0 {
				break
			}
			old := q.popLevelLocked(lvl)
			q.discardLocked(old.msg, ReasonMaxLen, &dead)
		}
	}
	q.armTTLLocked()
	// Only a queue with consumers paces its publishers to them (a fast publisher feeding a slow
	// consumer); a queue nobody consumes from just fills, bounded by the memory high watermark.
	if q.flow == nil && q.consumers.len() > 0 && (q.readyBytes > FlowHighBytes || q.ready > FlowHighCount) {
		q.flow = make(chan struct{})
	}
	throttle = q.flow
	q.mu.Unlock()
	q.sendDeadLetters(dead)
	return true, throttle
}

// releaseFlowLocked lets waiting publishers go once the backlog is down to half the marks.
func (q *Queue) releaseFlowLocked() {
	if q.flow != nil && q.readyBytes <= FlowHighBytes/2 && q.ready <= FlowHighCount/2 {
		close(q.flow)
		q.flow = nil
	}
}

// discardLocked drops a message from the queue: to the dead-letter exchange if the queue has
// one (the store forgets it only after the dead-letter copy was published, so a crash between
// the two cannot lose it), else straight out of the store.
func (q *Queue) discardLocked(m *Message, reason DeadLetterReason, dead *[]DeadLetter) {
	if q.cfg.DeadLetter {
		*dead = append(*dead, DeadLetter{Msg: m, Reason: reason})
		return
	}
	q.forget(m)
}

// forget tells the store a stored message left this queue for good.
func (q *Queue) forget(m *Message) {
	if m.StoreID != 0 && q.cfg.Store != nil {
		q.cfg.Store.Ack(q.cfg.StoreKey, m.StoreID)
	}
	if q.cfg.CountReturns && m.StoreID != 0 {
		q.retMu.Lock()
		delete(q.returns, m.StoreID)
		q.retMu.Unlock()
	}
}

// ttlFor returns the message's TTL in nanoseconds under this queue (the smaller of the queue's
// x-message-ttl and the message's expiration), or -1 when it never expires.
func (q *Queue) ttlFor(m *Message) int64 {
	ttl := int64(-1)
	if q.cfg.MessageTTL >= 0 {
		ttl = int64(q.cfg.MessageTTL)
	}
	if m.ExpirationMs >= 0 {
		mt := m.ExpirationMs * int64(time.Millisecond)
		if ttl < 0 || mt < ttl {
			ttl = mt
		}
	}
	return ttl
}

func (q *Queue) fullLocked(size int64) bool {
	if q.cfg.MaxLength >= 0 && int64(q.ready) >= q.cfg.MaxLength {
		return true
	}
	return q.cfg.MaxLengthBytes >= 0 && q.readyBytes+size > q.cfg.MaxLengthBytes
}

func (q *Queue) overLimitLocked() bool {
	if q.ready == 0 {
		return false
	}
	if q.cfg.MaxLength >= 0 && int64(q.ready) > q.cfg.MaxLength {
		return true
	}
	return q.cfg.MaxLengthBytes >= 0 && q.readyBytes > q.cfg.MaxLengthBytes
}

func (q *Queue) level(m *Message) int {
	p := int(m.Priority)
	if p >= len(q.levels) {
		p = len(q.levels) - 1
	}
	return p
}

func (q *Queue) pushReadyLocked(e entry, front bool) {
	l := &q.levels[q.level(e.msg)]
	if front {
		l.pushFront(e)
	} else {
		l.pushBack(e)
	}
	q.ready++
	q.readyBytes += int64(len(e.msg.Body))
}

// headLevelLocked returns the highest non-empty priority level, or -1.
func (q *Queue) headLevelLocked() int {
	for i := len(q.levels) - 1; i >= 0; i-- {
		if q.levels[i].len() > 0 {
			return i
		}
	}
	return -1
}

func (q *Queue) popLevelLocked(i int) entry {
	e := q.levels[i].popFront()
	q.ready--
	q.readyBytes -= int64(len(e.msg.Body))
	if e.expiresAt != 0 {
		q.expiring--
	}
	if q.flow != nil {
		q.releaseFlowLocked()
	}
	return e
}

func (q *Queue) expired(e *entry, now *int64) bool {
	if e.expiresAt == 0 {
		return false
	}
	if *now == 0 {
		*now = q.now()
	}
	// Strictly less: a message with TTL 0 is still deliverable in the instant it arrives,
	// which is how RabbitMQ treats x-message-ttl 0 (deliver now or drop).
	return e.expiresAt < *now
}

// dispatchLocked hands ready messages to consumers round-robin until no consumer has credit.
func (q *Queue) dispatchLocked(now *int64, dead *[]DeadLetter) {
	for q.ready > 0 && q.consumers.len() > 0 {
		lvl := q.headLocked()
		if lvl < 0 {
			return
		}
		e := q.levels[lvl].front()
		if q.expired(e, now) {
			old := q.popLevelLocked(lvl)
			q.discardLocked(old.msg, ReasonExpired, dead)
			continue
		}
		n := q.consumers.len()
		delivered := false
		slot := q.consumers.next
		for i := 0; i < n; i, slot = i+1, slot.next {
			d := Delivery{Queue: q, Msg: q.marked(e.msg), Redelivered: e.redelivered, Seq: e.seq, ExpiresAt: e.expiresAt, Remaining: q.ready - 1}
			if slot.c.TryDeliver(d) {
				q.consumers.next = slot.next
				taken := q.popLevelLocked(lvl) // e pointed into the ring: use the popped copy
				if slot.noAck {
					q.forget(taken.msg)
				} else {
					q.unacked++
				}
				delivered = true
				break
			}
		}
		if !delivered {
			return
		}
	}
}

// expireLocked drops expired messages at the head of each priority level. Like RabbitMQ, only
// messages at the head expire: one behind a longer-lived message waits for it.
func (q *Queue) expireLocked(now *int64, dead *[]DeadLetter) {
	if q.expiring == 0 {
		return
	}
	for i := range q.levels {
		l := &q.levels[i]
		for {
			if l.len() == 0 && q.pg != nil && q.pg.tail.len() > 0 {
				q.fillLocked() // the head expired away: the next ones come from the tail
			}
			if l.len() == 0 || !q.expired(l.front(), now) {
				break
			}
			old := q.popLevelLocked(i)
			q.discardLocked(old.msg, ReasonExpired, dead)
		}
	}
}

// armTTLLocked schedules the next head expiry so expired messages leave (and dead-letter) even
// when no consumer looks at the queue.
func (q *Queue) armTTLLocked() {
	if q.expiring == 0 || q.deleted {
		return
	}
	next := int64(0)
	for i := range q.levels {
		if q.levels[i].len() == 0 {
			continue
		}
		if at := q.levels[i].front().expiresAt; at != 0 && (next == 0 || at < next) {
			next = at
		}
	}
	if next == 0 || (q.ttlTimer != nil && q.ttlAt != 0 && q.ttlAt <= next) {
		return
	}
	delay := time.Duration(next-q.now()) + time.Millisecond
	if delay < 0 {
		delay = 0
	}
	q.ttlAt = next
	if q.ttlTimer == nil {
		q.ttlTimer = time.AfterFunc(delay, q.onTTLTimer)
	} else {
		q.ttlTimer.Reset(delay)
	}
}

func (q *Queue) onTTLTimer() {
	var dead []DeadLetter
	var now int64
	q.mu.Lock()
	q.ttlAt = 0
	if !q.deleted {
		q.expireLocked(&now, &dead)
		q.dispatchLocked(&now, &dead)
		q.armTTLLocked()
	}
	q.mu.Unlock()
	q.sendDeadLetters(dead)
}

// armExpiresLocked (re)starts the x-expires countdown while the queue is unused.
func (q *Queue) armExpiresLocked() {
	if q.cfg.Expires <= 0 || q.deleted {
		return
	}
	if q.consumers.len() > 0 {
		if q.expiresTimer != nil {
			q.expiresTimer.Stop()
		}
		return
	}
	if q.expiresTimer == nil {
		q.expiresTimer = time.AfterFunc(q.cfg.Expires, q.onExpiresTimer)
	} else {
		q.expiresTimer.Reset(q.cfg.Expires)
	}
}

func (q *Queue) onExpiresTimer() {
	q.mu.Lock()
	fire := !q.deleted && q.consumers.len() == 0
	q.mu.Unlock()
	if fire && q.hooks.Expired != nil {
		q.hooks.Expired(q)
	}
}

// Touch records a use of the queue (a redeclare) for x-expires.
func (q *Queue) Touch() {
	q.mu.Lock()
	q.armExpiresLocked()
	q.mu.Unlock()
}

func (q *Queue) sendDeadLetters(dead []DeadLetter) {
	if len(dead) == 0 {
		return
	}
	if q.hooks.DeadLetter != nil {
		q.hooks.DeadLetter(q, dead)
	}
	for _, d := range dead {
		q.forget(d.Msg)
	}
}

// AddConsumer registers c and dispatches waiting messages to it.
func (q *Queue) AddConsumer(c Consumer, noAck, exclusive bool) error {
	var dead []DeadLetter
	var now int64
	q.mu.Lock()
	switch {
	case q.deleted:
		q.mu.Unlock()
		return ErrDeleted
	case q.exclusive:
		q.mu.Unlock()
		return ErrExclusiveConsumer
	case exclusive && q.consumers.len() > 0:
		q.mu.Unlock()
		return ErrHasConsumers
	}
	q.consumers.add(c, noAck)
	q.exclusive = exclusive
	q.hadConsumer = true
	q.armExpiresLocked()
	q.dispatchLocked(&now, &dead)
	q.armTTLLocked()
	q.mu.Unlock()
	q.sendDeadLetters(dead)
	return nil
}

// RemoveConsumer unregisters c. An auto-delete queue whose last consumer leaves asks its node
// to delete it.
func (q *Queue) RemoveConsumer(c Consumer) {
	q.mu.Lock()
	found := q.consumers.remove(c)
	if found {
		q.exclusive = false
		if q.consumers.len() == 0 && q.flow != nil {
			close(q.flow) // nobody left to pace the publishers to
			q.flow = nil
		}
	}
	autoDelete := found && q.cfg.AutoDelete && q.hadConsumer && q.consumers.len() == 0 && !q.deleted
	q.armExpiresLocked()
	q.mu.Unlock()
	if autoDelete && q.hooks.AutoDelete != nil {
		q.hooks.AutoDelete(q)
	}
}

// Kick retries dispatch; a consumer calls it when it regains credit (after acks, qos, flow).
func (q *Queue) Kick() {
	var dead []DeadLetter
	var now int64
	q.mu.Lock()
	if q.ready > 0 && q.consumers.len() > 0 {
		q.dispatchLocked(&now, &dead)
		q.armTTLLocked()
	}
	q.mu.Unlock()
	q.sendDeadLetters(dead)
}

// Get takes one message (basic.get). ok is false when the queue has no ready message.
func (q *Queue) Get(noAck bool) (d Delivery, ok bool) {
	var dead []DeadLetter
	var now int64
	q.mu.Lock()
	q.armExpiresLocked()
	q.expireLocked(&now, &dead)
	if lvl := q.headLocked(); lvl >= 0 {
		e := q.popLevelLocked(lvl)
		d = Delivery{Queue: q, Msg: q.marked(e.msg), Redelivered: e.redelivered, Seq: e.seq, ExpiresAt: e.expiresAt, Remaining: q.ready}
		ok = true
		if noAck {
			q.forget(e.msg)
		} else {
			q.unacked++
		}
	}
	q.armTTLLocked()
	q.mu.Unlock()
	q.sendDeadLetters(dead)
	return d, ok
}

// Settled is a message the consumer is done with; Requeue and Reject take them back.
type Settled struct {
	Msg       *Message
	Seq       uint64
	ExpiresAt int64
}

// Ack settles delivered messages for good.
func (q *Queue) Ack(msgs []Settled) {
	q.mu.Lock()
	q.unacked -= len(msgs)
	if q.unacked < 0 {
		q.unacked = 0
	}
	q.mu.Unlock()
	for _, s := range msgs {
		q.forget(s.Msg)
	}
}

// Requeue puts delivered messages back at the front of the queue in their original order,
// marked redelivered, and dispatches them again.
func (q *Queue) Requeue(msgs []Settled) {
	var dead []DeadLetter
	var now int64
	q.mu.Lock()
	q.unacked -= len(msgs)
	if q.unacked < 0 {
		q.unacked = 0
	}
	if !q.deleted {
		sortSettledDesc(msgs)
		for _, s := range msgs {
			if q.returned(s.Msg) {
				dead = append(dead, DeadLetter{Msg: s.Msg, Reason: ReasonDeliveryLimit})
				continue
			}
			// A requeued message keeps its original expiry, as in RabbitMQ.
			q.pushReadyLocked(entry{msg: s.Msg, seq: s.Seq, expiresAt: s.ExpiresAt, redelivered: true}, true)
			if s.ExpiresAt != 0 {
				q.expiring++
			}
		}
		q.dispatchLocked(&now, &dead)
		q.armTTLLocked()
	}
	q.mu.Unlock()
	q.sendDeadLetters(dead)
}

// Reject drops delivered messages (reject/nack without requeue), dead-lettering them when the
// queue has a dead-letter exchange.
func (q *Queue) Reject(msgs []Settled) {
	q.mu.Lock()
	q.unacked -= len(msgs)
	if q.unacked < 0 {
		q.unacked = 0
	}
	dl := q.cfg.DeadLetter && !q.deleted
	q.mu.Unlock()
	if !dl {
		for _, s := range msgs {
			q.forget(s.Msg)
		}
		return
	}
	dead := make([]DeadLetter, len(msgs))
	for i, s := range msgs {
		dead[i] = DeadLetter{Msg: s.Msg, Reason: ReasonRejected}
	}
	q.sendDeadLetters(dead) // forgets them once their dead-letter copies are published
}

func sortSettledDesc(msgs []Settled) {
	// Insertion sort: requeued batches are small and usually already ordered.
	for i := 1; i < len(msgs); i++ {
		for j := i; j > 0 && msgs[j].Seq > msgs[j-1].Seq; j-- {
			msgs[j], msgs[j-1] = msgs[j-1], msgs[j]
		}
	}
}

// CheckDelete reports whether a delete with if-unused / if-empty may proceed.
func (q *Queue) CheckDelete(ifUnused, ifEmpty bool) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if ifUnused && q.consumers.len() > 0 {
		return ErrInUse
	}
	if ifEmpty && q.ready > 0 {
		return ErrNotEmpty
	}
	return nil
}

// Delete marks the queue gone, drops its messages, stops its timers and tells every consumer.
// It returns the number of ready messages it held.
func (q *Queue) Delete() int {
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return 0
	}
	q.deleted = true
	n := q.ready
	consumers := q.consumers.takeAll()
	for i := range q.levels {
		q.levels[i].clear()
	}
	if q.pg != nil {
		q.pg.tail.clear() // the node drops the queue's messages from the store
		q.pg.tailCount, q.pg.tailBytes = 0, 0
	}
	q.ready, q.readyBytes, q.expiring = 0, 0, 0
	q.releaseFlowLocked()
	if q.ttlTimer != nil {
		q.ttlTimer.Stop()
	}
	if q.expiresTimer != nil {
		q.expiresTimer.Stop()
	}
	q.mu.Unlock()
	for _, c := range consumers {
		c.Cancelled(q)
	}
	return n
}

// Deleted reports whether Delete was called.
func (q *Queue) Deleted() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.deleted
}

func (q *Queue) String() string {
	return fmt.Sprintf("queue '%s' in vhost '%s'", q.cfg.Name, q.cfg.Vhost)
}
