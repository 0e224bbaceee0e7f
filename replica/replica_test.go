package replica

import (
	"bytes"
	"reflect"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	cases := []Request{
		{Kind: Append, Epoch: 3, Prev: MakeIdent(2, 9), Entries: []Entry{
			{Ident: MakeIdent(3, 1), Data: []byte("hello")},
			{Ident: MakeIdent(2, 4), Settle: true},
			{Ident: MakeIdent(3, 2), Data: []byte{}},
			{Ident: MakeIdent(3, 1), Returns: 4},
		}},
		{Kind: Sync, Epoch: 7},
		{Kind: Truncate, Epoch: 7, UpTo: MakeIdent(6, 100), Keep: []Ident{MakeIdent(5, 1), MakeIdent(6, 3), MakeIdent(6, 99)}},
	}
	for _, c := range cases {
		b := AppendRequest(nil, &c)
		got, err := DecodeRequest(b)
		if err != nil {
			t.Fatalf("%+v: %v", c, err)
		}
		if !bytes.Equal(AppendRequest(nil, got), b) {
			t.Fatalf("round trip changed %+v into %+v", c, got)
		}
	}
	if _, err := DecodeRequest([]byte{byte(Truncate), 1, 5, 2, 3, 0}); err == nil {
		t.Fatal("a Keep list that does not ascend was accepted")
	}
	if _, err := DecodeRequest([]byte{9, 1}); err == nil {
		t.Fatal("an unknown kind was accepted")
	}
	// Append, epoch 1, prev 0, upTo 0, one entry: ident 5, a return count of 0.
	if _, err := DecodeRequest([]byte{byte(Append), 1, 0, 0, 1, 5, 2, 0}); err == nil {
		t.Fatal("a return count of zero was accepted")
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(AppendRequest(nil, &Request{Kind: Append, Epoch: 1, Entries: []Entry{{Ident: 5, Data: []byte("x")}, {Ident: 6, Settle: true}, {Ident: 5, Returns: 3}}}))
	f.Add(AppendRequest(nil, &Request{Kind: Truncate, Epoch: 2, UpTo: 9, Keep: []Ident{1, 4}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes, and decodes to the same request.
		again := AppendRequest(nil, r)
		r2, err := DecodeRequest(again)
		if err != nil || !reflect.DeepEqual(normal(r), normal(r2)) {
			t.Fatalf("decode∘encode changed %x: %+v vs %+v (%v)", b, r, r2, err)
		}
	})
}

func normal(r *Request) *Request {
	c := *r
	if len(c.Entries) == 0 {
		c.Entries = nil
	}
	if len(c.Keep) == 0 {
		c.Keep = nil
	}
	for i := range c.Entries {
		if len(c.Entries[i].Data) == 0 {
			c.Entries[i].Data = nil
		}
	}
	return &c
}

func TestIdentsOfALaterEpochSortAfterEveryEarlierOne(t *testing.T) {
	if !(MakeIdent(2, 1) > MakeIdent(1, MaxSeq)) || MakeIdent(4, 7).Epoch() != 4 || MakeIdent(4, 7).Seq() != 7 {
		t.Fatal("ident order or fields wrong")
	}
}

func TestStoredIdentRoundTrip(t *testing.T) {
	id, data, err := SplitStored(StoredIdent([]byte("body"), MakeIdent(3, 44)))
	if err != nil || id != MakeIdent(3, 44) || string(data) != "body" {
		t.Fatalf("%v %q %v", id, data, err)
	}
}

func TestCommittedNeedsEveryInSyncFollowerAndAMajority(t *testing.T) {
	acked := map[string]Ident{"b": 7, "c": 5}
	get := func(n string) Ident { return acked[n] }
	if c := Committed(9, "a", []string{"a", "b", "c"}, 3, get); c != 5 {
		t.Fatalf("committed %d, want the slowest in-sync follower's 5", c)
	}
	if c := Committed(9, "a", []string{"a", "b"}, 3, get); c != 7 {
		t.Fatalf("committed %d, want 7 once c left the in-sync set", c)
	}
	if c := Committed(9, "a", []string{"a"}, 3, get); c != 0 {
		t.Fatalf("a leader alone out of 3 committed %d", c)
	}
	if c := Committed(9, "a", []string{"a"}, 1, get); c != 9 {
		t.Fatalf("a single replica committed %d, want its own 9", c)
	}
	if c := Committed(9, "a", []string{"b", "c"}, 3, get); c != 0 {
		t.Fatalf("a node outside the in-sync set committed %d", c)
	}
}

func TestIndexLookupsRemovalAndTruncate(t *testing.T) {
	var x Index
	for i := uint64(1); i <= 10; i++ {
		if !x.Add(MakeIdent(1, i), 100+i) {
			t.Fatalf("add %d refused", i)
		}
	}
	if x.Add(MakeIdent(1, 3), 500) || x.Add(MakeIdent(2, 1), 50) {
		t.Fatal("an out-of-order add was accepted")
	}
	if id, ok := x.ID(MakeIdent(1, 4)); !ok || id != 104 {
		t.Fatalf("ID = %d %v", id, ok)
	}
	if id, ok := x.RemoveID(105); !ok || id != MakeIdent(1, 5) {
		t.Fatalf("RemoveID = %v %v", id, ok)
	}
	if _, ok := x.Remove(MakeIdent(1, 5)); ok {
		t.Fatal("removed twice")
	}
	if got := x.Live(MakeIdent(1, 6)); len(got) != 5 {
		t.Fatalf("live up to 1.6: %v", got)
	}
	// A new leader kept 1.2 and 1.7 of what this replica holds up to 1.8; 1.9 and 1.10 were
	// never committed.
	dropped := x.Truncate(MakeIdent(1, 8), []Ident{MakeIdent(1, 2), MakeIdent(1, 7)})
	if len(dropped) != 7 || x.Len() != 2 || x.Last() != MakeIdent(1, 8) {
		t.Fatalf("dropped %v, len %d, last %v", dropped, x.Len(), x.Last())
	}
	if !x.Add(MakeIdent(2, 1), 200) {
		t.Fatal("the new leader's first message was refused")
	}
	idents, ids := x.After(MakeIdent(1, 2), 10)
	if !reflect.DeepEqual(idents, []Ident{MakeIdent(1, 7), MakeIdent(2, 1)}) || !reflect.DeepEqual(ids, []uint64{107, 200}) {
		t.Fatalf("After: %v %v", idents, ids)
	}
}

func TestIndexCompactsWithoutLosingLiveEntries(t *testing.T) {
	var x Index
	for i := uint64(1); i <= 5000; i++ {
		x.Add(MakeIdent(1, i), i)
	}
	for i := uint64(1); i <= 5000; i++ {
		if i%5 != 0 {
			x.RemoveID(i)
		}
	}
	if x.Len() != 1000 {
		t.Fatalf("len %d", x.Len())
	}
	for i := uint64(5); i <= 5000; i += 5 {
		if id, ok := x.ID(MakeIdent(1, i)); !ok || id != i {
			t.Fatalf("lost %d after compaction", i)
		}
	}
}
