package msgstore

import (
	"fmt"
	"os"
	"slices"
	"time"
)

// recoverDir scans every segment of the store's dir in order, replaying each record into
// the live accounting, and truncates a torn tail of the last one. Only record headers and
// queue lists are kept: message bodies stay on disk until a queue reads them (ReadQueue),
// so recovery needs memory for the live *set*, not the live data. It returns what each
// queue holds and the highest message id seen.
func (s *Store) recoverDir() (*Recovered, uint64, error) {
	start := time.Now()
	names, err := listSegments(s.dir)
	if err != nil {
		return nil, 0, err
	}
	rec := &Recovered{Queues: make(map[string]QueueInfo), Segments: len(names)}
	in := newInterner()
	var maxID uint64
	for i, name := range names {
		path := segmentPath(s.dir, name)
		sg := &segment{name: name, path: path}
		s.segments = append(s.segments, sg)
		s.segByName[name] = sg
		res, err := scanSegment(path, in, func(off int64, r *record) error {
			s.replayLocked(sg, off, r, &maxID)
			rec.Records++
			return nil
		})
		if err != nil {
			return nil, 0, fmt.Errorf("recover %s: %w", path, err)
		}
		if res.bad != nil {
			if i != len(names)-1 {
				return nil, 0, &CorruptionError{File: path, Offset: res.bad.offset, Reason: res.bad.reason}
			}
			// Only the segment being appended to at the crash can hold a partial write:
			// every earlier one was complete and synced before its successor was created.
			// Truncating (rather than overwriting later) guarantees that no leftover of the
			// torn batch can ever line up with new records and be read as valid.
			if err := truncateSegment(path, res.validEnd); err != nil {
				return nil, 0, err
			}
			rec.TruncatedBytes = res.dataEnd - res.validEnd
			s.log.Warn("msgstore: truncated torn tail of last segment",
				"file", path, "offset", res.validEnd, "dropped_bytes", rec.TruncatedBytes, "reason", res.bad.reason)
		}
		sg.size = res.validEnd
	}
	for key, qs := range s.queues {
		if qs.live.len() == 0 {
			delete(s.queues, key)
			continue
		}
		// Nothing has been read back yet: the reader standing before the first message
		// keeps compaction from reordering them before the queue reads them.
		qs.rd = &reader{}
		rec.Queues[key] = QueueInfo{Messages: qs.live.len(), Bytes: s.queueBytesLocked(qs), LastID: qs.live.max()}
	}
	rec.Duration = time.Since(start)
	return rec, maxID, nil
}

// replayLocked applies one record found at off in sg.
func (s *Store) replayLocked(sg *segment, off int64, r *record, maxID *uint64) {
	switch r.typ {
	case recPublish:
		if r.id <= *maxID {
			s.replayCopyLocked(sg, off, r)
			return
		}
		// Originals appear in increasing id order. A copy with an id above everything seen
		// so far (its original and every later record were reclaimed) is placed like an
		// original, which is just as good: it is the only record of that id.
		*maxID = r.id
		s.placeLocked(sg, r.id, off)
		sg.records++
		sg.dataBytes += int64(len(r.data))
		for _, q := range r.queues {
			// holdLocked, minus its lookups: this runs for every record of the log.
			if qs := s.queueLocked(q); qs.live.add(r.id) {
				qs.segRefs[sg.name]++
				sg.liveRefs++
				sg.totalRefs++
			}
		}
	case recAck:
		if qs := s.queues[r.queue]; qs != nil {
			for _, id := range r.ids {
				s.releaseLocked(qs, id)
			}
		}
	case recAckRange:
		if qs := s.queues[r.queue]; qs != nil {
			s.releaseRangeLocked(qs, r.after, r.upTo)
		}
	case recDropQueue:
		if qs := s.queues[r.queue]; qs != nil {
			s.dropLocked(r.queue, qs)
		}
	}
}

// replayCopyLocked applies a compaction copy: written with exactly the queues that still
// held the message, it supersedes the earlier record, and queues it no longer lists are
// released.
func (s *Store) replayCopyLocked(sg *segment, off int64, r *record) {
	prev, placed := s.locateLocked(r.id)
	var refs int32
	for key, qs := range s.queues {
		if !qs.live.has(r.id) {
			continue
		}
		if !slices.Contains(r.queues, key) {
			s.releaseLocked(qs, r.id)
			continue
		}
		if placed {
			s.countRefLocked(qs, prev, -1)
		}
		s.countRefLocked(qs, sg.name, 1)
		sg.totalRefs++
		refs++
	}
	for _, q := range r.queues {
		// Listed but not holding it: the earlier record is gone with its segment.
		if qs := s.queueLocked(q); qs.live.add(r.id) {
			s.countRefLocked(qs, sg.name, 1)
			sg.totalRefs++
			refs++
		}
	}
	if refs > 0 {
		s.moved[r.id] = movedLoc{seg: sg.name, off: off, refs: refs}
	} else {
		delete(s.moved, r.id)
	}
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
