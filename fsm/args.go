package fsm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/warrenmq/warren/exchange"
)

// Refusal texts follow RabbitMQ 3.10 byte for byte where a client might
// match on them; they were recorded against a running 3.10 broker.

func refuse(code uint16, format string, a ...any) *Error {
	prefix := map[uint16]string{
		CodeAccessRefused: "ACCESS_REFUSED", CodeNotFound: "NOT_FOUND",
		CodeResourceLocked: "RESOURCE_LOCKED", CodePreconditionFailed: "PRECONDITION_FAILED",
		CodeCommandInvalid: "COMMAND_INVALID", CodeNotAllowed: "NOT_ALLOWED",
		CodeInternalError: "INTERNAL_ERROR",
	}[code]
	return &Error{Code: code, Text: prefix + " - " + fmt.Sprintf(format, a...)}
}

func errNoExchange(vhost, name string) *Error {
	return refuse(CodeNotFound, "no exchange '%s' in vhost '%s'", name, vhost)
}

func errNoQueue(vhost, name string) *Error {
	return refuse(CodeNotFound, "no queue '%s' in vhost '%s'", name, vhost)
}

func errNoVhost(name string) *Error { return refuse(CodeNotFound, "no vhost '%s'", name) }

func errDefaultExchange() *Error {
	return refuse(CodeAccessRefused, "operation not permitted on the default exchange")
}

func errLocked(vhost, name string) *Error {
	return refuse(CodeResourceLocked, "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. "+
		"It could be originally declared on another connection or the exclusive property value "+
		"does not match that of the original declaration.", name, vhost)
}

func errBadArgs(err error) *Error {
	return refuse(CodeInternalError, "cannot decode arguments: %v", err)
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

func resourceName(kind, name, vhost string) string {
	return fmt.Sprintf("%s '%s' in vhost '%s'", kind, name, vhost)
}

func inequivalent(what, key string, received, current string) *Error {
	return refuse(CodePreconditionFailed, "inequivalent arg '%s' for %s: received %s but current is %s",
		key, what, received, current)
}

func inequivalentBool(what, key string, received, current bool) *Error {
	return inequivalent(what, key, "'"+strconv.FormatBool(received)+"'", "'"+strconv.FormatBool(current)+"'")
}

// compareArgKeys checks the listed keys of two tables in order, reporting
// the first difference in RabbitMQ's format.
func compareArgKeys(what string, keys []string, received, current map[string]any) *Error {
	describe := func(v any, present bool, bothPresent bool) string {
		switch {
		case !present:
			return "none"
		case bothPresent:
			return "'" + exchange.FormatValue(v) + "'"
		default:
			return fmt.Sprintf("the value '%s' of type '%s'", exchange.FormatValue(v), exchange.TypeName(v))
		}
	}
	for _, k := range keys {
		rv, rok := received[k]
		cv, cok := current[k]
		if !rok && !cok || rok && cok && exchange.ValuesEqual(rv, cv) {
			continue
		}
		both := rok && cok
		return inequivalent(what, k, describe(rv, rok, both), describe(cv, cok, both))
	}
	return nil
}

// queueEquivalenceKeys are the arguments RabbitMQ 3.10 compares on a classic
// queue redeclare, in the order it reports them; other args may differ.
var queueEquivalenceKeys = []string{
	"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-mode",
	"x-single-active-consumer",
}

var exchangeEquivalenceKeys = []string{"alternate-exchange"}

// maxExpiry is RabbitMQ's upper bound for x-message-ttl and x-expires (ten
// years in milliseconds).
const maxExpiry = 315_360_000_000

const maxPriority = 255

// validateQueueArgs refuses the queue arguments RabbitMQ validates at
// declare time, in RabbitMQ's order and with its texts.
func validateQueueArgs(vhost, name string, args map[string]any) *Error {
	what := resourceName("queue", name, vhost)
	invalid := func(key, reason string) *Error {
		return refuse(CodePreconditionFailed, "invalid arg '%s' for %s: %s", key, what, reason)
	}
	intArg := func(key string, check func(n int64) string) *Error {
		v, ok := args[key]
		if !ok {
			return nil
		}
		n, isInt := exchange.AsInt(v)
		if !isInt {
			return invalid(key, fmt.Sprintf("\"expected integer, got %s\"", exchange.TypeName(v)))
		}
		if reason := check(n); reason != "" {
			return invalid(key, reason)
		}
		return nil
	}
	nonNegative := func(n int64) string {
		if n < 0 {
			return fmt.Sprintf("{value_negative,%d}", n)
		}
		return ""
	}
	expiry := func(positive bool) func(int64) string {
		return func(n int64) string {
			switch {
			case n < 0:
				return fmt.Sprintf("{value_negative,%d}", n)
			case n == 0 && positive:
				return "{value_zero,0}"
			case n > maxExpiry:
				return fmt.Sprintf("{value_too_large,%d}", n)
			}
			return ""
		}
	}
	stringArg := func(key string) (string, bool, *Error) {
		v, ok := args[key]
		if !ok {
			return "", false, nil
		}
		s, isString := v.(string)
		if !isString {
			return "", true, invalid(key, fmt.Sprintf("{unacceptable_type,%s}", exchange.TypeName(v)))
		}
		return s, true, nil
	}

	if err := intArg("x-expires", expiry(true)); err != nil {
		return err
	}
	if err := intArg("x-message-ttl", expiry(false)); err != nil {
		return err
	}
	dlx, hasDLX := args["x-dead-letter-exchange"]
	if hasDLX {
		if _, ok := dlx.(string); !ok {
			return refuse(CodePreconditionFailed, "invalid type '%s' for arg 'x-dead-letter-exchange' in %s",
				exchange.TypeName(dlx), what)
		}
	}
	if _, present, err := stringArg("x-dead-letter-routing-key"); err != nil {
		return err
	} else if present && !hasDLX {
		return invalid("x-dead-letter-routing-key", "routing_key_but_no_dlx_defined")
	}
	for _, key := range []string{"x-max-length", "x-max-length-bytes"} {
		if err := intArg(key, nonNegative); err != nil {
			return err
		}
	}
	if err := intArg("x-max-priority", func(n int64) string {
		if n < 0 {
			return fmt.Sprintf("{value_negative,%d}", n)
		}
		if n > maxPriority {
			return fmt.Sprintf("{max_value_exceeded,%d}", n)
		}
		return ""
	}); err != nil {
		return err
	}
	if s, present, err := stringArg("x-overflow"); err != nil {
		return err
	} else if present && s != "drop-head" && s != "reject-publish" && s != "reject-publish-dlx" {
		return invalid("x-overflow", "invalid_overflow")
	}
	// RabbitMQ 3.10's placement arguments: x-queue-leader-locator, and the older
	// x-queue-master-locator of classic queues.
	if s, present, err := stringArg("x-queue-leader-locator"); err != nil {
		return err
	} else if present && s != "client-local" && s != "balanced" {
		return invalid("x-queue-leader-locator", "invalid_queue_locator_arg")
	}
	if s, present, err := stringArg("x-queue-master-locator"); err != nil {
		return err
	} else if present && s != "client-local" && s != "min-masters" && s != "random" {
		return invalid("x-queue-master-locator", "invalid_queue_locator_arg")
	}
	if s, present, err := stringArg("x-queue-mode"); err != nil {
		return err
	} else if present && s != "default" && s != "lazy" {
		return invalid("x-queue-mode", fmt.Sprintf("\"unsupported queue mode '%s'\"", s))
	}
	if v, ok := args["x-single-active-consumer"]; ok {
		if _, isBool := v.(bool); !isBool {
			return invalid("x-single-active-consumer", fmt.Sprintf("{unacceptable_type,%s}", exchange.TypeName(v)))
		}
	}
	if s, present, err := stringArg("x-queue-type"); err != nil {
		return err
	} else if present {
		switch s {
		case "classic", "quorum":
		case "stream":
			return invalid("x-queue-type", fmt.Sprintf("\"queue type '%s' is not supported by this broker (only classic and quorum)\"", s))
		default:
			return invalid("x-queue-type", fmt.Sprintf("\"unsupported queue type '%s'\"", s))
		}
	}
	return nil
}

// alternateExchange validates and extracts the "alternate-exchange" argument.
func alternateExchange(vhost, name string, args map[string]any) (string, *Error) {
	v, ok := args["alternate-exchange"]
	if !ok {
		return "", nil
	}
	s, isString := v.(string)
	if !isString {
		return "", refuse(CodePreconditionFailed, "invalid type '%s' for arg 'alternate-exchange' in %s",
			exchange.TypeName(v), resourceName("exchange", name, vhost))
	}
	return s, nil
}
