package msgstore

import (
	"math/bits"
	"slices"
	"sort"
)

// idSet is the set of message ids one queue holds. Ids are handed out in increasing order
// and a queue mostly drains from its oldest end, so the set is stored in containers of
// 2^16 ids (Roaring-style): a sorted array of 16-bit offsets while a container is sparse,
// a 8 KiB bitmap once it is dense. A queue holding 20 M consecutive ids costs ~2.5 MB
// instead of the ~1 GB a map would, which is what lets the store keep exact per-queue
// membership (duplicate acks, drop-queue, paging) for queues far larger than RAM.
type idSet struct {
	cs []idContainer // sorted by key
	n  int64
}

const (
	containerBits = 16
	arrayMax      = 4096 // an array container past this becomes a bitmap (same size: 8 KiB)
	arrayMin      = 1024 // a bitmap container below this goes back to an array
)

type idContainer struct {
	key uint64 // id >> containerBits
	arr []uint16
	bm  *[1 << (containerBits - 6)]uint64
	n   int32
}

func (c *idContainer) has(lo uint16) bool {
	if c.bm != nil {
		return c.bm[lo>>6]&(1<<(lo&63)) != 0
	}
	_, ok := slices.BinarySearch(c.arr, lo)
	return ok
}

func (c *idContainer) add(lo uint16) bool {
	if c.bm != nil {
		w, b := lo>>6, uint64(1)<<(lo&63)
		if c.bm[w]&b != 0 {
			return false
		}
		c.bm[w] |= b
		c.n++
		return true
	}
	if k := len(c.arr); k == 0 || c.arr[k-1] < lo { // the common case: ids arrive in order
		c.arr = append(c.arr, lo)
	} else {
		i, ok := slices.BinarySearch(c.arr, lo)
		if ok {
			return false
		}
		c.arr = slices.Insert(c.arr, i, lo)
	}
	c.n++
	if len(c.arr) > arrayMax {
		c.bm = new([1 << (containerBits - 6)]uint64)
		for _, v := range c.arr {
			c.bm[v>>6] |= 1 << (v & 63)
		}
		c.arr = nil
	}
	return true
}

func (c *idContainer) remove(lo uint16) bool {
	if c.bm != nil {
		w, b := lo>>6, uint64(1)<<(lo&63)
		if c.bm[w]&b == 0 {
			return false
		}
		c.bm[w] &^= b
		c.n--
		if c.n < arrayMin {
			arr := make([]uint16, 0, c.n)
			c.each(0, func(v uint16) bool { arr = append(arr, v); return true })
			c.arr, c.bm = arr, nil
		}
		return true
	}
	i, ok := slices.BinarySearch(c.arr, lo)
	if !ok {
		return false
	}
	c.arr = slices.Delete(c.arr, i, i+1)
	c.n--
	return true
}

// each calls fn for every member ≥ from in increasing order until fn returns false; it
// reports whether it ran to the end.
func (c *idContainer) each(from uint16, fn func(uint16) bool) bool {
	if c.bm == nil {
		i, _ := slices.BinarySearch(c.arr, from)
		for _, v := range c.arr[i:] {
			if !fn(v) {
				return false
			}
		}
		return true
	}
	for w := int(from >> 6); w < len(c.bm); w++ {
		word := c.bm[w]
		if w == int(from>>6) {
			word &^= (1 << (from & 63)) - 1
		}
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &= word - 1
			if !fn(uint16(w<<6 | b)) {
				return false
			}
		}
	}
	return true
}

// find returns the index of the container with key, or where it would be inserted.
func (s *idSet) find(key uint64) (int, bool) {
	if k := len(s.cs); k > 0 && s.cs[k-1].key == key { // appends hit the last container
		return k - 1, true
	}
	i := sort.Search(len(s.cs), func(i int) bool { return s.cs[i].key >= key })
	return i, i < len(s.cs) && s.cs[i].key == key
}

func (s *idSet) len() int64 { return s.n }

func (s *idSet) has(id uint64) bool {
	i, ok := s.find(id >> containerBits)
	return ok && s.cs[i].has(uint16(id))
}

// add inserts id and reports whether it was new.
func (s *idSet) add(id uint64) bool {
	key := id >> containerBits
	i, ok := s.find(key)
	if !ok {
		s.cs = slices.Insert(s.cs, i, idContainer{key: key})
	}
	if !s.cs[i].add(uint16(id)) {
		return false
	}
	s.n++
	return true
}

// remove deletes id and reports whether it was there.
func (s *idSet) remove(id uint64) bool {
	i, ok := s.find(id >> containerBits)
	if !ok || !s.cs[i].remove(uint16(id)) {
		return false
	}
	s.n--
	if s.cs[i].n == 0 {
		s.cs = slices.Delete(s.cs, i, i+1)
	}
	return true
}

// each calls fn for every member > after in increasing order until fn returns false.
func (s *idSet) each(after uint64, fn func(id uint64) bool) {
	if after == ^uint64(0) {
		return
	}
	from := after + 1
	i, _ := s.find(from >> containerBits)
	for ; i < len(s.cs); i++ {
		c := &s.cs[i]
		start := uint16(0)
		if c.key == from>>containerBits {
			start = uint16(from)
		}
		base := c.key << containerBits
		if !c.each(start, func(lo uint16) bool { return fn(base | uint64(lo)) }) {
			return
		}
	}
}

// next returns the smallest member > after.
func (s *idSet) next(after uint64) (id uint64, ok bool) {
	s.each(after, func(v uint64) bool { id, ok = v, true; return false })
	return id, ok
}

// unionLen counts the ids held by at least one of sets (a message routed to several
// queues is one message).
func unionLen(sets []*idSet) int64 {
	switch len(sets) {
	case 0:
		return 0
	case 1:
		return sets[0].n
	}
	byKey := map[uint64][]*idContainer{}
	for _, s := range sets {
		for i := range s.cs {
			c := &s.cs[i]
			byKey[c.key] = append(byKey[c.key], c)
		}
	}
	var total int64
	var acc [1 << (containerBits - 6)]uint64
	for _, cs := range byKey {
		if len(cs) == 1 {
			total += int64(cs[0].n)
			continue
		}
		clear(acc[:])
		for _, c := range cs {
			if c.bm != nil {
				for w, word := range c.bm {
					acc[w] |= word
				}
			} else {
				for _, v := range c.arr {
					acc[v>>6] |= 1 << (v & 63)
				}
			}
		}
		for _, word := range acc {
			total += int64(bits.OnesCount64(word))
		}
	}
	return total
}

// max returns the largest member (0 for an empty set).
func (s *idSet) max() uint64 {
	if len(s.cs) == 0 {
		return 0
	}
	c := &s.cs[len(s.cs)-1]
	base := c.key << containerBits
	if c.bm == nil {
		return base | uint64(c.arr[len(c.arr)-1])
	}
	for w := len(c.bm) - 1; w >= 0; w-- {
		if word := c.bm[w]; word != 0 {
			return base | uint64(w<<6|(63-bits.LeadingZeros64(word)))
		}
	}
	return base
}

// removeRange deletes every member in (after, upTo], calling fn for each in increasing
// order first; it clears bitmap words and cuts array spans in bulk, so releasing millions
// of ids (a purge) is linear.
func (s *idSet) removeRange(after, upTo uint64, fn func(id uint64)) {
	if upTo <= after {
		return
	}
	from := after + 1
	i, _ := s.find(from >> containerBits)
	for i < len(s.cs) && s.cs[i].key <= upTo>>containerBits {
		c := &s.cs[i]
		base := c.key << containerBits
		lo, hi := uint16(0), uint16(0xffff)
		if c.key == from>>containerBits {
			lo = uint16(from)
		}
		if c.key == upTo>>containerBits {
			hi = uint16(upTo)
		}
		var removed int32
		if c.bm == nil {
			a, _ := slices.BinarySearch(c.arr, lo)
			b := a
			for b < len(c.arr) && c.arr[b] <= hi {
				fn(base | uint64(c.arr[b]))
				b++
			}
			c.arr = slices.Delete(c.arr, a, b)
			removed = int32(b - a)
		} else {
			c.each(lo, func(v uint16) bool {
				if v > hi {
					return false
				}
				fn(base | uint64(v))
				c.bm[v>>6] &^= 1 << (v & 63)
				removed++
				return true
			})
		}
		c.n -= removed
		s.n -= int64(removed)
		if c.n == 0 {
			s.cs = slices.Delete(s.cs, i, i+1)
			continue
		}
		if c.bm != nil && c.n < arrayMin {
			arr := make([]uint16, 0, c.n)
			c.each(0, func(v uint16) bool { arr = append(arr, v); return true })
			c.arr, c.bm = arr, nil
		}
		i++
	}
}
