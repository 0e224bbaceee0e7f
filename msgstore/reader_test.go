package msgstore

import (
	"bytes"
	"fmt"
	"testing"
)

// readRange reads queue's messages in (after, upTo] in steps of n.
func readRange(t testing.TB, s *Store, queue string, after, upTo uint64, n int) []Message {
	t.Helper()
	var out []Message
	for after < upTo {
		msgs, through, err := s.ReadQueue(queue, after, upTo, n, 1<<20)
		if err != nil {
			t.Fatalf("ReadQueue(%s, %d, %d): %v", queue, after, upTo, err)
		}
		if through <= after {
			t.Fatalf("ReadQueue(%s, %d, %d) made no progress", queue, after, upTo)
		}
		out = append(out, msgs...)
		after = through
	}
	return out
}

// TestReadQueueFollowsThePublishOrder reads one queue's backlog, interleaved with another
// queue's traffic, across many segments and while the newest records are still waiting for
// their group commit.
func TestReadQueueFollowsThePublishOrder(t *testing.T) {
	s, _ := openT(t, Options{Dir: t.TempDir(), SegmentBytes: 8192, NoSync: true})
	defer closeT(t, s)
	var want []Message
	var last uint64
	for i := range 3000 {
		data := []byte(fmt.Sprintf("slow-%05d", i))
		id := publishNoWait(t, s, []string{"slow"}, data)
		want = append(want, Message{id, data})
		fid := publishNoWait(t, s, []string{"fast"}, bytes.Repeat([]byte("f"), 100))
		s.Ack("fast", fid)
		last = id
	}
	s.StartPaging("slow", 0)
	got := readRange(t, s, "slow", 0, last, 64)
	if !sameQueues(model{"slow": got}, model{"slow": want}) {
		t.Fatalf("read back %d messages, want %d in order", len(got), len(want))
	}
	if segs := s.Stats().Segments; segs < 10 {
		t.Fatalf("only %d segments: the test should span many", segs)
	}
}

// TestUnreadMessagesAreNotCompacted: a queue paging a backlog that shares segments with
// heavy acked traffic keeps its messages in place (a copy would land out of order), and
// once it has read them, compaction and reclaim free the disk.
func TestUnreadMessagesAreNotCompacted(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 4096, NoSync: true}
	s, _ := openT(t, opts)
	defer closeT(t, s)
	s.StartPaging("lazy", 0)
	var want []Message
	for i := range 60 {
		data := []byte(fmt.Sprintf("lazy-%03d", i))
		want = append(want, Message{publishNoWait(t, s, []string{"lazy"}, data), data})
		for range 30 {
			fid := publishWait(t, s, []string{"fast"}, bytes.Repeat([]byte("f"), 40))
			s.Ack("fast", fid)
		}
	}
	settle(t, s)
	s.mu.Lock()
	moved := len(s.moved)
	s.mu.Unlock()
	if moved != 0 {
		t.Fatalf("compaction moved %d unread messages", moved)
	}
	pinned := s.Stats().Segments
	got := readRange(t, s, "lazy", 0, want[len(want)-1].ID, 5)
	if !sameQueues(model{"lazy": got}, model{"lazy": want}) {
		t.Fatalf("read back\n%v\nwant\n%v", model{"lazy": got}, model{"lazy": want})
	}
	// Read (held in the queue's memory, not acked): now compaction may move them.
	for range 400 {
		fid := publishWait(t, s, []string{"fast"}, bytes.Repeat([]byte("f"), 40))
		s.Ack("fast", fid)
	}
	settle(t, s)
	if after := s.Stats().Segments; after >= pinned {
		t.Fatalf("%d segments after the backlog was read, %d before: nothing reclaimed", after, pinned)
	}
	for _, m := range want {
		s.Ack("lazy", m.ID)
	}
	if live := s.Stats().LiveMessages; live != 0 {
		t.Fatalf("LiveMessages = %d after acking everything", live)
	}
}

func TestAckRangeSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, SegmentBytes: 2048, NoSync: true}
	s, _ := openT(t, opts)
	var ids []uint64
	for i := range 100 {
		ids = append(ids, publishNoWait(t, s, []string{"q", "other"}, []byte(fmt.Sprint(i))))
	}
	s.AckRange("q", ids[9], ids[59]) // releases ids[10..59] from q only
	if live := s.Stats().LiveMessages; live != 100 {
		t.Fatalf("LiveMessages = %d, want 100 (other still holds all)", live)
	}
	closeT(t, s)
	s, rec := openT(t, opts)
	defer closeT(t, s)
	got := readAll(t, s, rec)
	if len(got["q"]) != 50 || got["q"][9].ID != ids[9] || got["q"][10].ID != ids[60] || len(got["other"]) != 100 {
		t.Fatalf("after restart q holds %d (want 50, without ids[10..59]), other %d", len(got["q"]), len(got["other"]))
	}
}

// TestStopPagingWaitsForEveryPublish: the store tells a paging queue whether every message
// published to it has reached it, so it never stops reading the log while one is on its way.
func TestStopPagingWaitsForEveryPublish(t *testing.T) {
	s, _ := openT(t, Options{Dir: t.TempDir(), NoSync: true})
	defer closeT(t, s)
	s.StartPaging("q", 0)
	for range 3 {
		publishNoWait(t, s, []string{"q"}, []byte("x"))
	}
	if s.StopPaging("q", 2) {
		t.Fatal("StopPaging succeeded with a publish not yet handed to the queue")
	}
	if !s.StopPaging("q", 3) {
		t.Fatal("StopPaging refused although the queue was handed every publish")
	}
}
