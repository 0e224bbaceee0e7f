package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// queueReplicas reads a replicated queue's members and in-sync set from a node's /api/queues.
func queueReplicas(t *testing.T, p *clusterProc, name string) (leader string, members, inSync []string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.http+"/api/queues", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", nil, nil
	}
	defer resp.Body.Close()
	var qs []struct {
		Name    string   `json:"name"`
		Type    string   `json:"type"`
		Leader  string   `json:"leader"`
		Members []string `json:"members"`
		InSync  []string `json:"in_sync"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&qs); err != nil {
		t.Fatalf("/api/queues: %v", err)
	}
	for _, q := range qs {
		if q.Name == name {
			return q.Leader, q.Members, q.InSync
		}
	}
	return "", nil, nil
}

// TestQuorumQueueSurvivesTheLossOfANodeAndItsDisk runs three node processes with a replicated
// queue led by n1; confirmed persistent messages go in through n2; n1 is killed with SIGKILL
// and its data directory deleted for good; the queue keeps taking confirmed publishes through
// n2; `node forget n1` gives the queue a replacement replica on a fresh node n4 that joins; the
// queue is back to three in-sync replicas, and every confirmed message is consumed through n3.
func TestQuorumQueueSurvivesTheLossOfANodeAndItsDisk(t *testing.T) {
	bin := nodeBinary(t)
	procs := make([]*clusterProc, 3)
	for i := range procs {
		procs[i] = newClusterProc(t, i+1)
	}
	procs[0].start(t, bin, nil)
	procs[1].start(t, bin, []string{procs[0].gossip})
	procs[2].start(t, bin, []string{procs[0].gossip})
	decl := dialProc(t, procs[0])
	if _, err := decl.QueueDeclare("qq", true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
		t.Fatalf("declare on n1: %v", err)
	}
	waitReplicas := func(through *clusterProc, what string, ok func(leader string, members, inSync []string) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			l, m, s := queueReplicas(t, through, "qq")
			if ok(l, m, s) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("qq never had %s: leader %q members %v in sync %v", what, l, m, s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitReplicas(procs[1], "three in-sync replicas led by n1", func(l string, m, s []string) bool {
		return l == "n1" && len(m) == 3 && len(s) == 3
	})

	pub := dialProc(t, procs[1])
	if err := pub.Confirm(false); err != nil {
		t.Fatal(err)
	}
	confirms := pub.NotifyPublish(make(chan amqp.Confirmation, 1024))
	var confirmed []string
	publish := func(prefix string, n int) (nacked int) {
		for i := 0; i < n; i++ {
			body := prefix + strconv.Itoa(i)
			if err := pub.Publish("", "qq", false, false, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)}); err != nil {
				t.Fatalf("publish %s: %v", body, err)
			}
			select {
			case c, ok := <-confirms:
				if !ok {
					t.Fatalf("confirm channel closed at %s", body)
				}
				if c.Ack {
					confirmed = append(confirmed, body)
				} else {
					nacked++
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("no confirm for %s", body)
			}
		}
		return nacked
	}
	if nacked := publish("before", 300); nacked > 0 {
		t.Fatalf("%d of 300 publishes nacked with every node up", nacked)
	}

	_ = procs[0].cmd.Process.Signal(syscall.SIGKILL)
	_, _ = procs[0].cmd.Process.Wait()
	if err := os.RemoveAll(procs[0].dataDir); err != nil {
		t.Fatal(err)
	}
	// Publishes right through the failover: some are nacked while the leader is being
	// replaced (gossip needs about a second to declare n1 dead); none confirmed may be lost.
	killed := time.Now()
	before := len(confirmed)
	nacked, rounds := 0, 0
	var firstAck time.Duration
	for len(confirmed)-before < 100 {
		if firstAck == 0 && len(confirmed) > before {
			firstAck = time.Since(killed)
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("%d publishes confirmed in the 30 s after the leader's node died", len(confirmed)-before)
		}
		nacked += publish("during"+strconv.Itoa(rounds)+"-", 10)
		rounds++
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("%d publishes nacked during the failover; first confirm about %s after the kill, 100 confirmed after %s",
		nacked, firstAck.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
	waitReplicas(procs[1], "a new leader", func(l string, _, _ []string) bool { return l == "n2" || l == "n3" })

	var out, errb bytes.Buffer
	for deadline := time.Now().Add(30 * time.Second); ; {
		out.Reset()
		errb.Reset()
		if run([]string{"forget", "--http", procs[1].http, "n1"}, &out, &errb) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node forget n1 never succeeded: %s", errb.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
	fresh := newClusterProc(t, 4)
	fresh.start(t, bin, []string{procs[1].gossip})
	waitReplicas(procs[2], "three in-sync replicas again, n4 among them", func(l string, m, s []string) bool {
		return len(m) == 3 && len(s) == 3 && slices.Contains(s, "n4") && !slices.Contains(m, "n1")
	})
	out.Reset()
	errb.Reset()
	if code := run([]string{"status", "--http", procs[2].http}, &out, &errb); code != 0 {
		t.Fatalf("node status: %d %s", code, errb.String())
	}
	if st := out.String(); !strings.Contains(st, "replicated queues") || !regexp.MustCompile(`qq\s.*n4\+`).MatchString(st) || strings.Count(st, "*") < 2 {
		t.Fatalf("node status does not show qq's replicas with n4 in sync:\n%s", st)
	}
	if nacked := publish("after", 100); nacked > 0 {
		t.Fatalf("%d of 100 publishes nacked after the repair", nacked)
	}

	cons := dialProc(t, procs[2])
	deliveries, err := cons.Consume("qq", "", false, false, false, false, nil)
	if err != nil {
		t.Fatalf("consume through n3: %v", err)
	}
	missing := map[string]bool{}
	for _, b := range confirmed {
		missing[b] = true
	}
	for len(missing) > 0 {
		select {
		case d := <-deliveries:
			delete(missing, string(d.Body))
			_ = d.Ack(false)
		case <-time.After(20 * time.Second):
			t.Fatalf("%d of %d confirmed messages never came back", len(missing), len(confirmed))
		}
	}
	if len(confirmed) < 400 {
		t.Fatalf("only %d publishes confirmed: too few to mean anything", len(confirmed))
	}
	t.Log(fmt.Sprintf("%d confirmed messages consumed after kill -9, disk loss, forget and repair", len(confirmed)))
}
