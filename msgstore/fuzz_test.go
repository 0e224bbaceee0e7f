package msgstore

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func FuzzDecodeBody(f *testing.F) {
	f.Add(appendPublish(nil, 7, []string{"a", "bb"}, []byte("data"))[recordHeaderSize:])
	f.Add(appendAck(nil, "q", []uint64{1, 300, 1 << 40})[recordHeaderSize:])
	f.Add(appendDropQueue(nil, "q")[recordHeaderSize:])
	f.Add(appendAckRange(nil, "q", 3, 1<<33)[recordHeaderSize:])
	f.Add([]byte{recPublish, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, body []byte) {
		var rec record
		if err := decodeBody(body, &rec, newInterner()); err != nil {
			return
		}
		// Whatever decodes must survive a re-encode unchanged.
		var again []byte
		switch rec.typ {
		case recPublish:
			again = appendPublish(nil, rec.id, rec.queues, rec.data)
		case recAck:
			again = appendAck(nil, rec.queue, rec.ids)
		case recDropQueue:
			again = appendDropQueue(nil, rec.queue)
		case recAckRange:
			again = appendAckRange(nil, rec.queue, rec.after, rec.upTo)
		}
		var rec2 record
		if err := decodeBody(again[recordHeaderSize:], &rec2, newInterner()); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if rec2.typ != rec.typ || rec2.id != rec.id || rec2.queue != rec.queue || rec2.after != rec.after || rec2.upTo != rec.upTo ||
			!slices.Equal(rec2.queues, rec.queues) || !slices.Equal(rec2.ids, rec.ids) || string(rec2.data) != string(rec.data) {
			t.Fatalf("round trip changed the record: %+v vs %+v", rec, rec2)
		}
	})
}

// FuzzOpenSegment feeds arbitrary bytes as the only (hence last) segment: Open must never
// fail or panic, and what it keeps must be stable on the next open.
func FuzzOpenSegment(f *testing.F) {
	valid := appendPublish(nil, 1, []string{"q"}, []byte("hello"))
	valid = appendPublish(valid, 2, []string{"q", "r"}, []byte("world"))
	valid = appendAck(valid, "q", []uint64{1})
	f.Add(valid)
	f.Add(valid[:len(valid)-3])
	f.Add(appendDropQueue(slices.Clone(valid), "r"))
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segmentFileName(1)), content, 0o644); err != nil {
			t.Fatal(err)
		}
		s, rec, err := Open(Options{Dir: dir, SegmentBytes: 4096, NoSync: true, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("Open of a damaged last segment failed: %v", err)
		}
		first := readAll(t, s, rec)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s, rec2, err := Open(Options{Dir: dir, SegmentBytes: 4096, NoSync: true, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("second Open: %v", err)
		}
		defer s.Close()
		if second := readAll(t, s, rec2); rec2.TruncatedBytes != 0 || !sameQueues(first, second) {
			t.Fatalf("second open differs: truncated %d, %v vs %v", rec2.TruncatedBytes, model(first), model(second))
		}
	})
}
