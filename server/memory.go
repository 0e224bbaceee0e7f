package server

import (
	"bufio"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/wire"
)

// memoryAlarm implements RabbitMQ's memory high-watermark: while the broker's heap is above the
// limit, publishing connections are sent connection.blocked and not read from until it falls
// back below; consumers keep draining. The heap (live objects after a GC), not RSS, is measured,
// because Go returns freed memory to the OS lazily and RSS would keep the alarm on long after
// consumers drained the queues.
type memoryAlarm struct {
	limit   atomic.Uint64
	blocked atomic.Bool // memory or disk (limits.go)
	memHigh atomic.Bool
	memUsed atomic.Uint64
	disk    diskAlarm
	mu      sync.Mutex
	cleared chan struct{} // closed when the alarm clears; replaced when it raises
	stop    chan struct{}
	done    chan struct{}
	sample  []metrics.Sample
}

const memoryCheckInterval = 200 * time.Millisecond

func newMemoryAlarm(limit uint64) *memoryAlarm {
	a := &memoryAlarm{
		cleared: make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		sample:  []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}},
	}
	close(a.cleared)
	a.limit.Store(limit)
	return a
}

func (a *memoryAlarm) heapBytes() uint64 {
	metrics.Read(a.sample)
	if a.sample[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return a.sample[0].Value.Uint64()
}

func (a *memoryAlarm) run() {
	defer close(a.done)
	t := time.NewTicker(memoryCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
		}
		limit := a.limit.Load()
		used := a.heapBytes()
		if used > limit {
			// Unswept garbage counts as heap objects until the next GC: collect before judging.
			runtime.GC()
			used = a.heapBytes()
		}
		a.memUsed.Store(used)
		a.memHigh.Store(used > limit)
		a.disk.check()
		a.set(used > limit || a.disk.low.Load())
	}
}

func (a *memoryAlarm) set(on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if on == a.blocked.Load() {
		return
	}
	a.blocked.Store(on)
	if on {
		a.cleared = make(chan struct{})
	} else {
		close(a.cleared)
	}
}

// clearedCh returns a channel closed once the alarm is off.
func (a *memoryAlarm) clearedCh() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cleared
}

func (a *memoryAlarm) close() {
	close(a.stop)
	<-a.done
}

// defaultMemoryLimit is RabbitMQ's default vm_memory_high_watermark: 40% of physical memory.
func defaultMemoryLimit() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) >= 2 && fields[0] == "MemTotal:" {
				if kb, err := strconv.ParseUint(fields[1], 10, 64); err == nil {
					return kb * 1024 * 4 / 10
				}
			}
		}
	}
	return 1 << 30
}

// SetMemoryHighWatermark changes the memory limit (bytes of heap) at run time.
func (s *Server) SetMemoryHighWatermark(limit uint64) { s.mem.limit.Store(limit) }

// waitForMemory holds a publishing connection while the memory alarm is on: the client is told
// with connection.blocked (if it declared the capability) and nothing more is read from it until
// the alarm clears, when connection.unblocked follows.
func (c *conn) waitForMemory() {
	if !c.s.mem.blocked.Load() {
		return
	}
	c.flushConfirms()
	reason := c.s.mem.reason()
	if c.blockedNotify {
		c.sendMethod(0, &wire.ConnectionBlocked{Reason: reason})
	}
	c.log.Info("publisher blocked: "+reason, "mem_limit_bytes", c.s.mem.limit.Load(), "disk_free_limit_bytes", c.s.mem.disk.limit.Load())
	select {
	case <-c.s.mem.clearedCh():
	case <-c.s.closingCh:
		return
	}
	if c.blockedNotify {
		c.sendMethod(0, &wire.ConnectionUnblocked{})
	}
}
