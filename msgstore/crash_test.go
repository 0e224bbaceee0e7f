package msgstore

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	crashSegmentBytes = 32 << 10
	helperEnv         = "MSGSTORE_CRASH_HELPER_DIR"
	helperRoundEnv    = "MSGSTORE_CRASH_HELPER_ROUND"
)

// TestHelperProcess is the writer half of TestCrashSafety, run in a child process. It
// publishes numbered messages from several goroutines (so commits are shared) and prints:
//
//	I <data>       before publishing (the message may exist after a crash)
//	P <id> <data>  after done(nil): the message must survive
//	A <id>         after a Sync that followed Ack of id on every queue: it must stay gone
//
// Messages go to q1, even-numbered ones also to q2; every third one is acked everywhere.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestCrashSafety")
	}
	round := os.Getenv(helperRoundEnv)
	s, _, err := Open(Options{Dir: dir, SegmentBytes: crashSegmentBytes, Logger: quietLogger()})
	if err != nil {
		fmt.Fprintf(os.Stderr, "open: %v\n", err)
		os.Exit(3)
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		line := fmt.Sprintf(format+"\n", args...)
		out.Lock()
		os.Stdout.WriteString(line) // one write per line: a kill never splits a line
		out.Unlock()
	}
	var ackMu sync.Mutex
	var acked []uint64
	go func() {
		for {
			time.Sleep(5 * time.Millisecond)
			ackMu.Lock()
			batch := acked
			acked = nil
			ackMu.Unlock()
			if err := s.Sync(); err != nil {
				fmt.Fprintf(os.Stderr, "sync: %v\n", err)
				os.Exit(4)
			}
			for _, id := range batch {
				say("A %d", id)
			}
		}
	}()
	for w := range 4 {
		go func() {
			done := make(chan error, 1)
			for seq := 0; ; seq++ {
				data := fmt.Sprintf("r%s-w%d-%d-%s", round, w, seq, strings.Repeat("x", seq%300))
				queues := []string{"q1"}
				if seq%2 == 0 {
					queues = append(queues, "q2")
				}
				say("I %s", data)
				id := s.Publish(queues, []byte(data), func(err error) { done <- err })
				if err := <-done; err != nil {
					fmt.Fprintf(os.Stderr, "publish: %v\n", err)
					os.Exit(5)
				}
				say("P %d %s", id, data)
				if seq%3 == 0 {
					for _, q := range queues {
						s.Ack(q, id)
					}
					ackMu.Lock()
					acked = append(acked, id)
					ackMu.Unlock()
				}
			}
		}()
	}
	select {} // until killed
}

type crashLog struct {
	intended  map[string]bool
	confirmed map[string]uint64 // data → id
	ackSynced map[uint64]bool
	maxID     uint64
	minID     uint64
}

func runCrashRound(t *testing.T, dir string, round int, killAfter time.Duration) crashLog {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperRoundEnv+"="+strconv.Itoa(round))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	log := crashLog{intended: map[string]bool{}, confirmed: map[string]uint64{}, ackSynced: map[uint64]bool{}, minID: ^uint64(0)}
	firstConfirm := make(chan struct{})
	readDone := make(chan error, 1)
	go func() {
		r := bufio.NewReader(stdout)
		once := sync.Once{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				readDone <- nil // EOF after the kill; a partial last line is ignored
				return
			}
			f := strings.Fields(line)
			switch {
			case len(f) == 2 && f[0] == "I":
				log.intended[f[1]] = true
			case len(f) == 3 && f[0] == "P":
				id, _ := strconv.ParseUint(f[1], 10, 64)
				log.confirmed[f[2]] = id
				log.maxID = max(log.maxID, id)
				log.minID = min(log.minID, id)
				once.Do(func() { close(firstConfirm) })
			case len(f) == 2 && f[0] == "A":
				id, _ := strconv.ParseUint(f[1], 10, 64)
				log.ackSynced[id] = true
			}
		}
	}()
	select {
	case <-firstConfirm:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("round %d: child confirmed nothing in 5s; stderr:\n%s", round, stderr.String())
	}
	time.Sleep(killAfter)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-readDone
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("round %d: child did not die by SIGKILL (%v); stderr:\n%s", round, err, stderr.String())
	}
	return log
}

// TestCrashSafety kills a writer process with SIGKILL at random moments and checks after
// each kill that every confirmed message is there, every synced ack stuck, nothing unknown
// appeared, and messages recovered earlier are still there unchanged.
func TestCrashSafety(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("MSGSTORE_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (set MSGSTORE_CRASH_SEED to replay the kill timings)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	dir := t.TempDir()
	survivors := map[string]uint64{} // data → id, from earlier rounds
	var prevMax uint64
	const rounds = 5
	deadline := time.Now().Add(18 * time.Second)
	for round := range rounds {
		if time.Now().After(deadline) {
			t.Logf("stopping after %d rounds to stay within the time bound", round)
			break
		}
		log := runCrashRound(t, dir, round, time.Duration(rng.IntN(400))*time.Millisecond)
		if log.minID <= prevMax {
			t.Fatalf("round %d: new id %d not above ids of earlier rounds (max %d)", round, log.minID, prevMax)
		}
		s, rec, err := Open(Options{Dir: dir, SegmentBytes: crashSegmentBytes, Logger: quietLogger()})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		inQueue := map[string]map[string]uint64{}
		for q, msgs := range readAll(t, s, rec) {
			inQueue[q] = map[string]uint64{}
			for _, m := range msgs {
				inQueue[q][string(m.Data)] = m.ID
			}
		}
		check := func(data string, id uint64, q string, must bool) {
			got, ok := inQueue[q][data]
			switch {
			case must && !ok:
				t.Errorf("round %d: confirmed message %d (%.20s) missing from %s", round, id, data, q)
			case ok && got != id:
				t.Errorf("round %d: message %.20s has id %d in %s, want %d", round, data, got, q, id)
			}
		}
		for data, id := range log.confirmed {
			seq, _ := strconv.Atoi(strings.Split(data, "-")[2])
			// An ack that was not yet synced may or may not have reached the disk.
			keep := seq%3 != 0
			check(data, id, "q1", keep)
			if seq%2 == 0 {
				check(data, id, "q2", keep)
			} else if _, ok := inQueue["q2"][data]; ok {
				t.Errorf("round %d: odd message %.20s appeared in q2", round, data)
			}
			if log.ackSynced[id] {
				if _, ok := inQueue["q1"][data]; ok {
					t.Errorf("round %d: message %d came back after its ack was synced", round, id)
				}
			}
		}
		for data, id := range survivors {
			check(data, id, "q1", true)
		}
		next := map[string]uint64{}
		for q, msgs := range inQueue {
			if q != "q1" && q != "q2" {
				t.Errorf("round %d: unknown queue %q recovered", round, q)
			}
			for data, id := range msgs {
				if !log.intended[data] && survivors[data] == 0 {
					t.Errorf("round %d: unknown message %d %.30q recovered from %s", round, id, data, q)
				}
				next[data] = id
			}
		}
		survivors = next
		prevMax = max(log.maxID, prevMax)
		for _, id := range survivors {
			prevMax = max(prevMax, id)
		}
		t.Logf("round %d: confirmed %d, acks synced %d, recovered %d live (%d records, %d segments, truncated %d bytes, %v)",
			round, len(log.confirmed), len(log.ackSynced), len(next), rec.Records, rec.Segments, rec.TruncatedBytes, rec.Duration)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
	}
}
