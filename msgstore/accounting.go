package msgstore

import "sort"

// The live accounting below is shared by the running store and by recovery, which replays
// the log through the same functions, so the two can never disagree about what is live.
//
// Memory per live message is what makes a long queue cheap: one bit (or two bytes) in its
// queue's idSet. Where a message is follows from its id (idRange per segment); which
// segments may be deleted follows from per-segment reference counts; only compaction
// copies, which leave id order, are remembered one by one (moved).

// markEvery is the spacing of seek marks in a segment: finding a message's record costs a
// binary search over the marks and a scan of at most this many bytes.
const markEvery = 64 << 10

// mark is a seek point: the original publish record of id starts at off.
type mark struct {
	id  uint64
	off int64
}

func (s *Store) queueLocked(key string) *queueState {
	qs := s.queues[key]
	if qs == nil {
		qs = &queueState{segRefs: make(map[uint64]int64, 2)}
		s.queues[key] = qs
	}
	return qs
}

// holdLocked records that qs holds id, whose current record is in segment seg (0: the
// pending batch). It reports false when qs already held it.
func (s *Store) holdLocked(qs *queueState, id, seg uint64) bool {
	if !qs.live.add(id) {
		return false
	}
	s.countRefLocked(qs, seg, 1)
	if seg == 0 {
		s.pendTotal++
	} else if sg := s.segByName[seg]; sg != nil {
		sg.totalRefs++
	}
	return true
}

// countRefLocked adds d to the references qs holds in segment seg.
func (s *Store) countRefLocked(qs *queueState, seg uint64, d int64) {
	if n := qs.segRefs[seg] + d; n != 0 {
		qs.segRefs[seg] = n
	} else {
		delete(qs.segRefs, seg)
	}
	if seg == 0 {
		s.pendLive += d
		if d > 0 && qs.touched != s.batchSeq {
			// takeBatch moves these references to the segment the batch lands in.
			qs.touched = s.batchSeq
			s.pending.touched = append(s.pending.touched, qs)
		}
		return
	}
	if sg := s.segByName[seg]; sg != nil {
		sg.liveRefs += d
	}
}

// locateLocked returns the segment holding id's current publish record (0: the pending
// batch); ok is false for an id the store never placed.
func (s *Store) locateLocked(id uint64) (seg uint64, ok bool) {
	if mv, moved := s.moved[id]; moved {
		return mv.seg, true
	}
	if b := s.pending; b.firstOrig != 0 && id >= b.firstOrig {
		return 0, true
	}
	i := sort.Search(len(s.ranges), func(i int) bool { return s.ranges[i].hi >= id })
	if i < len(s.ranges) && s.ranges[i].lo <= id {
		return s.ranges[i].seg.name, true
	}
	return 0, false
}

// placeLocked records that the original publish record of id is at off in sg. Originals
// arrive in increasing id order, which keeps ranges sorted.
func (s *Store) placeLocked(sg *segment, id uint64, off int64) {
	if n := len(s.ranges); n > 0 && s.ranges[n-1].seg == sg {
		s.ranges[n-1].hi = id
	} else {
		s.ranges = append(s.ranges, idRange{lo: id, hi: id, seg: sg})
	}
	if k := len(sg.marks); k == 0 || off-sg.marks[k-1].off >= markEvery {
		sg.marks = append(sg.marks, mark{id: id, off: off})
	}
}

// releaseLocked removes id from qs and reports whether qs held it.
func (s *Store) releaseLocked(qs *queueState, id uint64) bool {
	if !qs.live.remove(id) {
		return false
	}
	s.unrefLocked(qs, id)
	return true
}

func (s *Store) unrefLocked(qs *queueState, id uint64) {
	seg, ok := s.locateLocked(id)
	if mv, moved := s.moved[id]; moved {
		if mv.refs--; mv.refs <= 0 {
			delete(s.moved, id)
		} else {
			s.moved[id] = mv
		}
	}
	if ok {
		s.countRefLocked(qs, seg, -1)
	}
}

// releaseRangeLocked releases every id of qs in (after, upTo] and returns how many. The ids
// come in increasing order, so their segments are found by walking the ranges once, and
// references are subtracted per segment, not per message.
func (s *Store) releaseRangeLocked(qs *queueState, after, upTo uint64) int {
	total := 0
	ri := sort.Search(len(s.ranges), func(i int) bool { return s.ranges[i].hi > after })
	var seg uint64
	var n int64
	flush := func() {
		if n != 0 {
			s.countRefLocked(qs, seg, -n)
			n = 0
		}
	}
	var moved []uint64
	qs.live.removeRange(after, upTo, func(id uint64) {
		total++
		if _, ok := s.moved[id]; ok {
			moved = append(moved, id) // rare: settled one by one below
			return
		}
		where, found := uint64(0), true
		if b := s.pending; b.firstOrig != 0 && id >= b.firstOrig {
			where = 0
		} else {
			for ri < len(s.ranges) && s.ranges[ri].hi < id {
				ri++
			}
			found = ri < len(s.ranges) && s.ranges[ri].lo <= id
			if found {
				where = s.ranges[ri].seg.name
			}
		}
		if !found {
			return
		}
		if where != seg {
			flush()
			seg = where
		}
		n++
	})
	flush()
	for _, id := range moved {
		s.unrefLocked(qs, id)
	}
	return total
}

// dropLocked forgets queue key and every reference it held.
func (s *Store) dropLocked(key string, qs *queueState) {
	for seg, n := range qs.segRefs {
		if seg == 0 {
			s.pendLive -= n
		} else if sg := s.segByName[seg]; sg != nil {
			sg.liveRefs -= n
		}
	}
	for id, mv := range s.moved {
		if qs.live.has(id) {
			if mv.refs--; mv.refs <= 0 {
				delete(s.moved, id)
			} else {
				s.moved[id] = mv
			}
		}
	}
	qs.rd = nil // also unblocks a compaction that waited for this queue to read
	delete(s.queues, key)
}

func (s *Store) liveMessagesLocked() int64 {
	sets := make([]*idSet, 0, len(s.queues))
	for _, qs := range s.queues {
		if qs.live.len() > 0 {
			sets = append(sets, &qs.live)
		}
	}
	return unionLen(sets)
}

// queueBytesLocked estimates the data bytes qs holds from its segments' average record
// data size.
func (s *Store) queueBytesLocked(qs *queueState) int64 {
	var total int64
	for seg, n := range qs.segRefs {
		if sg := s.segByName[seg]; sg != nil && sg.records > 0 {
			total += n * (sg.dataBytes / sg.records)
		}
	}
	return total
}
