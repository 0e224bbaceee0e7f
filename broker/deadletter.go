package broker

import (
	"time"

	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// deadLetter republishes messages that left q (rejected, expired, over its length limit) to
// q's dead-letter exchange with RabbitMQ's x-death bookkeeping. It is called by the queue
// without its lock held.
func (n *Node) deadLetter(q *queue.Queue, dead []queue.DeadLetter) {
	qd, ok := n.fsm.Queue(q.Vhost(), q.Name())
	if !ok {
		return
	}
	args, refusal := n.fsm.QueueArgs(qd)
	if refusal != nil || !args.DeadLetter {
		return
	}
	dlx := args.DeadLetterExchange
	var sc Scratch
	now := time.Now()
	for _, d := range dead {
		msg, headers, drop := deadLetterMessage(d, q.Name(), now)
		if drop {
			continue
		}
		msg.Exchange = dlx // consumers see the dead-letter exchange, as with any publish to it
		if args.DeadLetterRoutingKey != nil {
			msg.RoutingKey = *args.DeadLetterRoutingKey
		}
		msg.StoreID = 0 // a new message: stored anew if its new queues are durable
		if _, err := n.Publish(q.Vhost(), dlx, msg, headers, &sc, nil); err != nil {
			n.log.Debug("dead-letter exchange refused message", "queue", q.Name(), "dlx", dlx, "err", err)
		}
	}
}

// deadLetterMessage builds the dead-lettered copy of d.Msg: the x-death header records where and
// why it died (one entry per queue and reason, count incremented, newest first), the original
// expiration moves to original-expiration so the copy does not expire again. drop is true for a
// message that already died in this queue for the same automatic reason: a dead-letter cycle
// without any rejection, which RabbitMQ also breaks by dropping.
func deadLetterMessage(d queue.DeadLetter, queueName string, now time.Time) (msg *queue.Message, headers map[string]any, drop bool) {
	props, err := wire.DecodeProperties(d.Msg.Props)
	if err != nil {
		props = wire.Properties{}
	}
	if props.Headers == nil {
		props.Headers = wire.Table{}
	}
	reason := string(d.Reason)
	deaths, _ := props.Headers["x-death"].([]any)
	var kept []any
	var count int64 = 1
	for _, x := range deaths {
		t, ok := x.(wire.Table)
		if !ok {
			kept = append(kept, x)
			continue
		}
		if StringArg(t, "queue") == queueName && StringArg(t, "reason") == reason {
			if d.Reason != queue.ReasonRejected {
				return nil, nil, true
			}
			if c, ok := IntArg(t, "count"); ok {
				count = c + 1
			}
			continue
		}
		kept = append(kept, x)
	}
	death := wire.Table{
		"count":        count,
		"reason":       reason,
		"queue":        queueName,
		"time":         now.Truncate(time.Second),
		"exchange":     d.Msg.Exchange,
		"routing-keys": []any{d.Msg.RoutingKey},
	}
	if props.Expiration != "" {
		death["original-expiration"] = props.Expiration
		props.Expiration = ""
	}
	props.Headers["x-death"] = append([]any{death}, kept...)
	if _, ok := props.Headers["x-first-death-reason"]; !ok {
		props.Headers["x-first-death-reason"] = reason
		props.Headers["x-first-death-queue"] = queueName
		props.Headers["x-first-death-exchange"] = d.Msg.Exchange
	}
	out := *d.Msg
	out.Props = props.Append(nil)
	out.ExpirationMs = -1
	return &out, props.Headers, false
}
