package broker

import (
	"context"
	"fmt"

	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
)

// basic.get and queue.purge of a queue owned by another node, over the data link. A message
// got without no-ack stays unacked at the owner under (getting node, queue) until the getting
// node settles it, or its link breaks (then it is requeued, as for a closed channel).

type getKey struct{ from, key string }

type getHold struct {
	q       *queue.Queue
	seq     uint64
	unacked map[uint64]queue.Settled
}

// GetRemote takes one message from a queue owned by owner. For noAck false, sub settles it
// (Settle with d.Seq) like a remote consumer's delivery.
func (n *Node) GetRemote(ctx context.Context, owner, vhost, name string, noAck bool) (d datalink.Delivery, msg *queue.Message, sub *RemoteSub, ok bool, err error) {
	p := n.peerOf(owner)
	if p == nil {
		return d, nil, nil, false, fmt.Errorf("%w %q", errNoLink, owner)
	}
	key := StoreKey(vhost, name)
	d, ok, err = p.Get(ctx, key, noAck)
	if err != nil || !ok {
		return d, nil, nil, false, err
	}
	msg, err = DecodeStored(append([]byte(nil), d.Msg...))
	if err != nil {
		if !noAck {
			p.Settle(datalink.GetConsumerID, key, datalink.SettleRequeue, []uint64{d.Seq})
		}
		return d, nil, nil, false, fmt.Errorf("message from %s: %w", owner, err)
	}
	return d, msg, &RemoteSub{n: n, peer: p, id: datalink.GetConsumerID, key: key, Owner: owner}, true, nil
}

// PurgeRemote purges a queue owned by owner and returns how many ready messages it dropped.
func (n *Node) PurgeRemote(ctx context.Context, owner, vhost, name string) (int, error) {
	p := n.peerOf(owner)
	if p == nil {
		return 0, fmt.Errorf("%w %q", errNoLink, owner)
	}
	return p.Purge(ctx, StoreKey(vhost, name))
}

func notFound(key string) error {
	vhost, name, _ := splitStoreKey(key)
	return linkRefusal(fsm.NoQueue(vhost, name))
}

func (h linkHandler) Get(from, key string, noAck bool) (datalink.Delivery, bool, error) {
	n := h.n
	vhost, name, _ := splitStoreKey(key)
	q := n.LocalQueue(vhost, name)
	if q == nil {
		return datalink.Delivery{}, false, notFound(key)
	}
	d, ok := q.Get(noAck)
	if !ok {
		return datalink.Delivery{Remaining: 0}, false, nil
	}
	out := datalink.Delivery{Redelivered: d.Redelivered, Remaining: uint32(d.Remaining), Msg: EncodeStored(d.Msg)}
	if !noAck {
		n.proxiesMu.Lock()
		if n.gets == nil {
			n.gets = map[getKey]*getHold{}
		}
		k := getKey{from, key}
		g := n.gets[k]
		if g == nil || g.q != q {
			if g != nil {
				defer requeueHeld(g) // the queue was re-created: the old one takes its messages back
			}
			g = &getHold{q: q, unacked: map[uint64]queue.Settled{}}
			n.gets[k] = g
		}
		g.seq++
		out.Seq = g.seq
		g.unacked[g.seq] = queue.Settled{Msg: d.Msg, Seq: d.Seq, ExpiresAt: d.ExpiresAt}
		n.proxiesMu.Unlock()
	}
	return out, true, nil
}

func (h linkHandler) Purge(_ string, key string) (int, error) {
	vhost, name, _ := splitStoreKey(key)
	q := h.n.LocalQueue(vhost, name)
	if q == nil {
		return 0, notFound(key)
	}
	return q.Purge(), nil
}

func (n *Node) settleGets(from, key string, kind datalink.SettleKind, seqs []uint64) {
	n.proxiesMu.Lock()
	g := n.gets[getKey{from, key}]
	var msgs []queue.Settled
	if g != nil {
		for _, s := range seqs {
			if m, ok := g.unacked[s]; ok {
				msgs = append(msgs, m)
				delete(g.unacked, s)
			}
		}
	}
	n.proxiesMu.Unlock()
	if len(msgs) == 0 {
		return
	}
	settleOn(g.q, kind, msgs)
}

// requeueGets returns what a node that went away got and never settled.
func (n *Node) requeueGets(from string) {
	n.proxiesMu.Lock()
	var held []*getHold
	for k, g := range n.gets {
		if k.from == from {
			held = append(held, g)
			delete(n.gets, k)
		}
	}
	n.proxiesMu.Unlock()
	for _, g := range held {
		requeueHeld(g)
	}
}

func requeueHeld(g *getHold) {
	msgs := make([]queue.Settled, 0, len(g.unacked))
	for _, m := range g.unacked {
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		g.q.Requeue(msgs)
	}
}
