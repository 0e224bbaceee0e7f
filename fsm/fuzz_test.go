package fsm

import (
	"testing"

	"github.com/warrenmq/warren/exchange"
)

// FuzzApply feeds arbitrary log bytes to two replicas: neither may panic,
// and both must end in the same state.
func FuzzApply(f *testing.F) {
	for _, c := range []Command{
		DeclareQueue{Vhost: "/", Name: "q1", Args: encodeArgs(map[string]any{"x-max-priority": int32(3)})},
		Bind{Vhost: "/", Source: "x-topic", Dest: exchange.Dest{Name: "q2"}, Key: "#.a"},
		Bind{Vhost: "/", Source: "x-headers", Dest: exchange.Dest{Name: "q2"}, Args: encodeArgs(map[string]any{"x-match": "any"})},
		DeleteExchange{Vhost: "v2", Name: "ae"},
		NodeStarted{Node: "n1"},
	} {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, b := richState(t), richState(t)
		c, err := Decode(data)
		if err != nil {
			return
		}
		ra := a.apply(c)
		rb := b.apply(c)
		if (ra.Err == nil) != (rb.Err == nil) || a.f.Digest() != b.f.Digest() {
			t.Fatalf("replicas diverged on %+v", c)
		}
		routeEverything(t, a.f)
	})
}
