package broker

import (
	"crypto/rand"
	"encoding/base64"
	"strings"
	"sync"

	"github.com/warrenmq/warren/queue"
)

// Direct reply-to (RabbitMQ's amq.rabbitmq.reply-to pseudo-queue). A channel that consumes
// from ReplyToQueue registers a sink here and gets a name of the form
//
//	amq.rabbitmq.reply-to.<base64url node id>.<random token>
//
// which the server writes into the reply_to of the channel's requests. A reply published to
// the default exchange with that name as routing key goes straight to the sink: on this node
// by token, on another node over the data link to the node the name encodes (as a forwarded
// publish whose target key is the reply name). No queue, no Raft: replies are as transient as
// in RabbitMQ, and a reply whose consumer is gone is dropped.

// ReplyToQueue is the pseudo-queue name clients consume from and put in reply_to.
const ReplyToQueue = "amq.rabbitmq.reply-to"

const replyPrefix = ReplyToQueue + "."

// ReplySink receives the replies for one channel's reply consumer.
type ReplySink interface {
	// DeliverReply hands a reply to the consuming channel; false when it is gone.
	DeliverReply(msg *queue.Message) bool
}

type replyRegistry struct {
	mu    sync.Mutex
	sinks map[string]ReplySink // token → sink
}

var replyNodeEncoding = base64.RawURLEncoding

// IsReplyName reports whether a routing key addresses a direct reply-to consumer.
func IsReplyName(name string) bool { return strings.HasPrefix(name, replyPrefix) }

// parseReplyName splits a reply name into the node id and token it encodes.
func parseReplyName(name string) (node, token string, ok bool) {
	rest, found := strings.CutPrefix(name, replyPrefix)
	if !found {
		return "", "", false
	}
	enc, token, found := strings.Cut(rest, ".")
	if !found || token == "" {
		return "", "", false
	}
	id, err := replyNodeEncoding.DecodeString(enc)
	if err != nil || len(id) == 0 {
		return "", "", false
	}
	return string(id), token, true
}

// RegisterReply gives a channel's reply consumer its routable name; unregister ends it (the
// consumer was cancelled or its channel closed) and later replies to the name are dropped.
func (n *Node) RegisterReply(sink ReplySink) (name string, unregister func()) {
	var raw [18]byte
	_, _ = rand.Read(raw[:])
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	n.replies.mu.Lock()
	if n.replies.sinks == nil {
		n.replies.sinks = make(map[string]ReplySink)
	}
	n.replies.sinks[token] = sink
	n.replies.mu.Unlock()
	name = replyPrefix + replyNodeEncoding.EncodeToString([]byte(n.id)) + "." + token
	return name, func() {
		n.replies.mu.Lock()
		delete(n.replies.sinks, token)
		n.replies.mu.Unlock()
	}
}

// ReplyConsumerExists reports whether a reply name still reaches a consumer (passive
// queue.declare of the name). A name of another node is taken as existing while that node
// is alive: asking it would cost a round trip for a check RabbitMQ makes locally too.
func (n *Node) ReplyConsumerExists(name string) bool {
	node, token, ok := parseReplyName(name)
	if !ok {
		return false
	}
	if node != n.id {
		live, _ := n.liveNodeIDs()
		for _, id := range live {
			if id == node {
				return true
			}
		}
		return false
	}
	n.replies.mu.Lock()
	_, ok = n.replies.sinks[token]
	n.replies.mu.Unlock()
	return ok
}

// deliverReplyLocal hands msg to the sink of token on this node; a reply to a consumer that
// is gone is dropped, as in RabbitMQ.
func (n *Node) deliverReplyLocal(token string, msg *queue.Message) {
	n.replies.mu.Lock()
	sink := n.replies.sinks[token]
	n.replies.mu.Unlock()
	if sink != nil {
		sink.DeliverReply(msg)
	}
}

// PublishReply delivers a message published to the default exchange with a reply name as
// routing key. A name that is not well-formed routes nowhere (a mandatory publish is
// returned); a reply for another node goes over the data link, and onDone reports when that
// node took it (Deferred).
func (n *Node) PublishReply(vhost string, msg *queue.Message, onDone func(error)) PublishResult {
	node, token, ok := parseReplyName(msg.RoutingKey)
	if !ok {
		return PublishResult{}
	}
	if node == n.id {
		n.deliverReplyLocal(token, msg)
		return PublishResult{Routed: 1}
	}
	if onDone == nil {
		onDone = func(error) {}
	}
	join := newConfirmJoin(onDone)
	var data []byte
	n.forward(node, []string{StoreKey(vhost, msg.RoutingKey)}, msg, &data, join)
	join.finish(nil)
	return PublishResult{Routed: 1, Deferred: true}
}

// replyForwarded serves a reply forwarded by another node (a data-link publish whose target
// key is a reply name): it reports whether key was one.
func (n *Node) replyForwarded(name string, msg *queue.Message) bool {
	node, token, ok := parseReplyName(name)
	if !ok {
		return false
	}
	if node == n.id {
		n.deliverReplyLocal(token, msg)
	}
	return true
}
