package main

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestBinaryServesAndStopsOnSIGTERM builds the real binary, configures it only through
// WARREN_* environment variables, and checks SIGTERM closes clients with 320 and exits 0.
func TestBinaryServesAndStopsOnSIGTERM(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "warren")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addrs := make([]string, 4)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = ln.Addr().String()
		ln.Close()
	}
	cmd := exec.Command(bin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Env = append(os.Environ(),
		"WARREN_ID=cli-test", "WARREN_DATA_DIR="+t.TempDir(), "WARREN_AMQP_ADDR="+addrs[0],
		"WARREN_HTTP_ADDR="+addrs[1], "WARREN_RAFT_ADDR="+addrs[2], "WARREN_GOSSIP_ADDR="+addrs[3],
		"WARREN_CONSUMER_MAX_PER_CHANNEL=1", "WARREN_MAX_CONNECTIONS=50")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var conn *amqp.Connection
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := amqp.Dial("amqp://guest:guest@" + addrs[0] + "/")
		if err == nil {
			conn = c
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never accepted AMQP on %s: %v\n%s", addrs[0], err, stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	checkConsumerLimit(t, "amqp://guest:guest@"+addrs[0]+"/")
	var out, errb bytes.Buffer
	if code := run([]string{"status", "--http", addrs[1], "--json"}, &out, &errb); code != 0 ||
		!bytes.Contains(out.Bytes(), []byte(`"name": "cli-test"`)) || !bytes.Contains(out.Bytes(), []byte(`"leader": "cli-test"`)) {
		t.Fatalf("status --json: exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	if code := run([]string{"status", "--http", addrs[1]}, &out, &errb); code != 0 || !bytes.Contains(out.Bytes(), []byte("cli-test  alive")) ||
		!bytes.Contains(out.Bytes(), []byte("connections 1 (max 50), channel_max 2047")) || !bytes.Contains(out.Bytes(), []byte("alarms: none")) {
		t.Fatalf("status: exit %d\n%s", code, out.String())
	}
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-closed:
		if e == nil || e.Code != 320 {
			t.Fatalf("client saw %v, want 320 CONNECTION_FORCED", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("client not closed after SIGTERM")
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node did not exit after SIGTERM")
	}
}

// checkConsumerLimit: WARREN_CONSUMER_MAX_PER_CHANNEL=1 refuses a second consumer on a channel.
func checkConsumerLimit(t *testing.T, url string) {
	t.Helper()
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume(q.Name, "a", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err = ch.Consume(q.Name, "b", false, false, false, false, nil)
	var ae *amqp.Error
	if !errors.As(err, &ae) || ae.Code != 530 {
		t.Fatalf("second consumer with consumer-max-per-channel 1: %v, want 530", err)
	}
}

func TestUnknownCommandAndBadFlag(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 || !bytes.Contains(errb.Bytes(), []byte(`unknown command "frobnicate"`)) {
		t.Fatalf("unknown command: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"run", "--log-level", "loud"}, &out, &errb); code != 2 || !bytes.Contains(errb.Bytes(), []byte("bad --log-level")) {
		t.Fatalf("bad flag: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"run", "--channel-max", "70000"}, &out, &errb); code != 2 || !bytes.Contains(errb.Bytes(), []byte("--channel-max must be between 1 and 65535")) {
		t.Fatalf("bad --channel-max: exit %d, stderr %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"status", "--http", "127.0.0.1:1"}, &out, &errb); code != 1 || !bytes.Contains(errb.Bytes(), []byte("cannot read the node")) {
		t.Fatalf("status of nothing: exit %d, stderr %q", code, errb.String())
	}
}
