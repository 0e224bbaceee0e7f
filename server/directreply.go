package server

import (
	"bytes"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// Direct reply-to, RabbitMQ's rules: basic.consume on amq.rabbitmq.reply-to must be no-ack and
// there is at most one such consumer per channel; a publish whose reply_to is
// amq.rabbitmq.reply-to needs that consumer on the publishing channel, and its reply_to is
// rewritten to the routable name the broker gave the consumer; a reply published to the
// default exchange with that name as routing key is delivered to the consumer, whichever node
// the replier is connected to (broker/directreply.go routes it).

var replyToBytes = []byte(broker.ReplyToQueue)

// replyConsumer is a channel's direct reply-to consumer; it implements broker.ReplySink.
type replyConsumer struct {
	ch         *channel
	tag        string
	name       string // amq.rabbitmq.reply-to.<node>.<token>
	unregister func()
}

// DeliverReply sends a reply as basic.deliver (no-ack: nothing to track) with the channel's
// next delivery tag, unless the consumer has gone.
func (r *replyConsumer) DeliverReply(msg *queue.Message) bool {
	ch := r.ch
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.reply != r {
		return false
	}
	ch.nextTag++
	c := ch.c
	c.lockOut()
	c.appendContentLocked(ch.id, &wire.BasicDeliver{
		ConsumerTag: r.tag, DeliveryTag: ch.nextTag, Exchange: msg.Exchange, RoutingKey: msg.RoutingKey,
	}, msg.Props, msg.Body)
	c.unlockOut()
	return true
}

func (ch *channel) consumeReply(m *wire.BasicConsume) error {
	tag := m.ConsumerTag
	if tag == "" {
		tag = "amq.ctag-" + randomName()
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, dup := ch.consumers[tag]; dup || ch.reply != nil && ch.reply.tag == tag {
		return fsm.ConsumerTagReused(tag)
	}
	if !m.NoAck {
		return errorf(wire.PreconditionFailed, "reply consumer cannot acknowledge")
	}
	if ch.reply != nil {
		return errorf(wire.PreconditionFailed, "reply consumer already set")
	}
	r := &replyConsumer{ch: ch, tag: tag}
	r.name, r.unregister = ch.c.s.node.RegisterReply(r)
	ch.reply = r
	if !m.NoWait {
		// Under ch.mu, so no reply overtakes consume-ok.
		ch.c.sendMethod(ch.id, &wire.BasicConsumeOk{ConsumerTag: tag})
	}
	return nil
}

// cancelReply ends the reply consumer if tag names it.
func (ch *channel) cancelReply(m *wire.BasicCancel) bool {
	ch.mu.Lock()
	r := ch.reply
	if r == nil || r.tag != m.ConsumerTag {
		ch.mu.Unlock()
		return false
	}
	ch.reply = nil
	ch.mu.Unlock()
	r.unregister()
	if !m.NoWait {
		ch.c.sendMethod(ch.id, &wire.BasicCancelOk{ConsumerTag: m.ConsumerTag})
	}
	return true
}

// dropReply ends the reply consumer when the channel closes.
func (ch *channel) dropReply() {
	ch.mu.Lock()
	r := ch.reply
	ch.reply = nil
	ch.mu.Unlock()
	if r != nil {
		r.unregister()
	}
}

// rewriteReplyTo gives a request with reply_to amq.rabbitmq.reply-to the channel's routable
// reply name, or refuses it when the channel has no reply consumer.
func (ch *channel) rewriteReplyTo(msg *queue.Message) error {
	if !bytes.Contains(msg.Props, replyToBytes) {
		return nil
	}
	p, err := wire.DecodeProperties(msg.Props)
	if err != nil || p.ReplyTo != broker.ReplyToQueue {
		return nil // malformed properties are reported by the publish path
	}
	ch.mu.Lock()
	r := ch.reply
	ch.mu.Unlock()
	if r == nil {
		return errorf(wire.PreconditionFailed, "fast reply consumer does not exist")
	}
	if out, ok := wire.ReplaceReplyTo(msg.Props, r.name); ok {
		msg.Props = out
	}
	return nil
}

// publishOrReply routes a publish, or hands a reply addressed to a reply name to its consumer.
func (ch *channel) publishOrReply(exchange string, msg *queue.Message, headers map[string]any, onDone func(error)) (broker.PublishResult, error) {
	if exchange == "" && broker.IsReplyName(msg.RoutingKey) {
		return ch.c.s.node.PublishReply(ch.c.vhost, msg, onDone), nil
	}
	return ch.c.s.node.Publish(ch.c.vhost, exchange, msg, headers, &ch.scratch, onDone)
}

// declareReplyPassive answers a passive queue.declare of the pseudo-queue (always there, as
// in RabbitMQ) or of a reply name (there while its consumer is).
func (ch *channel) declareReplyPassive(m *wire.QueueDeclare) error {
	if m.Queue != broker.ReplyToQueue && !ch.c.s.node.ReplyConsumerExists(m.Queue) {
		return fsm.NoQueue(ch.c.vhost, m.Queue)
	}
	if !m.NoWait {
		ch.c.sendMethod(ch.id, &wire.QueueDeclareOk{Queue: m.Queue})
	}
	return nil
}
