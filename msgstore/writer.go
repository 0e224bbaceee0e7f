package msgstore

import (
	"errors"
	"fmt"
	"os"
	"slices"
)

// runWriter is the single goroutine that owns the active segment file. Each turn it takes
// everything that accumulated while the previous commit was on its way to the disk, writes
// it with one write and one fdatasync, and only then calls the publishers' callbacks.
func (s *Store) runWriter() {
	defer close(s.writerDone)
	s.reclaim() // recovery may have left dead segments at the front
	for {
		if err := s.maybeRoll(); err != nil {
			s.fail(err)
		}
		b, seq, stop := s.takeBatch()
		if stop {
			return
		}
		err := s.commit(b)
		s.finishBatch(b, seq, err)
		if err == nil {
			s.reclaim()
			s.maybeCompact()
		}
	}
}

// takeBatch waits for work and swaps the pending batch out. It also assigns the batch's
// publish records to the active segment: only now is it certain which file they go to.
func (s *Store) takeBatch() (b *batch, seq uint64, stop bool) {
	s.mu.Lock()
	for s.pending.empty() && len(s.waiters) == 0 {
		if s.closing {
			s.mu.Unlock()
			return nil, 0, true
		}
		s.mu.Unlock()
		<-s.wake
		s.mu.Lock()
	}
	b = s.pending
	s.pending, s.spare = s.spare, nil
	seq = s.batchSeq
	s.batchSeq++
	// Only now is it certain which file the batch goes to: place its records there.
	active := s.segments[len(s.segments)-1]
	base := active.size
	for _, p := range b.pubs {
		off := base + int64(p.off)
		if !p.copy {
			s.placeLocked(active, p.id, off)
			continue
		}
		// A copy acked before its first commit is already gone from moved.
		if mv, ok := s.moved[p.id]; ok && mv.seg == 0 {
			mv.seg, mv.off = active.name, off
			s.moved[p.id] = mv
		}
	}
	for _, qs := range b.touched {
		if n := qs.segRefs[0]; n != 0 {
			qs.segRefs[active.name] += n
			delete(qs.segRefs, 0)
		}
	}
	active.liveRefs += s.pendLive
	active.totalRefs += s.pendTotal
	s.pendLive, s.pendTotal = 0, 0
	s.writing, s.writingAt = b, base
	active.size += int64(len(b.buf))
	s.mu.Unlock()
	return b, seq, false
}

// commit writes and syncs one batch. Without I/O errors it is the only place the disk is
// touched on the publish path.
func (s *Store) commit(b *batch) error {
	s.mu.Lock()
	broken := s.broken
	s.mu.Unlock()
	if broken != nil {
		return broken
	}
	if len(b.buf) == 0 {
		return nil
	}
	if _, err := s.activeFile.WriteAt(b.buf, s.activeOffset); err != nil {
		return s.fail(fmt.Errorf("msgstore: write %d bytes to %s at %d: %w", len(b.buf), s.activeFile.Name(), s.activeOffset, err))
	}
	s.activeOffset += int64(len(b.buf))
	if !s.noSync {
		if err := s.syncActive(); err != nil {
			// After a failed fdatasync the kernel may have dropped the dirty pages; nothing
			// written since the last good sync can be trusted, so the store stops.
			return s.fail(fmt.Errorf("msgstore: fdatasync %s: %w", s.activeFile.Name(), err))
		}
	}
	return nil
}

// syncActive makes the active segment's data durable.
func (s *Store) syncActive() error {
	if s.syncData != nil {
		return s.syncData(s.activeFile)
	}
	return fdatasync(s.activeFile)
}

// fail marks the store broken (first error wins) and returns the error to report.
func (s *Store) fail(err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broken == nil {
		s.broken = err
		s.log.Error("msgstore: store is broken, refusing further writes", "err", err)
	}
	return s.broken
}

// finishBatch publishes the outcome of a commit. Counters and the synced mark are updated
// before the callbacks run, and Sync waiters are released after them, so a caller that
// saw its callback sees the stats, and a Sync that returns implies every earlier
// publish's callback has run.
func (s *Store) finishBatch(b *batch, seq uint64, err error) {
	s.mu.Lock()
	s.writing = nil
	if err == nil {
		s.syncedSeq = seq
		if len(b.buf) > 0 {
			s.stats.Fsyncs++
			s.stats.Records += b.records
			s.stats.BytesWritten += int64(len(b.buf))
		}
	}
	var release []syncWaiter
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if w.batch <= seq {
			release = append(release, w)
		} else {
			kept = append(kept, w)
		}
	}
	clear(s.waiters[len(kept):])
	s.waiters = kept
	s.mu.Unlock()

	for _, done := range b.dones {
		done(err)
	}
	for _, w := range release {
		w.ch <- err
	}
	b.reset()
	s.mu.Lock()
	s.spare = b
	s.mu.Unlock()
}

// maybeRoll starts a new segment once the active one is full. It runs between commits, so
// the old segment is complete and synced before the new file exists: a torn record can
// only ever be in the last segment, which is what lets Open tell torn writes from
// corruption.
func (s *Store) maybeRoll() error {
	s.mu.Lock()
	if s.broken != nil {
		s.mu.Unlock()
		return nil
	}
	old := s.segments[len(s.segments)-1]
	if old.size < s.segmentBytes {
		s.mu.Unlock()
		return nil
	}
	name := max(s.nextID, old.name+1)
	s.mu.Unlock()

	// Cut the unused preallocated space so that only the last segment ever has a zero
	// tail. Failing here is harmless: recovery accepts a zero tail anywhere.
	if err := s.activeFile.Truncate(s.activeOffset); err != nil {
		s.log.Warn("msgstore: trim full segment", "file", old.path, "err", err)
	} else if !s.noSync {
		if err := s.syncActive(); err != nil {
			return fmt.Errorf("msgstore: sync trimmed segment %s: %w", old.path, err)
		}
	}

	sg, f, err := s.createSegment(name)
	if err != nil {
		return fmt.Errorf("msgstore: roll segment: %w", err)
	}
	oldFile := s.activeFile
	s.mu.Lock()
	s.segments = append(s.segments, sg)
	s.segByName[sg.name] = sg
	s.stats.Segments = int64(len(s.segments))
	s.mu.Unlock()
	s.activeFile = f
	s.activeOffset = 0
	if err := oldFile.Close(); err != nil {
		s.log.Warn("msgstore: close full segment", "file", old.path, "err", err)
	}
	return nil
}

// reclaim deletes dead segments from the oldest up. Only the oldest may go: an ack or
// drop-queue record in a later segment can refer to a publish in an earlier one, so
// deleting a later segment first would let recovery resurrect that acked message. The
// active segment is never deleted; its name keeps ids monotonic across restarts.
func (s *Store) reclaim() {
	s.mu.Lock()
	var dead []*segment
	for _, sg := range s.segments[:len(s.segments)-1] {
		if sg.liveRefs != 0 || sg.reclaimAfterBatch > s.syncedSeq {
			break
		}
		dead = append(dead, sg)
	}
	s.mu.Unlock()
	if len(dead) == 0 {
		return
	}
	removed := 0
	for _, sg := range dead {
		if err := os.Remove(sg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Warn("msgstore: delete dead segment; will retry", "file", sg.path, "err", err)
			break
		}
		removed++
	}
	if removed > 0 && !s.noSync {
		// Make the removals durable before any later segment can be removed, so a power
		// cut never brings back an old segment whose acks were in a removed later one.
		if err := syncDir(s.dir); err != nil {
			s.log.Warn("msgstore: sync dir after deleting segments", "err", err)
		}
	}
	s.mu.Lock()
	for _, sg := range s.segments[:removed] {
		delete(s.segByName, sg.name)
	}
	gone := 0
	for gone < len(s.ranges) && s.segByName[s.ranges[gone].seg.name] != s.ranges[gone].seg {
		gone++
	}
	k := copy(s.ranges, s.ranges[gone:])
	clear(s.ranges[k:])
	s.ranges = s.ranges[:k]
	n := copy(s.segments, s.segments[removed:])
	clear(s.segments[n:])
	s.segments = s.segments[:n]
	s.stats.Segments = int64(len(s.segments))
	s.mu.Unlock()
	s.log.Debug("msgstore: reclaimed segments", "count", removed)
}

// compactLiveFraction: the oldest segment is rewritten when less than 1/compactLiveFraction
// of the references its records carried are still live, bounding the write amplification
// of compaction to ~10%.
const compactLiveFraction = 10

// errCompactionDeferred stops a compaction scan at a message a queue has not read yet.
var errCompactionDeferred = errors.New("segment holds unread messages")

// maybeCompact stops a few long-lived messages from pinning the whole log: when the oldest
// (non-active) segment is mostly dead, its live messages are re-appended to the active
// segment under their original ids, and the segment is deleted once the copies are synced.
// Recovery treats a later publish record of an id as superseding the earlier one.
//
// Only messages every holding queue has already read into memory are copied: a copy lands
// after younger messages, and a queue reading its backlog from the log must find it in id
// order. A segment holding unread messages is retried later; it is reclaimed anyway once
// those messages are consumed.
func (s *Store) maybeCompact() {
	s.mu.Lock()
	if s.broken != nil || len(s.segments) < 2 {
		s.mu.Unlock()
		return
	}
	old := s.segments[0]
	if q := old.blockedBy; q != nil && (q.rd == nil || q.rd.through >= old.blockedID || !q.live.has(old.blockedID)) {
		old.blockedBy = nil
	}
	worth := !old.noCompact && old.blockedBy == nil && old.liveRefs > 0 &&
		old.liveRefs*compactLiveFraction < old.totalRefs
	s.mu.Unlock()
	if !worth {
		return
	}
	var (
		moved   int
		holders []string
		qss     []*queueState
	)
	// The segment is immutable, so it is read without the lock; each live message is then
	// re-checked and re-appended under the lock, after every ack already applied to it, so
	// the copy lists exactly the queues that still hold the message.
	res, err := scanSegment(old.path, newInterner(), func(off int64, rec *record) error {
		if rec.typ != recPublish {
			return nil
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if mv, ok := s.moved[rec.id]; ok {
			if mv.seg != old.name || mv.off != off {
				return nil // superseded by a later copy
			}
		} else if seg, ok := s.locateLocked(rec.id); !ok || seg != old.name {
			return nil
		}
		holders, qss = holders[:0], qss[:0]
		for _, q := range rec.queues {
			if qs := s.queues[q]; qs != nil && qs.live.has(rec.id) && !slices.Contains(holders, q) {
				if qs.rd != nil && rec.id > qs.rd.through {
					old.blockedBy, old.blockedID = qs, rec.id
					return errCompactionDeferred
				}
				holders = append(holders, q)
				qss = append(qss, qs)
			}
		}
		if len(holders) == 0 {
			return nil
		}
		b := s.pending
		b.pubs = append(b.pubs, pubRec{id: rec.id, off: len(b.buf), copy: true})
		s.moved[rec.id] = movedLoc{seg: 0, off: int64(len(b.buf)), refs: int32(len(holders))}
		b.buf = appendPublish(b.buf, rec.id, holders, rec.data)
		b.records++
		for _, qs := range qss {
			s.countRefLocked(qs, old.name, -1)
			s.countRefLocked(qs, 0, 1)
		}
		s.pendTotal += int64(len(holders))
		moved++
		return nil
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(err, errCompactionDeferred) {
		s.log.Debug("msgstore: compaction deferred: a queue has not read the segment's messages yet", "file", old.path, "moved", moved)
		return
	}
	if err != nil || res.bad != nil {
		old.noCompact = true
		s.log.Error("msgstore: compaction could not read segment; leaving it in place",
			"file", old.path, "err", err, "bad", res.bad)
		return
	}
	old.reclaimAfterBatch = s.batchSeq
	s.log.Debug("msgstore: compacted oldest segment", "file", old.path, "moved", moved, "still_live", old.liveRefs)
}
