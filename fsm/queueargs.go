package fsm

import (
	"fmt"

	"github.com/warrenmq/warren/exchange"
)

// QueueArgs are a queue's x-arguments decoded once, with RabbitMQ 3.10's checks, by
// DecodeQueueArgs: the FSM refuses a declare whose arguments do not decode, and the broker
// builds the queue's behaviour from the same struct, so what is accepted and what is applied
// cannot drift apart. The zero value is a queue without arguments.
type QueueArgs struct {
	// Expires (x-expires, ms): the queue is deleted once unused this long; 0: never.
	Expires int64
	// MessageTTL (x-message-ttl, ms): messages older than this are dropped or dead-lettered
	// (0: deliver at once or drop); nil: no queue TTL.
	MessageTTL *int64
	// DeadLetter: x-dead-letter-exchange is set, to DeadLetterExchange ("" is the default
	// exchange).
	DeadLetter         bool
	DeadLetterExchange string
	// DeadLetterRoutingKey (x-dead-letter-routing-key) replaces a dead-lettered message's
	// routing key; nil: it keeps its own.
	DeadLetterRoutingKey *string
	// MaxLength and MaxLengthBytes (x-max-length, x-max-length-bytes); nil: unlimited.
	MaxLength, MaxLengthBytes *int64
	// MaxPriority (x-max-priority): 0 means the queue ignores message priorities.
	MaxPriority uint8
	// Overflow (x-overflow): what a full queue does; OverflowDropHead when not given.
	Overflow string
	// Mode (x-queue-mode): "default" or "lazy"; "" when not given. Warren pages every long
	// durable queue, so both behave alike.
	Mode string
	// SingleActiveConsumer (x-single-active-consumer).
	SingleActiveConsumer bool
	// Type (x-queue-type): QueueTypeQuorum, or "" for a classic queue.
	Type string
	// LeaderLocator (x-queue-leader-locator: "client-local" or "balanced") and MasterLocator
	// (the classic x-queue-master-locator: "client-local", "min-masters" or "random"); "" when
	// not given.
	LeaderLocator, MasterLocator string
	// QuorumInitialGroupSize (x-quorum-initial-group-size, replicated queues): the replica
	// count asked for; 0 when not given.
	QuorumInitialGroupSize int64
	// DeliveryLimit (x-delivery-limit, replicated queues): a message returned more often is
	// dead-lettered or dropped; nil: no limit. RabbitMQ does not check it at declare, and
	// neither does Warren: a value that is not a non-negative integer means no limit.
	DeliveryLimit *int64
}

// x-overflow values.
const (
	OverflowDropHead         = "drop-head"
	OverflowRejectPublish    = "reject-publish"
	OverflowRejectPublishDLX = "reject-publish-dlx"
)

// maxExpiry is RabbitMQ's upper bound for x-message-ttl and x-expires (ten
// years in milliseconds).
const maxExpiry = 315_360_000_000

const maxPriority = 255

// DecodeQueueArgs decodes the arguments of queue name in vhost, refusing what RabbitMQ 3.10
// refuses at declare, in its order and with its texts. Checks that depend on the declare's
// properties (a replicated queue must be durable, ...) are the FSM's, not this function's.
func DecodeQueueArgs(vhost, name string, args map[string]any) (QueueArgs, *Error) {
	d := argDecoder{what: resourceName("queue", name, vhost), args: args}
	a := QueueArgs{Overflow: OverflowDropHead}

	if n, ok := d.int("x-expires", expiry(positive)); ok {
		a.Expires = n
	}
	if n, ok := d.int("x-message-ttl", expiry(nonNegative)); ok {
		a.MessageTTL = &n
	}
	if dlx, ok := args["x-dead-letter-exchange"]; ok && d.err == nil {
		s, isString := dlx.(string)
		if !isString {
			return a, refuse(CodePreconditionFailed, "invalid type '%s' for arg 'x-dead-letter-exchange' in %s",
				exchange.TypeName(dlx), d.what)
		}
		a.DeadLetter, a.DeadLetterExchange = true, s
	}
	if s, ok := d.string("x-dead-letter-routing-key", func(string) string {
		if !a.DeadLetter {
			return "routing_key_but_no_dlx_defined"
		}
		return ""
	}); ok {
		a.DeadLetterRoutingKey = &s
	}
	if n, ok := d.int("x-max-length", nonNegative); ok {
		a.MaxLength = &n
	}
	if n, ok := d.int("x-max-length-bytes", nonNegative); ok {
		a.MaxLengthBytes = &n
	}
	if n, ok := d.int("x-max-priority", func(n int64) string {
		if n > maxPriority {
			return fmt.Sprintf("{max_value_exceeded,%d}", n)
		}
		return nonNegative(n)
	}); ok {
		a.MaxPriority = uint8(n)
	}
	if s, ok := d.string("x-overflow", oneOf("invalid_overflow", OverflowDropHead, OverflowRejectPublish, OverflowRejectPublishDLX)); ok {
		a.Overflow = s
	}
	// RabbitMQ 3.10's placement arguments: x-queue-leader-locator, and the older
	// x-queue-master-locator of classic queues.
	a.LeaderLocator, _ = d.string("x-queue-leader-locator", oneOf("invalid_queue_locator_arg", "client-local", "balanced"))
	a.MasterLocator, _ = d.string("x-queue-master-locator", oneOf("invalid_queue_locator_arg", "client-local", "min-masters", "random"))
	a.Mode, _ = d.string("x-queue-mode", func(s string) string {
		if s != "default" && s != "lazy" {
			return fmt.Sprintf("\"unsupported queue mode '%s'\"", s)
		}
		return ""
	})
	if v, ok := args["x-single-active-consumer"]; ok && d.err == nil {
		on, isBool := v.(bool)
		if !isBool {
			d.invalid("x-single-active-consumer", fmt.Sprintf("{unacceptable_type,%s}", exchange.TypeName(v)))
		}
		a.SingleActiveConsumer = on
	}
	if s, ok := d.string("x-queue-type", func(s string) string {
		switch s {
		case QueueTypeClassic, QueueTypeQuorum:
			return ""
		case "stream":
			return fmt.Sprintf("\"queue type '%s' is not supported by this broker (only classic and quorum)\"", s)
		}
		return fmt.Sprintf("\"unsupported queue type '%s'\"", s)
	}); ok && s == QueueTypeQuorum {
		a.Type = QueueTypeQuorum
	}
	if d.err != nil {
		return a, d.err
	}
	return a, d.typed(&a)
}

// typed refuses the arguments a's queue type does not support, and decodes those only
// replicated queues have.
func (d *argDecoder) typed(a *QueueArgs) *Error {
	unsupported := func(typeName string, keys ...string) *Error {
		for _, k := range keys {
			if _, ok := d.args[k]; ok {
				return refuse(CodePreconditionFailed, "invalid arg '%s' for %s of queue type %s", k, d.what, typeName)
			}
		}
		return nil
	}
	if a.Type != QueueTypeQuorum {
		return unsupported("rabbit_classic_queue", "x-delivery-limit", "x-quorum-initial-group-size")
	}
	if err := unsupported("rabbit_quorum_queue", "x-max-priority", "x-queue-mode", "x-queue-master-locator"); err != nil {
		return err
	}
	if n, ok := d.int("x-quorum-initial-group-size", positive); ok {
		a.QuorumInitialGroupSize = n
	}
	if n, isInt := exchange.AsInt(d.args["x-delivery-limit"]); isInt && n >= 0 {
		a.DeliveryLimit = &n
	}
	return d.err
}

// argDecoder reads one table's arguments, keeping the first refusal: once err is set, every
// later read reports the argument absent.
type argDecoder struct {
	what string // "queue 'q' in vhost '/'"
	args map[string]any
	err  *Error
}

func (d *argDecoder) invalid(key, reason string) {
	if d.err == nil {
		d.err = refuse(CodePreconditionFailed, "invalid arg '%s' for %s: %s", key, d.what, reason)
	}
}

// int reads an integer argument of any AMQP integer type; check gives RabbitMQ's reason for
// refusing its value, or "".
func (d *argDecoder) int(key string, check func(int64) string) (int64, bool) {
	v, ok := d.args[key]
	if !ok || d.err != nil {
		return 0, false
	}
	n, isInt := exchange.AsInt(v)
	if !isInt {
		d.invalid(key, fmt.Sprintf("\"expected integer, got %s\"", exchange.TypeName(v)))
		return 0, false
	}
	if reason := check(n); reason != "" {
		d.invalid(key, reason)
		return 0, false
	}
	return n, true
}

// string reads a string argument; check gives RabbitMQ's reason for refusing its value, or "".
func (d *argDecoder) string(key string, check func(string) string) (string, bool) {
	v, ok := d.args[key]
	if !ok || d.err != nil {
		return "", false
	}
	s, isString := v.(string)
	if !isString {
		d.invalid(key, fmt.Sprintf("{unacceptable_type,%s}", exchange.TypeName(v)))
		return "", false
	}
	if reason := check(s); reason != "" {
		d.invalid(key, reason)
		return "", false
	}
	return s, true
}

func nonNegative(n int64) string {
	if n < 0 {
		return fmt.Sprintf("{value_negative,%d}", n)
	}
	return ""
}

func positive(n int64) string {
	if n == 0 {
		return "{value_zero,0}"
	}
	return nonNegative(n)
}

// expiry is RabbitMQ's check of x-expires (with positive) and x-message-ttl (with
// nonNegative): check, and at most ten years.
func expiry(check func(int64) string) func(int64) string {
	return func(n int64) string {
		if reason := check(n); reason != "" {
			return reason
		}
		if n > maxExpiry {
			return fmt.Sprintf("{value_too_large,%d}", n)
		}
		return ""
	}
}

// oneOf refuses, with reason, a string that is none of allowed.
func oneOf(reason string, allowed ...string) func(string) string {
	return func(s string) string {
		for _, a := range allowed {
			if s == a {
				return ""
			}
		}
		return reason
	}
}

// QueueArgs decodes the arguments of a queue the FSM holds (it accepted them when the queue
// was declared, so a refusal here means a bug, or a log written by an older version).
func (f *FSM) QueueArgs(q Queue) (QueueArgs, *Error) {
	args, err := f.decode(q.Args)
	if err != nil {
		return QueueArgs{}, errBadArgs(err)
	}
	return DecodeQueueArgs(q.Vhost, q.Name, args)
}
