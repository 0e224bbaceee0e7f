package msgstore

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"
)

// recoveredMsg is recovery's view of one message: where its current publish record is
// and which queues still hold it.
type recoveredMsg struct {
	seg     uint64
	size    int32 // whole record
	dataOff int64
	dataLen int32
	queues  []string
}

// replayState rebuilds the live set by applying the records of all segments in log order,
// with the same rules the running store uses, so that the two always agree.
type replayState struct {
	msgs   map[uint64]*recoveredMsg
	queues map[string]map[uint64]struct{}
	maxID  uint64
}

func (st *replayState) apply(seg uint64, off int64, rec *record) {
	switch rec.typ {
	case recPublish:
		st.maxID = max(st.maxID, rec.id)
		m := st.msgs[rec.id]
		if m != nil {
			// A second publish record for one id is a compaction copy, written with exactly
			// the queues that still held the message. The newest record wins; queues that
			// the copy no longer lists are released.
			for _, q := range m.queues {
				if !slices.Contains(rec.queues, q) {
					delete(st.queues[q], rec.id)
				}
			}
			m.queues = m.queues[:0]
		} else {
			m = &recoveredMsg{}
		}
		m.seg = seg
		m.size = int32(rec.size)
		m.dataLen = int32(len(rec.data))
		m.dataOff = off + rec.size - int64(len(rec.data))
		for _, q := range rec.queues {
			if slices.Contains(m.queues, q) {
				continue
			}
			set := st.queues[q]
			if set == nil {
				set = make(map[uint64]struct{})
				st.queues[q] = set
			}
			set[rec.id] = struct{}{}
			m.queues = append(m.queues, q)
		}
		if len(m.queues) == 0 {
			delete(st.msgs, rec.id)
			return
		}
		st.msgs[rec.id] = m
	case recAck:
		set := st.queues[rec.queue]
		for _, id := range rec.ids {
			if _, ok := set[id]; ok {
				delete(set, id)
				st.release(id, rec.queue)
			}
		}
	case recDropQueue:
		for id := range st.queues[rec.queue] {
			st.release(id, rec.queue)
		}
		delete(st.queues, rec.queue)
	}
}

// release drops queue's reference on message id; the message dies with its last reference.
func (st *replayState) release(id uint64, queue string) {
	m := st.msgs[id]
	if m == nil {
		return
	}
	if i := slices.Index(m.queues, queue); i >= 0 {
		m.queues = slices.Delete(m.queues, i, i+1)
	}
	if len(m.queues) == 0 {
		delete(st.msgs, id)
	}
}

// recoverDir scans every segment of dir, truncates a torn tail of the last one, and
// returns the replayed state plus the segment list with live accounting rebuilt.
func recoverDir(dir string, log *slog.Logger) (*replayState, []*segment, *Recovered, error) {
	start := time.Now()
	names, err := listSegments(dir)
	if err != nil {
		return nil, nil, nil, err
	}
	st := &replayState{
		msgs:   make(map[uint64]*recoveredMsg),
		queues: make(map[string]map[uint64]struct{}),
	}
	rec := &Recovered{Queues: make(map[string][]Message), Segments: len(names)}
	in := make(stringInterner)
	segs := make([]*segment, 0, len(names))
	for i, name := range names {
		path := segmentPath(dir, name)
		res, err := scanSegment(path, in, func(off int64, r *record) error {
			st.apply(name, off, r)
			rec.Records++
			return nil
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("recover %s: %w", path, err)
		}
		if res.bad != nil {
			if i != len(names)-1 {
				return nil, nil, nil, &CorruptionError{File: path, Offset: res.bad.offset, Reason: res.bad.reason}
			}
			// Only the segment being appended to at the crash can hold a partial write:
			// every earlier one was complete and synced before its successor was created.
			// Truncating (rather than overwriting later) guarantees that no leftover of the
			// torn batch can ever line up with new records and be read as valid.
			if err := truncateSegment(path, res.validEnd); err != nil {
				return nil, nil, nil, err
			}
			rec.TruncatedBytes = res.dataEnd - res.validEnd
			log.Warn("msgstore: truncated torn tail of last segment",
				"file", path, "offset", res.validEnd, "dropped_bytes", rec.TruncatedBytes, "reason", res.bad.reason)
		}
		size := res.validEnd
		segs = append(segs, &segment{name: name, path: path, size: size})
	}

	byName := make(map[uint64]*segment, len(segs))
	for _, sg := range segs {
		byName[sg.name] = sg
	}
	for _, m := range st.msgs {
		sg := byName[m.seg]
		sg.liveMsgs++
		sg.liveBytes += int64(m.size)
	}
	if err := loadLiveData(segs, st, rec); err != nil {
		return nil, nil, nil, err
	}
	rec.Duration = time.Since(start)
	return st, segs, rec, nil
}

func truncateSegment(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s to truncate torn tail: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("truncate torn tail of %s at %d: %w", path, size, err)
	}
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("sync truncated %s: %w", path, err)
	}
	return nil
}

// loadLiveData reads the bodies of the live messages in a second pass. Keeping only
// offsets during the scan bounds recovery memory by the live data, not by the size of the
// log (which is mostly acked messages).
func loadLiveData(segs []*segment, st *replayState, rec *Recovered) error {
	type span struct {
		id  uint64
		off int64
		n   int32
	}
	bySeg := make(map[uint64][]span)
	for id, m := range st.msgs {
		bySeg[m.seg] = append(bySeg[m.seg], span{id, m.dataOff, m.dataLen})
	}
	data := make(map[uint64][]byte, len(st.msgs))
	const window = 4 << 20
	var buf []byte
	for _, sg := range segs {
		spans := bySeg[sg.name]
		if len(spans) == 0 {
			continue
		}
		slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.off, b.off) })
		var total int64
		for _, sp := range spans {
			total += int64(sp.n)
		}
		// One slab per segment: the messages are handed to the queues together and live
		// about as long as each other.
		slab := make([]byte, 0, total)
		f, err := os.Open(sg.path)
		if err != nil {
			return fmt.Errorf("open %s to load live messages: %w", sg.path, err)
		}
		bufStart, bufEnd := int64(0), int64(0)
		for _, sp := range spans {
			end := sp.off + int64(sp.n)
			if sp.off < bufStart || end > bufEnd {
				n := max(int64(window), int64(sp.n))
				if int64(cap(buf)) < n {
					buf = make([]byte, n)
				}
				got, err := f.ReadAt(buf[:n], sp.off)
				if int64(got) < int64(sp.n) {
					f.Close()
					return fmt.Errorf("read live message %d from %s at %d: %w", sp.id, sg.path, sp.off, err)
				}
				bufStart, bufEnd = sp.off, sp.off+int64(got)
			}
			at := len(slab)
			slab = append(slab, buf[sp.off-bufStart:end-bufStart]...)
			data[sp.id] = slab[at:len(slab):len(slab)]
		}
		f.Close()
	}
	for q, set := range st.queues {
		if len(set) == 0 {
			continue
		}
		ids := make([]uint64, 0, len(set))
		for id := range set {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		msgs := make([]Message, len(ids))
		for i, id := range ids {
			msgs[i] = Message{ID: id, Data: data[id]}
		}
		rec.Queues[q] = msgs
	}
	return nil
}
