package msgstore

import (
	"bytes"
	"os"
	"testing"
)

func TestDeadSegmentsAreDeleted(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, Options{Dir: dir, SegmentBytes: 4096, NoSync: true})
	payload := bytes.Repeat([]byte("d"), 200)
	for i := range 2000 {
		id := publishWait(t, s, []string{"q"}, payload)
		s.Ack("q", id)
		if i%500 == 499 {
			settle(t, s)
			if n := len(segmentFiles(t, dir)); n > 3 {
				t.Fatalf("after %d publish+ack: %d segment files on disk, want at most 3", i+1, n)
			}
		}
	}
	st := s.Stats()
	if st.BytesWritten < 100*4096 {
		t.Fatalf("only %d bytes written; the test did not roll many segments", st.BytesWritten)
	}
	if st.Segments > 3 || st.LiveMessages != 0 {
		t.Errorf("stats %+v: want ≤3 segments and no live messages", st)
	}
	closeT(t, s)
	s, rec := openT(t, Options{Dir: dir, SegmentBytes: 4096, NoSync: true})
	defer closeT(t, s)
	if len(rec.Queues) != 0 {
		t.Errorf("acked messages came back: %v", model(readAll(t, s, rec)))
	}
}

// TestLongLivedMessageDoesNotPinDisk keeps one message unacked while thousands flow
// through: compaction must move it forward so the old segments can go.
func TestLongLivedMessageDoesNotPinDisk(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, NoSync: true}
	s, _ := openT(t, opts)
	pinnedData := []byte("I am the long-lived one")
	pinned := publishWait(t, s, []string{"slow", "fast"}, pinnedData)
	s.Ack("fast", pinned) // only "slow" still holds it
	firstSegment := segmentFiles(t, dir)[0]
	payload := bytes.Repeat([]byte("e"), 200)
	for range 2000 {
		id := publishWait(t, s, []string{"fast"}, payload)
		s.Ack("fast", id)
	}
	settle(t, s)
	if _, err := os.Stat(firstSegment); !os.IsNotExist(err) {
		t.Errorf("first segment %s still exists (err %v): the long-lived message pins it", firstSegment, err)
	}
	if n := len(segmentFiles(t, dir)); n > 3 {
		t.Errorf("%d segment files on disk, want at most 3", n)
	}
	if total := dirBytes(t, dir); total > 3*4096+1024 {
		t.Errorf("%d bytes on disk for one live message", total)
	}
	closeT(t, s)

	s, rec := openT(t, opts)
	want := model{"slow": {{pinned, pinnedData}}}
	if !sameQueues(readAll(t, s, rec), want) {
		t.Fatalf("recovered\n%v\nwant\n%v", model(readAll(t, s, rec)), want)
	}
	// The moved copy must still be ackable, and the ack must stick.
	s.Ack("slow", pinned)
	closeT(t, s)
	s, rec = openT(t, opts)
	defer closeT(t, s)
	if len(rec.Queues) != 0 {
		t.Errorf("acked compacted message came back: %v", model(readAll(t, s, rec)))
	}
}

// TestCompactionCopySupersedesOriginal checks the copy made by compaction lists
// exactly the queues that held the message at that moment, also when the original record
// survives (crash between the copy's sync and the deletion of the old segment).
func TestCompactionCopySupersedesOriginal(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, NoSync: true}
	s, _ := openT(t, opts)
	data := []byte("three queues")
	id := publishWait(t, s, []string{"a", "b", "c"}, data)
	s.Ack("b", id)
	firstSegment := segmentFiles(t, dir)[0]
	original, err := os.ReadFile(firstSegment)
	if err != nil {
		t.Fatal(err)
	}
	// Compaction weighs live references against all the segment's records carried: small
	// filler records make the first segment mostly dead.
	filler := bytes.Repeat([]byte("f"), 60)
	for range 600 {
		fid := publishWait(t, s, []string{"x"}, filler)
		s.Ack("x", fid)
	}
	settle(t, s)
	if _, err := os.Stat(firstSegment); !os.IsNotExist(err) {
		t.Fatalf("first segment was not compacted away")
	}
	closeT(t, s)
	// Simulate the crash window: the original segment is back next to the copy.
	if err := os.WriteFile(firstSegment, original, 0o644); err != nil {
		t.Fatal(err)
	}
	s, rec := openT(t, opts)
	defer closeT(t, s)
	want := model{"a": {{id, data}}, "c": {{id, data}}}
	if !sameQueues(readAll(t, s, rec), want) {
		t.Fatalf("recovered\n%v\nwant\n%v", model(readAll(t, s, rec)), want)
	}
	if got := s.Stats().LiveMessages; got != 1 {
		t.Errorf("LiveMessages = %d, want 1", got)
	}
	settle(t, s)
	if _, err := os.Stat(firstSegment); !os.IsNotExist(err) {
		t.Errorf("resurrected original segment holds nothing live but was not deleted")
	}
}
