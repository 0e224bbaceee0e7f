package msgstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tornSegmentBytes keeps the preallocated fixture files small: they are copied hundreds
// of times.
const tornSegmentBytes = 16 << 10

// writeFixture writes n single-queue messages with a clean close and returns their ids,
// their data, where the last record starts and where the records end (the file itself is
// longer: it is preallocated).
func writeFixture(t *testing.T, dir string, n int) (ids []uint64, data [][]byte, lastStart, end int64) {
	t.Helper()
	s, _ := openT(t, Options{Dir: dir, SegmentBytes: tornSegmentBytes, NoSync: true})
	for i := range n {
		d := []byte(fmt.Sprintf("payload-%02d-%s", i, strings.Repeat("p", 20)))
		ids = append(ids, publishWait(t, s, []string{"q"}, d))
		data = append(data, d)
	}
	closeT(t, s)
	for i := range n {
		end += int64(publishRecordSize(ids[i], []string{"q"}, data[i]))
	}
	last := publishRecordSize(ids[n-1], []string{"q"}, data[n-1])
	return ids, data, end - int64(last), end
}

func copyDir(t *testing.T, from string) string {
	t.Helper()
	to := t.TempDir()
	for _, p := range segmentFiles(t, from) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return to
}

// expectTornRecovery opens a damaged copy and checks that exactly the records before the
// last one come back, that the damage is reported, and that the store accepts new writes.
func expectTornRecovery(t *testing.T, dir string, ids []uint64, data [][]byte, maxTruncated int64, appendAfter bool) {
	t.Helper()
	s, rec := openT(t, Options{Dir: dir, SegmentBytes: tornSegmentBytes, NoSync: true})
	want := model{"q": nil}
	for i := range len(ids) - 1 {
		want["q"] = append(want["q"], Message{ids[i], data[i]})
	}
	if !sameQueues(readAll(t, s, rec), want) {
		closeT(t, s)
		t.Fatalf("recovered\n%v\nwant\n%v", model(readAll(t, s, rec)), want)
	}
	// Zero bytes at the very end of the damage are indistinguishable from preallocated
	// space and are not counted.
	if rec.TruncatedBytes <= 0 || rec.TruncatedBytes > maxTruncated {
		t.Errorf("TruncatedBytes = %d, want 1..%d", rec.TruncatedBytes, maxTruncated)
	}
	if !appendAfter {
		closeT(t, s)
		return
	}
	extra := publishWait(t, s, []string{"q"}, []byte("after recovery"))
	closeT(t, s)
	s, rec = openT(t, Options{Dir: dir, SegmentBytes: tornSegmentBytes, NoSync: true})
	defer closeT(t, s)
	want["q"] = append(want["q"], Message{extra, []byte("after recovery")})
	if !sameQueues(readAll(t, s, rec), want) || rec.TruncatedBytes != 0 {
		t.Fatalf("after appending post-recovery: recovered (truncated %d)\n%v\nwant\n%v", rec.TruncatedBytes, model(readAll(t, s, rec)), want)
	}
}

func TestTornTailAtEveryOffset(t *testing.T) {
	src := t.TempDir()
	ids, data, lastStart, end := writeFixture(t, src, 5)
	if files := segmentFiles(t, src); len(files) != 1 {
		t.Fatalf("fixture has %d segments, want 1", len(files))
	}
	for cut := lastStart + 1; cut < end; cut++ {
		t.Run(fmt.Sprintf("cut%d", cut), func(t *testing.T) {
			dir := copyDir(t, src)
			if err := os.Truncate(segmentFiles(t, dir)[0], cut); err != nil {
				t.Fatal(err)
			}
			expectTornRecovery(t, dir, ids, data, cut-lastStart, cut%7 == 0 || cut == end-1)
		})
	}
}

func TestFlippedByteInLastRecord(t *testing.T) {
	src := t.TempDir()
	ids, data, lastStart, end := writeFixture(t, src, 5)
	full, err := os.ReadFile(segmentFiles(t, src)[0])
	if err != nil {
		t.Fatal(err)
	}
	for pos := lastStart; pos < end; pos++ {
		t.Run(fmt.Sprintf("byte%d", pos), func(t *testing.T) {
			dir := copyDir(t, src)
			path := segmentFiles(t, dir)[0]
			damaged := append([]byte(nil), full...)
			damaged[pos] ^= 0x5a
			if err := os.WriteFile(path, damaged, 0o644); err != nil {
				t.Fatal(err)
			}
			expectTornRecovery(t, dir, ids, data, end-lastStart, pos == end-1)
		})
	}
}

func TestZeroTailIsACleanEnd(t *testing.T) {
	// Preallocated space, or unsynced pages after a power cut, read as zeros: that is the
	// end of the records, not damage, in the last segment and in older ones.
	src := t.TempDir()
	ids, data, _, end := writeFixture(t, src, 5)
	path := segmentFiles(t, src)[0]
	if err := os.Truncate(path, end+4096); err != nil {
		t.Fatal(err)
	}
	older := filepath.Join(src, segmentFileName(0xffff))
	// An empty next segment makes the zero-tailed one an older segment on the second open.
	for round, prepare := range []func(){func() {}, func() {
		if err := os.WriteFile(older, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}} {
		prepare()
		s, rec := openT(t, Options{Dir: src, SegmentBytes: tornSegmentBytes, NoSync: true})
		got := readAll(t, s, rec)["q"]
		closeT(t, s)
		if rec.TruncatedBytes != 0 || len(got) != len(ids) {
			t.Fatalf("round %d: recovered %d messages (want %d), truncated %d (want 0)", round, len(got), len(ids), rec.TruncatedBytes)
		}
		if string(got[len(ids)-1].Data) != string(data[len(ids)-1]) {
			t.Fatalf("round %d: last message damaged", round)
		}
	}
}

func TestGarbageAfterZerosIsTornNotClean(t *testing.T) {
	// Pages of a torn batch can land out of order: zeros, then part of a later record.
	src := t.TempDir()
	ids, data, _, end := writeFixture(t, src, 5)
	path := segmentFiles(t, src)[0]
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("leftover"), end+100); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s, rec := openT(t, Options{Dir: src, SegmentBytes: tornSegmentBytes, NoSync: true})
	defer closeT(t, s)
	if rec.TruncatedBytes != 108 || len(readAll(t, s, rec)["q"]) != len(ids) {
		t.Fatalf("recovered %d messages (want %d), truncated %d (want 108)", len(readAll(t, s, rec)["q"]), len(ids), rec.TruncatedBytes)
	}
	_ = data
}

func TestCorruptionInOlderSegmentFailsOpen(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, Options{Dir: dir, SegmentBytes: 300, NoSync: true})
	for i := range 40 {
		publishWait(t, s, []string{"q"}, []byte(fmt.Sprintf("message %02d ------------------", i)))
	}
	closeT(t, s)
	files := segmentFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("fixture has %d segments, want at least 3", len(files))
	}
	victim := files[1]
	b, err := os.ReadFile(victim)
	if err != nil {
		t.Fatal(err)
	}
	// Damage the payload of the second record of the segment.
	wantOffset := int64(recordHeaderSize) + int64(binary.LittleEndian.Uint32(b))
	b[wantOffset+recordHeaderSize+3] ^= 0xff
	if err := os.WriteFile(victim, b, 0o644); err != nil {
		t.Fatal(err)
	}
	before := dirBytes(t, dir)
	_, _, err = Open(Options{Dir: dir, Logger: quietLogger()})
	if err == nil {
		t.Fatal("Open succeeded on a corrupt older segment")
	}
	var ce *CorruptionError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) {
		t.Fatalf("error %v is not a CorruptionError", err)
	}
	if ce.File != victim || ce.Offset != wantOffset {
		t.Errorf("corruption reported at %s:%d, want %s:%d", ce.File, ce.Offset, victim, wantOffset)
	}
	for _, part := range []string{filepath.Base(victim), fmt.Sprintf("offset %d", wantOffset), "checksum"} {
		if !strings.Contains(err.Error(), part) {
			t.Errorf("error %q does not mention %q", err, part)
		}
	}
	if after := dirBytes(t, dir); after != before {
		t.Errorf("failed Open changed the files: %d bytes before, %d after", before, after)
	}
}
