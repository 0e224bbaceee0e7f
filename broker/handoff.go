package broker

import (
	"sync"
	"time"

	"github.com/warrenmq/warren/queue"
)

// A queue moved away from this node (fsm.MoveQueues: `node leave`, rebalancing) keeps its queue
// object here until it is empty: no longer routed to, it forwards its ready messages to the new
// owner over the data link, a window at a time, and removes each (from disk too) only once the
// new owner accepted it (for a persistent message in a durable queue: once it is on the new
// owner's disk). Consumers already attached keep being served and settle what they hold; when
// nothing is left the queue is deleted, which cancels them (basic.cancel) so they re-subscribe
// at the new owner. Nothing is dropped and nothing is sent twice, except a message whose
// forward failed after the new owner stored it (the link broke before the answer): it is sent
// again, as at-least-once delivery allows.
//
// Messages published to the old owner after the move, by nodes that had not yet applied it,
// are refused (basic.nack to their publisher), never lost. Order: the forwarded messages join
// the new owner's queue behind any message published there after the move.

const (
	handOffWindow = 256
	// handOffSettleWait bounds how long a moved queue waits for consumers that hold messages
	// (unacked) without settling any; after it the queue is deleted as it stands and what
	// they still hold is lost unless they ack it (documented for `node leave`).
	handOffSettleWait = 30 * time.Second
)

// handOffStats counts the hand-offs this node ran, for `node leave` to wait on and report.
type handOffStats struct {
	mu       sync.Mutex
	active   int
	moved    int64
	failures int64
}

// HandOffs reports the hand-offs running now and the messages moved so far.
func (n *Node) HandOffs() (active int, moved int64) {
	n.handOffs.mu.Lock()
	defer n.handOffs.mu.Unlock()
	return n.handOffs.active, n.handOffs.moved
}

func (n *Node) startHandOff(q *queue.Queue, to string) {
	if !n.recovered.Load() {
		// Raft replaying the log at start-up: this queue was moved in an earlier run and its
		// queue object is empty (messages are recovered later, only for queues owned here).
		q.Delete()
		return
	}
	n.handOffs.mu.Lock()
	n.handOffs.active++
	n.handOffs.mu.Unlock()
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		moved := n.handOff(q, to)
		n.handOffs.mu.Lock()
		n.handOffs.active--
		n.handOffs.moved += int64(moved)
		n.handOffs.mu.Unlock()
	}()
}

type handOffResult struct {
	s   queue.Settled
	err error
}

// handOff moves q's messages to its new owner and deletes q once it is empty; it stops early
// only when the node closes (what is left stays in q, and on disk for durable queues).
func (n *Node) handOff(q *queue.Queue, to string) (moved int) {
	log := n.log.With("queue", q.Name(), "vhost", q.Vhost(), "to", to)
	key := StoreKey(q.Vhost(), q.Name())
	results := make(chan handOffResult, handOffWindow)
	inflight := 0
	lastProgress := time.Now()
	backoff := 50 * time.Millisecond
	// After a failed forward (typically: the new owner has not applied the move yet) nothing
	// new is sent before retryAt; the other answers in flight are still collected meanwhile.
	var retryAt time.Time
	// One message at a time until the new owner accepts one: it refuses them until it has
	// applied the move, and a window sent meanwhile would have its tail accepted and its head
	// refused and requeued — the queue would arrive out of order.
	window := 1
	for {
		if !time.Now().Before(retryAt) {
			for inflight < window {
				d, ok := q.Get(false)
				if !ok {
					break
				}
				inflight++
				n.forwardHandOff(to, key, d, results)
			}
		}
		if inflight == 0 {
			ready, unacked, _ := q.Counts()
			if ready == 0 && unacked == 0 {
				break
			}
			if ready == 0 && time.Since(lastProgress) > handOffSettleWait {
				log.Warn("moved queue: consumers hold messages without settling them; deleting the queue, their messages are lost unless acked", "unacked", unacked, "waited", handOffSettleWait)
				break
			}
			wait := max(20*time.Millisecond, time.Until(retryAt))
			select {
			case <-n.closing:
				return moved
			case <-time.After(wait):
			}
			continue
		}
		select {
		case <-n.closing:
			return moved
		case r := <-results:
			inflight--
			if r.err != nil {
				window = 1
				q.Requeue([]queue.Settled{r.s})
				n.handOffs.mu.Lock()
				n.handOffs.failures++
				n.handOffs.mu.Unlock()
				if !time.Now().Before(retryAt) {
					log.Warn("moved queue: forwarding to the new owner failed; retrying", "err", r.err, "backoff", backoff)
					retryAt = time.Now().Add(backoff)
					backoff = min(2*backoff, 2*time.Second)
				}
				continue
			}
			q.Ack([]queue.Settled{r.s})
			window = handOffWindow
			moved++
			lastProgress, backoff = time.Now(), 50*time.Millisecond
		}
	}
	q.Delete()
	if _, durable := q.StoreKey(); durable && n.msgs != nil && n.LocalQueue(q.Vhost(), q.Name()) == nil {
		n.msgs.DropQueue(key)
	}
	log.Info("moved queue handed over", "messages", moved)
	return moved
}

// forwardHandOff sends one message of a moved queue to its new owner; the outcome arrives on
// results (which has room for every message in flight).
func (n *Node) forwardHandOff(to, key string, d queue.Delivery, results chan<- handOffResult) {
	s := queue.Settled{Msg: d.Msg, Seq: d.Seq, ExpiresAt: d.ExpiresAt}
	join := newConfirmJoin(func(err error) { results <- handOffResult{s: s, err: err} })
	var data []byte
	n.forward(to, []string{key}, d.Msg, &data, join)
	join.finish(nil)
}
