package fsm

import (
	"encoding/binary"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/warrenmq/warren/exchange"
)

func ptr[T any](v T) *T { return &v }

func TestDecodeQueueArgs(t *testing.T) {
	cases := []struct {
		name string
		args map[string]any
		want QueueArgs
	}{
		{"none", nil, QueueArgs{Overflow: OverflowDropHead}},
		{"unknown keys are kept out", map[string]any{"x-foo": "bar", "x-priority": int32(3)}, QueueArgs{Overflow: OverflowDropHead}},
		{"every integer width", map[string]any{
			"x-expires": uint32(1), "x-message-ttl": int8(0), "x-max-length": int16(0),
			"x-max-length-bytes": uint64(10), "x-max-priority": uint8(255),
		}, QueueArgs{
			Expires: 1, MessageTTL: ptr(int64(0)), MaxLength: ptr(int64(0)), MaxLengthBytes: ptr(int64(10)),
			MaxPriority: 255, Overflow: OverflowDropHead,
		}},
		{"ten years", map[string]any{"x-expires": int64(maxExpiry), "x-message-ttl": int64(maxExpiry)},
			QueueArgs{Expires: maxExpiry, MessageTTL: ptr(int64(maxExpiry)), Overflow: OverflowDropHead}},
		{"huge unsigned lengths saturate", map[string]any{"x-max-length": uint64(math.MaxUint64)},
			QueueArgs{MaxLength: ptr(int64(math.MaxInt64)), Overflow: OverflowDropHead}},
		{"dead-lettering", map[string]any{"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rk"},
			QueueArgs{DeadLetter: true, DeadLetterExchange: "dlx", DeadLetterRoutingKey: ptr("rk"), Overflow: OverflowDropHead}},
		{"default exchange as DLX", map[string]any{"x-dead-letter-exchange": ""},
			QueueArgs{DeadLetter: true, Overflow: OverflowDropHead}},
		{"overflow", map[string]any{"x-overflow": "reject-publish-dlx"}, QueueArgs{Overflow: OverflowRejectPublishDLX}},
		{"classic with its options", map[string]any{
			"x-queue-type": "classic", "x-queue-mode": "lazy", "x-single-active-consumer": true,
			"x-queue-leader-locator": "balanced", "x-queue-master-locator": "min-masters",
		}, QueueArgs{Mode: "lazy", SingleActiveConsumer: true, LeaderLocator: "balanced", MasterLocator: "min-masters", Overflow: OverflowDropHead}},
		{"replicated", map[string]any{
			"x-queue-type": "quorum", "x-quorum-initial-group-size": int32(3), "x-delivery-limit": int64(5),
			"x-single-active-consumer": false,
		}, QueueArgs{Type: QueueTypeQuorum, QuorumInitialGroupSize: 3, DeliveryLimit: ptr(int64(5)), Overflow: OverflowDropHead}},
		{"replicated, delivery limit zero", map[string]any{"x-queue-type": "quorum", "x-delivery-limit": uint8(0)},
			QueueArgs{Type: QueueTypeQuorum, DeliveryLimit: ptr(int64(0)), Overflow: OverflowDropHead}},
		// RabbitMQ does not check x-delivery-limit at declare; such values mean no limit.
		{"replicated, delivery limit not a count", map[string]any{"x-queue-type": "quorum", "x-delivery-limit": "3"},
			QueueArgs{Type: QueueTypeQuorum, Overflow: OverflowDropHead}},
		{"replicated, negative delivery limit", map[string]any{"x-queue-type": "quorum", "x-delivery-limit": int32(-1)},
			QueueArgs{Type: QueueTypeQuorum, Overflow: OverflowDropHead}},
	}
	for _, c := range cases {
		got, err := DecodeQueueArgs("/", "q", c.args)
		if err != nil {
			t.Errorf("%s: refused: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.name, got, c.want)
		}
	}
}

// TestDecodeQueueArgsRefusals covers what TestQueueArgValidation (through Apply) does not:
// the arguments of one queue type that the other refuses, and which refusal wins when several
// arguments are wrong (RabbitMQ's order).
func TestDecodeQueueArgsRefusals(t *testing.T) {
	what := "queue 'q' in vhost 'v'"
	cases := []struct {
		name string
		args map[string]any
		text string
	}{
		{"first refusal in RabbitMQ's order", map[string]any{"x-max-length": int32(-1), "x-expires": int32(0), "x-overflow": "no"},
			"invalid arg 'x-expires' for " + what + ": {value_zero,0}"},
		{"ttl before dead-lettering", map[string]any{"x-message-ttl": "s", "x-dead-letter-exchange": int32(1)},
			"invalid arg 'x-message-ttl' for " + what + ": \"expected integer, got longstr\""},
		{"DLX type", map[string]any{"x-dead-letter-exchange": []byte("dlx")},
			"invalid type 'binary' for arg 'x-dead-letter-exchange' in " + what},
		{"leader locator", map[string]any{"x-queue-leader-locator": "min-masters"},
			"invalid arg 'x-queue-leader-locator' for " + what + ": invalid_queue_locator_arg"},
		{"master locator", map[string]any{"x-queue-master-locator": "balanced"},
			"invalid arg 'x-queue-master-locator' for " + what + ": invalid_queue_locator_arg"},
		{"classic with a delivery limit", map[string]any{"x-delivery-limit": int32(3)},
			"invalid arg 'x-delivery-limit' for " + what + " of queue type rabbit_classic_queue"},
		{"classic with a group size", map[string]any{"x-queue-type": "classic", "x-quorum-initial-group-size": int32(3)},
			"invalid arg 'x-quorum-initial-group-size' for " + what + " of queue type rabbit_classic_queue"},
		{"replicated with priorities", map[string]any{"x-queue-type": "quorum", "x-max-priority": int32(3), "x-quorum-initial-group-size": int32(0)},
			"invalid arg 'x-max-priority' for " + what + " of queue type rabbit_quorum_queue"},
		{"replicated, group size zero", map[string]any{"x-queue-type": "quorum", "x-quorum-initial-group-size": int32(0)},
			"invalid arg 'x-quorum-initial-group-size' for " + what + ": {value_zero,0}"},
		{"replicated, group size negative", map[string]any{"x-queue-type": "quorum", "x-quorum-initial-group-size": int64(-2)},
			"invalid arg 'x-quorum-initial-group-size' for " + what + ": {value_negative,-2}"},
		{"replicated, group size type", map[string]any{"x-queue-type": "quorum", "x-quorum-initial-group-size": "3"},
			"invalid arg 'x-quorum-initial-group-size' for " + what + ": \"expected integer, got longstr\""},
		{"generic checks before typed ones", map[string]any{"x-delivery-limit": int32(3), "x-overflow": "no"},
			"invalid arg 'x-overflow' for " + what + ": invalid_overflow"},
	}
	for _, c := range cases {
		_, err := DecodeQueueArgs("v", "q", c.args)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if want := "PRECONDITION_FAILED - " + c.text; err.Code != CodePreconditionFailed || err.Text != want {
			t.Errorf("%s:\n got %d %q\nwant 406 %q", c.name, err.Code, err.Text, want)
		}
	}
}

// TestStoredQueueArgs: what the broker reads back from a declared queue is what the declare
// was checked against.
func TestStoredQueueArgs(t *testing.T) {
	h := newHarness(t)
	args := map[string]any{"x-queue-type": "quorum", "x-delivery-limit": int32(2), "x-message-ttl": int32(500)}
	res := h.ok(DeclareQueue{Vhost: "/", Name: "rq", Durable: true, Owner: "n1", Args: encodeArgs(args)})
	got, err := h.f.QueueArgs(*res.Queue)
	if err != nil {
		t.Fatal(err)
	}
	want := QueueArgs{Type: QueueTypeQuorum, DeliveryLimit: ptr(int64(2)), MessageTTL: ptr(int64(500)), Overflow: OverflowDropHead}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("QueueArgs = %+v, want %+v", got, want)
	}
	if _, err := h.f.QueueArgs(Queue{Vhost: "/", Name: "bad", Args: []byte("{")}); err == nil || err.Code != CodeInternalError {
		t.Fatalf("undecodable table: %v, want a 541 refusal", err)
	}
	if got, err := h.f.QueueArgs(Queue{Vhost: "/", Name: "plain"}); err != nil || !reflect.DeepEqual(got, QueueArgs{Overflow: OverflowDropHead}) {
		t.Fatalf("queue without arguments: %+v, %v", got, err)
	}
}

// queueArgKeys are the keys the fuzzer builds tables from: every argument DecodeQueueArgs
// reads, and one it ignores.
var queueArgKeys = []string{
	"x-expires", "x-message-ttl", "x-dead-letter-exchange", "x-dead-letter-routing-key",
	"x-max-length", "x-max-length-bytes", "x-max-priority", "x-overflow", "x-queue-leader-locator",
	"x-queue-master-locator", "x-queue-mode", "x-single-active-consumer", "x-queue-type",
	"x-quorum-initial-group-size", "x-delivery-limit", "x-other",
}

// fuzzStrings are the strings values are drawn from: each accepted value of some argument,
// and some that none accepts.
var fuzzStrings = []string{
	"", "dlx", "drop-head", "reject-publish", "reject-publish-dlx", "client-local", "balanced",
	"min-masters", "random", "default", "lazy", "classic", "quorum", "stream", "junk",
}

// fuzzTable builds an argument table from data: each 10-byte entry is a key, a value type
// and 8 bytes of value (an integer of that width, a string index, a bool).
func fuzzTable(data []byte) map[string]any {
	args := map[string]any{}
	for ; len(data) >= 10; data = data[10:] {
		key := queueArgKeys[int(data[0])%len(queueArgKeys)]
		raw := binary.BigEndian.Uint64(data[2:10])
		s := fuzzStrings[raw%uint64(len(fuzzStrings))]
		values := [...]any{int8(raw), uint8(raw), int16(raw), uint16(raw), int32(raw), uint32(raw), int64(raw), raw,
			s, raw&1 == 1, []byte(s), float64(int32(raw)) / 4} // floats finite: the tests' table codec is JSON
		args[key] = values[int(data[1])%len(values)]
	}
	return args
}

// FuzzDecodeQueueArgs checks, on any table of queue arguments, that DecodeQueueArgs never
// panics; that a refusal is a 406 naming an argument the table has; that an accepted table
// decodes to exactly what each argument says (checked here argument by argument) within
// RabbitMQ's bounds; and that the FSM refuses a declare with that table exactly when the
// decoder does, and gives back the same QueueArgs for the queue it created.
func FuzzDecodeQueueArgs(f *testing.F) {
	entry := func(key int, typ byte, v uint64) []byte {
		return binary.BigEndian.AppendUint64([]byte{byte(key), typ}, v)
	}
	f.Add([]byte{})
	f.Add(append(entry(0, 4, 1000), entry(6, 1, 10)...))                           // x-expires, x-max-priority
	f.Add(append(entry(2, 8, 1), entry(3, 8, 2)...))                               // dead-lettering
	f.Add(append(entry(12, 8, 12), entry(14, 6, 3)...))                            // quorum, delivery limit
	f.Add(append(entry(12, 8, 12), entry(13, 4, 0)...))                            // quorum, group size 0
	f.Add(append(entry(1, 6, math.MaxUint64), entry(7, 8, 14)...))                 // ttl -1, bad overflow
	f.Add(append(entry(11, 9, 1), append(entry(10, 8, 10), entry(8, 8, 6)...)...)) // SAC, lazy, balanced

	f.Fuzz(func(t *testing.T, data []byte) {
		args := fuzzTable(data)
		got, refusal := DecodeQueueArgs("/", "q", args)
		again, refusal2 := DecodeQueueArgs("/", "q", args)
		if !reflect.DeepEqual(got, again) || !reflect.DeepEqual(refusal, refusal2) {
			t.Fatal("two decodes of one table differ")
		}

		h := newHarness(t)
		res := h.apply(DeclareQueue{Vhost: "/", Name: "q", Durable: true, Owner: "n1", Args: encodeArgs(args)})
		if (res.Err == nil) != (refusal == nil) || refusal != nil && *res.Err != *refusal {
			t.Fatalf("declare answered %v, DecodeQueueArgs %v", res.Err, refusal)
		}
		if refusal != nil {
			named := false
			for k := range args {
				named = named || strings.Contains(refusal.Text, "'"+k+"'")
			}
			if refusal.Code != CodePreconditionFailed || !strings.HasPrefix(refusal.Text, "PRECONDITION_FAILED - invalid ") || !named {
				t.Fatalf("refusal %d %q does not name an argument of %v", refusal.Code, refusal.Text, args)
			}
			return
		}
		stored, err := h.f.QueueArgs(*res.Queue)
		if err != nil || !reflect.DeepEqual(stored, got) {
			t.Fatalf("stored queue decodes to %+v (%v), declare to %+v", stored, err, got)
		}
		checkDecoded(t, args, got)
	})
}

// checkDecoded compares an accepted table with its decoding, argument by argument.
func checkDecoded(t *testing.T, args map[string]any, got QueueArgs) {
	t.Helper()
	intOf := func(key string) (int64, bool) {
		v, ok := args[key]
		if !ok {
			return 0, false
		}
		n, isInt := exchange.AsInt(v)
		if !isInt {
			t.Fatalf("%s %v (%T) accepted", key, v, v)
		}
		return n, true
	}
	optional := func(key string, field *int64, lo, hi int64) {
		n, ok := intOf(key)
		switch {
		case !ok && field != nil:
			t.Fatalf("%s absent but decoded as %d", key, *field)
		case ok && (field == nil || *field != n):
			t.Fatalf("%s = %d decoded as %v", key, n, field)
		case ok && (n < lo || n > hi):
			t.Fatalf("%s = %d accepted outside [%d, %d]", key, n, lo, hi)
		}
	}
	optional("x-message-ttl", got.MessageTTL, 0, maxExpiry)
	optional("x-max-length", got.MaxLength, 0, math.MaxInt64)
	optional("x-max-length-bytes", got.MaxLengthBytes, 0, math.MaxInt64)
	if n, ok := intOf("x-expires"); ok != (got.Expires != 0) || n != got.Expires || n < 0 || n > maxExpiry {
		t.Fatalf("x-expires %v (%v) decoded as %d", args["x-expires"], ok, got.Expires)
	}
	if n, _ := intOf("x-max-priority"); n != int64(got.MaxPriority) {
		t.Fatalf("x-max-priority %v decoded as %d", args["x-max-priority"], got.MaxPriority)
	}
	dlx, hasDLX := args["x-dead-letter-exchange"]
	if got.DeadLetter != hasDLX || hasDLX && dlx != got.DeadLetterExchange {
		t.Fatalf("x-dead-letter-exchange %v decoded as %v %q", dlx, got.DeadLetter, got.DeadLetterExchange)
	}
	if rk, ok := args["x-dead-letter-routing-key"]; ok != (got.DeadLetterRoutingKey != nil) || ok && rk != *got.DeadLetterRoutingKey {
		t.Fatalf("x-dead-letter-routing-key %v decoded as %v", rk, got.DeadLetterRoutingKey)
	}
	wantOverflow := OverflowDropHead
	if s, ok := args["x-overflow"]; ok {
		wantOverflow = s.(string)
	}
	if got.Overflow != wantOverflow {
		t.Fatalf("x-overflow %v decoded as %q", args["x-overflow"], got.Overflow)
	}
	sac, _ := args["x-single-active-consumer"].(bool)
	if got.SingleActiveConsumer != sac {
		t.Fatalf("x-single-active-consumer %v decoded as %v", args["x-single-active-consumer"], got.SingleActiveConsumer)
	}
	quorum := args["x-queue-type"] == QueueTypeQuorum
	if quorum != (got.Type == QueueTypeQuorum) || !quorum && got.Type != "" {
		t.Fatalf("x-queue-type %v decoded as %q", args["x-queue-type"], got.Type)
	}
	size, hasSize := intOf("x-quorum-initial-group-size")
	if hasSize && (!quorum || size < 1) || size != got.QuorumInitialGroupSize {
		t.Fatalf("x-quorum-initial-group-size %v decoded as %d", args["x-quorum-initial-group-size"], got.QuorumInitialGroupSize)
	}
	limit, isInt := exchange.AsInt(args["x-delivery-limit"])
	wantLimit := isInt && limit >= 0 // other values mean no limit
	if wantLimit != (got.DeliveryLimit != nil) || wantLimit && (!quorum || *got.DeliveryLimit != limit) {
		t.Fatalf("x-delivery-limit %v decoded as %v", args["x-delivery-limit"], got.DeliveryLimit)
	}
	for key, field := range map[string]string{
		"x-queue-mode": got.Mode, "x-queue-leader-locator": got.LeaderLocator, "x-queue-master-locator": got.MasterLocator,
	} {
		if s, _ := args[key].(string); s != field {
			t.Fatalf("%s %v decoded as %q", key, args[key], field)
		}
	}
}
