package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

const rssSampleInterval = 250 * time.Millisecond

// processMemory is what /proc/PID/status says about a process's resident memory, in kB.
type processMemory struct {
	rssKB int64 // VmRSS: resident now
	hwmKB int64 // VmHWM: peak resident since the process started
}

func readProcessMemory(pid int) (processMemory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return processMemory{}, fmt.Errorf("reading memory of broker pid %d: %w", pid, err)
	}
	defer f.Close()
	mem, err := parseProcStatus(f)
	if err != nil {
		return processMemory{}, fmt.Errorf("reading memory of broker pid %d: %w", pid, err)
	}
	return mem, nil
}

// parseProcStatus reads VmRSS and VmHWM ("VmRSS:	  121860 kB") from a /proc status file.
func parseProcStatus(r io.Reader) (processMemory, error) {
	var mem processMemory
	var sawRSS bool
	scanner := bufio.NewScanner(r)
	for scanner.Scan() {
		key, value, ok := strings.Cut(scanner.Text(), ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		fields := strings.Fields(value)
		if len(fields) != 2 || fields[1] != "kB" {
			return processMemory{}, fmt.Errorf("unexpected %s line %q", key, scanner.Text())
		}
		kB, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil || kB < 0 {
			return processMemory{}, fmt.Errorf("unexpected %s value %q", key, fields[0])
		}
		if key == "VmRSS" {
			mem.rssKB, sawRSS = kB, true
		} else {
			mem.hwmKB = kB
		}
	}
	if err := scanner.Err(); err != nil {
		return processMemory{}, fmt.Errorf("scanning status: %w", err)
	}
	if !sawRSS {
		// Kernel threads and zombies have no VmRSS line; a broker pid that lands here is wrong.
		return processMemory{}, fmt.Errorf("no VmRSS line (not a live user process?)")
	}
	return mem, nil
}

// rssStats summarises the samples of one run.
type rssStats struct {
	samples                  int
	startKB, peakKB, finalKB int64
	hwmKB                    int64
}

func (s *rssStats) add(mem processMemory) {
	if s.samples == 0 {
		s.startKB = mem.rssKB
	}
	s.samples++
	s.peakKB = max(s.peakKB, mem.rssKB)
	s.finalKB = mem.rssKB
	s.hwmKB = mem.hwmKB
}

// rssSampler reads a broker's RSS on a ticker so that a short peak (a queue that balloons before
// flow control kicks in) is seen even if memory is back down when the run ends.
type rssSampler struct {
	pid      int
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	mu       sync.Mutex
	stats    rssStats
	finalErr error
}

func startRSSSampler(pid int, interval time.Duration) (*rssSampler, error) {
	first, err := readProcessMemory(pid)
	if err != nil {
		return nil, err
	}
	s := &rssSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.stats.add(first)
	go s.loop(interval)
	return s, nil
}

func (s *rssSampler) loop(interval time.Duration) {
	defer close(s.done)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-ticker.C:
			s.sample()
		}
	}
}

func (s *rssSampler) sample() {
	mem, err := readProcessMemory(s.pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.finalErr = err
		return
	}
	s.stats.add(mem)
}

// current returns the broker's RSS right now without touching the run's statistics; the memory
// workloads use it for before/after readings.
func (s *rssSampler) current() (int64, error) {
	mem, err := readProcessMemory(s.pid)
	if err != nil {
		return 0, err
	}
	return mem.rssKB, nil
}

// finish stops sampling after one last reading and returns the statistics; later calls return
// the same figures, so the end of a measurement window can be fixed before cleanup runs.
func (s *rssSampler) finish() rssStats {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.sample()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}
