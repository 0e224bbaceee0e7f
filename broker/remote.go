package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
)

// ---- consumer node: a client here consumes from a queue owned by another node ----

// RemoteSink receives the deliveries of one consumer whose queue lives on another node. Both
// methods are called on the data link's goroutine and must not block.
type RemoteSink interface {
	RemoteDeliver(d datalink.Delivery, msg *queue.Message)
	RemoteCancelled()
}

// RemoteSub is a subscription to a queue on another node.
type RemoteSub struct {
	n     *Node
	peer  *datalink.Peer
	id    uint64
	key   string
	Owner string
}

type remoteSinks struct {
	mu    sync.Mutex
	next  uint64
	sinks map[uint64]RemoteSink
}

// ConsumeRemote subscribes sink to the queue vhost/name owned by owner; the owner dispatches
// to it round-robin with its local consumers, within prefetch credit.
func (n *Node) ConsumeRemote(ctx context.Context, owner, vhost, name string, prefetch int, noAck, exclusive bool, sink RemoteSink) (*RemoteSub, error) {
	p := n.peerOf(owner)
	if p == nil {
		return nil, fmt.Errorf("%w %q", errNoLink, owner)
	}
	rs := &n.remote
	rs.mu.Lock()
	rs.next++
	id := rs.next
	if rs.sinks == nil {
		rs.sinks = map[uint64]RemoteSink{}
	}
	rs.sinks[id] = sink // before Consume: deliveries may arrive before it returns
	rs.mu.Unlock()
	sub := &RemoteSub{n: n, peer: p, id: id, key: StoreKey(vhost, name), Owner: owner}
	if err := p.Consume(ctx, id, sub.key, prefetch, noAck, exclusive); err != nil {
		rs.mu.Lock()
		delete(rs.sinks, id)
		rs.mu.Unlock()
		return nil, err
	}
	return sub, nil
}

// Settle acks, requeues or rejects deliveries by their owner-side sequence numbers and gives
// the owner back as much prefetch credit.
func (s *RemoteSub) Settle(kind datalink.SettleKind, seqs []uint64) {
	s.peer.Settle(s.id, s.key, kind, seqs)
	s.peer.Credit(s.id, len(seqs))
}

// Credit returns n prefetch slots without settling (no-ack consumers, after delivery).
func (s *RemoteSub) Credit(n int) { s.peer.Credit(s.id, n) }

// Cancel ends the subscription; deliveries still on the wire go back to the queue.
func (s *RemoteSub) Cancel() {
	s.n.remote.mu.Lock()
	delete(s.n.remote.sinks, s.id)
	s.n.remote.mu.Unlock()
	s.peer.Cancel(s.id)
}

// remoteEvents routes deliveries arriving on data links to their sinks.
type remoteEvents struct{ n *Node }

func (e remoteEvents) sink(id uint64) RemoteSink {
	e.n.remote.mu.Lock()
	defer e.n.remote.mu.Unlock()
	return e.n.remote.sinks[id]
}

func (e remoteEvents) Delivered(id uint64, d datalink.Delivery) {
	sink := e.sink(id)
	if sink == nil {
		return // cancelled meanwhile: the owner requeues what it had in flight
	}
	msg, err := DecodeStored(append([]byte(nil), d.Msg...))
	if err != nil {
		e.n.log.Error("undecodable message from a data link", "consumer", id, "err", err)
		return
	}
	sink.RemoteDeliver(d, msg)
}

func (e remoteEvents) ConsumerCancelled(id uint64) {
	e.n.remote.mu.Lock()
	sink := e.n.remote.sinks[id]
	delete(e.n.remote.sinks, id)
	e.n.remote.mu.Unlock()
	if sink != nil {
		sink.RemoteCancelled()
	}
}

// ---- owner node: a consumer on another node consumes from a queue here ----

// defaultRemoteCredit bounds deliveries in flight to a remote consumer without a prefetch.
const defaultRemoteCredit = 1000

// remoteProxy stands in the queue's consumer list for a consumer on another node.
type remoteProxy struct {
	n     *Node
	from  string
	id    uint64
	q     *queue.Queue
	out   datalink.Deliverer
	noAck bool

	mu      sync.Mutex
	credit  int
	seq     uint64
	unacked map[uint64]queue.Settled
	closed  bool
}

type proxyKey struct {
	from string
	id   uint64
}

func (p *remoteProxy) TryDeliver(d queue.Delivery) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.credit <= 0 {
		return false
	}
	p.seq++
	if !p.out.Deliver(datalink.Delivery{Seq: p.seq, Redelivered: d.Redelivered, Remaining: uint32(d.Remaining), Msg: EncodeStored(d.Msg)}) {
		p.seq--
		return false
	}
	p.credit--
	if !p.noAck {
		p.unacked[p.seq] = queue.Settled{Msg: d.Msg, Seq: d.Seq, ExpiresAt: d.ExpiresAt}
	}
	return true
}

func (p *remoteProxy) Cancelled(*queue.Queue) {
	p.n.dropProxy(p, false)
	p.out.Cancelled()
}

// take removes the unacked deliveries with the given sequence numbers (unknown ones are stale
// after a reconnect and ignored).
func (p *remoteProxy) take(seqs []uint64) []queue.Settled {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]queue.Settled, 0, len(seqs))
	for _, s := range seqs {
		if m, ok := p.unacked[s]; ok {
			out = append(out, m)
			delete(p.unacked, s)
		}
	}
	return out
}

func (n *Node) proxy(from string, id uint64) *remoteProxy {
	n.proxiesMu.Lock()
	defer n.proxiesMu.Unlock()
	return n.proxies[proxyKey{from, id}]
}

// dropProxy unregisters p and requeues what it held unacked; detach also removes it from its
// queue (not needed when the queue itself is going away).
func (n *Node) dropProxy(p *remoteProxy, detach bool) {
	n.proxiesMu.Lock()
	if n.proxies[proxyKey{p.from, p.id}] == p {
		delete(n.proxies, proxyKey{p.from, p.id})
	}
	n.proxiesMu.Unlock()
	p.mu.Lock()
	p.closed = true
	held := make([]queue.Settled, 0, len(p.unacked))
	for _, m := range p.unacked {
		held = append(held, m)
	}
	p.unacked = nil
	p.mu.Unlock()
	if detach {
		p.q.RemoveConsumer(p)
	}
	if len(held) > 0 {
		p.q.Requeue(held)
	}
}

// linkRefusal carries a refusal over the data link: the client's node sends its code and
// text to the client as they are.
func linkRefusal(e *fsm.Error) *datalink.RemoteError {
	return &datalink.RemoteError{Code: e.Code, Text: e.Text}
}

func (h linkHandler) Consume(from string, id uint64, key string, prefetch int, noAck, exclusive bool, out datalink.Deliverer) error {
	n := h.n
	vhost, name, _ := splitStoreKey(key)
	q := n.LocalQueue(vhost, name)
	if q == nil {
		return linkRefusal(fsm.NoQueue(vhost, name))
	}
	credit := prefetch
	if credit <= 0 {
		credit = defaultRemoteCredit
	}
	p := &remoteProxy{n: n, from: from, id: id, q: q, out: out, noAck: noAck, credit: credit, unacked: map[uint64]queue.Settled{}}
	n.proxiesMu.Lock()
	if n.proxies == nil {
		n.proxies = map[proxyKey]*remoteProxy{}
	}
	n.proxies[proxyKey{from, id}] = p
	n.proxiesMu.Unlock()
	if err := q.AddConsumer(p, noAck, exclusive); err != nil {
		n.proxiesMu.Lock()
		delete(n.proxies, proxyKey{from, id})
		n.proxiesMu.Unlock()
		switch {
		case errors.Is(err, queue.ErrExclusiveConsumer), errors.Is(err, queue.ErrHasConsumers):
			return linkRefusal(fsm.QueueInExclusiveUse(vhost, name))
		case errors.Is(err, queue.ErrDeleted):
			return linkRefusal(fsm.NoQueue(vhost, name))
		}
		return err
	}
	return nil
}

func (h linkHandler) Cancel(from string, id uint64) {
	if p := h.n.proxy(from, id); p != nil {
		h.n.dropProxy(p, true)
	}
}

func (h linkHandler) Settle(from string, id uint64, key string, kind datalink.SettleKind, seqs []uint64) {
	if id == datalink.GetConsumerID {
		h.n.settleGets(from, key, kind, seqs)
		return
	}
	p := h.n.proxy(from, id)
	if p == nil {
		return
	}
	msgs := p.take(seqs)
	if len(msgs) == 0 {
		return
	}
	settleOn(p.q, kind, msgs)
}

// settleOn applies a remote node's ack, requeue or reject to messages of q.
func settleOn(q *queue.Queue, kind datalink.SettleKind, msgs []queue.Settled) {
	switch kind {
	case datalink.SettleAck:
		q.Ack(msgs)
	case datalink.SettleRequeue:
		q.Requeue(msgs)
	default:
		q.Reject(msgs)
	}
}

func (h linkHandler) Credit(from string, id uint64, n int) {
	p := h.n.proxy(from, id)
	if p == nil {
		return
	}
	p.mu.Lock()
	p.credit += n
	p.mu.Unlock()
	p.q.Kick()
}

// PeerDown: the consumer node is gone; its consumers leave their queues, their unacked
// messages go back.
func (h linkHandler) PeerDown(from string) {
	h.n.proxiesMu.Lock()
	var gone []*remoteProxy
	for k, p := range h.n.proxies {
		if k.from == from {
			gone = append(gone, p)
		}
	}
	h.n.proxiesMu.Unlock()
	for _, p := range gone {
		h.n.dropProxy(p, true)
	}
	h.n.requeueGets(from)
	if hook := h.n.peerDown.Load(); hook != nil {
		(*hook)(from)
	}
}

// OnPeerDown sets a function called (on the link's goroutine: it must not block) when a
// peer's data link to this node breaks, so a node can react to a peer process dying at once
// rather than when gossip declares it dead.
func (n *Node) OnPeerDown(fn func(node string)) { n.peerDown.Store(&fn) }
