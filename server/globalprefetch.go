package server

import (
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/queue"
)

// Channel-wide (basic.qos global=true) prefetch for consumers of other nodes' queues. The
// owner only knows each remote consumer's own credit, so the channel's node enforces the
// shared limit: a delivery that arrives while the channel is at its limit is held here, in
// arrival order, and sent as acks free room. Each such consumer subscribes with at most the
// global limit as its credit, so at most that many messages per consumer wait here; a held
// delivery of a consumer that has gone is dropped, because the owner takes back everything
// unsettled of a subscription when it ends.

type heldDelivery struct {
	cs  *consumer
	d   datalink.Delivery
	msg *queue.Message
}

// holdRemoteLocked keeps an acked remote delivery back when the channel is at its global
// prefetch (or others are already waiting, to keep order); ch.mu must be held.
func (ch *channel) holdRemoteLocked(cs *consumer, d datalink.Delivery, msg *queue.Message) bool {
	if cs.noAck {
		return false
	}
	if len(ch.held) == 0 && (ch.prefetchGlobal == 0 || ch.unacked.live < ch.prefetchGlobal) {
		return false
	}
	ch.held = append(ch.held, heldDelivery{cs, d, msg})
	return true
}

// releaseHeldLocked sends held deliveries while the global limit allows; ch.mu must be held.
func (ch *channel) releaseHeldLocked() {
	for len(ch.held) > 0 {
		h := ch.held[0]
		if !h.cs.closed {
			if ch.prefetchGlobal > 0 && ch.unacked.live >= ch.prefetchGlobal {
				return
			}
			h.cs.deliverRemoteNowLocked(h.d, h.msg)
		}
		ch.held[0] = heldDelivery{}
		ch.held = ch.held[1:]
	}
	ch.held = nil
}

// remoteCredit is the credit a new remote consumer asks its owner for: its own prefetch,
// capped by the channel's global prefetch (0: none).
func (ch *channel) remoteCredit(prefetch int) int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if g := ch.prefetchGlobal; g > 0 && (prefetch == 0 || g < prefetch) {
		return g
	}
	return prefetch
}
