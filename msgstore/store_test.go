package msgstore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s, rec := openT(t, Options{Dir: dir})
	if len(rec.Queues) != 0 || rec.Records != 0 {
		t.Fatalf("fresh store recovered %+v", rec)
	}
	data := func(i int) []byte { return []byte(fmt.Sprintf("message-%d", i)) }
	m1 := publishWait(t, s, []string{"a", "b"}, data(1))
	m2 := publishWait(t, s, []string{"a"}, data(2))
	m3 := publishWait(t, s, []string{"b", "c"}, data(3))
	m4 := publishWait(t, s, []string{"c"}, data(4))
	m5 := publishWait(t, s, []string{"a", "b", "c"}, data(5))
	if !(m1 < m2 && m2 < m3 && m3 < m4 && m4 < m5) {
		t.Fatalf("ids not increasing: %d %d %d %d %d", m1, m2, m3, m4, m5)
	}
	s.Ack("a", m1)
	s.Ack("b", m3)
	s.AckMany("c", []uint64{m3, m4, 999}) // 999 is unknown: ignored
	s.Ack("a", m4)                        // a never held m4: ignored
	s.DropQueue("b")                      // takes m1 (last holder) and m5's b reference
	m6 := publishWait(t, s, []string{"b"}, data(6))
	if got := s.Stats().LiveMessages; got != 3 {
		t.Errorf("LiveMessages before close = %d, want 3", got)
	}
	closeT(t, s)

	s, rec = openT(t, Options{Dir: dir})
	defer closeT(t, s)
	want := model{
		"a": {{m2, data(2)}, {m5, data(5)}},
		"b": {{m6, data(6)}},
		"c": {{m5, data(5)}},
	}
	if !sameQueues(readAll(t, s, rec), want) {
		t.Fatalf("recovered:\n%v\nwant:\n%v", model(readAll(t, s, rec)), want)
	}
	if got := s.Stats().LiveMessages; got != 3 {
		t.Errorf("LiveMessages after reopen = %d, want 3", got)
	}
	if rec.TruncatedBytes != 0 {
		t.Errorf("TruncatedBytes = %d after a clean close", rec.TruncatedBytes)
	}
	// The recovered accounting must be usable: ack the rest and see it gone.
	s.Ack("a", m2)
	s.AckMany("a", []uint64{m5})
	s.Ack("c", m5)
	s.Ack("b", m6)
	if got := s.Stats().LiveMessages; got != 0 {
		t.Errorf("LiveMessages after acking everything = %d, want 0", got)
	}
}

func TestPublishCopiesCallerBuffers(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, Options{Dir: dir})
	data := []byte("original")
	queues := []string{"q"}
	id := publishNoWait(t, s, queues, data)
	copy(data, "CLOBBERD")
	queues[0] = "other"
	closeT(t, s)
	s, rec := openT(t, Options{Dir: dir})
	defer closeT(t, s)
	want := model{"q": {{id, []byte("original")}}}
	if !sameQueues(readAll(t, s, rec), want) {
		t.Fatalf("recovered:\n%v\nwant:\n%v", model(readAll(t, s, rec)), want)
	}
}

func TestDuplicateQueueAndEmptyPublish(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, Options{Dir: dir})
	dup := publishWait(t, s, []string{"q", "q"}, []byte("x"))
	publishWait(t, s, nil, []byte("nobody holds me"))
	empty := publishWait(t, s, []string{"q"}, nil)
	s.Ack("q", dup) // one ack releases the single (deduplicated) reference
	if got := s.Stats().LiveMessages; got != 1 {
		t.Fatalf("LiveMessages = %d, want 1", got)
	}
	closeT(t, s)
	s, rec := openT(t, Options{Dir: dir})
	defer closeT(t, s)
	if got := readAll(t, s, rec)["q"]; len(got) != 1 || got[0].ID != empty || len(got[0].Data) != 0 {
		t.Fatalf("recovered %v, want only empty message %d", model(readAll(t, s, rec)), empty)
	}
}

func TestIDsIncreaseAcrossRestartsAfterReclaim(t *testing.T) {
	dir := t.TempDir()
	var last uint64
	for round := range 4 {
		s, rec := openT(t, Options{Dir: dir, SegmentBytes: 512})
		if len(rec.Queues) != 0 {
			t.Fatalf("round %d: recovered %v, everything was acked", round, model(readAll(t, s, rec)))
		}
		for range 50 {
			id := publishWait(t, s, []string{"q"}, bytes.Repeat([]byte("z"), 40))
			if id <= last {
				t.Fatalf("round %d: id %d not above previous %d", round, id, last)
			}
			last = id
			s.Ack("q", id)
		}
		settle(t, s)
		if n := len(segmentFiles(t, dir)); n > 2 {
			t.Errorf("round %d: %d segment files left, dead ones should be deleted", round, n)
		}
		closeT(t, s)
	}
}

// TestRandomOperationsMatchModel drives the store with random operations against an
// in-memory model, with tiny segments so that rolling, reclamation and compaction all
// happen, and checks every reopen returns exactly the model.
func TestRandomOperationsMatchModel(t *testing.T) {
	seed := uint64(rand.Int64())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	dir := t.TempDir()
	queueNames := []string{"alpha", "beta", "gamma", "delta"}
	want := model{}
	opts := Options{Dir: dir, SegmentBytes: 2048, NoSync: true}
	s, _ := openT(t, opts)
	var compacted bool
	cursor := map[string]uint64{} // how far each queue has read its messages back
	var lastID uint64
	for op := range 6000 {
		switch r := rng.IntN(110); {
		case r >= 100 && r < 107:
			// Read a queue's messages back from where it stopped: exactly the next ones the
			// model holds, in order, also those still in the pending batch.
			q := queueNames[rng.IntN(len(queueNames))]
			if rng.IntN(4) == 0 {
				s.StartPaging(q, cursor[q])
			}
			msgs, through, err := s.ReadQueue(q, cursor[q], lastID, 1+rng.IntN(20), 1<<20)
			if err != nil {
				t.Fatalf("op %d: ReadQueue: %v", op, err)
			}
			var expect []Message
			for _, m := range want[q] {
				if m.ID > cursor[q] && m.ID <= through {
					expect = append(expect, m)
				}
			}
			if !sameQueues(model{q: msgs}, model{q: expect}) {
				t.Fatalf("op %d (seed %d): ReadQueue(%s, %d, %d) through %d returned\n%v\nwant\n%v", op, seed, q, cursor[q], lastID, through, model{q: msgs}, model{q: expect})
			}
			cursor[q] = through
		case r >= 107:
			q := queueNames[rng.IntN(len(queueNames))]
			if len(want[q]) == 0 {
				continue
			}
			a := want[q][rng.IntN(len(want[q]))].ID - 1
			b := a + uint64(rng.IntN(40))
			s.AckRange(q, a, b)
			want[q] = slices.DeleteFunc(want[q], func(m Message) bool { return m.ID > a && m.ID <= b })
		case r < 45:
			var qs []string
			for _, q := range queueNames {
				if rng.IntN(3) == 0 {
					qs = append(qs, q)
				}
			}
			data := make([]byte, rng.IntN(200))
			for i := range data {
				data[i] = byte(rng.IntN(256))
			}
			id := publishNoWait(t, s, qs, data)
			lastID = id
			for _, q := range qs {
				want[q] = append(want[q], Message{id, data})
			}
		case r < 80:
			q := queueNames[rng.IntN(len(queueNames))]
			if len(want[q]) == 0 {
				continue
			}
			i := rng.IntN(len(want[q]))
			s.Ack(q, want[q][i].ID)
			want[q] = slices.Delete(want[q], i, i+1)
		case r < 90:
			q := queueNames[rng.IntN(len(queueNames))]
			var ids []uint64
			for i := len(want[q]) - 1; i >= 0; i-- {
				if rng.IntN(2) == 0 {
					ids = append(ids, want[q][i].ID)
					want[q] = slices.Delete(want[q], i, i+1)
				}
			}
			s.AckMany(q, ids)
		case r < 92:
			q := queueNames[rng.IntN(len(queueNames))]
			s.DropQueue(q)
			delete(want, q)
			cursor[q] = 0
		case r < 97:
			if err := s.Sync(); err != nil {
				t.Fatalf("op %d: Sync: %v", op, err)
			}
		default:
			closeT(t, s)
			var rec *Recovered
			s, rec = openT(t, opts)
			clear(cursor)
			if !sameQueues(readAll(t, s, rec), want) {
				t.Fatalf("op %d (seed %d): recovered\n%v\nwant\n%v", op, seed, model(readAll(t, s, rec)), want)
			}
		}
		if !compacted {
			s.mu.Lock()
			for _, sg := range s.segments {
				compacted = compacted || sg.reclaimAfterBatch > 0
			}
			s.mu.Unlock()
		}
	}
	closeT(t, s)
	s, rec := openT(t, opts)
	defer closeT(t, s)
	if !sameQueues(readAll(t, s, rec), want) {
		t.Fatalf("final (seed %d): recovered\n%v\nwant\n%v", seed, model(readAll(t, s, rec)), want)
	}
	var live int
	seen := map[uint64]bool{}
	for _, msgs := range want {
		for _, m := range msgs {
			if !seen[m.ID] {
				seen[m.ID] = true
				live++
			}
		}
	}
	if got := s.Stats().LiveMessages; got != int64(live) {
		t.Errorf("LiveMessages = %d, want %d", got, live)
	}
	t.Logf("records %d, segments %d, live %d, compaction seen: %v", rec.Records, rec.Segments, live, compacted)
}

func TestClosedStore(t *testing.T) {
	s, _ := openT(t, Options{Dir: t.TempDir()})
	closeT(t, s)
	var got error
	if id := s.Publish([]string{"q"}, []byte("x"), func(err error) { got = err }); id != 0 {
		t.Errorf("Publish after Close returned id %d", id)
	}
	if !errors.Is(got, ErrClosed) {
		t.Errorf("done after Close got %v, want ErrClosed", got)
	}
	if err := s.Sync(); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close = %v", err)
	}
	s.Ack("q", 1)
	s.DropQueue("q")
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
}

func TestSecondOpenOfSameDirIsRefused(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, Options{Dir: dir})
	defer closeT(t, s)
	if _, _, err := Open(Options{Dir: dir, Logger: quietLogger()}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

// TestWriteFailureBreaksStore closes the segment file under the writer: the failed commit
// must fail its callbacks, and everything afterwards must fail fast instead of pretending.
func TestWriteFailureBreaksStore(t *testing.T) {
	s, _ := openT(t, Options{Dir: t.TempDir()})
	publishWait(t, s, []string{"q"}, []byte("before"))
	if err := s.activeFile.Close(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan error, 1)
	s.Publish([]string{"q"}, []byte("during"), func(err error) { ch <- err })
	if err := <-ch; err == nil {
		t.Fatal("publish to a closed file reported success")
	}
	if id := s.Publish([]string{"q"}, []byte("after"), func(err error) { ch <- err }); id != 0 {
		t.Errorf("Publish on a broken store returned id %d", id)
	}
	if err := <-ch; err == nil {
		t.Fatal("publish on a broken store reported success")
	}
	if err := s.Sync(); err == nil {
		t.Error("Sync on a broken store succeeded")
	}
	if err := s.Close(); err == nil {
		t.Error("Close of a broken store reported no error")
	}
}

func TestGroupCommitBatchesConcurrentPublishers(t *testing.T) {
	s, _ := openT(t, Options{Dir: t.TempDir()}) // real fdatasync: batching needs a slow sync
	defer closeT(t, s)
	const publishers, each = 8, 100
	errs := make(chan error, publishers)
	for p := range publishers {
		go func() {
			ch := make(chan error, 1)
			for i := range each {
				s.Publish([]string{fmt.Sprintf("q%d", p)}, []byte(fmt.Sprintf("m%d", i)), func(err error) { ch <- err })
				if err := <-ch; err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range publishers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	t.Logf("stats: %+v", st)
	if st.Records != publishers*each {
		t.Errorf("Records = %d, want %d", st.Records, publishers*each)
	}
	if st.RecordsPerFsync <= 1 {
		t.Errorf("RecordsPerFsync = %.2f with %d concurrent publishers: no group commit", st.RecordsPerFsync, publishers)
	}
}
