package broker

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
)

// links holds this node's data links to the other nodes, dialled on first use.
type links struct {
	mu      sync.Mutex
	cfg     datalink.Config
	resolve func(nodeID string) (dataAddr string, ok bool)
	events  datalink.ConsumerEvents
	peers   map[string]*datalink.Peer
	addrs   map[string]string // the address each peer dials
	closed  bool
}

// AttachLinks lets the node forward publishes to queues owned by other nodes: resolve maps a
// node id to its data-link address (from gossip metadata). Called once, before the node's
// data-link server accepts peers.
func (n *Node) AttachLinks(cfg datalink.Config, resolve func(nodeID string) (string, bool)) {
	n.links.Store(&links{cfg: cfg, resolve: resolve, peers: map[string]*datalink.Peer{}, addrs: map[string]string{}, events: remoteEvents{n}})
}

// peerOf is the data link to a node; nil without links or a known address.
func (n *Node) peerOf(id string) *datalink.Peer {
	l := n.links.Load()
	if l == nil {
		return nil
	}
	return l.peer(id)
}

// LinkHandler is what the node's data-link server dispatches to.
func (n *Node) LinkHandler() datalink.Handler { return linkHandler{n} }

func (l *links) peer(id string) *datalink.Peer {
	addr, ok := l.resolve(id)
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	p := l.peers[id]
	if p != nil && (!ok || addr == "" || addr == l.addrs[id]) {
		l.mu.Unlock()
		return p
	}
	if !ok || addr == "" {
		l.mu.Unlock()
		return nil
	}
	// A node that restarted on another data port (":0") is dialled anew; the old peer, still
	// redialling the old address, is closed (its pending requests fail: link down).
	old := p
	p = datalink.Dial(addr, l.cfg, l.events)
	l.peers[id], l.addrs[id] = p, addr
	l.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	return p
}

func (l *links) close() {
	l.mu.Lock()
	peers := l.peers
	l.peers, l.closed = nil, true
	l.mu.Unlock()
	for _, p := range peers {
		_ = p.Close()
	}
}

// PeerFailed tells the node that the cluster declared node dead. A frozen process (SIGSTOP, a
// partition) keeps its data link open, so publishes in flight to it would wait out the link's
// timeout (5 s) with their publishers' confirm windows full. Breaking the link now nacks those
// (their outcome is unknown) and sends new publishes to the queues' new leaders as soon as the
// topology names them (forwardFailed).
func (n *Node) PeerFailed(node string) {
	l := n.links.Load()
	if l == nil {
		return
	}
	l.mu.Lock()
	p := l.peers[node]
	l.mu.Unlock()
	if p != nil {
		p.Break(fmt.Errorf("node %s was declared dead by the cluster", node))
	}
}

var errNoLink = errors.New("no data link to the queue's owner node")

// forward sends one copy of msg to owner for its target queues; the owner's answer (or the
// link failing) completes one part of join. Without a join (a transient message, nobody
// waiting for confirms... never: Publish always joins when forwarding) the answer is dropped.
func (n *Node) forward(owner string, keys []string, msg *queue.Message, data *[]byte, join *confirmJoin) {
	p := n.peerOf(owner)
	if *data == nil {
		*data = EncodeStored(msg)
	}
	join.add()
	if p == nil {
		n.forwardFailed(owner, keys, msg, *data, join, fmt.Errorf("%w %q", errNoLink, owner), failoverWait)
		return
	}
	stored := *data
	p.PublishAsync(keys, stored, msg.Persistent, func(rejected bool, err error) {
		switch {
		case errors.Is(err, datalink.ErrNotSent):
			// It never reached the old leader: safe to send to the new one.
			n.forwardFailed(owner, keys, msg, stored, join, fmt.Errorf("forward to %s: %w", owner, err), failoverWait)
		case err != nil:
			// Outcome unknown (the link broke with it in flight): sending it again could
			// store it twice, so the publisher gets a nack and decides.
			join.finish(fmt.Errorf("forward to %s: %w", owner, err))
		case rejected:
			// A refusal is final unless the topology already names another leader (the
			// old one answered for a queue it no longer serves).
			n.forwardFailed(owner, keys, msg, stored, join, ErrRefused, 0)
		default:
			join.finish(nil)
		}
	})
}

// failoverWait bounds how long a publish to replicated queues whose leader went away waits for
// the new leader before it is nacked (RabbitMQ holds such publishes too).
const failoverWait = 5 * time.Second

// forwardFailed finishes one forwarded part of a publish that failed (its own part of join).
// When every target is a replicated queue and the old leader certainly did not store the message
// (it never left this node, or the old leader refused it as no longer serving the queue), the
// publish is not nacked at once: it is sent to the queues' new leader once the topology names
// one (a failover in progress), within the wait. A publish whose outcome is unknown is nacked.
func (n *Node) forwardFailed(owner string, keys []string, msg *queue.Message, data []byte, join *confirmJoin, cause error, wait time.Duration) {
	for _, k := range keys {
		vhost, name, _ := splitStoreKey(k)
		if qd, ok := n.fsm.Queue(vhost, name); !ok || qd.Type != fsm.QueueTypeQuorum {
			join.finish(cause)
			return
		}
	}
	if _, ready := n.currentLeaders(keys, owner); !ready && wait == 0 {
		join.finish(cause)
		return
	}
	started := n.goBackground(func() {
		deadline := time.Now().Add(wait)
		for first := true; ; first = false {
			if !first {
				select {
				case <-n.closing:
					join.finish(cause)
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
			byOwner, ready := n.currentLeaders(keys, owner)
			if ready {
				for to, ks := range byOwner {
					if to == n.id {
						n.deliverReplicatedHere(ks, msg, data, join)
						continue
					}
					d := data
					n.forward(to, ks, msg, &d, join)
				}
				join.finish(nil) // this part handed over to the new ones
				return
			}
			if time.Now().After(deadline) {
				join.finish(cause)
				return
			}
		}
	})
	if !started {
		join.finish(cause)
	}
}

// currentLeaders groups keys by the leader the topology now names; ready once none of them is
// still led by the node that failed (and those led here are served).
func (n *Node) currentLeaders(keys []string, failed string) (map[string][]string, bool) {
	out := map[string][]string{}
	for _, k := range keys {
		vhost, name, _ := splitStoreKey(k)
		qd, ok := n.fsm.Queue(vhost, name)
		if !ok || qd.Owner == failed || qd.Owner == n.id && n.LocalQueue(vhost, name) == nil {
			return nil, false
		}
		out[qd.Owner] = append(out[qd.Owner], k)
	}
	return out, true
}

// deliverReplicatedHere enqueues a re-sent publish on replicated queues this node now leads.
func (n *Node) deliverReplicatedHere(keys []string, msg *queue.Message, data []byte, join *confirmJoin) {
	qs := make([]*queue.Queue, 0, len(keys))
	missing := false
	for _, k := range keys {
		vhost, name, _ := splitStoreKey(k)
		if q := n.LocalQueue(vhost, name); q != nil {
			qs = append(qs, q)
		} else {
			missing = true
		}
	}
	var sc Scratch
	d := data
	rejected, _ := n.deliverLocal(qs, msg, &d, &sc, join)
	if rejected || missing {
		join.add()
		join.finish(ErrRefused)
	}
}

// linkHandler serves the owner side of data links.
type linkHandler struct{ n *Node }

// Publish enqueues a message forwarded by another node on the listed local queues and answers
// once it is accepted (and on disk, for a persistent message in durable queues).
func (h linkHandler) Publish(from string, keys []string, data []byte, persistent bool, reply func(bool, error)) {
	n := h.n
	data = bytes.Clone(data) // the link reuses its read buffer; queues keep the message
	msg, err := DecodeStored(data)
	if err != nil {
		reply(false, err)
		return
	}
	msg.Persistent = persistent
	missing := false
	qs := make([]*queue.Queue, 0, len(keys))
	for _, k := range keys {
		vhost, name, _ := splitStoreKey(k)
		if n.replyForwarded(name, msg) {
			continue
		}
		if q := n.LocalQueue(vhost, name); q != nil {
			qs = append(qs, q)
		} else {
			missing = true
		}
	}
	join := newConfirmJoin(func(err error) {
		if errors.Is(err, ErrRefused) {
			reply(true, nil)
			return
		}
		reply(false, err)
	})
	var sc Scratch
	rejected, _ := n.deliverLocal(qs, msg, &data, &sc, join)
	var outcome error
	if rejected || missing {
		outcome = ErrRefused
	}
	join.finish(outcome)
}
