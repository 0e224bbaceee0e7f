package msgstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"sort"
)

// A queue whose backlog does not fit in memory keeps only its head in RAM and reads the
// rest back from the log as its head drains. The log holds each queue's original publish
// records in id (= publish) order, so reading back is a forward scan from a per-queue
// cursor that takes the records the queue still holds. Compaction copies are the only
// records out of order; they are never made of messages a queue has not read yet, except
// those that were copied before a crash, which the reader merges in from their
// remembered locations (displaced).

// reader is one queue's cursor into the log.
type reader struct {
	seg uint64 // segment of the scan position; 0: not positioned yet
	off int64
	// through: every message of the queue with an id ≤ through was returned already (or
	// was not wanted). Compaction may copy those, and only those.
	through   uint64
	displaced []uint64 // ids > through whose current record is a compaction copy, ascending
	pendSeq   uint64   // the pending batch (by number) was scanned up to pendOff
	pendOff   int
}

// readChunk is how much of a segment file a reader takes per read.
const readChunk = 1 << 20

// StartPaging tells the store that queue now keeps the messages it holds with ids above
// after on disk only, to be read back with ReadQueue. Until they are read, compaction will
// not move them (which would put them out of order).
func (s *Store) StartPaging(queue string, after uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	if qs := s.queueLocked(queue); qs.rd == nil {
		qs.rd = &reader{through: after}
	}
}

// StopPaging ends queue's reading from the log if the queue was handed every message
// published to it: announced is how many stored messages the queue received since the
// store opened (Publish counts the same per queue). It reports false while a publish is
// still on its way from the store to the queue; the queue then keeps paging.
func (s *Store) StopPaging(queue string, announced uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	qs := s.queues[queue]
	if qs == nil {
		return true
	}
	if qs.published != announced {
		return false
	}
	qs.rd = nil
	return true
}

// DoneReading drops queue's reader unconditionally: the queue has read everything it holds
// into memory and keeps new messages there too (a queue that does not page).
func (s *Store) DoneReading(queue string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if qs := s.queues[queue]; qs != nil {
		qs.rd = nil
	}
}

// ReadQueue returns, in id order, up to maxMsgs messages (fewer once maxBytes of data are
// reached, at least one) that queue holds with ids in (after, upTo], and through: every
// message the queue holds with an id in (after, through] is in this or an earlier answer.
// through == upTo means the range is exhausted. Successive calls continue where the last
// one ended when after is the previous through. Records still waiting for their group
// commit are read from memory, so a message can be read back as soon as Publish returned.
func (s *Store) ReadQueue(queue string, after, upTo uint64, maxMsgs, maxBytes int) ([]Message, uint64, error) {
	return s.readQueue(queue, after, upTo, maxMsgs, maxBytes, false)
}

// ReadQueueCopy is ReadQueue for a second reader of a queue's messages (a replicated queue's
// leader sending them to a follower): it uses a reader of its own, so the queue's paging
// position, and what compaction believes the queue has read, stay as they are. A message that
// compaction moves while it reads may be missing from the answer: callers check.
func (s *Store) ReadQueueCopy(queue string, after, upTo uint64, maxMsgs, maxBytes int) ([]Message, uint64, error) {
	return s.readQueue(queue, after, upTo, maxMsgs, maxBytes, true)
}

func (s *Store) readQueue(queue string, after, upTo uint64, maxMsgs, maxBytes int, detached bool) ([]Message, uint64, error) {
	maxMsgs = max(maxMsgs, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, after, ErrClosed
	}
	qs := s.queues[queue]
	if qs == nil || upTo <= after {
		return nil, max(after, upTo), nil
	}
	rd := qs.rd
	if detached {
		rd = &reader{through: after}
	} else if rd == nil {
		rd = &reader{through: after}
		qs.rd = rd
	}
	if rd.seg == 0 || rd.through != after {
		s.seekLocked(qs, rd, after)
	}
	out := &readOut{maxMsgs: maxMsgs, maxBytes: maxBytes}
	in := newInterner()
	for !out.full() {
		src := s.sourceLocked(rd)
		var recs []parsedRecord
		switch {
		case src.path != "":
			at := rd
			s.mu.Unlock()
			parsed, next, err := readRecords(src.path, src.off, src.end, in)
			s.mu.Lock()
			if sg := s.segByName[src.seg]; errors.Is(err, os.ErrNotExist) && (sg == nil || sg.liveRefs == 0) {
				// Being reclaimed (the file goes before the bookkeeping): nothing live is
				// left in it.
				if (detached || qs.rd == at) && rd.seg == src.seg {
					rd.off = max(rd.off, src.end)
				}
				continue
			}
			if err != nil {
				return out.msgs, rd.through, err
			}
			if s.queues[queue] != qs || (!detached && qs.rd != at) || rd.seg != src.seg || rd.off != src.off {
				// Dropped or repositioned meanwhile: what was gathered is still valid.
				return out.msgs, max(rd.through, after), nil
			}
			if len(parsed) == 0 {
				rd.off = next
				continue
			}
			recs = parsed
		case src.buf != nil:
			parsed, err := parseBuffer(src.buf, src.off, in)
			if err != nil {
				return out.msgs, rd.through, err
			}
			recs = parsed
		default:
			// The end of the written log: the pending batch is the rest.
			start := 0
			if rd.pendSeq == s.batchSeq {
				start = rd.pendOff
			}
			parsed, err := parseBuffer(s.pending.buf[start:], int64(start), in)
			if err != nil {
				return out.msgs, rd.through, err
			}
			stopped := false
			for _, r := range parsed {
				if s.visitLocked(qs, rd, r, upTo, out) {
					rd.pendSeq, rd.pendOff = s.batchSeq, int(r.off)
					stopped = true
					if out.err == nil && r.id > upTo {
						s.finishLocked(qs, rd, upTo, out)
					}
					break
				}
			}
			if !stopped {
				rd.pendSeq, rd.pendOff = s.batchSeq, len(s.pending.buf)
				// Every id ≤ upTo was handed out before upTo was, so all are in the log.
				s.finishLocked(qs, rd, upTo, out)
			}
			return out.msgs, rd.through, out.err
		}
		for _, r := range recs {
			if s.visitLocked(qs, rd, r, upTo, out) {
				if out.err == nil && r.id > upTo {
					s.finishLocked(qs, rd, upTo, out)
				}
				return out.msgs, rd.through, out.err
			}
			rd.off = r.off + r.size
		}
	}
	return out.msgs, rd.through, out.err
}

// readOut collects one ReadQueue answer; data is copied into slabs so the caller's
// messages do not pin the read buffers.
type readOut struct {
	msgs     []Message
	bytes    int
	maxMsgs  int
	maxBytes int
	slab     []byte
	err      error
}

func (o *readOut) full() bool {
	return o.err != nil || len(o.msgs) >= o.maxMsgs || (len(o.msgs) > 0 && o.bytes >= o.maxBytes)
}

func (o *readOut) add(id uint64, data []byte) {
	if cap(o.slab)-len(o.slab) < len(data) {
		o.slab = make([]byte, 0, max(len(data), 256<<10))
	}
	at := len(o.slab)
	o.slab = append(o.slab, data...)
	o.msgs = append(o.msgs, Message{ID: id, Data: o.slab[at:len(o.slab):len(o.slab)]})
	o.bytes += len(data)
}

// visitLocked handles the record r at the reader's position and reports whether the
// answer stops there (full, or past upTo); the position then stays at r.
func (s *Store) visitLocked(qs *queueState, rd *reader, r parsedRecord, upTo uint64, out *readOut) (stop bool) {
	if r.typ != recPublish || r.id <= rd.through {
		return false
	}
	if _, ok := s.moved[r.id]; ok {
		return false // a copy, or the original of one: merged from displaced
	}
	if r.id > upTo {
		return true
	}
	if !qs.live.has(r.id) {
		return false
	}
	for len(rd.displaced) > 0 && rd.displaced[0] < r.id {
		if out.full() {
			return true
		}
		s.emitDisplacedLocked(qs, rd, out)
	}
	if out.full() {
		return true
	}
	out.add(r.id, r.data)
	rd.through = r.id
	return out.full()
}

// finishLocked ends a range whose originals are all read: displaced messages up to upTo
// follow, then the range is done.
func (s *Store) finishLocked(qs *queueState, rd *reader, upTo uint64, out *readOut) {
	for len(rd.displaced) > 0 && rd.displaced[0] <= upTo {
		if out.full() {
			return
		}
		s.emitDisplacedLocked(qs, rd, out)
	}
	if out.err == nil {
		rd.through = max(rd.through, upTo)
	}
}

func (s *Store) emitDisplacedLocked(qs *queueState, rd *reader, out *readOut) {
	id := rd.displaced[0]
	mv, ok := s.moved[id]
	if ok && qs.live.has(id) {
		data, err := s.readRecordLocked(mv.seg, mv.off, id)
		if err != nil {
			out.err = err
			return
		}
		out.add(id, data)
	}
	rd.displaced = rd.displaced[1:]
	rd.through = max(rd.through, id)
}

// seekLocked positions rd before the first message qs holds with an id above after.
func (s *Store) seekLocked(qs *queueState, rd *reader, after uint64) {
	rd.through, rd.pendSeq, rd.pendOff = after, 0, 0
	rd.displaced = rd.displaced[:0]
	for id := range s.moved {
		if id > after && qs.live.has(id) {
			rd.displaced = append(rd.displaced, id)
		}
	}
	slices.Sort(rd.displaced)
	active := s.segments[len(s.segments)-1]
	rd.seg, rd.off = active.name, active.size // the end: only the pending batch is left
	var first uint64
	qs.live.each(after, func(id uint64) bool {
		if _, ok := s.moved[id]; ok {
			return true
		}
		first = id
		return false
	})
	if first == 0 {
		return
	}
	if seg, ok := s.locateLocked(first); ok && seg != 0 {
		sg := s.segByName[seg]
		i := sort.Search(len(sg.marks), func(i int) bool { return sg.marks[i].id > first }) - 1
		rd.seg, rd.off = seg, 0
		if i >= 0 {
			rd.off = sg.marks[i].off
		}
	}
}

// readSource is where the records at a reader's position are: a segment file range, the
// buffer of the batch being written, or (neither) the end of the written log.
type readSource struct {
	path     string
	seg      uint64
	off, end int64
	buf      []byte
}

func (s *Store) sourceLocked(rd *reader) readSource {
	for {
		sg := s.segByName[rd.seg]
		if sg == nil {
			// Deleted: it held nothing live. Continue with the next segment.
			i := sort.Search(len(s.segments), func(i int) bool { return s.segments[i].name > rd.seg })
			if i == len(s.segments) {
				return readSource{}
			}
			rd.seg, rd.off = s.segments[i].name, 0
			continue
		}
		active := sg == s.segments[len(s.segments)-1]
		fileEnd := sg.size
		if active && s.writing != nil {
			fileEnd = s.writingAt
		}
		if rd.off < fileEnd {
			return readSource{path: sg.path, seg: sg.name, off: rd.off, end: fileEnd}
		}
		if active && s.writing != nil && rd.off < s.writingAt+int64(len(s.writing.buf)) {
			return readSource{seg: sg.name, off: rd.off, buf: s.writing.buf[rd.off-s.writingAt:]}
		}
		if active {
			return readSource{}
		}
		i := sort.Search(len(s.segments), func(i int) bool { return s.segments[i].name > rd.seg })
		rd.seg, rd.off = s.segments[i].name, 0
	}
}

// parsedRecord is one record found by a reader; data aliases the read buffer.
type parsedRecord struct {
	off, size int64
	typ       byte
	id        uint64
	data      []byte
}

// readRecords reads the records of path from off (up to end) and returns those that lie
// wholly in one read, plus the offset after them (end when the segment's records end in
// zeros). A record that fails its checksum is an error: the segment was complete and
// verified when the store opened or wrote it.
func readRecords(path string, off, end int64, in *stringInterner) ([]parsedRecord, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, off, fmt.Errorf("msgstore: open %s to read messages: %w", path, err)
	}
	defer f.Close()
	size := min(int64(readChunk), end-off)
	for {
		buf := make([]byte, size)
		n, err := f.ReadAt(buf, off)
		if int64(n) < size && err != nil && err != io.EOF {
			return nil, off, fmt.Errorf("msgstore: read %s at %d: %w", path, off, err)
		}
		buf = buf[:n]
		recs, used, need, err := parseRecords(buf, off, in)
		if err != nil {
			return nil, off, fmt.Errorf("msgstore: read %s: %w", path, err)
		}
		switch {
		case need == 0 && len(recs) == 0 && used == 0:
			return nil, end, nil // zeros: the records end here
		case len(recs) == 0 && need > size && off+need <= end:
			size = need // one record larger than a chunk
			continue
		case len(recs) == 0:
			return nil, off, fmt.Errorf("msgstore: read %s at %d: record does not fit the segment", path, off)
		}
		return recs, off + used, nil
	}
}

// parseBuffer parses whole records held in memory (a batch buffer).
func parseBuffer(buf []byte, base int64, in *stringInterner) ([]parsedRecord, error) {
	recs, used, _, err := parseRecords(buf, base, in)
	if err == nil && used != int64(len(buf)) {
		err = fmt.Errorf("batch buffer ends inside a record at %d", base+used)
	}
	if err != nil {
		return nil, fmt.Errorf("msgstore: read pending records: %w", err)
	}
	return recs, nil
}

// parseRecords parses the records wholly inside buf (which starts at file offset base). It
// returns them, the bytes they span, and, when it stopped at a record cut off by the end
// of buf, how many bytes that record needs. A zero length ends the records.
func parseRecords(buf []byte, base int64, in *stringInterner) (recs []parsedRecord, used, need int64, err error) {
	var rec record
	for int64(len(buf))-used >= recordHeaderSize {
		p := buf[used:]
		length := int64(binary.LittleEndian.Uint32(p[:4]))
		if length == 0 {
			return recs, used, 0, nil
		}
		if length > maxRecordBody {
			return nil, used, 0, fmt.Errorf("record at %d: length %d too large", base+used, length)
		}
		if int64(len(p)) < recordHeaderSize+length {
			return recs, used, recordHeaderSize + length, nil
		}
		body := p[recordHeaderSize : recordHeaderSize+length]
		if want, got := binary.LittleEndian.Uint32(p[4:8]), crc32.Checksum(body, castagnoli); want != got {
			return nil, used, 0, fmt.Errorf("record at %d: checksum mismatch (stored %#08x, computed %#08x)", base+used, want, got)
		}
		if err := decodeBody(body, &rec, in); err != nil {
			return nil, used, 0, fmt.Errorf("record at %d: %w", base+used, err)
		}
		recs = append(recs, parsedRecord{off: base + used, size: recordHeaderSize + length, typ: rec.typ, id: rec.id, data: rec.data})
		used += recordHeaderSize + length
	}
	if rest := int64(len(buf)) - used; rest > 0 && len(recs) == 0 {
		return recs, used, recordHeaderSize, nil
	}
	return recs, used, 0, nil
}

// readRecordLocked reads the data of the publish record of id at (seg, off): from the
// pending batch (seg 0), the batch being written, or the segment file.
func (s *Store) readRecordLocked(seg uint64, off int64, id uint64) ([]byte, error) {
	var buf []byte
	switch sg := s.segByName[seg]; {
	case seg == 0:
		buf = s.pending.buf[off:]
	case sg == nil:
		return nil, fmt.Errorf("msgstore: message %d: segment %d is gone", id, seg)
	case sg == s.segments[len(s.segments)-1] && s.writing != nil && off >= s.writingAt:
		buf = s.writing.buf[off-s.writingAt:]
	default:
		f, err := os.Open(sg.path)
		if err != nil {
			return nil, fmt.Errorf("msgstore: open %s to read message %d: %w", sg.path, id, err)
		}
		defer f.Close()
		var hdr [recordHeaderSize]byte
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			return nil, fmt.Errorf("msgstore: read message %d in %s at %d: %w", id, sg.path, off, err)
		}
		length := int64(binary.LittleEndian.Uint32(hdr[:4]))
		if length == 0 || length > maxRecordBody {
			return nil, fmt.Errorf("msgstore: message %d in %s at %d: bad record length %d", id, sg.path, off, length)
		}
		buf = make([]byte, recordHeaderSize+length)
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("msgstore: read message %d in %s at %d: %w", id, sg.path, off, err)
		}
	}
	recs, _, _, err := parseRecords(buf, off, newInterner())
	if err != nil || len(recs) == 0 || recs[0].typ != recPublish || recs[0].id != id {
		return nil, fmt.Errorf("msgstore: message %d at %d in segment %d: no such record (%v)", id, off, seg, err)
	}
	return recs[0].data, nil
}
