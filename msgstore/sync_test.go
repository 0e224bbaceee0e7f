package msgstore

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// syncCounter wraps the real fdatasync and counts the syncs that entered and returned, so a
// confirm callback can check that the sync of its batch had returned before it ran. A kill -9
// test cannot see a missing sync (the page cache survives the process); this one can.
type syncCounter struct {
	entered, returned atomic.Int64
	// hold, if set, is called after the counter is raised and before the real sync: it can
	// block the sync or make it fail.
	hold func(n int64) error
}

func (c *syncCounter) sync(f *os.File) error {
	n := c.entered.Add(1)
	if c.hold != nil {
		if err := c.hold(n); err != nil {
			return err
		}
	}
	err := fdatasync(f)
	if err == nil {
		c.returned.Add(1)
	}
	return err
}

// A confirm is sent only after its batch is synced (docs/storage.md): with the first sync held
// open, the publish it carries is not confirmed; once it returns, the confirm follows. Then,
// under concurrent publishers, every confirm finds at least one more sync returned than had
// started when its Publish was called (the sync of its batch starts after the record joined
// the batch).
func TestConfirmOnlyAfterItsBatchIsSynced(t *testing.T) {
	release := make(chan struct{})
	inSync := make(chan struct{})
	c := &syncCounter{hold: func(n int64) error {
		if n == 1 {
			close(inSync)
			<-release
		}
		return nil
	}}
	s, _ := openT(t, Options{Dir: t.TempDir(), syncData: c.sync})
	defer closeT(t, s)

	done := make(chan error, 1)
	s.Publish([]string{"q"}, []byte("first"), func(err error) { done <- err })
	select {
	case <-inSync:
	case err := <-done:
		t.Fatalf("confirmed (err %v) before its batch's sync even started", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the batch was never synced")
	}
	// The sync is stuck; a store that confirms before (or while) syncing has done so by now.
	select {
	case err := <-done:
		t.Fatalf("confirmed (err %v) while its batch's sync had not returned", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("confirm after a good sync: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no confirm after the sync returned")
	}

	const publishers, each = 8, 200
	var violations atomic.Int64
	var firstViolation sync.Once
	var violation string
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := make(chan error, 1)
			for i := range each {
				started := c.entered.Load()
				s.Publish([]string{fmt.Sprintf("q%d", p)}, []byte(fmt.Sprintf("m%d", i)), func(err error) {
					if got := c.returned.Load(); err == nil && got <= started {
						violations.Add(1)
						firstViolation.Do(func() {
							violation = fmt.Sprintf("q%d m%d confirmed with %d syncs returned; %d had started before its publish", p, i, got, started)
						})
					}
					ch <- err
				})
				if err := <-ch; err != nil {
					t.Errorf("publish q%d m%d: %v", p, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := violations.Load(); n > 0 {
		t.Fatalf("%d confirms ran before the sync of their batch returned; first: %s", n, violation)
	}
	if got := c.returned.Load(); got < 2 {
		t.Fatalf("only %d syncs for %d publishes", got, publishers*each+1)
	}
}

var errInjectedSync = errors.New("injected: fdatasync EIO")

// A failed sync confirms nothing: every publish of the failed batch and every later one
// reports the error, no confirm runs once the failing sync has started, and each message
// confirmed before it is still there after a restart.
func TestNoConfirmAfterAFailedSync(t *testing.T) {
	const failAt = 5
	var failed atomic.Bool
	c := &syncCounter{hold: func(n int64) error {
		if n == failAt {
			failed.Store(true)
			return errInjectedSync
		}
		return nil
	}}
	dir := t.TempDir()
	s, _ := openT(t, Options{Dir: dir, syncData: c.sync})

	const publishers = 4
	var (
		mu           sync.Mutex
		confirmed    = map[string]bool{}
		failedAcks   int
		lateConfirms []string
	)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ch := make(chan error, 1)
			for i := 0; i < 5000; i++ {
				body := fmt.Sprintf("p%d-%d", p, i)
				s.Publish([]string{"q"}, []byte(body), func(err error) {
					mu.Lock()
					switch {
					case err == nil && failed.Load():
						lateConfirms = append(lateConfirms, body)
					case err == nil:
						confirmed[body] = true
					case errors.Is(err, errInjectedSync):
						failedAcks++
					}
					mu.Unlock()
					ch <- err
				})
				if err := <-ch; err != nil {
					if !errors.Is(err, errInjectedSync) {
						t.Errorf("publish %s failed with %v, want the injected sync error", body, err)
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	if !failed.Load() {
		t.Fatalf("the sync to fail (number %d) never ran: %d syncs returned", failAt, c.returned.Load())
	}
	if len(lateConfirms) > 0 {
		t.Fatalf("%d publishes confirmed after the failing sync started: %v", len(lateConfirms), lateConfirms[:min(len(lateConfirms), 10)])
	}
	if len(confirmed) < failAt-1 {
		t.Fatalf("only %d publishes confirmed by %d good syncs", len(confirmed), failAt-1)
	}
	if failedAcks < publishers {
		t.Fatalf("%d publishes reported the sync error, want at least one per publisher (%d)", failedAcks, publishers)
	}
	if err := s.Sync(); !errors.Is(err, errInjectedSync) {
		t.Fatalf("Sync after a failed sync: %v", err)
	}
	if err := s.Close(); err == nil {
		t.Fatal("Close of a store whose sync failed reported no error")
	}

	s2, rec := openT(t, Options{Dir: dir})
	defer closeT(t, s2)
	got := map[string]bool{}
	for _, m := range readAll(t, s2, rec)["q"] {
		got[string(m.Data)] = true
	}
	for body := range confirmed {
		if !got[body] {
			t.Errorf("confirmed %s is gone after a restart", body)
		}
	}
}
