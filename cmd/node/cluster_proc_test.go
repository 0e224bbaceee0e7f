package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type clusterProc struct {
	id, dataDir                             string
	amqp, http, raft, gossip, forward, data string
	cmd                                     *exec.Cmd
}

// newClusterProc names node i and picks its data dir and free ports (just before it starts:
// ports free long before may since have become ephemeral ports of the test's connections).
func newClusterProc(t *testing.T, i int) *clusterProc {
	a := freePorts(t, 6)
	return &clusterProc{id: fmt.Sprintf("n%d", i), dataDir: t.TempDir(),
		amqp: a[0], http: a[1], raft: a[2], gossip: a[3], forward: a[4], data: a[5]}
}

func (p *clusterProc) start(t *testing.T, bin string, join []string) {
	t.Helper()
	fresh := p.cmd == nil
	for attempt := 1; ; attempt++ {
		out := &lockedBuffer{}
		cmd := exec.Command(bin, "run", "--id", p.id, "--data-dir", p.dataDir, "--amqp-addr", p.amqp,
			"--http-addr", p.http, "--raft-addr", p.raft, "--gossip-addr", p.gossip, "--forward-addr", p.forward,
			"--data-addr", p.data, "--join", strings.Join(join, ","), "--cluster-secret", "proc-test", "--log-level", "warn")
		cmd.Stderr = io.MultiWriter(os.Stderr, out)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p.cmd = cmd
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		up, exited := waitListening(p.amqp, cmd.Process.Pid, 30*time.Second)
		if up {
			return
		}
		// A port picked free may have been taken since (by an ephemeral port of another
		// connection): a node that was never started before simply gets new ones.
		if exited && fresh && attempt < 3 && strings.Contains(out.String(), "address already in use") {
			_, _ = cmd.Process.Wait()
			a := freePorts(t, 6)
			p.amqp, p.http, p.raft, p.gossip, p.forward, p.data = a[0], a[1], a[2], a[3], a[4], a[5]
			p.dataDir = t.TempDir()
			continue
		}
		t.Fatalf("%s did not start", p.id)
	}
}

// waitListening waits until addr accepts connections (up) or process pid has exited.
func waitListening(addr string, pid int, limit time.Duration) (up, exited bool) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true, false
		}
		// An exited child stays a zombie until it is waited for: its state says so.
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				return false, true
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	return false, false
}

// lockedBuffer collects a child's stderr while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestClusterOwnerKill9KeepsConfirmedMessages runs three node processes: persistent messages
// published with confirms through n1 into a durable queue owned by n2; n2 is SIGKILLed and
// restarted with its data; every confirmed message is then consumed through n3.
func TestClusterOwnerKill9KeepsConfirmedMessages(t *testing.T) {
	bin := nodeBinary(t)
	procs := make([]*clusterProc, 3)
	for i := range procs {
		procs[i] = newClusterProc(t, i+1)
	}
	procs[0].start(t, bin, nil)
	procs[1].start(t, bin, []string{procs[0].gossip})
	procs[2].start(t, bin, []string{procs[0].gossip})
	dial := func(p *clusterProc) *amqp.Channel { return dialProc(t, p) }
	owner := dial(procs[1])
	if _, err := owner.QueueDeclare("orders", true, false, false, false, nil); err != nil {
		t.Fatalf("declare on n2 (joined through n1): %v", err)
	}
	pub := dial(procs[0])
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 256))
	const n = 200
	var confirmed []string
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("m%03d", i)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := pub.PublishWithContext(ctx, "", "orders", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case c, ok := <-confirms:
			if !ok {
				t.Fatalf("the publisher's channel closed at %s", body)
			}
			if c.Ack {
				confirmed = append(confirmed, body)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no confirm for %s within 10 s", body)
		}
	}
	// Declared through n2, published through n1 right away: n1 has the queue (visible on -ok)
	// and n2's data-link address (announced in the metadata n2 joined with), so every publish
	// is confirmed.
	if len(confirmed) != n {
		t.Fatalf("only %d of %d publishes confirmed", len(confirmed), n)
	}
	_ = procs[1].cmd.Process.Signal(syscall.SIGKILL)
	_, _ = procs[1].cmd.Process.Wait()
	procs[1].start(t, bin, []string{procs[0].gossip, procs[2].gossip})

	cons := dial(procs[2])
	deadline := time.Now().Add(30 * time.Second)
	deliveries, err := cons.Consume("orders", "", true, false, false, false, nil)
	for err != nil && time.Now().Before(deadline) {
		// n3 may still see n2 down for a moment after its restart.
		time.Sleep(200 * time.Millisecond)
		cons = dial(procs[2])
		deliveries, err = cons.Consume("orders", "", true, false, false, false, nil)
	}
	if err != nil {
		t.Fatalf("consume through n3 after n2 restarted: %v", err)
	}
	// Identify each message: every confirmed body arrives once, in publish order, flagged
	// redelivered (recovered from disk); nothing arrives that was never sent.
	want := map[string]bool{}
	for _, b := range confirmed {
		want[b] = true
	}
	seen := map[string]bool{}
	last := ""
	missing := len(confirmed)
	idle, stray := time.After(15*time.Second), (<-chan time.Time)(nil)
	for missing > 0 || stray != nil {
		select {
		case d, ok := <-deliveries:
			if !ok {
				t.Fatalf("consumer through n3 closed with %d confirmed messages missing", missing)
			}
			b := string(d.Body)
			switch {
			case len(b) != 4 || b[0] != 'm':
				t.Fatalf("a message that was never sent: %q", b)
			case seen[b]:
				t.Fatalf("%s delivered twice", b)
			case b <= last:
				t.Fatalf("%s after %s: not publish order", b, last)
			case !d.Redelivered:
				t.Fatalf("%s recovered after kill -9 without the redelivered flag", b)
			}
			seen[b], last = true, b
			if want[b] {
				missing--
			}
			if missing == 0 && idle != nil {
				// Everything promised is back; a moment more catches a stray duplicate.
				idle = nil
				stray = time.After(500 * time.Millisecond)
			}
		case <-stray:
			stray = nil
		case <-idle:
			var lost []string
			for _, b := range confirmed {
				if !seen[b] {
					lost = append(lost, b)
				}
			}
			t.Fatalf("%d of %d confirmed messages never came back: %v", len(lost), len(confirmed), lost[:min(len(lost), 20)])
		}
	}
	t.Logf("%d confirmed persistent messages back after kill -9 of their owner (%d delivered)", len(confirmed), len(seen))

	// `node forget` of a node that will not return: refused while it lives, done once it is dead.
	var out, errb bytes.Buffer
	if code := run([]string{"forget", "--http", procs[0].http, "n3"}, &out, &errb); code == 0 {
		t.Fatalf("forgot a live node: %s", out.String())
	}
	_ = procs[2].cmd.Process.Signal(syscall.SIGKILL)
	_, _ = procs[2].cmd.Process.Wait()
	deadline = time.Now().Add(30 * time.Second)
	for {
		out.Reset()
		errb.Reset()
		if run([]string{"forget", "--http", procs[0].http, "n3"}, &out, &errb) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node forget never succeeded: %s", errb.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Forgotten means gone from the cluster: no longer listed, not even as dead.
	deadline = time.Now().Add(10 * time.Second)
	for {
		out.Reset()
		errb.Reset()
		if code := run([]string{"status", "--http", procs[0].http, "--json"}, &out, &errb); code != 0 {
			t.Fatalf("status after forget: exit %d: %s", code, errb.String())
		}
		var st struct {
			Nodes []struct {
				Name  string `json:"name"`
				State string `json:"state"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("status --json: %v: %s", err, out.String())
		}
		listed := ""
		for _, m := range st.Nodes {
			if m.Name == "n3" {
				listed = m.State
			}
		}
		if listed == "" && len(st.Nodes) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status 10 s after forget still lists n3 (state %q): %s", listed, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestRemoteUnackedGetRequeuedWhenLinkBreaks: a basic.get without auto-ack through n2 of a
// queue n1 owns is held unacked by n1 on n2's behalf; when n2 is SIGKILLed (its data link to n1
// breaks without any settlement), n1 puts the message back: it is the head of the queue again,
// flagged redelivered, and nothing else changed.
func TestRemoteUnackedGetRequeuedWhenLinkBreaks(t *testing.T) {
	bin := nodeBinary(t)
	procs := []*clusterProc{newClusterProc(t, 1), nil, nil}
	procs[0].start(t, bin, nil)
	procs[1] = newClusterProc(t, 2)
	procs[1].start(t, bin, []string{procs[0].gossip})
	procs[2] = newClusterProc(t, 3)
	procs[2].start(t, bin, []string{procs[0].gossip})
	owner := dialProc(t, procs[0])
	if _, err := owner.QueueDeclare("held", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := owner.Confirm(false); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		dc, err := owner.PublishWithDeferredConfirmWithContext(context.Background(), "", "held", false, false,
			amqp.Publishing{Body: []byte(fmt.Sprint("h", i)), DeliveryMode: amqp.Persistent})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := dc.WaitContext(context.Background()); !ok || err != nil {
			t.Fatalf("publish h%d: ok=%v err=%v", i, ok, err)
		}
	}
	var d amqp.Delivery
	for deadline := time.Now().Add(10 * time.Second); ; {
		// n2 may not have applied the declare yet (404 closes the channel): retry on a new one.
		d0, ok, err := dialProc(t, procs[1]).Get("held", false)
		if err == nil && ok {
			d = d0
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("get through n2: ok=%v err=%v", ok, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if string(d.Body) != "h0" || d.Redelivered {
		t.Fatalf("get through n2: %q redelivered=%v", d.Body, d.Redelivered)
	}
	ready := func() int {
		q, err := owner.QueueDeclarePassive("held", true, false, false, false, nil)
		if err != nil {
			t.Fatal(err)
		}
		return q.Messages
	}
	if n := ready(); n != 2 {
		t.Fatalf("%d ready while n2 holds h0 unacked, want 2", n)
	}
	_ = procs[1].cmd.Process.Signal(syscall.SIGKILL)
	_, _ = procs[1].cmd.Process.Wait()
	for deadline := time.Now().Add(20 * time.Second); ready() != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("%d ready 20 s after the getting node died, want 3 (h0 back)", ready())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := range 3 {
		d, ok, err := owner.Get("held", true)
		want := fmt.Sprint("h", i)
		if err != nil || !ok || string(d.Body) != want || d.Redelivered != (i == 0) {
			t.Fatalf("get %d on the owner: %q redelivered=%v ok=%v err=%v; want %s, redelivered only for h0", i, d.Body, d.Redelivered, ok, err, want)
		}
	}
}
