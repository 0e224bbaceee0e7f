package fsm

import (
	"bytes"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/exchange"
)

// fuzzLogSeed is a log of commands that exercise most of the FSM on top of richState.
var fuzzLogSeed = []Command{
	DeclareQueue{Vhost: "/", Name: "q9", Durable: true, Owner: "n3", Args: encodeArgs(map[string]any{"x-max-priority": int32(3)})},
	Bind{Vhost: "/", Source: "x-topic", Dest: exchange.Dest{Name: "q9"}, Key: "#.a"},
	Bind{Vhost: "/", Source: "x-headers", Dest: exchange.Dest{Name: "q2"}, Args: encodeArgs(map[string]any{"x-match": "any"})},
	Unbind{Vhost: "/", Source: "x-topic", Dest: exchange.Dest{Name: "q2"}, Key: "a.#"},
	DeleteExchange{Vhost: "v2", Name: "ae"},
	NodeFailed{Node: "n2", Rehome: []QueueRef{{Vhost: "/", Name: "q2", Owner: "n1"}}},
	MoveQueues{Moves: []QueueRef{{Vhost: "/", Name: "q9", Owner: "n1"}}},
	DropConnection{Conn: "n1/9"},
	DeleteQueue{Vhost: "v2", Name: "q1"},
	NodeStarted{Node: "n1"},
	DeleteVhost{Name: "v2"},
}

// joinLog frames log entries as [u16 length][entry] for the fuzzer; splitLog undoes it (a
// short tail is the last entry), so every input is some log.
func joinLog(entries ...[]byte) []byte {
	var out []byte
	for _, e := range entries {
		out = binary.BigEndian.AppendUint16(out, uint16(len(e)))
		out = append(out, e...)
	}
	return out
}

func splitLog(data []byte) [][]byte {
	var out [][]byte
	for len(data) >= 2 {
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		n = min(n, len(data))
		out = append(out, data[:n])
		data = data[n:]
	}
	return out
}

// FuzzApply treats its input as a Raft log applied on top of the same state by two replicas
// built independently: A applies the raw entries through raft's Apply; B applies each
// command after an encode/decode round trip (what a log re-encoded by another node would
// carry), and half-way is replaced by a new FSM restored from B's snapshot (a follower
// catching up from a snapshot). Every entry must get the same verdict on both, every
// decodable command must survive encode∘decode unchanged, and both must end in the same
// state (digest, snapshot bytes and routing), with no panic.
func FuzzApply(f *testing.F) {
	var all [][]byte
	for _, c := range fuzzLogSeed {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		all = append(all, b)
		f.Add(joinLog(b))
	}
	f.Add(joinLog(all...))
	f.Add(joinLog(all[0], []byte{0xff, '{'}, all[1], nil, all[4]))

	f.Fuzz(func(t *testing.T, data []byte) {
		entries := splitLog(data)
		a, b := richState(t), richState(t)
		first := a.index + 1
		for i, raw := range entries {
			index := first + uint64(i)
			if i == len(entries)/2 {
				// B continues as a new FSM restored from its own snapshot.
				snap, err := b.f.SnapshotBytes()
				if err != nil {
					t.Fatalf("snapshot: %v", err)
				}
				restored := New(Options{DecodeArgs: decodeTestArgs})
				if err := restored.RestoreBytes(snap); err != nil {
					t.Fatalf("restore of our own snapshot: %v", err)
				}
				if restored.Digest() != b.f.Digest() {
					t.Fatal("restore(snapshot(s)) != s")
				}
				b.f = restored
			}
			ra, _ := a.f.Apply(&raft.Log{Index: index, Data: raw}).(Result)

			c, err := Decode(raw)
			var rb Result
			if err != nil {
				rb, _ = b.f.Apply(&raft.Log{Index: index, Data: raw}).(Result)
			} else {
				enc, err := Encode(c)
				if err != nil {
					t.Fatalf("encode of decoded %T %+v: %v", c, c, err)
				}
				c2, err := Decode(enc)
				if err != nil {
					t.Fatalf("decode of our own encoding of %T: %v", c, err)
				}
				if !reflect.DeepEqual(c, c2) {
					t.Fatalf("encode∘decode changed the command:\n%#v\n%#v", c, c2)
				}
				if enc2, _ := Encode(c2); !bytes.Equal(enc, enc2) {
					t.Fatalf("encoding of %T is not stable:\n%s\n%s", c, enc, enc2)
				}
				rb = b.f.ApplyCommand(index, c2)
			}
			if (ra.Err == nil) != (rb.Err == nil) || ra.Err != nil && (ra.Err.Code != rb.Err.Code || ra.Err.Text != rb.Err.Text) {
				t.Fatalf("entry %d: replicas answered differently: %v vs %v", i, ra.Err, rb.Err)
			}
			if !reflect.DeepEqual(ra.Deleted, rb.Deleted) {
				t.Fatalf("entry %d: replicas deleted different queues: %v vs %v", i, ra.Deleted, rb.Deleted)
			}
		}
		if a.f.Digest() != b.f.Digest() {
			t.Fatal("replicas diverged: digests differ")
		}
		sa, errA := a.f.SnapshotBytes()
		sb, errB := b.f.SnapshotBytes()
		if errA != nil || errB != nil || !bytes.Equal(sa, sb) {
			t.Fatalf("replicas' snapshots differ (errors %v, %v)", errA, errB)
		}
		if !reflect.DeepEqual(routeEverything(t, a.f), routeEverything(t, b.f)) {
			t.Fatal("replicas route differently")
		}
	})
}
