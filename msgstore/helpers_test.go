package msgstore

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openT(t testing.TB, opts Options) (*Store, *Recovered) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quietLogger()
	}
	s, rec, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", opts.Dir, err)
	}
	return s, rec
}

func closeT(t testing.TB, s *Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// publishWait publishes and waits for the durability callback.
func publishWait(t testing.TB, s *Store, queues []string, data []byte) uint64 {
	t.Helper()
	ch := make(chan error, 1)
	id := s.Publish(queues, data, func(err error) { ch <- err })
	if err := <-ch; err != nil {
		t.Fatalf("publish to %v: %v", queues, err)
	}
	return id
}

// publishNoWait publishes and fails the test later if the callback reports an error.
func publishNoWait(t testing.TB, s *Store, queues []string, data []byte) uint64 {
	t.Helper()
	return s.Publish(queues, data, func(err error) {
		if err != nil {
			t.Errorf("publish to %v: %v", queues, err)
		}
	})
}

// settle waits until the writer finished a commit and the reclamation that follows it:
// the second Sync's batch is taken only after the first commit's reclaim/compaction ran.
func settle(t testing.TB, s *Store) {
	t.Helper()
	for range 3 {
		if err := s.Sync(); err != nil {
			t.Fatalf("Sync: %v", err)
		}
	}
}

type model map[string][]Message

// readAll reads back every message rec says a queue holds, through ReadQueue in small
// steps (so the paging cursor is exercised), and checks the count matches rec.
func readAll(t testing.TB, s *Store, rec *Recovered) model {
	t.Helper()
	out := model{}
	for q, info := range rec.Queues {
		var got []Message
		after := uint64(0)
		for after < info.LastID {
			msgs, through, err := s.ReadQueue(q, after, info.LastID, 7, 1<<20)
			if err != nil {
				t.Fatalf("ReadQueue(%q, %d, %d): %v", q, after, info.LastID, err)
			}
			if through <= after && len(msgs) == 0 {
				t.Fatalf("ReadQueue(%q, %d, %d) made no progress", q, after, info.LastID)
			}
			for _, m := range msgs {
				if m.ID <= after || m.ID > through {
					t.Fatalf("ReadQueue(%q, %d) returned id %d outside (after, through=%d]", q, after, m.ID, through)
				}
			}
			got = append(got, msgs...)
			after = through
		}
		if int64(len(got)) != info.Messages {
			t.Fatalf("queue %q: read %d messages, recovery counted %d", q, len(got), info.Messages)
		}
		out[q] = got
	}
	return out
}

func (m model) String() string {
	var b bytes.Buffer
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s:", k)
		for _, msg := range m[k] {
			fmt.Fprintf(&b, " %d(%q)", msg.ID, trunc(msg.Data))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func trunc(b []byte) string {
	if len(b) > 12 {
		return string(b[:12]) + "…"
	}
	return string(b)
}

// sameQueues compares recovered queues with the expectation, ignoring empty queues.
func sameQueues(got, want map[string][]Message) bool {
	count := func(m map[string][]Message) int {
		n := 0
		for _, v := range m {
			if len(v) > 0 {
				n++
			}
		}
		return n
	}
	if count(got) != count(want) {
		return false
	}
	for q, w := range want {
		g := got[q]
		if len(g) != len(w) {
			return false
		}
		for i := range w {
			if g[i].ID != w[i].ID || !bytes.Equal(g[i].Data, w[i].Data) {
				return false
			}
		}
	}
	return true
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	names, err := listSegments(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = filepath.Join(dir, segmentFileName(n))
	}
	return out
}

func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	for _, p := range segmentFiles(t, dir) {
		info, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		total += info.Size()
	}
	return total
}
