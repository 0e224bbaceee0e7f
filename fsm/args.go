package fsm

import (
	"fmt"
	"strconv"

	"github.com/warrenmq/warren/exchange"
)

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
