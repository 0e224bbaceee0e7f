package fsm

import (
	"fmt"
	"strings"
)

// RabbitMQ's refusals, in one place for every package: the FSM's own verdicts, and the
// channel-level refusals that server (and broker, over the data link) give for the same
// resources. Texts follow RabbitMQ 3.10 byte for byte where a client might match on them;
// they were recorded against a running 3.10 broker, and tests compare them. Each text starts
// with the reply code's name ("NOT_FOUND - ..."), as RabbitMQ sends it.
//
// Arguments name a resource as (vhost, name), the order of Queue and Exchange's fields,
// whatever order the text prints them in.

// codeNames are the reply-code names RabbitMQ puts in front of a text.
var codeNames = map[uint16]string{
	CodeAccessRefused: "ACCESS_REFUSED", CodeNotFound: "NOT_FOUND",
	CodeResourceLocked: "RESOURCE_LOCKED", CodePreconditionFailed: "PRECONDITION_FAILED",
	CodeCommandInvalid: "COMMAND_INVALID", CodeNotAllowed: "NOT_ALLOWED",
	CodeInternalError: "INTERNAL_ERROR",
}

func refuse(code uint16, format string, a ...any) *Error {
	return &Error{Code: code, Text: codeNames[code] + " - " + fmt.Sprintf(format, a...)}
}

// NoVhost: 404, the vhost does not exist.
func NoVhost(name string) *Error { return refuse(CodeNotFound, "no vhost '%s'", name) }

// NoExchange: 404, the exchange does not exist.
func NoExchange(vhost, name string) *Error {
	return refuse(CodeNotFound, "no exchange '%s' in vhost '%s'", name, vhost)
}

// NoQueue: 404, the queue does not exist (or went away while it was being used).
func NoQueue(vhost, name string) *Error {
	return refuse(CodeNotFound, "no queue '%s' in vhost '%s'", name, vhost)
}

// DefaultExchangeRefused: 403, the default exchange cannot be declared, deleted or bound.
func DefaultExchangeRefused() *Error {
	return refuse(CodeAccessRefused, "operation not permitted on the default exchange")
}

// UnknownExchangeType: 503, exchange.declare of a type the broker does not have.
func UnknownExchangeType(kind string) *Error {
	return refuse(CodeCommandInvalid, "unknown exchange type '%s'", kind)
}

// QueueLocked: 405, the queue is exclusive to another connection (or a redeclare differs in
// exclusivity).
func QueueLocked(vhost, name string) *Error {
	return refuse(CodeResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. "+
		"It could be originally declared on another connection or the exclusive property value "+
		"does not match that of the original declaration.", name, vhost)
}

// QueueInExclusiveUse: 403, basic.consume on a queue that has an exclusive consumer, or an
// exclusive basic.consume on a queue that has consumers.
func QueueInExclusiveUse(vhost, name string) *Error {
	return refuse(CodeAccessRefused, "queue '%s' in vhost '%s' in exclusive use", name, vhost)
}

// InUse: 406, a delete with if-unused of an exchange or queue ("exchange", "queue") that has
// bindings or consumers.
func InUse(kind, vhost, name string) *Error {
	return refuse(CodePreconditionFailed, "%s in use", resourceName(kind, name, vhost))
}

// QueueNotEmpty: 406, queue.delete with if-empty of a queue holding messages.
func QueueNotEmpty(vhost, name string) *Error {
	return refuse(CodePreconditionFailed, "%s is not empty", resourceName("queue", name, vhost))
}

// CheckQueueName refuses client-chosen queue names with the reserved "amq."
// prefix. The caller applies it before generating a server name, since the
// FSM itself must accept the "amq.gen-..." names the server chooses.
func CheckQueueName(name string) *Error {
	if strings.HasPrefix(name, "amq.") {
		return refuse(CodeAccessRefused, "queue name '%s' contains reserved prefix 'amq.*'", name)
	}
	return nil
}

// AccessRefused: 403, user lacks a permission on a resource (kind "exchange" or "queue") of
// vhost.
func AccessRefused(user, vhost, kind, name string) *Error {
	return refuse(CodeAccessRefused, "access to %s refused for user '%s'", resourceName(kind, name, vhost), user)
}

// VhostAccessRefused: 530, connection.open of a vhost the user has no permissions in.
func VhostAccessRefused(user, vhost string) *Error {
	return refuse(CodeNotAllowed, "access to vhost '%s' refused for user '%s'", vhost, user)
}

// VhostConnectionLimit: 530, connection.open of a vhost at its max-connections limit.
func VhostConnectionLimit(user, vhost string, limit int) *Error {
	e := VhostAccessRefused(user, vhost)
	e.Text += fmt.Sprintf(": connection limit (%d) is reached", limit)
	return e
}

// ConsumerTagReused: 530, basic.consume with a tag already used on the channel.
func ConsumerTagReused(tag string) *Error {
	return refuse(CodeNotAllowed, "attempt to reuse consumer tag '%s'", tag)
}

// UnknownDeliveryTag: 406, an ack, nack or reject of a tag the channel has not delivered (or
// already settled).
func UnknownDeliveryTag(tag uint64) *Error {
	return refuse(CodePreconditionFailed, "unknown delivery tag %d", tag)
}

func errBadArgs(err error) *Error {
	return refuse(CodeInternalError, "cannot decode arguments: %v", err)
}

func resourceName(kind, name, vhost string) string {
	return fmt.Sprintf("%s '%s' in vhost '%s'", kind, name, vhost)
}
