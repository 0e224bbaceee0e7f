package fsm

import (
	"reflect"
	"testing"

	"github.com/warrenmq/warren/exchange"
)

// TestRedeclareAgreesWithApply: for every declare below, Redeclare answers locally exactly
// when Apply would accept it without changing the state, and then with Apply's result.
func TestRedeclareAgreesWithApply(t *testing.T) {
	h := newHarness(t)
	h.ok(DeclareExchange{Vhost: "/", Name: "x", Kind: "topic", Durable: true, Args: encodeArgs(map[string]any{"alternate-exchange": "ae"})})
	h.ok(DeclareQueue{Vhost: "/", Name: "q", Durable: true, Owner: "n1", Args: encodeArgs(map[string]any{"x-message-ttl": int32(1000), "x-queue-leader-locator": "client-local"})})
	h.ok(DeclareQueue{Vhost: "/", Name: "ex", Exclusive: true, ExclusiveConn: "conn-1", Owner: "n1"})
	h.ok(Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "q"}, Key: "a.#", Args: encodeArgs(map[string]any{"k": "v"})})
	h.ok(Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "ex"}, Key: "e", Conn: "conn-1"})

	cases := []struct {
		name  string
		cmd   Command
		local bool
	}{
		{"same exchange", DeclareExchange{Vhost: "/", Name: "x", Kind: "topic", Durable: true, Args: encodeArgs(map[string]any{"alternate-exchange": "ae"})}, true},
		{"exchange, other non-equivalence arg", DeclareExchange{Vhost: "/", Name: "x", Kind: "topic", Durable: true, Args: encodeArgs(map[string]any{"alternate-exchange": "ae", "x-other": int32(1)})}, true},
		{"exchange of another type", DeclareExchange{Vhost: "/", Name: "x", Kind: "direct", Durable: true, Args: encodeArgs(map[string]any{"alternate-exchange": "ae"})}, false},
		{"exchange not durable", DeclareExchange{Vhost: "/", Name: "x", Kind: "topic", Args: encodeArgs(map[string]any{"alternate-exchange": "ae"})}, false},
		{"exchange, other alternate", DeclareExchange{Vhost: "/", Name: "x", Kind: "topic", Durable: true}, false},
		{"new exchange", DeclareExchange{Vhost: "/", Name: "y", Kind: "topic"}, false},
		{"exchange in a missing vhost", DeclareExchange{Vhost: "nope", Name: "x", Kind: "topic", Durable: true}, false},
		{"same queue, other owner", DeclareQueue{Vhost: "/", Name: "q", Durable: true, Owner: "n2", Args: encodeArgs(map[string]any{"x-message-ttl": int64(1000)})}, true},
		{"queue, other ttl", DeclareQueue{Vhost: "/", Name: "q", Durable: true, Owner: "n1", Args: encodeArgs(map[string]any{"x-message-ttl": int32(2000)})}, false},
		{"queue not durable", DeclareQueue{Vhost: "/", Name: "q", Owner: "n1", Args: encodeArgs(map[string]any{"x-message-ttl": int32(1000)})}, false},
		{"queue with an invalid arg", DeclareQueue{Vhost: "/", Name: "q", Durable: true, Owner: "n1", Args: encodeArgs(map[string]any{"x-message-ttl": int32(1000), "x-max-length": int32(-1)})}, false},
		{"exclusive queue, same connection", DeclareQueue{Vhost: "/", Name: "ex", Exclusive: true, ExclusiveConn: "conn-1", Owner: "n1"}, true},
		{"exclusive queue, other connection", DeclareQueue{Vhost: "/", Name: "ex", Exclusive: true, ExclusiveConn: "conn-2", Owner: "n1"}, false},
		{"new queue", DeclareQueue{Vhost: "/", Name: "fresh", Owner: "n1"}, false},
		{"same binding", Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "q"}, Key: "a.#", Args: encodeArgs(map[string]any{"k": "v"})}, true},
		{"binding, other key", Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "q"}, Key: "b.#", Args: encodeArgs(map[string]any{"k": "v"})}, false},
		{"binding, other args", Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "q"}, Key: "a.#"}, false},
		{"binding to an exclusive queue, its connection", Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "ex"}, Key: "e", Conn: "conn-1"}, true},
		{"binding to an exclusive queue, other connection", Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "ex"}, Key: "e", Conn: "conn-2"}, false},
		{"binding from a missing exchange", Bind{Vhost: "/", Source: "nope", Dest: exchange.Dest{Name: "q"}, Key: "a.#"}, false},
		{"not a declare", DeleteQueue{Vhost: "/", Name: "q"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local, ok := h.f.Redeclare(tc.cmd)
			if ok != tc.local {
				t.Fatalf("Redeclare ok=%v, want %v", ok, tc.local)
			}
			if !ok {
				return
			}
			before := h.f.Digest()
			viaApply := h.apply(tc.cmd)
			if viaApply.Err != nil || viaApply.Created || h.f.Digest() != before {
				t.Fatalf("answered locally, but Apply gave %+v (err %v) and changed the state: %v", viaApply, viaApply.Err, h.f.Digest() != before)
			}
			if !reflect.DeepEqual(local.Queue, viaApply.Queue) {
				t.Fatalf("local result %+v, Apply's %+v", local.Queue, viaApply.Queue)
			}
		})
	}
}
