// Package broker owns what one Warren node holds between the AMQP server and the Raft store:
// topology changes submitted as FSM commands, the queue objects this node owns (created and
// destroyed as the FSM says), and the publish path from an exchange to those queues, including
// dead-lettering. It speaks neither AMQP frames nor Raft directly.
package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// Applier commits an encoded FSM command and returns the FSM's result (cluster.Store).
type Applier interface {
	Apply(cmd []byte) (any, error)
}

type queueKey struct{ vhost, name string }

// Node is one broker node's runtime state.
type Node struct {
	id    string
	fsm   *fsm.FSM
	log   *slog.Logger
	store Applier

	mu     sync.RWMutex
	queues map[queueKey]*queue.Queue

	// msgs keeps persistent messages of durable queues (nil: messages live in memory only).
	// recovered is set once Recover ran: before that, queue deletions seen while Raft replays
	// history must not drop messages of the queue's current incarnation.
	msgs      MessageStore
	recovered atomic.Bool

	// Background topology changes started by queues (x-expires, auto-delete): tracked so Close
	// waits for them.
	bg      sync.WaitGroup
	closing chan struct{}
	once    sync.Once
}

// New creates the node runtime around f and registers as f's observer, so every queue the FSM
// assigns to this node gets a queue object (also while Raft replays its log at start-up).
func New(id string, f *fsm.FSM, log *slog.Logger) *Node {
	if log == nil {
		log = slog.Default()
	}
	n := &Node{id: id, fsm: f, log: log, queues: make(map[queueKey]*queue.Queue), closing: make(chan struct{})}
	f.SetObserver(n.onFSMEvent)
	return n
}

// AttachStore sets the Raft store used to commit commands; called once the store is open.
func (n *Node) AttachStore(s Applier) { n.store = s }

// ID returns the node id.
func (n *Node) ID() string { return n.id }

// FSM returns the local topology replica (read-only use).
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Close stops background work and deletes nothing: queues die with the process.
func (n *Node) Close() {
	n.once.Do(func() { close(n.closing) })
	n.bg.Wait()
	n.mu.Lock()
	qs := n.queues
	n.queues = make(map[queueKey]*queue.Queue)
	n.mu.Unlock()
	for _, q := range qs {
		q.Delete()
	}
}

// Apply commits a topology command through Raft. A refusal by the FSM comes back as *fsm.Error.
func (n *Node) Apply(c fsm.Command) (fsm.Result, error) {
	b, err := fsm.Encode(c)
	if err != nil {
		return fsm.Result{}, fmt.Errorf("encode command: %w", err)
	}
	if n.store == nil {
		return fsm.Result{}, errors.New("node has no raft store")
	}
	resp, err := n.store.Apply(b)
	if err != nil {
		return fsm.Result{}, err
	}
	switch r := resp.(type) {
	case fsm.Result:
		if r.Err != nil {
			return r, r.Err
		}
		return r, nil
	case *fsm.Result:
		if r.Err != nil {
			return *r, r.Err
		}
		return *r, nil
	case error:
		return fsm.Result{}, r
	}
	return fsm.Result{}, fmt.Errorf("unexpected FSM response %T", resp)
}

// LocalQueue returns the queue object of a queue this node owns, or nil.
func (n *Node) LocalQueue(vhost, name string) *queue.Queue {
	n.mu.RLock()
	q := n.queues[queueKey{vhost, name}]
	n.mu.RUnlock()
	return q
}

func (n *Node) onFSMEvent(ev fsm.Event) {
	qd := ev.Queue
	key := queueKey{qd.Vhost, qd.Name}
	switch ev.Kind {
	case fsm.QueueCreated:
		if qd.Owner != n.id {
			return
		}
		cfg, err := QueueConfig(qd)
		if err != nil {
			// The FSM validated the arguments; reaching here means the two disagree.
			n.log.Error("queue arguments rejected after commit", "queue", qd.Name, "vhost", qd.Vhost, "err", err)
		}
		if qd.Durable && n.msgs != nil {
			cfg.Store, cfg.StoreKey = n.msgs, StoreKey(qd.Vhost, qd.Name)
		}
		q := queue.New(cfg, queue.Hooks{
			DeadLetter: n.deadLetter,
			Expired:    n.deleteUnused,
			AutoDelete: n.deleteUnused,
		})
		n.mu.Lock()
		old := n.queues[key]
		n.queues[key] = q
		n.mu.Unlock()
		if old != nil {
			old.Delete()
		}
	case fsm.QueueDeleted:
		n.mu.Lock()
		q := n.queues[key]
		delete(n.queues, key)
		n.mu.Unlock()
		if q != nil {
			q.Delete()
		}
		if qd.Owner == n.id && qd.Durable && n.msgs != nil && n.recovered.Load() {
			n.msgs.DropQueue(StoreKey(qd.Vhost, qd.Name))
		}
	}
}

// deleteUnused removes a queue whose x-expires ran out or whose last consumer left (auto-delete).
// It runs in the background: the queue calls it from its own timer or a consumer's goroutine.
func (n *Node) deleteUnused(q *queue.Queue) {
	select {
	case <-n.closing:
		return
	default:
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		if n.LocalQueue(q.Vhost(), q.Name()) != q {
			return // already replaced or deleted
		}
		if _, err := n.Apply(fsm.DeleteQueue{Vhost: q.Vhost(), Name: q.Name()}); err != nil {
			n.log.Warn("delete unused queue", "queue", q.Name(), "vhost", q.Vhost(), "err", err)
		}
	}()
}

// PublishResult says what became of one published message.
type PublishResult struct {
	Routed   int  // number of target queues
	Rejected bool // at least one target queue refused it (x-overflow reject-publish): nack
	// WaitsForDisk: the message went to durable queues as a persistent message; onDisk will be
	// called once it is on disk (not called when Rejected).
	WaitsForDisk bool
	// Throttle is non-nil when a target queue's backlog is over its high-water mark; the
	// publisher should wait for it to close before publishing more.
	Throttle <-chan struct{}
}

// Scratch is per-publisher reusable space, so routing a message allocates nothing.
type Scratch struct {
	refs   []fsm.QueueRef
	queues []*queue.Queue
	keys   []string
}

// Publish routes msg from exchange with the local FSM replica and enqueues it on each target
// queue. A persistent message bound for durable queues is first written to the message store
// (once, for all of them); onDisk (may be nil) then reports when it is on disk.
func (n *Node) Publish(vhost, exchange string, msg *queue.Message, headers map[string]any, sc *Scratch, onDisk func(error)) (PublishResult, error) {
	refs, err := n.fsm.Route(vhost, exchange, msg.RoutingKey, headers, sc.refs[:0])
	sc.refs = refs
	if err != nil {
		return PublishResult{}, err
	}
	res := PublishResult{Routed: len(refs)}
	qs, keys := sc.queues[:0], sc.keys[:0]
	for _, r := range refs {
		q := n.LocalQueue(r.Vhost, r.Name)
		if q == nil {
			if r.Owner != n.id {
				// Owned by another node, and this build has no data link to forward it over:
				// refuse (nack) rather than confirm a message no queue holds.
				res.Rejected = true
			}
			continue // deleted meanwhile: gone with the queue, as in RabbitMQ
		}
		{
			qs = append(qs, q)
			if msg.Persistent && q.Config().Store != nil {
				keys = append(keys, q.Config().StoreKey)
			}
		}
	}
	var dc *diskConfirm
	if len(keys) > 0 {
		dc = &diskConfirm{onDisk: onDisk}
		if onDisk == nil {
			dc.onDisk = func(error) {}
		}
		msg.StoreID = n.msgs.Publish(keys, EncodeStored(msg), dc.done)
		res.WaitsForDisk = onDisk != nil
	}
	for _, q := range qs {
		ok, throttle := q.Publish(msg)
		if !ok {
			res.Rejected = true // the queue already released its store reference
		}
		if throttle != nil {
			res.Throttle = throttle
		}
	}
	if dc != nil {
		dc.decide(res.Rejected)
	}
	clear(qs)
	sc.queues, sc.keys = qs[:0], keys[:0]
	return res, nil
}

// QueueConfig decodes a queue's x-arguments into its runtime behaviour.
func QueueConfig(qd fsm.Queue) (queue.Config, error) {
	cfg := queue.Config{
		Vhost: qd.Vhost, Name: qd.Name, AutoDelete: qd.AutoDelete,
		MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1,
	}
	if len(qd.Args) == 0 {
		return cfg, nil
	}
	args, _, err := wire.DecodeTable(qd.Args)
	if err != nil {
		return cfg, fmt.Errorf("decode arguments of queue %q: %w", qd.Name, err)
	}
	if v, ok := IntArg(args, "x-message-ttl"); ok && v >= 0 {
		cfg.MessageTTL = time.Duration(v) * time.Millisecond
	}
	if v, ok := IntArg(args, "x-expires"); ok && v > 0 {
		cfg.Expires = time.Duration(v) * time.Millisecond
	}
	if v, ok := IntArg(args, "x-max-length"); ok && v >= 0 {
		cfg.MaxLength = v
	}
	if v, ok := IntArg(args, "x-max-length-bytes"); ok && v >= 0 {
		cfg.MaxLengthBytes = v
	}
	if v, ok := IntArg(args, "x-max-priority"); ok && v > 0 {
		if v > 255 {
			v = 255
		}
		cfg.MaxPriority = uint8(v)
	}
	switch StringArg(args, "x-overflow") {
	case "reject-publish":
		cfg.Overflow = queue.RejectPublish
	case "reject-publish-dlx":
		cfg.Overflow = queue.RejectPublishDLX
	}
	if _, ok := args["x-dead-letter-exchange"]; ok {
		cfg.DeadLetter = true
	}
	return cfg, nil
}

// DecodeArgs decodes an argument table as stored in the FSM.
func DecodeArgs(b []byte) (map[string]any, error) {
	t, _, err := wire.DecodeTable(b)
	return t, err
}

// IntArg reads an integer argument of any AMQP integer type.
func IntArg(args map[string]any, key string) (int64, bool) { return wire.Int64(args[key]) }

// StringArg reads a string argument (long strings may arrive as string or []byte).
func StringArg(args map[string]any, key string) string {
	switch v := args[key].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return ""
}
