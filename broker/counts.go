package broker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/warrenmq/warren/datalink"
)

// Counts that limits hold across the cluster (a user's connections and channels, as RabbitMQ
// 3.10 counts them on every running node): each node counts its own, the AMQP server registers
// that counter here, and a node checking a limit asks every other live node over the data link.

// peerCountTimeout bounds one cluster count: a peer that has not answered by then counts as
// holding nothing, as RabbitMQ counts only the nodes it reaches.
const peerCountTimeout = 2 * time.Second

var errNoCounter = errors.New("no counter registered on this node")

// SetCounter registers what this node answers to its peers' count requests (key is the
// caller's, opaque here).
func (n *Node) SetCounter(fn func(key string) (int, error)) { n.counter.Store(&fn) }

// Count implements datalink.Counter: a peer asks for this node's count under key.
func (h linkHandler) Count(_ string, key string) (int, error) {
	fn := h.n.counter.Load()
	if fn == nil {
		return 0, errNoCounter
	}
	return (*fn)(key)
}

// PeerCount sums the counts under key of every other live node, asked in parallel. Nodes that
// did not answer are listed in missed (their count is taken as zero).
func (n *Node) PeerCount(ctx context.Context, key string) (sum int, missed []string) {
	live, ok := n.liveNodeIDs()
	if !ok || n.links.Load() == nil {
		return 0, nil
	}
	ctx, cancel := context.WithTimeout(ctx, peerCountTimeout)
	defer cancel()
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, id := range live {
		if id == n.id {
			continue
		}
		wg.Add(1)
		go func(id string, p *datalink.Peer) {
			defer wg.Done()
			c, err := 0, errNoLink
			if p != nil {
				c, err = p.Count(ctx, key)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				n.log.Warn("cluster count: peer did not answer; counting it as zero", "peer", id, "err", err)
				missed = append(missed, id)
				return
			}
			sum += c
		}(id, n.peerOf(id))
	}
	wg.Wait()
	return sum, missed
}
