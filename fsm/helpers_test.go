package fsm

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"

	"go.uber.org/goleak"

	"github.com/warrenmq/warren/exchange"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests stand in for wire.DecodeTable with a JSON codec that keeps each
// value's Go type ({"t":"int32","v":5}), so integer-width handling and
// RabbitMQ's type names can be exercised.

type typedValue struct {
	T string          `json:"t"`
	V json.RawMessage `json:"v"`
}

func encodeArgs(args map[string]any) []byte {
	if args == nil {
		return nil
	}
	enc := make(map[string]typedValue, len(args))
	for k, v := range args {
		var tag string
		switch x := v.(type) {
		case nil:
			tag = "nil"
		case []byte:
			tag, v = "bytes", base64.StdEncoding.EncodeToString(x)
		default:
			tag = fmt.Sprintf("%T", v)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			panic(err)
		}
		enc[k] = typedValue{T: tag, V: raw}
	}
	b, err := json.Marshal(enc)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeTestArgs(b []byte) (map[string]any, error) {
	var enc map[string]typedValue
	if err := json.Unmarshal(b, &enc); err != nil {
		return nil, fmt.Errorf("test args: %w", err)
	}
	out := make(map[string]any, len(enc))
	for k, tv := range enc {
		s := string(tv.V)
		var v any
		var err error
		parseInt := func(bits int) int64 {
			var n int64
			n, err = strconv.ParseInt(s, 10, bits)
			return n
		}
		parseUint := func(bits int) uint64 {
			var n uint64
			n, err = strconv.ParseUint(s, 10, bits)
			return n
		}
		switch tv.T {
		case "nil":
			v = nil
		case "bool":
			v, err = strconv.ParseBool(s)
		case "string":
			var str string
			err = json.Unmarshal(tv.V, &str)
			v = str
		case "bytes":
			var str string
			if err = json.Unmarshal(tv.V, &str); err == nil {
				v, err = base64.StdEncoding.DecodeString(str)
			}
		case "int8":
			v = int8(parseInt(8))
		case "int16":
			v = int16(parseInt(16))
		case "int32":
			v = int32(parseInt(32))
		case "int64", "int":
			v = parseInt(64)
		case "uint8":
			v = uint8(parseUint(8))
		case "uint16":
			v = uint16(parseUint(16))
		case "uint32":
			v = uint32(parseUint(32))
		case "uint64":
			v = parseUint(64)
		case "float64":
			v, err = strconv.ParseFloat(s, 64)
		default:
			return nil, fmt.Errorf("test args: unsupported type %q", tv.T)
		}
		if err != nil {
			return nil, fmt.Errorf("test args %q: %w", k, err)
		}
		out[k] = v
	}
	return out, nil
}

type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
	log   []Command
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: New(Options{DecodeArgs: decodeTestArgs})}
}

func (h *harness) apply(c Command) Result {
	h.index++
	h.log = append(h.log, c)
	return h.f.ApplyCommand(h.index, c)
}

func (h *harness) ok(c Command) Result {
	h.t.Helper()
	r := h.apply(c)
	if r.Err != nil {
		h.t.Fatalf("%T %+v refused: %v", c, c, r.Err)
	}
	return r
}

func (h *harness) refused(c Command, code uint16, text string) {
	h.t.Helper()
	before := h.f.Digest()
	r := h.apply(c)
	if r.Err == nil {
		h.t.Fatalf("%T %+v accepted, want %d %q", c, c, code, text)
	}
	if r.Err.Code != code || r.Err.Text != text {
		h.t.Fatalf("%T refused with\n  %d %q\nwant\n  %d %q", c, r.Err.Code, r.Err.Text, code, text)
	}
	if after := h.f.Digest(); after != before {
		h.t.Fatalf("refused %T changed the state", c)
	}
}

func (h *harness) queue(name string) { h.ok(DeclareQueue{Vhost: "/", Name: name, Owner: "n1"}) }

func (h *harness) exch(name, kind string) {
	h.ok(DeclareExchange{Vhost: "/", Name: name, Kind: kind})
}

func (h *harness) bindQ(src, q, key string) {
	h.ok(Bind{Vhost: "/", Source: src, Dest: exchange.Dest{Name: q}, Key: key})
}

func (h *harness) bindX(src, dst, key string) {
	h.ok(Bind{Vhost: "/", Source: src, Dest: exchange.Dest{Name: dst, IsExchange: true}, Key: key})
}

func (h *harness) route(x, key string, headers map[string]any) []string {
	h.t.Helper()
	refs, err := h.f.Route("/", x, key, headers, nil)
	if err != nil {
		h.t.Fatalf("route %q %q: %v", x, key, err)
	}
	var names []string
	for _, r := range refs {
		names = append(names, r.Name)
	}
	return names
}
