// Package broker owns what one Warren node holds between the AMQP server and the Raft store:
// topology changes submitted as FSM commands, the queue objects this node owns (created and
// destroyed as the FSM says), and the publish path from an exchange to those queues, including
// dead-lettering. Over the data links it forwards publishes to other owners, serves and uses
// remote consumers, gets and purges, hands moved queues over, and replicates the replicated
// queues it leads or follows. It speaks neither AMQP frames nor Raft directly.
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
	id  string
	fsm *fsm.FSM
	log *slog.Logger
	// store commits commands. Raft starts applying entries (queues with x-expires timers
	// included) before the store exists, so it is attached later; storeSet closes then.
	store    atomic.Pointer[applierRef]
	storeSet chan struct{}
	setOnce  sync.Once

	mu     sync.RWMutex
	queues map[queueKey]*queue.Queue

	// msgs keeps persistent messages of durable queues (nil: messages live in memory only);
	// fixed at New, before Raft replays the topology. recovered is set once Recover ran: before that, queue deletions seen while Raft replays
	// history must not drop messages of the queue's current incarnation.
	msgs      MessageStore
	recovered atomic.Bool

	// links forwards publishes to queues owned by other nodes (nil: a single node); remote
	// holds this node's consumers of other nodes' queues, proxies the other nodes' consumers
	// of queues here. links and liveNodes come from gossip, which starts after Raft, so they
	// are attached after New and read atomically.
	links     atomic.Pointer[links]
	liveNodes atomic.Pointer[func() []string]
	remote    remoteSinks
	proxiesMu sync.Mutex
	proxies   map[proxyKey]*remoteProxy
	gets      map[getKey]*getHold // under proxiesMu: basic.get deliveries to other nodes, unacked

	// Background topology changes started by queues (x-expires, auto-delete): tracked so Close
	// waits for them.
	bg      sync.WaitGroup
	closing chan struct{}
	once    sync.Once

	handOffs handOffStats

	// Replicated queues this node holds a replica of (quorum*.go), by store key.
	qmu         sync.RWMutex
	quorum      map[string]*replicated
	quorumWake  chan struct{}
	startQuorum sync.Once
	lastIDs     map[string]uint64 // what Recover found per store key (read-only after it)
	peerDown    atomic.Pointer[func(node string)]
	bgMu        sync.Mutex    // orders goBackground's Add before Close's Wait
	replies     replyRegistry // direct reply-to consumers of this node's channels
}

// Config is what a node runtime is built with; none of it changes afterwards.
type Config struct {
	ID     string
	FSM    *fsm.FSM
	Logger *slog.Logger // default slog.Default()
	// Messages keeps persistent messages of durable queues (nil: in memory only). A store that
	// can read a queue's messages back (msgstore) also makes those queues page: they keep a
	// window of their backlog in memory and the rest on disk (see queue/paging.go).
	Messages MessageStore
}

// New creates the node runtime around cfg.FSM and registers as its observer, so every queue
// the FSM assigns to this node gets a queue object (also while Raft replays its log at
// start-up, which is why New comes before the Raft store and AttachStore after it).
func New(cfg Config) *Node {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{id: cfg.ID, fsm: cfg.FSM, log: log, queues: make(map[queueKey]*queue.Queue), closing: make(chan struct{}),
		storeSet: make(chan struct{}), quorum: map[string]*replicated{}, quorumWake: make(chan struct{}, 1)}
	n.msgs = wrapMessageStore(cfg.Messages, log)
	cfg.FSM.SetObserver(n.onFSMEvent)
	return n
}

// SetLiveNodes tells the node how to list the cluster's live nodes (for balanced placement).
func (n *Node) SetLiveNodes(f func() []string) { n.liveNodes.Store(&f) }

// liveNodeIDs lists the live nodes; ok is false until SetLiveNodes (no gossip).
func (n *Node) liveNodeIDs() (ids []string, ok bool) {
	f := n.liveNodes.Load()
	if f == nil {
		return nil, false
	}
	return (*f)(), true
}

// BalancedOwner picks the live node owning the fewest queues (ties: the smallest id), RabbitMQ's
// x-queue-leader-locator "balanced"; this node when it knows no others.
func (n *Node) BalancedOwner() string {
	live, _ := n.liveNodeIDs()
	if len(live) == 0 {
		return n.id
	}
	owned := make(map[string]int, len(live))
	for _, id := range live {
		owned[id] = 0
	}
	for _, q := range n.fsm.Queues("") {
		if _, ok := owned[q.Owner]; ok {
			owned[q.Owner]++
		}
	}
	best := ""
	for _, id := range live {
		if best == "" || owned[id] < owned[best] || (owned[id] == owned[best] && id < best) {
			best = id
		}
	}
	return best
}

// applierRef gives atomic.Pointer a concrete type to point at.
type applierRef struct{ Applier }

// AttachStore sets the Raft store used to commit commands; called once, when the store is
// open. Background deletions started before (x-expires timers armed while Raft restored a
// snapshot) wait for it.
func (n *Node) AttachStore(s Applier) {
	n.store.Store(&applierRef{s})
	n.setOnce.Do(func() { close(n.storeSet) })
}

// ID returns the node id.
func (n *Node) ID() string { return n.id }

// FSM returns the local topology replica (read-only use).
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// Close stops background work and deletes nothing: queues die with the process.
func (n *Node) Close() {
	n.bgMu.Lock()
	n.once.Do(func() { close(n.closing) })
	n.bgMu.Unlock()
	n.bg.Wait()
	if l := n.links.Load(); l != nil {
		l.close()
	}
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
	store := n.store.Load()
	if store == nil {
		return fsm.Result{}, errors.New("node has no raft store")
	}
	resp, err := store.Apply(b)
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
	if qd.Type == fsm.QueueTypeQuorum {
		n.onReplicatedEvent(ev)
		return
	}
	switch ev.Kind {
	case fsm.QueueCreated:
		if qd.Owner == n.id {
			n.createLocalQueue(qd)
		}
	case fsm.QueueMoved:
		switch n.id {
		case qd.Owner:
			n.createLocalQueue(qd)
		case ev.From:
			n.mu.Lock()
			q := n.queues[key]
			delete(n.queues, key)
			n.mu.Unlock()
			if q != nil {
				n.startHandOff(q, qd.Owner)
			}
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

// createLocalQueue makes the queue object of a queue this node now owns.
func (n *Node) createLocalQueue(qd fsm.Queue) {
	key := queueKey{qd.Vhost, qd.Name}
	args, refusal := n.fsm.QueueArgs(qd)
	if refusal != nil {
		// The FSM accepted these arguments at declare with the same decoder.
		n.log.Error("queue arguments rejected after commit", "queue", qd.Name, "vhost", qd.Vhost, "err", refusal)
	}
	cfg := QueueConfig(qd, args)
	var rep *replicated
	if qd.Durable && n.msgs != nil {
		cfg.Store, cfg.StoreKey = n.msgs, StoreKey(qd.Vhost, qd.Name)
		if qd.Type == fsm.QueueTypeQuorum {
			rep = n.replicatedFor(cfg.StoreKey)
			if ps, ok := n.msgs.(*pagedStore); ok && rep != nil {
				cfg.Store = &quorumStore{pagedStore: ps, r: rep}
			}
		}
	}
	cfg.Logger = n.log
	q := queue.New(cfg, queue.Hooks{
		DeadLetter: n.deadLetter,
		Expired:    n.deleteUnused,
		AutoDelete: n.deleteUnused,
	})
	n.mu.Lock()
	old := n.queues[key]
	n.queues[key] = q
	n.mu.Unlock()
	if rep != nil {
		rep.attachQueue(q)
	}
	if old != nil {
		old.Delete()
	}
}

// deleteUnused removes a queue whose x-expires ran out or whose last consumer left (auto-delete).
// It runs in the background: the queue calls it from its own timer or a consumer's goroutine.
func (n *Node) deleteUnused(q *queue.Queue) {
	n.goBackground(func() {
		select {
		case <-n.storeSet: // a timer armed during start-up can fire before the store is attached
		case <-n.closing:
			return
		}
		if n.LocalQueue(q.Vhost(), q.Name()) != q {
			return // already replaced or deleted
		}
		if _, err := n.Apply(fsm.DeleteQueue{Vhost: q.Vhost(), Name: q.Name()}); err != nil {
			n.log.Warn("delete unused queue", "queue", q.Name(), "vhost", q.Vhost(), "err", err)
		}
	})
}

// PublishResult says what became of one published message.
type PublishResult struct {
	Routed   int  // number of target queues
	Rejected bool // a target queue refused it, known now: nack (only when not Deferred)
	// Deferred: part of the publish completes later (a persistent message going to disk, or a
	// queue on another node answering); onDone reports the whole outcome, refusals included.
	Deferred bool
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

// Publish routes msg from exchange with the local FSM replica, enqueues it on the target queues
// this node owns and forwards one copy to each other owner (over its data link). A persistent
// message bound for local durable queues is first written to the message store (once, for all
// of them). When any part completes later, res.Deferred is set and onDone (may be nil) reports
// the outcome: nil when every target accepted it (and it is on disk where it must be).
func (n *Node) Publish(vhost, exchange string, msg *queue.Message, headers map[string]any, sc *Scratch, onDone func(error)) (PublishResult, error) {
	refs, err := n.fsm.Route(vhost, exchange, msg.RoutingKey, headers, sc.refs[:0])
	sc.refs = refs
	if err != nil {
		return PublishResult{}, err
	}
	res := PublishResult{Routed: len(refs)}
	qs := sc.queues[:0]
	unserved := false
	var remote map[string][]string // owner → its target queues' store keys
	for _, r := range refs {
		if q := n.LocalQueue(r.Vhost, r.Name); q != nil {
			qs = append(qs, q)
			continue
		}
		if r.Owner != n.id {
			if remote == nil {
				remote = map[string][]string{}
			}
			remote[r.Owner] = append(remote[r.Owner], StoreKey(r.Vhost, r.Name))
			continue
		}
		// Owned here but gone: deleted meanwhile, the message goes with it, as in RabbitMQ;
		// but a replicated queue this node leads and does not serve yet (it is claiming a new
		// epoch after a restart) refuses it: the publisher gets a nack, not a silent loss.
		if n.replicatedFor(StoreKey(r.Vhost, r.Name)) != nil {
			unserved = true
		}
	}
	if onDone == nil {
		onDone = func(error) {}
	}
	var join *confirmJoin
	needJoin := remote != nil || (msg.Persistent && n.msgs != nil && anyDurable(qs)) || n.anyReplicated(qs)
	if needJoin {
		join = newConfirmJoin(onDone)
		res.Deferred = true
	}
	var data []byte
	rejected, throttle := n.deliverLocal(qs, msg, &data, sc, join)
	rejected = rejected || unserved
	res.Rejected, res.Throttle = rejected, throttle
	for owner, keys := range remote {
		n.forward(owner, keys, msg, &data, join)
	}
	if join != nil {
		var outcome error
		if rejected {
			outcome = ErrRefused
		}
		join.finish(outcome)
	}
	clear(qs)
	sc.queues = qs[:0]
	return res, nil
}

func isReplicated(q *queue.Queue) bool {
	_, ok := q.Store().(*quorumStore)
	return ok
}

func (n *Node) anyReplicated(qs []*queue.Queue) bool {
	for _, q := range qs {
		if isReplicated(q) {
			return true
		}
	}
	return false
}

func anyDurable(qs []*queue.Queue) bool {
	for _, q := range qs {
		if _, durable := q.StoreKey(); durable {
			return true
		}
	}
	return false
}

// deliverLocal stores (if persistent and bound for durable queues) and enqueues msg on local
// queues. *data holds the message's stored encoding, made at most once per publish.
func (n *Node) deliverLocal(qs []*queue.Queue, msg *queue.Message, data *[]byte, sc *Scratch, join *confirmJoin) (rejected bool, throttle <-chan struct{}) {
	keys := sc.keys[:0]
	if msg.Persistent && n.msgs != nil {
		for _, q := range qs {
			if key, durable := q.StoreKey(); durable && !isReplicated(q) {
				keys = append(keys, key)
			}
		}
	}
	if len(keys) > 0 {
		if *data == nil {
			*data = EncodeStored(msg)
		}
		join.add()
		msg.StoreID = n.msgs.Publish(keys, *data, join.finish)
	}
	sc.keys = keys[:0]
	for _, q := range qs {
		m := msg
		if isReplicated(q) {
			// Every message of a replicated queue is stored (as RabbitMQ's quorum queues do),
			// under its own identity, and waits for the followers before its confirm.
			if *data == nil {
				*data = EncodeStored(msg)
			}
			cp, err := q.Store().(*quorumStore).r.publish(msg, *data, join)
			if err != nil {
				n.log.Debug("replicated queue refused a publish", "queue", q.Name(), "err", err)
				rejected = true
				continue
			}
			m = cp
		}
		ok, t := q.Publish(m)
		if !ok {
			rejected = true // the queue already released its store reference
		}
		if t != nil {
			throttle = t
		}
	}
	return rejected, throttle
}

// QueueConfig is the runtime behaviour of queue qd whose arguments decoded to args.
func QueueConfig(qd fsm.Queue, args fsm.QueueArgs) queue.Config {
	cfg := queue.Config{
		Vhost: qd.Vhost, Name: qd.Name, AutoDelete: qd.AutoDelete,
		MessageTTL: -1, MaxLength: -1, MaxLengthBytes: -1, DeliveryLimit: -1,
		Expires: time.Duration(args.Expires) * time.Millisecond, MaxPriority: args.MaxPriority,
		DeadLetter: args.DeadLetter,
	}
	if qd.Type == fsm.QueueTypeQuorum {
		// As RabbitMQ's quorum queues: returns are counted and shown as x-delivery-count.
		cfg.CountReturns, cfg.Redelivering = true, withDeliveryCount
		if args.DeliveryLimit != nil {
			cfg.DeliveryLimit = *args.DeliveryLimit
		}
	}
	if args.MessageTTL != nil {
		cfg.MessageTTL = time.Duration(*args.MessageTTL) * time.Millisecond
	}
	if args.MaxLength != nil {
		cfg.MaxLength = *args.MaxLength
	}
	if args.MaxLengthBytes != nil {
		cfg.MaxLengthBytes = *args.MaxLengthBytes
	}
	switch args.Overflow {
	case fsm.OverflowRejectPublish:
		cfg.Overflow = queue.RejectPublish
	case fsm.OverflowRejectPublishDLX:
		cfg.Overflow = queue.RejectPublishDLX
	}
	return cfg
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

// withDeliveryCount is m with the x-delivery-count header set to returns (a copy: the queue's
// message, shared with other queues, is not changed).
func withDeliveryCount(m *queue.Message, returns uint32) *queue.Message {
	props, err := wire.DecodeProperties(m.Props)
	if err != nil {
		return m
	}
	if props.Headers == nil {
		props.Headers = wire.Table{}
	}
	props.Headers["x-delivery-count"] = int64(returns)
	cp := *m
	cp.Props = props.Append(nil)
	return &cp
}

// goBackground runs fn on a goroutine Close waits for, unless the node is closing (false).
// Safe from any goroutine, also callbacks of data links that Close is shutting down.
func (n *Node) goBackground(fn func()) bool {
	n.bgMu.Lock()
	defer n.bgMu.Unlock()
	select {
	case <-n.closing:
		return false
	default:
	}
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		fn()
	}()
	return true
}
