// Package msgstore owns the node's on-disk message log: the durable copy of persistent
// messages held by durable queues. It is an append-only log of segment files with group
// commit (one write and one fdatasync per batch, shared by all publishers and queues of
// the node), checksummed records, torn-tail repair on open, and reclamation of disk space
// by deleting dead segments oldest-first and compacting a mostly-dead oldest segment.
// Segment files are preallocated so that a commit's fdatasync does not also have to
// journal a file-size change; the zero tail this leaves is recognised as a clean end.
//
// The store does not interpret queue keys or message bodies; the queue layer decides what
// to persist and keeps its own in-memory queues, using Open's Recovered to refill them.
package msgstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// DefaultSegmentBytes is the roll-over size of segment files when Options leaves it zero.
const DefaultSegmentBytes = 64 << 20

var (
	// ErrClosed is returned (or passed to done) for calls after Close.
	ErrClosed = errors.New("msgstore: store is closed")
	// ErrLocked means another live process holds the store directory.
	ErrLocked = errors.New("msgstore: directory is locked by another process")
	// ErrTooLarge rejects a message whose record would exceed the format's limit.
	ErrTooLarge = errors.New("msgstore: message too large")
)

// Options configures Open.
type Options struct {
	Dir          string // created if missing
	SegmentBytes int64  // roll to a new segment file past this size (default 64 MiB); also the preallocation size
	Logger       *slog.Logger

	// NoSync skips fdatasync: a "durable" confirm then only means the record reached the
	// kernel. FOR TESTS AND BENCHMARKS ONLY — with NoSync a power cut or kernel crash loses
	// confirmed messages (a process kill -9 does not, the page cache survives it).
	NoSync bool
}

// Recovered is what Open found on disk.
type Recovered struct {
	// Queues maps queue key (opaque to the store) to its live messages in publish (id)
	// order. A message held by several queues shares one Data slice among them.
	Queues map[string][]Message
	// TruncatedBytes counts the bytes of a torn/corrupt tail of the last segment that were
	// dropped, up to the last non-zero byte (zeros are preallocated space, not damage).
	TruncatedBytes int64
	Segments       int   // segment files scanned
	Records        int64 // valid records read
	Duration       time.Duration
}

// Message is one live message. Data is opaque to the store and must not be modified.
type Message struct {
	ID   uint64
	Data []byte
}

// Stats are cumulative counters since Open (Segments and LiveMessages are current values).
type Stats struct {
	Fsyncs          int64 // group commits that wrote something (each one fdatasync unless NoSync)
	Records         int64 // records written
	BytesWritten    int64
	Segments        int64
	LiveMessages    int64
	RecordsPerFsync float64
}

// msgMeta is the running store's accounting for one live message.
type msgMeta struct {
	seg  uint64 // segment holding its current publish record; 0 while not yet in a batch
	size int32  // size of that record
	refs int32  // queues still holding it
}

// batch is a group of encoded records committed with one write and one fdatasync.
type batch struct {
	buf     []byte
	dones   []func(error) // publish callbacks, in record order
	ids     []uint64      // ids of publish records, to tag them with their segment
	records int64
}

func (b *batch) reset() {
	clear(b.dones) // drop the closures so they can be collected
	b.dones = b.dones[:0]
	b.ids = b.ids[:0]
	b.records = 0
	// Keep the buffer for reuse unless a burst (or a compaction) blew it up.
	if cap(b.buf) > 16<<20 {
		b.buf = nil
	} else {
		b.buf = b.buf[:0]
	}
}

func (b *batch) empty() bool { return len(b.buf) == 0 && len(b.dones) == 0 }

type syncWaiter struct {
	batch uint64
	ch    chan error
}

// Store is an open message store. All methods are safe for concurrent use.
type Store struct {
	dir          string
	segmentBytes int64
	noSync       bool
	log          *slog.Logger
	lockFile     *os.File

	wake         chan struct{} // buffered(1): "there is work"
	writerDone   chan struct{}
	activeFile   *os.File // owned by the writer goroutine
	activeOffset int64    // end of the records in activeFile; owned by the writer

	mu         sync.Mutex
	nextID     uint64
	pending    *batch // accumulating; the next group commit
	spare      *batch // the other buffer, nil while the writer commits it
	batchSeq   uint64 // number of the pending batch
	syncedSeq  uint64 // highest batch number that is durable
	waiters    []syncWaiter
	closing    bool
	broken     error // first write/sync failure: the store refuses all further work
	msgs       map[uint64]msgMeta
	queues     map[string]map[uint64]struct{}
	segments   []*segment // oldest first; the last one is the active segment
	segByName  map[uint64]*segment
	stats      Stats
	ackScratch []uint64
}

// Open recovers the store: scans every segment in order, verifies each record's checksum,
// truncates a torn or corrupt tail of the LAST segment (and reports it), and returns what is
// still live: for each queue, its unacked messages in publish order.
func Open(opts Options) (*Store, *Recovered, error) {
	if opts.Dir == "" {
		return nil, nil, errors.New("msgstore: Options.Dir is empty")
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = DefaultSegmentBytes
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("msgstore: create dir: %w", err)
	}
	lockFile, err := lockDir(filepath.Join(opts.Dir, "LOCK"))
	if err != nil {
		return nil, nil, fmt.Errorf("msgstore: %w", err)
	}
	s, rec, err := openLocked(opts, log)
	if err != nil {
		lockFile.Close()
		return nil, nil, err
	}
	s.lockFile = lockFile
	go s.runWriter()
	return s, rec, nil
}

func openLocked(opts Options, log *slog.Logger) (*Store, *Recovered, error) {
	st, segs, rec, err := recoverDir(opts.Dir, log)
	if err != nil {
		return nil, nil, fmt.Errorf("msgstore: open %s: %w", opts.Dir, err)
	}
	s := &Store{
		dir:          opts.Dir,
		segmentBytes: opts.SegmentBytes,
		noSync:       opts.NoSync,
		log:          log,
		wake:         make(chan struct{}, 1),
		writerDone:   make(chan struct{}),
		pending:      &batch{},
		spare:        &batch{},
		batchSeq:     1,
		msgs:         make(map[uint64]msgMeta, len(st.msgs)),
		queues:       st.queues,
		segments:     segs,
		segByName:    make(map[uint64]*segment, len(segs)),
	}
	for id, m := range st.msgs {
		s.msgs[id] = msgMeta{seg: m.seg, size: m.size, refs: int32(len(m.queues))}
	}
	for q, set := range s.queues {
		if len(set) == 0 {
			delete(s.queues, q)
		}
	}
	// Ids keep increasing across restarts even when every segment holding the highest id
	// was reclaimed: a segment is named at creation after the next id to be assigned, and
	// the active segment is never deleted.
	s.nextID = max(st.maxID+1, 1)
	if len(segs) > 0 {
		s.nextID = max(s.nextID, segs[len(segs)-1].name)
	}
	for _, sg := range segs {
		s.segByName[sg.name] = sg
	}
	if len(segs) == 0 {
		sg, f, err := s.createSegment(s.nextID)
		if err != nil {
			return nil, nil, err
		}
		s.segments = append(s.segments, sg)
		s.segByName[sg.name] = sg
		s.activeFile = f
	} else {
		active := segs[len(segs)-1]
		f, err := os.OpenFile(active.path, os.O_WRONLY, 0)
		if err != nil {
			return nil, nil, fmt.Errorf("msgstore: open active segment: %w", err)
		}
		s.activeFile = f
		s.activeOffset = active.size
		s.preallocate(f, active.path)
	}
	s.stats.Segments = int64(len(s.segments))
	s.log.Info("msgstore: recovered", "dir", opts.Dir, "segments", rec.Segments, "records", rec.Records,
		"live_messages", len(s.msgs), "queues", len(rec.Queues), "truncated_bytes", rec.TruncatedBytes,
		"duration", rec.Duration)
	return s, rec, nil
}

// createSegment creates an empty segment file and makes its directory entry durable, so a
// record synced into it can never vanish with the entry.
func (s *Store) createSegment(name uint64) (*segment, *os.File, error) {
	path := segmentPath(s.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("msgstore: create segment: %w", err)
	}
	s.preallocate(f, path)
	if !s.noSync {
		if err := syncDir(s.dir); err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("msgstore: create segment %s: %w", path, err)
		}
	}
	return &segment{name: name, path: path}, f, nil
}

// preallocate reserves the segment's full size up front. With the file size fixed,
// fdatasync after each batch only flushes data, not a file-size change: on ext4 this
// measured ~1.6× more syncs per second than growing the file. Best effort: without it
// the store is just slower.
func (s *Store) preallocate(f *os.File, path string) {
	if err := preallocateFile(f, s.segmentBytes); err != nil {
		s.log.Debug("msgstore: preallocation unavailable", "file", path, "err", err)
	}
}

// Publish appends one record saying message data is held by each of queues (a message
// routed to several durable queues is written once). It returns the message id at once
// (ids increase monotonically per store, also across restarts) and calls done exactly once,
// from the store's writer goroutine, after the record is on disk (fdatasync) — or with an
// error if the write failed (then the store is broken: every later call fails fast and
// Publish returns 0). After Close, done is called with ErrClosed before Publish returns.
// The store copies data and queues; the caller may reuse them once Publish returns.
// done runs on the writer goroutine: it must be quick and must not call Sync or Close
// (it may call Publish, Ack, AckMany and DropQueue).
func (s *Store) Publish(queues []string, data []byte, done func(error)) uint64 {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		done(ErrClosed)
		return 0
	}
	if s.broken != nil {
		// Still delivered by the writer, so callers see one callback discipline.
		s.pending.dones = append(s.pending.dones, done)
		s.mu.Unlock()
		s.signal()
		return 0
	}
	id := s.nextID
	size := publishRecordSize(id, queues, data)
	if size-recordHeaderSize > maxRecordBody {
		s.mu.Unlock()
		done(fmt.Errorf("msgstore: publish %d bytes to %d queues: %w", len(data), len(queues), ErrTooLarge))
		return 0
	}
	s.nextID++
	b := s.pending
	b.buf = appendPublish(b.buf, id, queues, data)
	b.dones = append(b.dones, done)
	b.ids = append(b.ids, id)
	b.records++
	var refs int32
	for _, q := range queues {
		set := s.queues[q]
		if set == nil {
			set = make(map[uint64]struct{})
			s.queues[q] = set
		}
		if _, dup := set[id]; !dup {
			set[id] = struct{}{}
			refs++
		}
	}
	if refs > 0 {
		s.msgs[id] = msgMeta{size: int32(size), refs: refs}
	}
	s.mu.Unlock()
	s.signal()
	return id
}

// Ack records that queue no longer holds message id (acked, or dead-lettered/expired away).
// It does not wait for the disk: it rides along with the next group commit. After a crash
// an ack that was not yet synced may be lost, so the message comes back (at-least-once) —
// never the other way round. Acks for ids the queue does not hold are ignored.
func (s *Store) Ack(queue string, id uint64) {
	s.mu.Lock()
	if s.closing || s.broken != nil {
		s.mu.Unlock()
		return
	}
	if s.releaseLocked(queue, id) {
		s.ackScratch = append(s.ackScratch[:0], id)
		s.pending.buf = appendAck(s.pending.buf, queue, s.ackScratch)
		s.pending.records++
	}
	s.mu.Unlock()
	s.signal()
}

// AckMany is Ack for a batch (one lock acquisition, one record).
func (s *Store) AckMany(queue string, ids []uint64) {
	s.mu.Lock()
	if s.closing || s.broken != nil {
		s.mu.Unlock()
		return
	}
	held := s.ackScratch[:0]
	for _, id := range ids {
		if s.releaseLocked(queue, id) {
			held = append(held, id)
		}
	}
	if len(held) > 0 {
		s.pending.buf = appendAck(s.pending.buf, queue, held)
		s.pending.records++
	}
	if cap(held) <= 4096 {
		s.ackScratch = held[:0]
	}
	s.mu.Unlock()
	s.signal()
}

// DropQueue records that a queue was deleted or purged: all its messages are gone for good.
// Messages published to the same key afterwards belong to the new queue.
func (s *Store) DropQueue(queue string) {
	s.mu.Lock()
	if s.closing || s.broken != nil {
		s.mu.Unlock()
		return
	}
	set, ok := s.queues[queue]
	if !ok {
		s.mu.Unlock()
		return
	}
	for id := range set {
		s.unrefLocked(id)
	}
	delete(s.queues, queue)
	s.pending.buf = appendDropQueue(s.pending.buf, queue)
	s.pending.records++
	s.mu.Unlock()
	s.signal()
}

// releaseLocked removes id from queue and reports whether the queue held it.
func (s *Store) releaseLocked(queue string, id uint64) bool {
	set := s.queues[queue]
	if _, ok := set[id]; !ok {
		return false
	}
	delete(set, id)
	if len(set) == 0 {
		delete(s.queues, queue)
	}
	s.unrefLocked(id)
	return true
}

func (s *Store) unrefLocked(id uint64) {
	m, ok := s.msgs[id]
	if !ok {
		return
	}
	m.refs--
	if m.refs > 0 {
		s.msgs[id] = m
		return
	}
	delete(s.msgs, id)
	if sg := s.segByName[m.seg]; sg != nil {
		sg.liveMsgs--
		sg.liveBytes -= int64(m.size)
	}
}

// signal wakes the writer without blocking; one pending wake-up is enough because the
// writer drains everything that accumulated.
func (s *Store) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Sync forces a group commit and waits for it (used at clean shutdown and in tests).
func (s *Store) Sync() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.broken != nil {
		err := s.broken
		s.mu.Unlock()
		return err
	}
	ch := make(chan error, 1)
	s.waiters = append(s.waiters, syncWaiter{batch: s.batchSeq, ch: ch})
	s.mu.Unlock()
	s.signal()
	return <-ch
}

// Stats returns current counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Segments = int64(len(s.segments))
	st.LiveMessages = int64(len(s.msgs))
	if st.Fsyncs > 0 {
		st.RecordsPerFsync = float64(st.Records) / float64(st.Fsyncs)
	}
	return st
}

// Close syncs everything pending, stops the writer goroutine and closes the files. It
// returns the store's failure if it broke earlier. Calling it twice returns ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	s.closing = true
	s.mu.Unlock()
	s.signal()
	<-s.writerDone

	var errs []error
	s.mu.Lock()
	if s.broken != nil {
		errs = append(errs, s.broken)
	}
	s.mu.Unlock()
	if err := s.activeFile.Close(); err != nil {
		errs = append(errs, fmt.Errorf("msgstore: close active segment: %w", err))
	}
	if err := s.lockFile.Close(); err != nil {
		errs = append(errs, fmt.Errorf("msgstore: close lock file: %w", err))
	}
	return errors.Join(errs...)
}
