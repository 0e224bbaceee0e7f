package msgstore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

const segmentSuffix = ".seg"

// segment is the in-memory bookkeeping of one segment file. Its counters are guarded by
// Store.mu; the list of segments is only reshaped by the writer goroutine.
type segment struct {
	name uint64 // file name number; strictly increasing in log order
	path string
	size int64 // bytes handed to the file (for the active segment: including the batch in flight)

	// liveRefs counts (queue, message) references whose current publish record lives here;
	// totalRefs is how many this segment's records ever carried. A segment is reclaimable
	// when liveRefs is zero and worth compacting when it is a small part of totalRefs.
	liveRefs  int64
	totalRefs int64
	records   int64 // original publish records, and the bytes of their data,
	dataBytes int64 // for QueueInfo.Bytes estimates
	marks     []mark

	// reclaimAfterBatch delays deletion of a compacted segment until the batch carrying the
	// re-appended copies of its live messages is durable.
	reclaimAfterBatch uint64
	// blockedBy/blockedID defer compaction while a queue has not read a message of this
	// segment back yet (copying it would put it out of order for the queue's reader).
	blockedBy *queueState
	blockedID uint64
	noCompact bool // compaction failed once; do not retry in a loop
}

func segmentFileName(name uint64) string {
	return fmt.Sprintf("%020d%s", name, segmentSuffix)
}

// parseSegmentName accepts exactly the names segmentFileName produces.
func parseSegmentName(file string) (uint64, bool) {
	base, ok := strings.CutSuffix(file, segmentSuffix)
	if !ok || len(base) != 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(base, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// listSegments returns the segment names in dir, oldest first.
func listSegments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list segments in %s: %w", dir, err)
	}
	var names []uint64
	for _, e := range entries {
		if e.Type().IsRegular() {
			if n, ok := parseSegmentName(e.Name()); ok {
				if n == 0 {
					// Name 0 is never produced (ids start at 1) and 0 means "not yet in a
					// segment" in the live accounting.
					return nil, fmt.Errorf("unexpected segment file %s in %s", e.Name(), dir)
				}
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// badRecord describes the first record of a segment that failed to read or verify.
type badRecord struct {
	offset int64
	reason string
}

// CorruptionError reports a damaged record in a segment that is not the last one. Such
// damage cannot come from a torn write (older segments were complete and synced before
// the next one was created), so Open refuses to guess and leaves the files untouched.
type CorruptionError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("msgstore: corrupt record in %s at offset %d: %s (segment is not the last one, so this is not a torn write; refusing to start)",
		e.File, e.Offset, e.Reason)
}

// ErrCorrupt is matched by errors.Is for every CorruptionError.
var ErrCorrupt = errors.New("msgstore: corrupt segment")

func (e *CorruptionError) Is(target error) bool { return target == ErrCorrupt }

// scanResult is how far a segment's records could be read.
type scanResult struct {
	validEnd int64      // end of the last valid record: where appending continues
	dataEnd  int64      // end of the last non-zero byte at or after validEnd
	size     int64      // file size, including zero preallocated space
	bad      *badRecord // first invalid record, nil if the records end cleanly
}

// scanSegment reads the records of one segment in order and calls visit for each valid
// one with its file offset. Segments are preallocated, so the records normally end in a
// run of zeros; a zero length at a record boundary followed only by zeros is a clean end.
// Anything else that is short, oversized, fails its checksum or does not decode stops
// the scan and is reported as bad. I/O errors and errors from visit are returned as err.
func scanSegment(path string, in *stringInterner, visit func(off int64, rec *record) error) (scanResult, error) {
	var res scanResult
	f, err := os.Open(path)
	if err != nil {
		return res, fmt.Errorf("open segment: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("stat segment: %w", err)
	}
	res.size = info.Size()
	br := bufio.NewReaderSize(f, 1<<20)
	var (
		header  [recordHeaderSize]byte
		bodyBuf []byte
		rec     record
		off     int64
	)
	// stop ends the scan at off: clean if everything from off on is zero.
	stop := func(consumed []byte, reason string) (scanResult, error) {
		res.validEnd = off
		last, err := lastNonZero(br, off+int64(len(consumed)), res.size-off-int64(len(consumed)))
		if err != nil {
			return res, fmt.Errorf("read segment tail at offset %d: %w", off, err)
		}
		for i := len(consumed) - 1; i >= 0 && last < 0; i-- {
			if consumed[i] != 0 {
				last = off + int64(i)
			}
		}
		if last < 0 {
			res.dataEnd = off
			return res, nil
		}
		res.dataEnd = last + 1
		res.bad = &badRecord{off, reason}
		return res, nil
	}
	for off < res.size {
		left := res.size - off
		if left < recordHeaderSize {
			tail := header[:left]
			if _, err := io.ReadFull(br, tail); err != nil {
				return res, fmt.Errorf("read segment at offset %d: %w", off, err)
			}
			return stop(tail, fmt.Sprintf("%d trailing bytes, shorter than a record header", left))
		}
		if _, err := io.ReadFull(br, header[:]); err != nil {
			return res, fmt.Errorf("read segment at offset %d: %w", off, err)
		}
		length := int64(binary.LittleEndian.Uint32(header[:4]))
		if length == 0 || length > maxRecordBody || length > left-recordHeaderSize {
			return stop(header[:], fmt.Sprintf("record length %d does not fit (%d bytes left)", length, left-recordHeaderSize))
		}
		// A record that fits the read buffer is used in place (Peek), not copied out: the
		// scan of a multi-GB log at start-up is mostly memory bandwidth.
		var body []byte
		peeked := length <= int64(br.Size())
		if peeked {
			if body, err = br.Peek(int(length)); err != nil {
				return res, fmt.Errorf("read segment at offset %d: %w", off, err)
			}
		} else {
			if int64(cap(bodyBuf)) < length {
				bodyBuf = make([]byte, length)
			}
			body = bodyBuf[:length]
			if _, err := io.ReadFull(br, body); err != nil {
				return res, fmt.Errorf("read segment at offset %d: %w", off, err)
			}
		}
		// consumed copies the record and moves the reader past it, for stop.
		consumed := func() []byte {
			c := append(header[:], body...)
			if peeked {
				_, _ = br.Discard(int(length))
			}
			return c
		}
		if want, got := binary.LittleEndian.Uint32(header[4:]), crc32.Checksum(body, castagnoli); want != got {
			return stop(consumed(), fmt.Sprintf("checksum mismatch (stored %#08x, computed %#08x)", want, got))
		}
		if err := decodeBody(body, &rec, in); err != nil {
			return stop(consumed(), fmt.Sprintf("undecodable record: %v", err))
		}
		rec.size = recordHeaderSize + length
		if err := visit(off, &rec); err != nil {
			return res, err
		}
		if peeked {
			if _, err := br.Discard(int(length)); err != nil {
				return res, fmt.Errorf("read segment at offset %d: %w", off, err)
			}
		}
		off += recordHeaderSize + length
	}
	res.validEnd, res.dataEnd = off, off
	return res, nil
}

// lastNonZero reads n bytes starting at file offset base and returns the offset of the
// last non-zero one, or -1 if all are zero.
func lastNonZero(r io.Reader, base, n int64) (int64, error) {
	last := int64(-1)
	buf := make([]byte, 64<<10)
	zeros := make([]byte, len(buf))
	for pos := int64(0); pos < n; {
		chunk := buf[:min(int64(len(buf)), n-pos)]
		if _, err := io.ReadFull(r, chunk); err != nil {
			return 0, err
		}
		if bytes.Equal(chunk, zeros[:len(chunk)]) { // vectorised: the common case
			pos += int64(len(chunk))
			continue
		}
		for i := len(chunk) - 1; i >= 0; i-- {
			if chunk[i] != 0 {
				last = base + pos + int64(i)
				break
			}
		}
		pos += int64(len(chunk))
	}
	return last, nil
}

// syncDir makes file creations and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open dir for sync: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

func segmentPath(dir string, name uint64) string {
	return filepath.Join(dir, segmentFileName(name))
}
