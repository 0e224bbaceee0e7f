package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/warrenmq/warren/exchange"
	"github.com/warrenmq/warren/fsm"
)

// singleLeader starts a one-node cluster that serves forwarded writes.
func singleLeader(t *testing.T) (*Store, *fsm.FSM) {
	t.Helper()
	f := fsm.New(fsm.Options{})
	s, err := Open(Config{
		NodeID: "solo", RaftAddr: "127.0.0.1:0", ForwardAddr: "127.0.0.1:0", FSM: f, Logger: testLogger(),
		InMemory: true, RaftLogOutput: raftLogOutput(), Secret: testSecret,
	})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.WaitLeader(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "leadership", s.IsLeader)
	return s, f
}

func encode(t *testing.T, c fsm.Command) []byte {
	t.Helper()
	b, err := fsm.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForwardRequiresTheClusterSecret(t *testing.T) {
	s, f := singleLeader(t)
	deadline := time.Now().Add(2 * time.Second)

	wrong := newForwardPool(deriveKey("warren-forward-v1", "not the secret"))
	defer wrong.close()
	if _, _, err := wrong.apply(s.ForwardAddr(), encode(t, fsm.AddVhost{Name: "evil"}), deadline); err == nil {
		t.Fatalf("forward with a wrong secret succeeded")
	}
	if f.VhostExists("evil") {
		t.Fatalf("command with a wrong secret was applied")
	}

	right := newForwardPool(deriveKey("warren-forward-v1", testSecret))
	defer right.close()
	index, payload, err := right.apply(s.ForwardAddr(), encode(t, fsm.AddVhost{Name: "good"}), deadline)
	if err != nil {
		t.Fatalf("forward with the right secret: %v", err)
	}
	if index == 0 || !f.VhostExists("good") {
		t.Fatalf("forwarded command not applied (index %d)", index)
	}
	res, err := FSMResultCodec{}.Decode(payload)
	if err != nil || !res.(fsm.Result).Created {
		t.Fatalf("forwarded result: %+v, %v", res, err)
	}
	// The pooled connection is reused for the next request with the next sequence number.
	if _, _, err := right.apply(s.ForwardAddr(), encode(t, fsm.AddVhost{Name: "good2"}), deadline); err != nil {
		t.Fatalf("second forward on a pooled connection: %v", err)
	}
}

// dialForward opens a raw connection and reads the server's nonce.
func dialForward(t *testing.T, addr string) (net.Conn, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	nonce := make([]byte, nonceSize)
	if _, err := io.ReadFull(conn, nonce); err != nil {
		t.Fatal(err)
	}
	return conn, nonce
}

func requestFrame(t *testing.T, key, nonce []byte, seq uint64, cmd []byte) []byte {
	t.Helper()
	body := make([]byte, 13)
	binary.BigEndian.PutUint64(body, seq)
	body[8] = kindApply
	binary.BigEndian.PutUint32(body[9:], 1000)
	body = append(body, cmd...)
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writeFrame(w, key, "req", nonce, body); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// closedByServer reports whether the server hung up without answering.
func closedByServer(conn net.Conn) bool {
	_, err := conn.Read(make([]byte, 1))
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed)
}

func TestForwardRejectsReplayAndGarbage(t *testing.T) {
	s, f := singleLeader(t)
	key := deriveKey("warren-forward-v1", testSecret)

	// A valid frame is answered on its own connection...
	conn1, nonce1 := dialForward(t, s.ForwardAddr())
	frame := requestFrame(t, key, nonce1, 1, encode(t, fsm.AddVhost{Name: "once"}))
	if _, err := conn1.Write(frame); err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(bufio.NewReader(conn1), key, "resp", nonce1); err != nil {
		t.Fatalf("valid request not answered: %v", err)
	}
	// ...but replayed on the same connection (stale sequence) or another one (other nonce) it
	// is refused.
	if _, err := conn1.Write(frame); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(conn1) {
		t.Fatalf("replay on the same connection was not refused")
	}
	conn2, _ := dialForward(t, s.ForwardAddr())
	if _, err := conn2.Write(frame); err != nil {
		t.Fatal(err)
	}
	if !closedByServer(conn2) {
		t.Fatalf("replay on another connection was not refused")
	}

	garbage := [][]byte{
		{0xff, 0xff, 0xff, 0xff}, // length beyond the limit
		{0, 0, 0, 1, 7},          // shorter than a MAC
		append([]byte{0, 0, 0, 40}, bytes.Repeat([]byte{1}, 40)...), // bad MAC
	}
	for i, g := range garbage {
		conn, _ := dialForward(t, s.ForwardAddr())
		if _, err := conn.Write(g); err != nil {
			t.Fatal(err)
		}
		if !closedByServer(conn) {
			t.Fatalf("garbage %d not refused", i)
		}
	}
	if f.AppliedIndex() == 0 || !f.VhostExists("once") {
		t.Fatalf("valid request was not applied")
	}
	// The server still works after all that.
	pool := newForwardPool(key)
	defer pool.close()
	if _, _, err := pool.apply(s.ForwardAddr(), encode(t, fsm.AddVhost{Name: "still"}), time.Now().Add(2*time.Second)); err != nil {
		t.Fatalf("forward after garbage: %v", err)
	}
}

func TestFSMResultCodecRoundTrip(t *testing.T) {
	want := fsm.Result{
		Err:     &fsm.Error{Code: fsm.CodeResourceLocked, Text: "RESOURCE_LOCKED - cannot obtain exclusive access"},
		Queue:   &fsm.Queue{Vhost: "/", Name: "q", Durable: true, Args: []byte{1, 2, 3}, Owner: "n2"},
		Created: true, NotFound: true,
		Deleted: []fsm.QueueRef{{Vhost: "/", Name: "a", Owner: "n1"}},
	}
	var codec FSMResultCodec
	for _, in := range []any{want, &want} {
		b, err := codec.Encode(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := codec.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip: got %+v, want %+v", got, want)
		}
	}
	if _, err := codec.Encode(exchange.Dest{}); err == nil {
		t.Fatalf("encoding a foreign type should fail")
	}
	if _, err := codec.Decode([]byte("{not json")); err == nil {
		t.Fatalf("decoding garbage should fail")
	}
	if got, err := codec.Decode([]byte("null")); err != nil || got != nil {
		t.Fatalf("nil result: %v, %v", got, err)
	}
}

func FuzzReadFrame(f *testing.F) {
	key := deriveKey("warren-forward-v1", testSecret)
	nonce := bytes.Repeat([]byte{7}, nonceSize)
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	_ = writeFrame(w, key, "req", nonce, []byte("hello"))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		body, err := readFrame(bufio.NewReader(bytes.NewReader(data)), key, "req", nonce)
		if err == nil && !bytes.Equal(data[4:4+len(body)], body) {
			t.Fatalf("accepted body differs from the frame")
		}
	})
}
