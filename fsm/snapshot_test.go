package fsm

import (
	"bytes"
	"io"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/exchange"
)

// richState builds a state with vhosts, users, every exchange kind, e2e
// bindings, headers args and exclusive queues.
func richState(t testing.TB) *harness {
	h := newHarness(t)
	h.ok(AddVhost{Name: "v2"})
	h.ok(PutUser{Name: "guest", PasswordHash: "hash", Tags: []string{"administrator", "monitoring"}})
	h.ok(PutUser{Name: "app", PasswordHash: "h2"})
	h.ok(SetPermissions{User: "guest", Vhost: "/", Configure: ".*", Write: ".*", Read: ".*"})
	h.ok(SetPermissions{User: "app", Vhost: "v2", Configure: "^app", Write: ".*", Read: ""})
	for _, vh := range []string{"/", "v2"} {
		for _, kind := range []string{"direct", "fanout", "topic", "headers"} {
			h.ok(DeclareExchange{Vhost: vh, Name: "x-" + kind, Kind: kind, Durable: kind != "fanout"})
		}
		h.ok(DeclareExchange{Vhost: vh, Name: "ae", Kind: "topic", AutoDelete: true,
			Args: encodeArgs(map[string]any{"alternate-exchange": "x-fanout"})})
		h.ok(DeclareQueue{Vhost: vh, Name: "q1", Durable: true, Owner: "n1", Args: encodeArgs(map[string]any{"x-max-priority": int32(5)})})
		h.ok(DeclareQueue{Vhost: vh, Name: "q2", Owner: "n2"})
		h.ok(DeclareQueue{Vhost: vh, Name: "amq.gen-1", Exclusive: true, AutoDelete: true, ExclusiveConn: "n1/9", Owner: "n1"})
		h.ok(Bind{Vhost: vh, Source: "x-direct", Dest: exchange.Dest{Name: "q1"}, Key: "k"})
		h.ok(Bind{Vhost: vh, Source: "x-topic", Dest: exchange.Dest{Name: "q2"}, Key: "a.#"})
		h.ok(Bind{Vhost: vh, Source: "x-topic", Dest: exchange.Dest{Name: "x-fanout", IsExchange: true}, Key: "*.b"})
		h.ok(Bind{Vhost: vh, Source: "x-fanout", Dest: exchange.Dest{Name: "amq.gen-1"}, Conn: "n1/9"})
		h.ok(Bind{Vhost: vh, Source: "x-headers", Dest: exchange.Dest{Name: "q1"},
			Args: encodeArgs(map[string]any{"x-match": "any", "h": int32(1), "s": "v"})})
		h.ok(Bind{Vhost: vh, Source: "ae", Dest: exchange.Dest{Name: "q2"}, Key: "only"})
	}
	return h
}

type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotThroughRaftGlue(t *testing.T, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v closed=%v", err, sink.closed)
	}
	return sink.Bytes()
}

type routeProbe struct{ vhost, x, key string }

var routeProbes = []routeProbe{
	{"/", "x-direct", "k"}, {"/", "x-topic", "a.b"}, {"/", "x-topic", "z.b"}, {"v2", "ae", "nothing"},
	{"v2", "x-headers", ""}, {"/", "", "q2"}, {"v2", "ae", "only"},
}

func routeAll(t *testing.T, f *FSM) [][]QueueRef {
	var all [][]QueueRef
	for _, p := range routeProbes {
		refs, err := f.Route(p.vhost, p.x, p.key, map[string]any{"h": int8(1)}, nil)
		if err != nil {
			t.Fatalf("route %+v: %v", p, err)
		}
		slices.SortFunc(refs, func(a, b QueueRef) int { return compareStrings(a.Name, b.Name) })
		all = append(all, refs)
	}
	return all
}

// routeEverything publishes a few keys to every exchange of the state.
func routeEverything(t *testing.T, f *FSM) [][]QueueRef {
	var all [][]QueueRef
	for _, x := range f.Exchanges("") {
		for _, key := range []string{"a", "a.b", "", "q1"} {
			refs, err := f.Route(x.Vhost, x.Name, key, nil, nil)
			if err != nil && !x.Internal {
				t.Fatalf("route %s/%s %q: %v", x.Vhost, x.Name, key, err)
			}
			slices.SortFunc(refs, func(a, b QueueRef) int { return compareStrings(a.Name, b.Name) })
			all = append(all, refs)
		}
	}
	return all
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	src := richState(t)
	data := snapshotThroughRaftGlue(t, src.f)

	dst := New(Options{DecodeArgs: decodeTestArgs})
	var events []Event
	dst.SetObserver(func(e Event) { events = append(events, e) })
	if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
		t.Fatal(err)
	}
	if dst.Digest() != src.f.Digest() {
		t.Fatal("digest differs after restore")
	}
	if dst.AppliedIndex() != src.f.AppliedIndex() {
		t.Fatalf("applied index %d, want %d", dst.AppliedIndex(), src.f.AppliedIndex())
	}
	for name, get := range map[string]func(*FSM) any{
		"queues":    func(f *FSM) any { return f.Queues("") },
		"exchanges": func(f *FSM) any { return f.Exchanges("") },
		"bindings":  func(f *FSM) any { return f.Bindings("") },
		"users":     func(f *FSM) any { return f.Users() },
		"perms":     func(f *FSM) any { p, _ := f.Permissions("app", "v2"); return p },
		"routes":    func(f *FSM) any { return routeAll(t, f) },
	} {
		if a, b := get(src.f), get(dst); !reflect.DeepEqual(a, b) {
			t.Errorf("%s differ:\n%v\n%v", name, a, b)
		}
	}
	if got := routeAll(t, dst); len(got[2]) != 1 || got[2][0].Name != "amq.gen-1" || len(got[3]) != 1 {
		t.Fatalf("restored routing index wrong: %v", got)
	}
	if len(events) != 6 {
		t.Fatalf("restore must announce the 6 new queues, got %v", events)
	}
	// Snapshot of the restored state is byte-identical.
	if again := snapshotThroughRaftGlue(t, dst); !bytes.Equal(again, data) {
		t.Fatal("snapshot of restored state differs")
	}
	// The restored index is live: mutations keep working.
	h2 := &harness{t: t, f: dst, index: dst.AppliedIndex()}
	h2.ok(DeleteQueue{Vhost: "v2", Name: "q2"})
	if _, ok := dst.Exchange("v2", "ae"); ok {
		t.Fatal("auto-delete cascade broken after restore")
	}
	// Restoring the old snapshot announces the queue coming back.
	events = nil
	if err := dst.RestoreBytes(data); err != nil {
		t.Fatal(err)
	}
	if len(events) != 1 || events[0].Kind != QueueCreated || events[0].Queue.Name != "q2" {
		t.Fatalf("restore diff events: %v", events)
	}
}

func TestRestoreRejectsCorruptSnapshots(t *testing.T) {
	f := New(Options{DecodeArgs: decodeTestArgs})
	before := f.Digest()
	for _, bad := range []string{
		``, `{`, `{"format":99,"state":{}}`,
		`{"format":1,"state":{"vhosts":[{"name":"/","exchanges":[{"Name":"x","Kind":"nope"}]}]}}`,
		`{"format":1,"state":{"vhosts":[{"name":"/","bindings":[{"Source":"missing"}]}]}}`,
		`{"format":1,"state":{"vhosts":[{"name":"/","exchanges":[{"Name":"x","Kind":"direct"}],"bindings":[{"Source":"x","Dest":{"Name":"nope"}}]}]}}`,
	} {
		if err := f.RestoreBytes([]byte(bad)); err == nil {
			t.Errorf("restore of %q accepted", bad)
		}
	}
	if f.Digest() != before {
		t.Fatal("a refused restore changed the state")
	}
}

// randomCommands draws topology commands over a small name space so that
// they collide, cascade and get refused often.
func randomCommands(r *rand.Rand, n int) []Command {
	names := func(prefix string, k int) string { return prefix + strconv.Itoa(r.IntN(k)) }
	kinds := []string{"direct", "fanout", "topic", "headers"}
	keys := []string{"a", "a.b", "#", "*.b", ""}
	var out []Command
	for range n {
		vh := []string{"/", "v"}[r.IntN(2)]
		var c Command
		switch r.IntN(12) {
		case 0:
			c = AddVhost{Name: "v"}
		case 1:
			c = DeclareExchange{Vhost: vh, Name: names("x", 5), Kind: kinds[r.IntN(4)], AutoDelete: r.IntN(2) == 0, Durable: r.IntN(2) == 0}
		case 2:
			c = DeleteExchange{Vhost: vh, Name: names("x", 5), IfUnused: r.IntN(2) == 0}
		case 3, 4:
			excl := r.IntN(4) == 0
			conn := ""
			if excl {
				conn = names("n1/", 3)
			}
			c = DeclareQueue{Vhost: vh, Name: names("q", 6), Durable: r.IntN(2) == 0, Exclusive: excl, ExclusiveConn: conn, Owner: names("n", 2)}
		case 5:
			c = DeleteQueue{Vhost: vh, Name: names("q", 6)}
		case 6, 7, 8:
			dest := exchange.Dest{Name: names("q", 6)}
			if r.IntN(3) == 0 {
				dest = exchange.Dest{Name: names("x", 5), IsExchange: true}
			}
			c = Bind{Vhost: vh, Source: names("x", 5), Dest: dest, Key: keys[r.IntN(len(keys))], Conn: names("n1/", 3)}
		case 9:
			c = Unbind{Vhost: vh, Source: names("x", 5), Dest: exchange.Dest{Name: names("q", 6)}, Key: keys[r.IntN(len(keys))]}
		case 10:
			c = DropConnection{Conn: names("n1/", 3)}
		case 11:
			switch r.IntN(10) {
			case 0:
				c = NodeStarted{Node: names("n", 2)}
			case 1:
				c = DeleteVhost{Name: "v"}
			default:
				c = Bind{Vhost: vh, Source: names("x", 5), Dest: exchange.Dest{Name: names("q", 6)}, Key: keys[r.IntN(len(keys))]}
			}
		}
		out = append(out, c)
	}
	return out
}

func TestDeterminism(t *testing.T) {
	cmds := randomCommands(rand.New(rand.NewPCG(1, 2)), 3000)
	a, b := newHarness(t), newHarness(t)
	var restored *harness
	for i, c := range cmds {
		// Commands travel as raft log bytes, as in production.
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		ra := a.f.Apply(&raft.Log{Index: uint64(i + 1), Data: data}).(Result)
		rb := b.f.ApplyCommand(uint64(i+1), c)
		if !reflect.DeepEqual(ra, rb) {
			t.Fatalf("command %d %+v: results differ: %+v vs %+v", i, c, ra, rb)
		}
		if restored != nil {
			restored.f.ApplyCommand(uint64(i+1), c)
		}
		if i == len(cmds)/2 {
			restored = newHarness(t)
			if err := restored.f.RestoreBytes(mustSnapshot(t, a.f)); err != nil {
				t.Fatal(err)
			}
		}
		if i%500 == 0 && a.f.Digest() != b.f.Digest() {
			t.Fatalf("digests diverged at command %d", i)
		}
	}
	if a.f.Digest() != b.f.Digest() || a.f.Digest() != restored.f.Digest() {
		t.Fatal("final digests differ")
	}
	if !reflect.DeepEqual(routeEverything(t, a.f), routeEverything(t, restored.f)) {
		t.Fatal("routing differs between replayed and restored replicas")
	}
	if len(a.f.Bindings("")) == 0 || len(a.f.Queues("")) == 0 {
		t.Fatalf("random workload ended empty (%d bindings, %d queues); the test would prove little",
			len(a.f.Bindings("")), len(a.f.Queues("")))
	}
	// A different state gives a different digest.
	b.ok(DeclareQueue{Vhost: "/", Name: "extra"})
	if a.f.Digest() == b.f.Digest() {
		t.Fatal("digest ignores a queue")
	}
}

func mustSnapshot(t *testing.T, f *FSM) []byte {
	t.Helper()
	b, err := f.SnapshotBytes()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyUndecodableLog(t *testing.T) {
	f := New(Options{DecodeArgs: decodeTestArgs})
	res := f.Apply(&raft.Log{Index: 7, Data: []byte{250}}).(Result)
	if res.Err == nil || res.Err.Code != 541 || f.AppliedIndex() != 7 {
		t.Fatalf("result %+v index %d", res, f.AppliedIndex())
	}
}

func TestRouteConcurrentWithApply(t *testing.T) {
	h := newHarness(t)
	h.exch("t", "topic")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var out []QueueRef
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				out, err = h.f.Route("/", "t", "a.b", nil, out[:0])
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 300 {
		q := "q" + strconv.Itoa(i%20)
		h.queue(q)
		h.bindQ("t", q, "a.#")
		if i%3 == 0 {
			h.ok(DeleteQueue{Vhost: "/", Name: q})
		}
	}
	close(stop)
	wg.Wait()
}
