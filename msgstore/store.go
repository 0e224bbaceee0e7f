// Package msgstore owns the node's on-disk message log: the durable copy of persistent
// messages held by durable queues. It is an append-only log of segment files with group
// commit (one write and one fdatasync per batch, shared by all publishers and queues of
// the node), checksummed records, torn-tail repair on open, and reclamation of disk space
// by deleting dead segments oldest-first and compacting a mostly-dead oldest segment.
// Segment files are preallocated so that a commit's fdatasync does not also have to
// journal a file-size change; the zero tail this leaves is recognised as a clean end.
//
// The store does not interpret queue keys or message bodies; the queue layer decides what
// to persist. It keeps exact per-queue membership in compact id sets (bits per message), so
// a queue far larger than RAM can leave its backlog here and read it back in publish order
// (ReadQueue), after a restart too: recovery scans record headers and loads no bodies.
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

	// syncData replaces fdatasync of segment data when set: a seam for tests that must see
	// (or fail) the sync a confirm depends on, which a kill -9 test cannot (the page cache
	// survives it).
	syncData func(*os.File) error
}

// Recovered is what Open found on disk.
type Recovered struct {
	// Queues maps queue key (opaque to the store) to what it still holds. The messages
	// themselves stay on disk: read them in publish order with ReadQueue, so a node with a
	// backlog far larger than its RAM still starts (and starts fast).
	Queues map[string]QueueInfo
	// TruncatedBytes counts the bytes of a torn/corrupt tail of the last segment that were
	// dropped, up to the last non-zero byte (zeros are preallocated space, not damage).
	TruncatedBytes int64
	Segments       int   // segment files scanned
	Records        int64 // valid records read
	Duration       time.Duration
}

// QueueInfo describes one queue's live messages after recovery.
type QueueInfo struct {
	Messages int64
	// Bytes estimates the size of their data (from per-segment averages): a gauge for
	// length limits and flow control, not an exact sum.
	Bytes int64
	// LastID is the highest id the queue holds; ReadQueue(key, 0, LastID, …) reads them all.
	LastID uint64
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

// queueState is the store's whole accounting for one queue key: which ids it holds (a
// compact set, not a map), how many of them each segment carries (so dropping a queue
// costs one step per segment, not per message), and its paging cursor.
type queueState struct {
	live    idSet
	segRefs map[uint64]int64 // segment name (0: the pending batch) → ids of this queue whose current record is there
	// published counts publish records naming this queue since Open (or its last drop); a
	// paging queue compares it with the messages it was handed to know none is in flight.
	published uint64
	rd        *reader // non-nil while the queue reads its messages from the log
	touched   uint64  // batch number in which segRefs[0] was last counted, to list it once per batch
}

// movedLoc is where a compaction copy lives. Compaction copies are the only records out of
// id order, and only messages a queue holds in RAM are copied, so this map stays small.
type movedLoc struct {
	seg  uint64 // 0 while the copy is in the pending batch (off is then into its buffer)
	off  int64
	refs int32 // queues still holding the message
}

// idRange says which segment holds the original publish records of ids lo..hi: ids are
// handed out in log order, so a binary search over these finds any message.
type idRange struct {
	lo, hi uint64
	seg    *segment
}

// pubRec is one publish record in a batch buffer.
type pubRec struct {
	id   uint64
	off  int
	copy bool
}

// batch is a group of encoded records committed with one write and one fdatasync.
type batch struct {
	buf       []byte
	dones     []func(error) // publish callbacks, in record order
	pubs      []pubRec      // publish records, to place them in their segment at commit
	firstOrig uint64        // id of the first original publish record in buf (0: none)
	touched   []*queueState // queues with references counted in the pending batch
	records   int64
}

func (b *batch) reset() {
	clear(b.dones) // drop the closures so they can be collected
	b.dones = b.dones[:0]
	b.pubs = b.pubs[:0]
	clear(b.touched)
	b.touched = b.touched[:0]
	b.firstOrig = 0
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
	syncData     func(*os.File) error
	log          *slog.Logger
	lockFile     *os.File

	wake         chan struct{} // buffered(1): "there is work"
	writerDone   chan struct{}
	activeFile   *os.File // owned by the writer goroutine
	activeOffset int64    // end of the records in activeFile; owned by the writer

	mu        sync.Mutex
	nextID    uint64
	pending   *batch // accumulating; the next group commit
	spare     *batch // the other buffer, nil while the writer commits it
	writing   *batch // the batch being written (its records are read from here meanwhile)
	writingAt int64  // its offset in the active segment
	batchSeq  uint64 // number of the pending batch
	syncedSeq uint64 // highest batch number that is durable
	waiters   []syncWaiter
	closing   bool
	broken    error // first write/sync failure: the store refuses all further work
	queues    map[string]*queueState
	moved     map[uint64]movedLoc
	ranges    []idRange
	pendLive  int64 // references held by records of the pending batch
	pendTotal int64
	segments  []*segment // oldest first; the last one is the active segment
	segByName map[uint64]*segment
	stats     Stats
	ackIDs    []uint64
}

// Open recovers the store: scans every segment in order, verifies each record's checksum,
// truncates a torn or corrupt tail of the LAST segment (and reports it), and returns what is
// still live per queue. Bodies are not loaded: ReadQueue reads them when they are needed.
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
	s := &Store{
		dir:          opts.Dir,
		segmentBytes: opts.SegmentBytes,
		noSync:       opts.NoSync,
		syncData:     opts.syncData,
		log:          log,
		wake:         make(chan struct{}, 1),
		writerDone:   make(chan struct{}),
		pending:      &batch{},
		spare:        &batch{},
		batchSeq:     1,
		queues:       make(map[string]*queueState),
		moved:        make(map[uint64]movedLoc),
		segByName:    make(map[uint64]*segment),
	}
	rec, maxID, err := s.recoverDir()
	if err != nil {
		return nil, nil, fmt.Errorf("msgstore: open %s: %w", opts.Dir, err)
	}
	// Ids keep increasing across restarts even when every segment holding the highest id
	// was reclaimed: a segment is named at creation after the next id to be assigned, and
	// the active segment is never deleted.
	s.nextID = max(maxID+1, 1)
	if len(s.segments) > 0 {
		s.nextID = max(s.nextID, s.segments[len(s.segments)-1].name)
	}
	if len(s.segments) == 0 {
		sg, f, err := s.createSegment(s.nextID)
		if err != nil {
			return nil, nil, err
		}
		s.segments = append(s.segments, sg)
		s.segByName[sg.name] = sg
		s.activeFile = f
	} else {
		active := s.segments[len(s.segments)-1]
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
		"live_messages", s.liveMessagesLocked(), "queues", len(rec.Queues), "truncated_bytes", rec.TruncatedBytes,
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
	b.pubs = append(b.pubs, pubRec{id: id, off: len(b.buf)})
	if b.firstOrig == 0 {
		b.firstOrig = id
	}
	b.buf = appendPublish(b.buf, id, queues, data)
	b.dones = append(b.dones, done)
	b.records++
	for _, q := range queues {
		qs := s.queueLocked(q)
		if s.holdLocked(qs, id, 0) {
			qs.published++
		}
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
	defer s.mu.Unlock()
	if s.closing || s.broken != nil {
		return
	}
	if qs := s.queues[queue]; qs != nil && s.releaseLocked(qs, id) {
		s.ackIDs = append(s.ackIDs[:0], id)
		s.pending.buf = appendAck(s.pending.buf, queue, s.ackIDs)
		s.pending.records++
		s.signal()
	}
}

// AckMany is Ack for a batch (one lock acquisition, one record).
func (s *Store) AckMany(queue string, ids []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	qs := s.queues[queue]
	if s.closing || s.broken != nil || qs == nil {
		return
	}
	held := s.ackIDs[:0]
	for _, id := range ids {
		if s.releaseLocked(qs, id) {
			held = append(held, id)
		}
	}
	if len(held) > 0 {
		s.pending.buf = appendAck(s.pending.buf, queue, held)
		s.pending.records++
		s.signal()
	}
	if cap(held) <= 4096 {
		s.ackIDs = held[:0]
	}
}

// AckRange releases every message queue holds with an id in (after, upTo]: a purge of
// messages that were never read back into memory, written as one small record however
// many messages it covers.
func (s *Store) AckRange(queue string, after, upTo uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	qs := s.queues[queue]
	if s.closing || s.broken != nil || qs == nil || upTo <= after {
		return
	}
	if s.releaseRangeLocked(qs, after, upTo) > 0 {
		s.pending.buf = appendAckRange(s.pending.buf, queue, after, upTo)
		s.pending.records++
		s.signal()
	}
}

// DropQueue records that a queue was deleted: all its messages are gone for good.
// Messages published to the same key afterwards belong to the new queue.
func (s *Store) DropQueue(queue string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	qs := s.queues[queue]
	if s.closing || s.broken != nil || qs == nil {
		return
	}
	s.dropLocked(queue, qs)
	s.pending.buf = appendDropQueue(s.pending.buf, queue)
	s.pending.records++
	s.signal()
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

// Published counts the publish records naming queue since Open (or since its last drop): a
// queue that takes over messages written for it by someone else (a replica promoted to
// leader) starts its StopPaging accounting from here.
func (s *Store) Published(queue string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if qs := s.queues[queue]; qs != nil {
		return qs.published
	}
	return 0
}

// Stats returns current counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Segments = int64(len(s.segments))
	st.LiveMessages = s.liveMessagesLocked()
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
