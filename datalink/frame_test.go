package datalink

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// sampleFrames has one frame of every type, with every field set.
func sampleFrames() []frame {
	return []frame{
		{typ: frameHello, nodeID: "node-a", nonce: bytes.Repeat([]byte{1}, nonceSize)},
		{typ: frameChallenge, nodeID: "node-b", nonce: bytes.Repeat([]byte{2}, nonceSize), proof: bytes.Repeat([]byte{3}, 32)},
		{typ: frameProof, proof: bytes.Repeat([]byte{4}, 32)},
		{typ: frameWelcome},
		{typ: frameHeartbeat},
		{typ: framePublish, reqID: 1<<40 + 3, flags: flagPersistent, queues: []string{"q1", "", "amq.gen-xyz"}, msg: []byte("body bytes")},
		{typ: framePublish, reqID: 2, queues: []string{}, msg: []byte{}},
		{typ: framePublishReply, reqID: 7, flags: flagRejected, errCode: 404, errText: "no queue"},
		{typ: framePublish, reqID: 3, flags: flagReplicate, queues: []string{"/\x00qq"}, msg: []byte("batch")},
		{typ: framePublishReply, reqID: 3, flags: flagReplyBody | flagReplicaAck, msg: []byte("position")},
		{typ: framePublishReply, reqID: 4, flags: flagReplicaAck, errCode: 406, errText: "out of sync"},
		{typ: frameConsume, reqID: 8, consumerID: 99, n: 250, flags: flagNoAck | flagExclusive, queue: "work"},
		{typ: frameConsumeReply, reqID: 8, errCode: 403, errText: "exclusive"},
		{typ: frameCancel, consumerID: 5},
		{typ: frameCancelOk, consumerID: 5},
		{typ: frameCancelled, consumerID: 6},
		{typ: frameSettle, consumerID: 5, kind: SettleRequeue, queue: "work", seqs: []uint64{1, 2, 1 << 50}},
		{typ: frameCredit, consumerID: 5, n: 1 << 31},
		{typ: frameGet, reqID: 9, flags: flagNoAck, queue: "work"},
		{typ: frameGet, reqID: 10, flags: flagCount, queue: "connections\x00alice"},
		{typ: frameGetReply, reqID: 9, flags: flagOK | flagRedelivered, seq: 77, n: 3, msg: []byte("got")},
		{typ: frameDeliver, consumerID: 5, seq: 78, flags: flagRedelivered, n: 12, msg: []byte("delivered")},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var stream []byte
	frames := sampleFrames()
	for i := range frames {
		stream = appendFrame(stream, &frames[i])
	}
	fr := &frameReader{r: bufio.NewReader(bytes.NewReader(stream)), max: maxFrameSize}
	var in interner
	for i, want := range frames {
		body, _, err := fr.next()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		var got frame
		if err := decodeFrame(body, &got, &in); err != nil {
			t.Fatalf("frame %d (type %d): %v", i, want.typ, err)
		}
		if re := appendFrame(nil, &got); !bytes.Equal(re[4:], body) {
			t.Fatalf("frame %d (type %d) re-encodes differently", i, want.typ)
		}
		if got.typ != want.typ || got.reqID != want.reqID || got.consumerID != want.consumerID ||
			got.flags != want.flags || got.n != want.n || got.seq != want.seq || got.kind != want.kind ||
			got.queue != want.queue || got.errCode != want.errCode || got.errText != want.errText ||
			got.nodeID != want.nodeID || !bytes.Equal(got.msg, want.msg) || !bytes.Equal(got.nonce, want.nonce) ||
			!bytes.Equal(got.proof, want.proof) || len(got.queues) != len(want.queues) || len(got.seqs) != len(want.seqs) {
			t.Fatalf("frame %d: got %+v, want %+v", i, got, want)
		}
		for j := range want.queues {
			if got.queues[j] != want.queues[j] {
				t.Fatalf("frame %d queue %d = %q", i, j, got.queues[j])
			}
		}
		for j := range want.seqs {
			if got.seqs[j] != want.seqs[j] {
				t.Fatalf("frame %d seq %d = %d", i, j, got.seqs[j])
			}
		}
	}
	if _, _, err := fr.next(); err == nil {
		t.Fatal("read past the last frame")
	}
}

// Cutting a frame anywhere before its message body must be an error, never a short read
// into wrong fields or a panic.
func TestDecodeRejectsTruncatedFrames(t *testing.T) {
	for _, f := range sampleFrames() {
		body := appendFrame(nil, &f)[4:]
		fixed := len(body) - len(f.msg)
		for cut := 0; cut < fixed; cut++ {
			var got frame
			if err := decodeFrame(body[:cut], &got, nil); err == nil {
				t.Fatalf("type %d cut at %d of %d decoded without error", f.typ, cut, fixed)
			}
		}
	}
}

func TestDecodeRejectsBadFields(t *testing.T) {
	cases := map[string][]byte{
		"unknown type":         {200},
		"unknown flag":         appendFrame(nil, &frame{typ: frameGet, flags: 0x80, queue: "q"})[4:],
		"bad settle kind":      appendFrame(nil, &frame{typ: frameSettle, kind: 9, queue: "q"})[4:],
		"trailing bytes":       append(appendFrame(nil, &frame{typ: frameCancel, consumerID: 1})[4:], 0),
		"huge queue count":     {byte(framePublish), 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xff, 0xff},
		"seq count mismatch":   {byte(frameSettle), 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0xff, 0xff, 0xff, 0xff},
		"bad protocol version": {byte(frameHello), 9, 0, 0, 0, 0},
	}
	for name, body := range cases {
		var f frame
		if err := decodeFrame(body, &f, nil); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestFrameReaderRefusesBadLengths(t *testing.T) {
	for _, n := range []uint32{0, maxHandshakeFrame + 1} {
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], n)
		fr := &frameReader{r: bufio.NewReader(bytes.NewReader(append(hdr[:], make([]byte, 16)...))), max: maxHandshakeFrame}
		if _, _, err := fr.next(); err == nil {
			t.Errorf("frame length %d accepted", n)
		} else if n != 0 && !errors.Is(err, errFrameTooLarge) {
			t.Errorf("frame length %d: %v", n, err)
		}
	}
}

func TestLargeFrameGetsOwnBuffer(t *testing.T) {
	big := frame{typ: frameDeliver, consumerID: 1, msg: bytes.Repeat([]byte{7}, reuseLimit+10)}
	small := frame{typ: frameDeliver, consumerID: 1, msg: []byte("s")}
	stream := appendFrame(appendFrame(nil, &big), &small)
	fr := &frameReader{r: bufio.NewReader(bytes.NewReader(stream)), max: maxFrameSize}
	body, owned, err := fr.next()
	if err != nil || !owned || len(body) != len(big.msg)+22 {
		t.Fatalf("big frame: owned=%v len=%d err=%v", owned, len(body), err)
	}
	if _, owned, err := fr.next(); err != nil || owned {
		t.Fatalf("small frame: owned=%v err=%v", owned, err)
	}
	if cap(fr.buf) > reuseLimit {
		t.Fatalf("reused buffer grew to %d", cap(fr.buf))
	}
}

// FuzzDecodeFrame: no input panics the decoder, and whatever it accepts re-encodes to exactly
// the same bytes (so no field is silently misread).
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range sampleFrames() {
		f.Add(appendFrame(nil, &fr)[4:])
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var fr frame
		var in interner
		if err := decodeFrame(body, &fr, &in); err != nil {
			return
		}
		if re := appendFrame(nil, &fr); !bytes.Equal(re[4:], body) {
			t.Fatalf("accepted frame re-encodes as %x, was %x", re[4:], body)
		}
	})
}

// FuzzFrameStream feeds arbitrary bytes to the stream reader with the handshake limit, as an
// unauthenticated peer would.
func FuzzFrameStream(f *testing.F) {
	f.Add(appendFrame(nil, &frame{typ: frameHello, nodeID: "n", nonce: make([]byte, nonceSize)}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1})
	f.Fuzz(func(t *testing.T, stream []byte) {
		fr := &frameReader{r: bufio.NewReader(bytes.NewReader(stream)), max: maxHandshakeFrame}
		for {
			body, _, err := fr.next()
			if err != nil {
				return
			}
			if len(body) > maxHandshakeFrame {
				t.Fatalf("frame of %d bytes passed the handshake limit", len(body))
			}
			var f frame
			_ = decodeFrame(body, &f, nil)
		}
	})
}
