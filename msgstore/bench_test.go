package msgstore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var benchSizes = []int{256, 4096}

func sizeName(n int) string {
	if n >= 1024 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func reportStoreMetrics(b *testing.B, s *Store, elapsed time.Duration, before Stats) {
	st := s.Stats()
	fsyncs := st.Fsyncs - before.Fsyncs
	secs := elapsed.Seconds()
	b.ReportMetric(float64(b.N)/secs, "msgs/s")
	b.ReportMetric(float64(fsyncs)/secs, "fsyncs/s")
	if fsyncs > 0 {
		b.ReportMetric(float64(st.Records-before.Records)/float64(fsyncs), "records/fsync")
	}
}

// BenchmarkPublishSync is one publisher in confirm mode: publish, wait until durable, ack.
// It measures fdatasync latency more than anything the store does.
func BenchmarkPublishSync(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			s, _ := openT(b, Options{Dir: b.TempDir()})
			defer closeT(b, s)
			data := make([]byte, size)
			queues := []string{"bench"}
			ch := make(chan error, 1)
			done := func(err error) { ch <- err }
			b.SetBytes(int64(size))
			b.ResetTimer()
			before := s.Stats()
			start := time.Now()
			for range b.N {
				id := s.Publish(queues, data, done)
				if err := <-ch; err != nil {
					b.Fatal(err)
				}
				s.Ack("bench", id)
			}
			reportStoreMetrics(b, s, time.Since(start), before)
		})
	}
}

// BenchmarkPublishSyncParallel is eight publishers in confirm mode sharing group commits.
func BenchmarkPublishSyncParallel(b *testing.B) {
	const publishers = 8
	for _, size := range benchSizes {
		b.Run(sizeName(size), func(b *testing.B) {
			s, _ := openT(b, Options{Dir: b.TempDir()})
			defer closeT(b, s)
			data := make([]byte, size)
			b.SetBytes(int64(size))
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			before := s.Stats()
			start := time.Now()
			for p := range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					queue := fmt.Sprintf("bench-%d", p)
					queues := []string{queue}
					ch := make(chan error, 1)
					done := func(err error) { ch <- err }
					for next.Add(1) <= int64(b.N) {
						id := s.Publish(queues, data, done)
						if err := <-ch; err != nil {
							b.Error(err)
							return
						}
						s.Ack(queue, id)
					}
				}()
			}
			wg.Wait()
			reportStoreMetrics(b, s, time.Since(start), before)
		})
	}
}

// BenchmarkRecover measures Open on a log of 200k 256-byte messages of which half are
// still live: the restart time of a node with a backlog.
func BenchmarkRecover(b *testing.B) {
	const total = 200_000
	dir := b.TempDir()
	s, _ := openT(b, Options{Dir: dir, NoSync: true})
	data := make([]byte, 256)
	for i := range total {
		id := s.Publish([]string{"backlog"}, data, func(error) {})
		if i%2 == 0 {
			s.Ack("backlog", id)
		}
	}
	closeT(b, s)
	logBytes := dirBytes(b, dir)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		s, rec := openT(b, Options{Dir: dir, NoSync: true})
		if n := rec.Queues["backlog"].Messages; n != total/2 {
			b.Fatalf("recovered %d messages, want %d", n, total/2)
		}
		closeT(b, s)
	}
	elapsed := time.Since(start).Seconds() / float64(b.N)
	b.ReportMetric(total/2/elapsed, "live-msgs/s")
	b.ReportMetric(float64(logBytes)/elapsed/1e6, "log-MB/s")
}

// BenchmarkRecoverLarge times Open on a log of MSGSTORE_BENCH_MESSAGES (default 2 M) live
// 256-byte messages in one queue, built once in MSGSTORE_BENCH_DIR (kept between runs when
// set): the store-side part of a node's restart with a long queue.
func BenchmarkRecoverLarge(b *testing.B) {
	total := 2_000_000
	if v := os.Getenv("MSGSTORE_BENCH_MESSAGES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("MSGSTORE_BENCH_MESSAGES: %v", err)
		}
		total = n
	}
	dir := os.Getenv("MSGSTORE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	if _, err := os.Stat(filepath.Join(dir, "LOCK")); err != nil {
		s, _ := openT(b, Options{Dir: dir, NoSync: true})
		data := make([]byte, 256)
		for range total {
			s.Publish([]string{"backlog"}, data, func(error) {})
		}
		closeT(b, s)
	}
	b.ResetTimer()
	for range b.N {
		s, rec := openT(b, Options{Dir: dir, NoSync: true})
		if n := rec.Queues["backlog"].Messages; n != int64(total) {
			b.Fatalf("recovered %d messages, want %d", n, total)
		}
		b.ReportMetric(float64(rec.Duration.Milliseconds()), "scan-ms")
		closeT(b, s)
	}
}
