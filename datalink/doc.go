// Package datalink owns the node-to-node data plane of a Warren cluster: an authenticated,
// multiplexed TCP connection from a node to each peer it sends to (each side dials its own),
// carrying forwarded publishes (with their confirms), remote consumer registrations,
// deliveries, settlements and prefetch credit, single-message gets and purges, and
// replication requests.
//
// It knows nothing about AMQP, queues or the broker. Messages are opaque byte slices and queue
// names opaque strings; the owner node plugs in a Handler (server side, Listen) and the node
// with the publisher or consumer plugs in ConsumerEvents (client side, Dial).
//
// Guarantees:
//   - Frames on one link keep their order: publishes (and replication requests) from A to B
//     are handed to B's Handler in the order A sent them, deliveries to one consumer arrive in
//     the order B sent them, and publish replies (confirms) reach the caller in publish order
//     even when the Handler answers them out of order. Replication replies are not held behind
//     publish confirms: each leaves as soon as the Handler gives it.
//   - A publish is never reported as accepted unless the owner's Handler said so: if the link
//     breaks first the caller gets ErrLinkDown and must nack.
//   - Back-pressure: a link keeps at most Config.MaxBuffered unsent bytes of publishes and
//     deliveries; beyond that publishers wait and Deliverer.Deliver refuses.
//   - Both ends prove knowledge of the cluster secret (HMAC challenge-response in both
//     directions) before any request is handled.
package datalink

import (
	"errors"
	"fmt"
)

// ErrLinkDown reports that the link to the peer is not established or broke before the
// request was answered. For a publish this means "unknown outcome": the caller must nack.
var ErrLinkDown = errors.New("datalink: link down")

// ErrClosed reports a request on a Peer or Server after Close. It wraps ErrLinkDown so that
// callers who only test for ErrLinkDown treat it the same way.
var ErrClosed = fmt.Errorf("%w: closed", ErrLinkDown)

// ErrNotSent reports a publish or replication request that never left this node (the link was
// down or broke before it was written): unlike other link failures, its outcome is known (the
// peer did not get it), so it may be sent elsewhere. It wraps ErrLinkDown.
var ErrNotSent = fmt.Errorf("%w: request not sent", ErrLinkDown)

// RemoteError is an error returned by the owner node's Handler, carried over the link. A
// Handler may return a *RemoteError itself to choose Code (e.g. an AMQP reply code such as 404
// or 403) so that the client side can map it back; any other error arrives with Code 0.
type RemoteError struct {
	Code uint16
	Text string
}

func (e *RemoteError) Error() string {
	if e.Code == 0 {
		return "datalink: remote: " + e.Text
	}
	return fmt.Sprintf("datalink: remote (%d): %s", e.Code, e.Text)
}

// toRemoteError converts a Handler error to what goes on the wire.
func toRemoteError(err error) (uint16, string) {
	if err == nil {
		return 0, ""
	}
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code, re.Text
	}
	return 0, err.Error()
}

// SettleKind says what the consumer's node decided about delivered messages.
type SettleKind uint8

const (
	SettleAck     SettleKind = 1 // done with it: forget the message
	SettleRequeue SettleKind = 2 // put it back for redelivery
	SettleReject  SettleKind = 3 // drop it without requeue (dead-letter if configured)
)

func (k SettleKind) String() string {
	switch k {
	case SettleAck:
		return "ack"
	case SettleRequeue:
		return "requeue"
	case SettleReject:
		return "reject"
	}
	return fmt.Sprintf("SettleKind(%d)", uint8(k))
}

// GetConsumerID is the consumer ID under which messages fetched with Peer.Get (noAck false)
// are settled: the client settles them with Peer.Settle(GetConsumerID, queue, kind, seqs), and
// the Handler sees that ID in Settle. Real consumers should therefore use IDs above zero.
const GetConsumerID uint64 = 0

// Delivery is one message handed from the owner's queue to a remote consumer (or Get).
type Delivery struct {
	Seq         uint64 // the owner's handle for settling this message
	Redelivered bool
	Remaining   uint32 // messages left in the queue (basic.get-ok message-count)
	Msg         []byte
}
