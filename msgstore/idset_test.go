package msgstore

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIDSetMatchesMap drives an idSet and a map with the same random operations, over id
// patterns that make containers switch between array and bitmap both ways.
func TestIDSetMatchesMap(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	var s idSet
	m := map[uint64]bool{}
	next := uint64(1)
	for op := range 60_000 {
		switch r := rng.IntN(100); {
		case r < 55: // mostly increasing, sometimes dense runs, sometimes jumps
			if rng.IntN(1000) == 0 {
				next += uint64(rng.IntN(1 << 18))
			}
			id := next
			next += 1 + uint64(rng.IntN(2))
			if got, want := s.add(id), !m[id]; got != want {
				t.Fatalf("op %d: add(%d) = %v, want %v", op, id, got, want)
			}
			m[id] = true
		case r < 95:
			var id uint64
			if rng.IntN(2) == 0 && next > 1 {
				id = 1 + uint64(rng.Int64N(int64(next)))
			} else {
				id = uint64(rng.Int64N(int64(next) + 10))
			}
			if got, want := s.remove(id), m[id]; got != want {
				t.Fatalf("op %d: remove(%d) = %v, want %v", op, id, got, want)
			}
			delete(m, id)
		case r < 96:
			after := uint64(rng.Int64N(int64(next) + 10))
			upTo := after + uint64(rng.IntN(1<<17))
			var got []uint64
			s.removeRange(after, upTo, func(id uint64) { got = append(got, id) })
			var want []uint64
			for k := range m {
				if k > after && k <= upTo {
					want = append(want, k)
					delete(m, k)
				}
			}
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("op %d: removeRange(%d, %d) removed %d ids, want %d", op, after, upTo, len(got), len(want))
			}
		default:
			id := uint64(rng.Int64N(int64(next) + 10))
			if s.has(id) != m[id] {
				t.Fatalf("op %d: has(%d) = %v", op, id, s.has(id))
			}
			want := uint64(0)
			for k := range m {
				if k > id && (want == 0 || k < want) {
					want = k
				}
			}
			if got, ok := s.next(id); ok != (want != 0) || got != want {
				t.Fatalf("op %d: next(%d) = %d,%v want %d", op, id, got, ok, want)
			}
		}
		if s.len() != int64(len(m)) {
			t.Fatalf("op %d: len %d, want %d", op, s.len(), len(m))
		}
	}
	var all []uint64
	s.each(0, func(id uint64) bool { all = append(all, id); return true })
	want := make([]uint64, 0, len(m))
	for k := range m {
		want = append(want, k)
	}
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("each: %d ids, want %d", len(all), len(want))
	}
	if len(want) > 0 && s.max() != want[len(want)-1] {
		t.Fatalf("max = %d, want %d", s.max(), want[len(want)-1])
	}
}

func TestUnionLenCountsSharedIDsOnce(t *testing.T) {
	var a, b, c idSet
	for id := uint64(1); id <= 10_000; id++ {
		a.add(id) // dense: a bitmap container
		if id%2 == 0 {
			b.add(id)
		}
	}
	c.add(5)
	c.add(1 << 20) // a container nobody else has
	if got := unionLen([]*idSet{&a, &b, &c}); got != 10_001 {
		t.Fatalf("unionLen = %d, want 10001", got)
	}
}

// TestIDSetStaysSmall: a queue of 1 M consecutive ids must cost bits per message, not the
// tens of bytes a map entry does.
func TestIDSetStaysSmall(t *testing.T) {
	var s idSet
	for id := uint64(1); id <= 1_000_000; id++ {
		s.add(id)
	}
	var bytes int
	for _, c := range s.cs {
		bytes += 48 + 2*cap(c.arr)
		if c.bm != nil {
			bytes += len(c.bm) * 8
		}
	}
	if bytes > 200_000 {
		t.Fatalf("1 M ids take %d bytes", bytes)
	}
}
