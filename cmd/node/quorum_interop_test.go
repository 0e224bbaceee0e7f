package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Real Python clients (Debian's python3-pika and python3-oslo.messaging, under /usr/bin/python3)
// against three node processes while the node that matters is killed with SIGKILL. The client
// scripts live in tests/interop/cluster_quorum_*.py.

const interopPython = "/usr/bin/python3"

// interopScript returns the path of tests/interop/name, skipping the test when /usr/bin/python3
// cannot import the client modules the script needs (CI installs them).
func interopScript(t *testing.T, name string, modules ...string) string {
	t.Helper()
	for _, m := range modules {
		if out, err := exec.Command(interopPython, "-s", "-c", "import "+m).CombinedOutput(); err != nil {
			t.Skipf("skipped: %s cannot import %s (apt-get install python3-pika python3-oslo.messaging): %v %s",
				interopPython, m, err, strings.TrimSpace(string(out)))
		}
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "tests", "interop", name)
}

// iopScript is a running client script whose stdout lines are collected as they come.
type iopScript struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	lines []string
	at    []time.Time
	more  chan struct{} // signalled (non-blocking) on every new line
	done  chan struct{} // closed when stdout is at EOF
}

func iopStartScript(t *testing.T, name string, args ...string) *iopScript {
	t.Helper()
	cmd := exec.Command(interopPython, append([]string{"-s", name}, args...)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &iopScript{cmd: cmd, stdin: stdin, more: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.at = append(s.at, time.Now())
			s.mu.Unlock()
			select {
			case s.more <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		_ = stdin.Close()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		_ = cmd.Wait()
		if t.Failed() || os.Getenv("WARREN_INTEROP_VERBOSE") != "" {
			t.Logf("%s stdout (last lines):\n%s\nstderr:\n%s", filepath.Base(name), s.tail(40), iopLastLines(stderr.String(), 40))
		}
	})
	return s
}

// snapshot returns the lines so far and when each arrived.
func (s *iopScript) snapshot() ([]string, []time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines), slices.Clone(s.at)
}

func (s *iopScript) tail(n int) string {
	lines, _ := s.snapshot()
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitFor waits until ok holds for the lines so far, failing after timeout or when the script
// ends first.
func (s *iopScript) waitFor(t *testing.T, timeout time.Duration, what string, ok func(lines []string) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if lines, _ := s.snapshot(); ok(lines) {
			return
		}
		select {
		case <-s.more:
		case <-s.done:
			if lines, _ := s.snapshot(); ok(lines) {
				return
			}
			t.Fatalf("%s: the script ended first:\n%s", what, s.tail(20))
		case <-deadline:
			t.Fatalf("%s: not within %s:\n%s", what, timeout, s.tail(20))
		}
	}
}

func iopLastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func iopCount(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// iopQueue is one entry of a node's /api/queues.
type iopQueue struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Node    string   `json:"node"`
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	InSync  []string `json:"in_sync"`
	Ready   int      `json:"messages_ready"` // on the node that serves it
}

func iopQueues(t *testing.T, p *clusterProc) []iopQueue {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.http+"/api/queues", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var qs []iopQueue
	if err := json.NewDecoder(resp.Body).Decode(&qs); err != nil {
		t.Fatalf("/api/queues of %s: %v", p.id, err)
	}
	return qs
}

// iopWaitQueue polls through's /api/queues until the queue called name satisfies ok.
func iopWaitQueue(t *testing.T, through *clusterProc, name, what string, ok func(iopQueue) bool) iopQueue {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var last iopQueue
		for _, q := range iopQueues(t, through) {
			if q.Name == name {
				last = q
				if ok(q) {
					return q
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %q never had %s (seen through %s): %+v", name, what, through.id, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func iopStartThree(t *testing.T) []*clusterProc {
	bin := nodeBinary(t)
	procs := make([]*clusterProc, 3)
	for i := range procs {
		procs[i] = newClusterProc(t, i+1)
	}
	procs[0].start(t, bin, nil)
	procs[1].start(t, bin, []string{procs[0].gossip})
	procs[2].start(t, bin, []string{procs[0].gossip})
	return procs
}

func iopKill9(p *clusterProc) {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_, _ = p.cmd.Process.Wait()
}

func iopProcByID(procs []*clusterProc, id string) *clusterProc {
	for _, p := range procs {
		if p.id == id {
			return p
		}
	}
	return nil
}

// TestQuorumPikaPublisherThroughLeaderKill9 runs three node processes and a quorum queue led by
// n1 (declared there, with three in-sync replicas); Debian's pika publishes numbered persistent
// messages with confirms through n2, retrying a message until it is confirmed; the queue's
// leader (read from /api/queues) is killed with SIGKILL a quarter of the way through. The
// publisher must finish, and every message it saw confirmed must be consumed through n3 with
// amqp091-go.
func TestQuorumPikaPublisherThroughLeaderKill9(t *testing.T) {
	script := interopScript(t, "cluster_quorum_pika.py", "pika")
	procs := iopStartThree(t)
	const queue, count = "pika-qq", 600
	decl := dialProc(t, procs[0])
	if _, err := decl.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare the quorum queue through n1: %v", err)
	}
	q := iopWaitQueue(t, procs[1], queue, "three in-sync replicas", func(q iopQueue) bool {
		return q.Type == "quorum" && q.Leader != "" && len(q.Members) == 3 && len(q.InSync) == 3
	})
	if q.Leader != "n1" {
		t.Fatalf("queue declared through n1 is led by %s, want n1 (the publisher and consumer use n2 and n3)", q.Leader)
	}
	leader := iopProcByID(procs, q.Leader)

	pub := iopStartScript(t, script, "--urls", "amqp://guest:guest@"+procs[1].amqp+"/", "--queue", queue,
		"--count", strconv.Itoa(count), "--interval", "0.01")
	pub.waitFor(t, 60*time.Second, "a quarter of the messages confirmed", func(lines []string) bool {
		return iopCount(lines, "CONFIRMED ") >= count/4
	})
	linesBefore, _ := pub.snapshot()
	iopKill9(leader)
	killed := time.Now()
	t.Logf("killed the leader %s after %d confirms", leader.id, iopCount(linesBefore, "CONFIRMED "))

	pub.waitFor(t, 120*time.Second, "the publisher's DONE line", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "DONE ") })
	})
	lines, at := pub.snapshot()
	confirmed, nackedIDs := map[int]bool{}, map[int]bool{}
	var firstAfter time.Time
	for i, l := range lines {
		if n, ok := strings.CutPrefix(l, "NACKED "); ok {
			v, _ := strconv.Atoi(n)
			nackedIDs[v] = true
		}
		if n, ok := strings.CutPrefix(l, "CONFIRMED "); ok {
			v, err := strconv.Atoi(n)
			if err != nil {
				t.Fatalf("bad line %q", l)
			}
			confirmed[v] = true
			if firstAfter.IsZero() && i >= len(linesBefore) {
				firstAfter = at[i]
			}
		}
	}
	if len(confirmed) != count {
		t.Fatalf("the publisher says DONE with %d distinct messages confirmed, want %d", len(confirmed), count)
	}
	after := lines[len(linesBefore):]
	if iopCount(after, "CONFIRMED ") == 0 {
		t.Fatal("nothing was confirmed after the kill: it did not happen mid-run")
	}
	t.Logf("after the kill: %d confirmed, %d nacked, %d retried; first confirm %s after the kill; %s",
		iopCount(after, "CONFIRMED "), iopCount(after, "NACKED "), iopCount(after, "RETRY "),
		firstAfter.Sub(killed).Round(time.Millisecond), lines[len(lines)-1])

	iopWaitQueue(t, procs[2], queue, "a new leader", func(q iopQueue) bool {
		return q.Leader != "" && q.Leader != leader.id
	})
	cons := dialProc(t, procs[2])
	deliveries, err := cons.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume through n3: %v", err)
	}
	missing := map[int]bool{}
	for v := range confirmed {
		missing[v] = true
	}
	seen, dups, unexplained := map[int]bool{}, 0, 0
	for len(missing) > 0 {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("consumer closed with %d confirmed messages missing", len(missing))
			}
			v, err := strconv.Atoi(string(d.Body))
			if err != nil || v < 0 || v >= count {
				t.Fatalf("consumed a message never published: %q", d.Body)
			}
			if seen[v] {
				dups++
				if !nackedIDs[v] {
					unexplained++
				}
			}
			seen[v] = true
			delete(missing, v)
			_ = d.Ack(false)
		case <-time.After(20 * time.Second):
			some := slices.Sorted(func(yield func(int) bool) {
				for v := range missing {
					if !yield(v) {
						return
					}
				}
			})
			t.Fatalf("%d of %d confirmed messages never came back through n3, e.g. %v", len(missing), count, some[:min(10, len(some))])
		}
	}
	// A nacked publish may have been stored all the same, and was published again: a duplicate.
	// Duplicates of messages published once come from the known bug that
	// TestQuorumFailoverDeliversEachMessageOnce shows; consumption stops once every confirmed
	// message came, so not every duplicate is seen.
	t.Logf("all %d confirmed messages consumed through n3; %d seen twice, %d of them published only once",
		count, dups, unexplained)
}

// TestQuorumPikaConsumerThroughLeaderKill9: as the publisher test above, with a pika consumer
// subscribed through n3 all along: when the quorum queue's leader n1 is killed with SIGKILL, the
// consumer is cancelled (consumer_cancel_notify) or its channel closed, subscribes again, and
// receives every message the publisher saw confirmed.
//
// The consumer acks each message 3 s after it arrives, as a worker that processes it would:
// acking at once hits the known bug TestQuorumConfirmWhenConsumerAcksFirst shows (the publish
// of a message acked before it is committed is not confirmed until another one is published,
// and this publisher waits for each confirm before the next publish).
func TestQuorumPikaConsumerThroughLeaderKill9(t *testing.T) {
	script := interopScript(t, "cluster_quorum_pika.py", "pika")
	procs := iopStartThree(t)
	const queue, count = "pika-live", 600
	decl := dialProc(t, procs[0])
	if _, err := decl.QueueDeclare(queue, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare the quorum queue through n1: %v", err)
	}
	iopWaitQueue(t, procs[1], queue, "three in-sync replicas led by n1", func(q iopQueue) bool {
		return q.Leader == "n1" && len(q.InSync) == 3
	})
	cons := iopStartScript(t, script, "--mode", "consume", "--urls", "amqp://guest:guest@"+procs[2].amqp+"/", "--queue", queue,
		"--ack-delay", "3", "--prefetch", "1000")
	cons.waitFor(t, 60*time.Second, "the consumer CONSUMING", func(lines []string) bool { return slices.Contains(lines, "CONSUMING") })
	pub := iopStartScript(t, script, "--urls", "amqp://guest:guest@"+procs[1].amqp+"/", "--queue", queue,
		"--count", strconv.Itoa(count), "--interval", "0.01")
	pub.waitFor(t, 60*time.Second, "a quarter of the messages confirmed", func(lines []string) bool {
		return iopCount(lines, "CONFIRMED ") >= count/4
	})
	consBefore, _ := cons.snapshot()
	iopKill9(procs[0])
	killed := time.Now()
	pub.waitFor(t, 120*time.Second, "the publisher's DONE line", func(lines []string) bool {
		return slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, "DONE ") })
	})
	// Every message was confirmed in the end (the publisher retries until it is).
	got := map[string]int{}
	cons.waitFor(t, 60*time.Second, "every confirmed message at the consumer", func(lines []string) bool {
		clear(got)
		for _, l := range lines {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "GOT" {
				got[f[1]]++
			}
		}
		return len(got) >= count
	})
	lines, at := cons.snapshot()
	for b := range got {
		if v, err := strconv.Atoi(b); err != nil || v < 0 || v >= count {
			t.Fatalf("consumed a message never published: %q", b)
		}
	}
	var pause time.Duration
	last := killed
	for i := len(consBefore); i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "GOT ") {
			pause = max(pause, at[i].Sub(last))
			last = at[i]
		}
	}
	after := lines[len(consBefore):]
	dups := 0
	for _, n := range got {
		dups += n - 1
	}
	t.Logf("consumer after the kill: %d cancels, %d resubscribes after errors, longest wait between deliveries %s; %d deliveries more than once",
		iopCount(after, "CANCELLED"), iopCount(after, "RETRY "), pause.Round(time.Millisecond), dups)
	for _, l := range after {
		if !strings.HasPrefix(l, "GOT ") && !strings.HasPrefix(l, "CONSUMING") {
			t.Logf("consumer: %s", l)
		}
	}
}

// TestQuorumOsloRPCThroughKill9 runs three node processes, an oslo.messaging RPC server and a
// caller, both with rabbit_quorum_queue = True and a transport URL listing all three nodes
// (oslo shuffles them for each connection, so which node each connection uses is found from
// /api/queues: the server's quorum topic queue is led by the node the server declared it on,
// the caller's reply queue lives on the caller's listening node). One node is killed with
// SIGKILL while calls run; calls must go on succeeding after a bounded pause.
func TestQuorumOsloRPCThroughKill9(t *testing.T) {
	script := interopScript(t, "cluster_quorum_oslo.py", "oslo_messaging")
	t.Run("NeitherServerNorCallerNode", func(t *testing.T) { iopOsloKill9(t, script, iopStartThree(t), "quorum", false) })
	t.Run("ServerNode", func(t *testing.T) { iopOsloKill9(t, script, iopStartThree(t), "quorum", true) })
}

// iopOsloKill9 runs the oslo RPC server and caller (queues: "quorum" for rabbit_quorum_queue,
// "durable" for amqp_durable_queues only) on procs, checks that the topic queues are quorum
// queues, kills a node and checks that calls go on.
func iopOsloKill9(t *testing.T, script string, procs []*clusterProc, queues string, killServers bool) {
	hosts := make([]string, len(procs))
	for i, p := range procs {
		hosts[i] = "guest:guest@" + p.amqp
	}
	url := "rabbit://" + strings.Join(hosts, ",") + "/"
	const topic, exchange = "qq_rpc", "qq_rpc_control"

	server := iopStartScript(t, script, "server", "--url", url, "--topic", topic, "--exchange", exchange, "--server", "s1", "--queues", queues)
	server.waitFor(t, 60*time.Second, "the RPC server READY", func(lines []string) bool { return slices.Contains(lines, "READY") })
	topicQ := iopWaitQueue(t, procs[0], topic, "three in-sync replicas", func(q iopQueue) bool {
		return q.Type == "quorum" && len(q.Members) == 3 && len(q.InSync) == 3
	})
	iopWaitQueue(t, procs[0], topic+".s1", "quorum type", func(q iopQueue) bool { return q.Type == "quorum" })

	caller := iopStartScript(t, script, "call", "--url", url, "--topic", topic, "--exchange", exchange, "--timeout", "5", "--queues", queues)
	caller.waitFor(t, 60*time.Second, "20 calls answered", func(lines []string) bool { return iopCount(lines, "OK ") >= 20 })
	replyNode := ""
	for _, q := range iopQueues(t, procs[0]) {
		if strings.HasPrefix(q.Name, "reply_") {
			replyNode = q.Node
		}
	}
	if replyNode == "" {
		t.Fatal("no oslo reply queue in /api/queues")
	}
	var victim *clusterProc
	if killServers {
		victim = iopProcByID(procs, topicQ.Leader)
	} else {
		for _, p := range procs {
			if p.id != topicQ.Leader && p.id != replyNode {
				victim = p
				break
			}
		}
	}
	survivor := procs[0]
	if survivor == victim {
		survivor = procs[1]
	}
	before, _ := caller.snapshot()
	okBefore := iopCount(before, "OK ")
	iopKill9(victim)
	killed := time.Now()
	t.Logf("killed %s (topic queue led by %s, reply queue on %s) after %d calls", victim.id, topicQ.Leader, replyNode, okBefore)

	caller.waitFor(t, 90*time.Second, "20 more calls answered after the kill", func(lines []string) bool {
		return iopCount(lines, "OK ") >= okBefore+20
	})
	lines, at := caller.snapshot()
	// The outage is the longest wait between two answers around the kill (a call in flight at
	// the kill may still be answered soon after it, while later ones wait for oslo to reconnect).
	var pause time.Duration
	lastOK := killed
	for i := len(before) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "OK ") {
			lastOK = at[i]
			break
		}
	}
	for i := len(before); i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "OK ") {
			pause = max(pause, at[i].Sub(lastOK))
			lastOK = at[i]
		}
	}
	after := lines[len(before):]
	t.Logf("after the kill: longest wait between two answers %s; %d answered, %d timed out, %d other errors",
		pause.Round(time.Millisecond), iopCount(after, "OK "), iopCount(after, "TIMEOUT "), iopCount(after, "ERROR "))
	if pause > 60*time.Second {
		t.Fatalf("calls stopped for %s around the kill", pause.Round(time.Millisecond))
	}
	logged := 0
	for _, l := range after {
		if strings.HasPrefix(l, "ERROR ") && strings.Contains(l, "WrongAnswer") {
			t.Fatalf("a call got a wrong answer: %s", l)
		}
		if !strings.HasPrefix(l, "OK ") && logged < 10 {
			t.Logf("caller: %s", l)
			logged++
		}
	}
	q := iopWaitQueue(t, survivor, topic, "a live leader", func(q iopQueue) bool { return q.Leader != "" && q.Leader != victim.id })
	if q.Type != "quorum" {
		t.Fatalf("topic queue after the kill: %+v", q)
	}
}

// TestDefaultQueueTypeQuorumWithRealClients runs three node processes with
// WARREN_DEFAULT_QUEUE_TYPE=quorum: amqp091-go's durable, client-named queue declared without
// x-queue-type is a quorum queue with three replicas, seen from another node, while an explicit
// classic, an exclusive, an auto-delete, a server-named and a transient queue stay classic; an
// unmodified oslo.messaging application (amqp_durable_queues = True, no rabbit_quorum_queue)
// gets quorum topic queues and its calls go on through the kill -9 of its topic queue's leader.
func TestDefaultQueueTypeQuorumWithRealClients(t *testing.T) {
	script := interopScript(t, "cluster_quorum_oslo.py", "oslo_messaging")
	t.Setenv("WARREN_DEFAULT_QUEUE_TYPE", "quorum") // the node processes inherit it
	procs := iopStartThree(t)
	ch := dialProc(t, procs[1])
	declare := func(name string, durable, autoDelete, exclusive bool, args amqp.Table) string {
		t.Helper()
		q, err := ch.QueueDeclare(name, durable, autoDelete, exclusive, false, args)
		if err != nil {
			t.Fatalf("declare %q through n2: %v", name, err)
		}
		return q.Name
	}
	want := map[string]string{
		declare("plain", true, false, false, nil):                                              "quorum",
		declare("explicit-classic", true, false, false, amqp.Table{"x-queue-type": "classic"}): "classic",
		declare("exclusive", true, false, true, nil):                                           "classic",
		declare("auto-delete", true, true, false, nil):                                         "classic",
		declare("", true, false, false, nil):                                                   "classic",
		declare("transient", false, false, false, nil):                                         "classic",
	}
	for name, typ := range want {
		iopWaitQueue(t, procs[2], name, typ+" type", func(q iopQueue) bool {
			return q.Type == typ && (typ == "classic" || len(q.Members) == 3)
		})
	}
	// Re-declared as it was (no x-queue-type), the defaulted queue is equivalent.
	declare("plain", true, false, false, nil)
	iopOsloKill9(t, script, procs, "durable", true)
}
