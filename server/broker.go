package server

import (
	"context"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
)

// Broker is what the AMQP side needs from the node's runtime (*broker.Node): the topology
// replica to read and Raft to change it, the queues this node owns, the publish path, direct
// reply-to, and the queues of other nodes reached over the data links. Tests give the server
// a broker without Raft (broker/brokertest) or wrap one to inject failures.
type Broker interface {
	ID() string
	// FSM is the local topology replica, read-only here.
	FSM() *fsm.FSM
	// Apply commits a topology command; a refusal by the FSM is an *fsm.Error.
	Apply(c fsm.Command) (fsm.Result, error)
	LocalQueue(vhost, name string) *queue.Queue
	// BalancedOwner and ReplicaSet place a new queue (x-queue-leader-locator, replicas).
	BalancedOwner() string
	ReplicaSet(leader string, size int) []string

	Publish(vhost, exchange string, msg *queue.Message, headers map[string]any, sc *broker.Scratch, onDone func(error)) (broker.PublishResult, error)

	RegisterReply(sink broker.ReplySink) (name string, unregister func())
	ReplyConsumerExists(name string) bool
	PublishReply(vhost string, msg *queue.Message, onDone func(error)) broker.PublishResult

	ConsumeRemote(ctx context.Context, owner, vhost, name string, prefetch int, noAck, exclusive bool, sink broker.RemoteSink) (*broker.RemoteSub, error)
	GetRemote(ctx context.Context, owner, vhost, name string, noAck bool) (d datalink.Delivery, msg *queue.Message, sub *broker.RemoteSub, ok bool, err error)
	PurgeRemote(ctx context.Context, owner, vhost, name string) (int, error)

	// SetCounter and PeerCount count across the cluster for the user and vhost limits
	// (userlimits.go): this node answers its peers with the counter, and asks them.
	SetCounter(fn func(key string) (int, error))
	PeerCount(ctx context.Context, key string) (sum int, missed []string)
}

var _ Broker = (*broker.Node)(nil)
