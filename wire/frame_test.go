package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestFrameReaderSequence(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000) // 10000 bytes: three body frames at 4096
	props := (&Properties{ContentType: "text/plain", DeliveryMode: 2}).Append(nil)

	var stream []byte
	stream = AppendHeartbeat(stream)
	stream = AppendMethodFrame(stream, 3, &BasicPublish{Exchange: "ex", RoutingKey: "rk"})
	stream = AppendHeaderFrame(stream, 3, ClassBasic, uint64(len(body)), props)
	stream = AppendBodyFrames(stream, 3, body, FrameMinSize)

	// One byte per Read exercises every partial-read path of fill.
	for name, r := range map[string]io.Reader{
		"whole":    bytes.NewReader(stream),
		"one byte": iotest.OneByteReader(bytes.NewReader(stream)),
	} {
		t.Run(name, func(t *testing.T) {
			fr := NewFrameReader(r, FrameMinSize)
			f := mustRead(t, fr)
			if f.Type != FrameHeartbeat || f.Channel != 0 || len(f.Payload) != 0 {
				t.Fatalf("want heartbeat, got %+v", f)
			}
			f = mustRead(t, fr)
			m, err := DecodeMethod(f.Payload)
			if err != nil || f.Channel != 3 {
				t.Fatalf("publish frame: %v (channel %d)", err, f.Channel)
			}
			if p := m.(*BasicPublish); p.Exchange != "ex" || p.RoutingKey != "rk" {
				t.Fatalf("decoded %+v", p)
			}
			f = mustRead(t, fr)
			if f.Type != FrameHeader {
				t.Fatalf("want header frame, got type %d", f.Type)
			}
			ch, err := ParseContentHeader(f.Payload)
			if err != nil || ch.ClassID != ClassBasic || ch.BodySize != uint64(len(body)) || !bytes.Equal(ch.Props, props) {
				t.Fatalf("content header %+v, %v", ch, err)
			}
			var got []byte
			for len(got) < len(body) {
				f = mustRead(t, fr)
				if f.Type != FrameBody || len(f.Payload)+8 > FrameMinSize {
					t.Fatalf("body frame type %d of %d payload bytes", f.Type, len(f.Payload))
				}
				got = append(got, f.Payload...)
			}
			if !bytes.Equal(got, body) {
				t.Fatal("reassembled body differs")
			}
			if _, err := fr.ReadFrame(); err != io.EOF {
				t.Fatalf("at end of stream: got %v, want io.EOF", err)
			}
		})
	}
}

func mustRead(t *testing.T, fr *FrameReader) Frame {
	t.Helper()
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	return f
}

func TestFrameReaderErrors(t *testing.T) {
	big := AppendBodyFrames(nil, 1, make([]byte, FrameMinSize-7), 0) // one byte over frame-max
	badEnd := AppendHeartbeat(nil)
	badEnd[len(badEnd)-1] = 0xCD
	tests := []struct {
		name  string
		input []byte
		text  string
	}{
		{"too large", big, "exceeds frame-max 4096"},
		{"bad frame end", badEnd, "frame-end"},
		{"unknown type", []byte{4, 0, 0, 0, 0, 0, 0, FrameEnd}, "unknown frame type 4"},
		{"protocol header again", append([]byte{}, ProtocolHeader...), "protocol header"},
	}
	for _, tt := range tests {
		_, err := NewFrameReader(bytes.NewReader(tt.input), FrameMinSize).ReadFrame()
		if !isCode(err, FrameError) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: got %v, want FRAME_ERROR mentioning %q", tt.name, err, tt.text)
		}
	}

	// Exactly frame-max is fine.
	exact := AppendBodyFrames(nil, 1, make([]byte, FrameMinSize-8), 0)
	if _, err := NewFrameReader(bytes.NewReader(exact), FrameMinSize).ReadFrame(); err != nil {
		t.Errorf("frame of exactly frame-max: %v", err)
	}

	frame := AppendMethodFrame(nil, 1, &BasicAck{DeliveryTag: 9})
	for _, cut := range []int{1, HeaderSize - 1, HeaderSize, len(frame) - 1} {
		_, err := NewFrameReader(bytes.NewReader(frame[:cut]), FrameMinSize).ReadFrame()
		if err != io.ErrUnexpectedEOF {
			t.Errorf("truncated to %d bytes: got %v, want io.ErrUnexpectedEOF", cut, err)
		}
	}

	boom := errors.New("boom")
	_, err := NewFrameReader(iotest.ErrReader(boom), FrameMinSize).ReadFrame()
	if err != boom {
		t.Errorf("reader error: got %v, want it unchanged", err)
	}
	// A reader that fails on its second call: ReadFrame must stop reading as
	// soon as the frame is complete instead of trying to fill its buffer.
	_, err = NewFrameReader(iotest.TimeoutReader(bytes.NewReader(frame)), FrameMinSize).ReadFrame()
	if err != nil {
		t.Errorf("first read of TimeoutReader should succeed: %v", err)
	}
}

func TestFrameReaderSetMaxAndBuffered(t *testing.T) {
	body := make([]byte, 10000)
	stream := AppendBodyFrames(nil, 1, body, 0)
	stream = AppendHeartbeat(stream)

	fr := NewFrameReader(bytes.NewReader(stream), 0)
	if _, err := fr.ReadFrame(); !isCode(err, FrameError) {
		t.Fatalf("0 should mean FrameMinSize: got %v", err)
	}

	fr = NewFrameReader(bytes.NewReader(stream), FrameMinSize)
	fr.SetMaxFrameSize(DefaultFrameMax)
	f := mustRead(t, fr)
	if len(f.Payload) != len(body) {
		t.Fatalf("payload %d bytes, want %d", len(f.Payload), len(body))
	}
	if fr.Buffered() != 8 {
		t.Fatalf("Buffered() = %d, want the 8-byte heartbeat", fr.Buffered())
	}
	if f := mustRead(t, fr); f.Type != FrameHeartbeat {
		t.Fatalf("want heartbeat, got %d", f.Type)
	}
	if fr.Buffered() != 0 {
		t.Fatalf("Buffered() = %d after draining", fr.Buffered())
	}
}

type zeroReader struct{}

func (zeroReader) Read([]byte) (int, error) { return 0, nil }

func TestFrameReaderNoProgress(t *testing.T) {
	if _, err := NewFrameReader(zeroReader{}, FrameMinSize).ReadFrame(); err != io.ErrNoProgress {
		t.Errorf("got %v, want io.ErrNoProgress", err)
	}
}

func TestAppendBodyFrames(t *testing.T) {
	if got := AppendBodyFrames(nil, 1, nil, FrameMinSize); len(got) != 0 {
		t.Errorf("empty body produced %d bytes", len(got))
	}
	body := []byte("abcdefghij")
	got := AppendBodyFrames(nil, 5, body, 8+4)
	want := mustHex(t, `03 0005 00000004 61626364 ce
	                    03 0005 00000004 65666768 ce
	                    03 0005 00000002 696a ce`)
	if !bytes.Equal(got, want) {
		t.Errorf("got %x\nwant %x", got, want)
	}
	if got := AppendBodyFrames(nil, 5, body, 3); !bytes.Equal(got, AppendBodyFrames(nil, 5, body, 0)) {
		t.Errorf("frameMax below the overhead should fall back to FrameMinSize, got %x", got)
	}
}

func TestHeaderFrameGolden(t *testing.T) {
	props := (&Properties{DeliveryMode: 2}).Append(nil)
	got := AppendHeaderFrame(nil, 1, ClassBasic, 5, props)
	want := mustHex(t, `02 0001 0000000f  003c 0000 0000000000000005  1000 02  ce`)
	if !bytes.Equal(got, want) {
		t.Errorf("got %x\nwant %x", got, want)
	}
	if got := AppendHeartbeat(nil); !bytes.Equal(got, mustHex(t, "08 0000 00000000 ce")) {
		t.Errorf("heartbeat %x", got)
	}
	if _, err := ParseContentHeader(make([]byte, 13)); !isCode(err, SyntaxError) {
		t.Errorf("short content header: got %v", err)
	}
}
