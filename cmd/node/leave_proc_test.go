package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func dialProc(t *testing.T, p *clusterProc) *amqp.Channel {
	t.Helper()
	var c *amqp.Connection
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err = amqp.Dial("amqp://guest:guest@" + p.amqp + "/"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("dial %s: %v", p.id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// TestClusterLeaveAndJoinCLI runs node processes and drives them with the CLI: `node leave` on
// the owner of a durable queue full of confirmed persistent messages hands the queue over and
// the process exits 0; every message is then consumed, once, through another node. A fourth,
// fresh node started alone is brought in with `node join`, and `node status --json` lists
// three running nodes.
func TestClusterLeaveAndJoinCLI(t *testing.T) {
	bin := nodeBinary(t)
	procs := make([]*clusterProc, 3)
	for i := range procs {
		procs[i] = newClusterProc(t, i+1)
	}
	procs[0].start(t, bin, nil)
	procs[1].start(t, bin, []string{procs[0].gossip})
	procs[2].start(t, bin, []string{procs[0].gossip})

	owner := dialProc(t, procs[1])
	if _, err := owner.QueueDeclare("jobs", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := owner.Confirm(false); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	sent := map[string]bool{}
	for i := range n {
		body := fmt.Sprint("job-", i)
		c, err := owner.PublishWithDeferredConfirmWithContext(context.Background(), "", "jobs", false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := c.WaitContext(context.Background()); err != nil || !ok {
			t.Fatalf("publish %d not confirmed: %v", i, err)
		}
		sent[body] = true
	}

	var out, errb bytes.Buffer
	if code := run([]string{"leave", "--http", procs[1].http, "--timeout", "1m"}, &out, &errb); code != 0 {
		t.Fatalf("node leave: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "1 queues and 2000 messages handed over") {
		t.Fatalf("node leave said %q", out.String())
	}
	exited := make(chan error, 1)
	go func() { exited <- procs[1].cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the node that left exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the node that left is still running")
	}

	cons := dialProc(t, procs[2])
	deliveries, err := cons.Consume("jobs", "", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume through n3 after the leave: %v", err)
	}
	got := map[string]int{}
	for len(got) < n {
		select {
		case d := <-deliveries:
			if !sent[string(d.Body)] {
				t.Fatalf("unexpected message %q", d.Body)
			}
			got[string(d.Body)]++
		case <-time.After(15 * time.Second):
			t.Fatalf("only %d of %d confirmed messages arrived after the leave", len(got), n)
		}
	}
	select {
	case d := <-deliveries:
		t.Fatalf("a message arrived twice: %q", d.Body)
	case <-time.After(300 * time.Millisecond):
	}

	procs = append(procs, newClusterProc(t, 4))
	procs[3].start(t, bin, nil)
	out.Reset()
	errb.Reset()
	if code := run([]string{"join", "--http", procs[3].http, procs[0].gossip}, &out, &errb); code != 0 {
		t.Fatalf("node join: exit %d: %s", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"status", "--http", procs[3].http, "--json"}, &out, &errb); code != 0 {
		t.Fatalf("status: %s", errb.String())
	}
	var st struct {
		Nodes []struct {
			Name    string `json:"name"`
			Running bool   `json:"running"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal(out.Bytes(), &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, out.String())
	}
	running := map[string]bool{}
	for _, nd := range st.Nodes {
		if nd.Running {
			running[nd.Name] = true
		}
	}
	if len(running) != 3 || !running["n1"] || !running["n3"] || !running["n4"] {
		t.Fatalf("running nodes after leave and join: %v (%s)", running, out.String())
	}
	// The joined node serves the cluster's queue.
	ch4 := dialProc(t, procs[3])
	if _, err := ch4.QueueDeclarePassive("jobs", true, false, false, false, nil); err != nil {
		t.Fatalf("the joined node does not know the cluster's queue: %v", err)
	}
}
