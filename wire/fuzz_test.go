package wire

import (
	"bytes"
	"errors"
	"io"
	"math"
	"reflect"
	"testing"
)

func FuzzFrameReader(f *testing.F) {
	f.Add(AppendHeartbeat(nil))
	f.Add(AppendMethodFrame(nil, 1, &BasicPublish{Exchange: "x", RoutingKey: "k"}))
	f.Add(AppendHeaderFrame(nil, 1, ClassBasic, 3, (&Properties{DeliveryMode: 2}).Append(nil)))
	f.Add(AppendBodyFrames(nil, 1, []byte("abc"), 0))
	f.Add([]byte{FrameBody, 0, 1, 0xff, 0xff, 0xff, 0xff})

	const maxFrame = FrameMinSize * 2
	f.Fuzz(func(t *testing.T, data []byte) {
		fr := NewFrameReader(bytes.NewReader(data), maxFrame)
		consumed := 0
		for {
			frame, err := fr.ReadFrame()
			if err != nil {
				var pe *ProtocolError
				if err != io.EOF && err != io.ErrUnexpectedEOF && !(errors.As(err, &pe) && pe.Code == FrameError) {
					t.Fatalf("unexpected error type: %v", err)
				}
				break
			}
			if len(frame.Payload)+frameOverhead > maxFrame {
				t.Fatalf("returned a frame of %d payload bytes over frame-max", len(frame.Payload))
			}
			// The frame must be exactly the next bytes of the stream.
			n := len(frame.Payload) + frameOverhead
			if !bytes.Equal(data[consumed+HeaderSize:consumed+n-1], frame.Payload) {
				t.Fatal("payload does not match the input")
			}
			consumed += n
			if fr.Buffered() > len(data)-consumed {
				t.Fatalf("Buffered() = %d with %d bytes left", fr.Buffered(), len(data)-consumed)
			}
		}
		// Allocation stays bounded by frame-max, whatever sizes the input claims.
		if cap(fr.buf) > max(maxReadBuffer, roomFor(int(maxFrame))) {
			t.Fatalf("buffer grew to %d bytes", cap(fr.buf))
		}
	})
}

func FuzzDecodeMethod(f *testing.F) {
	for _, m := range []Method{
		&ConnectionStart{VersionMinor: 9, ServerProperties: Table{"a": int32(1)}, Mechanisms: "PLAIN", Locales: "en_US"},
		&ConnectionStartOk{ClientProperties: Table{"product": "x"}, Mechanism: "AMQPLAIN", Response: "\x05LOGINS\x00\x00\x00\x05guest"},
		&QueueDeclare{Queue: "q", Durable: true, Arguments: Table{"x-expires": int32(1000)}},
		&BasicPublish{Exchange: "ex", RoutingKey: "rk", Mandatory: true},
		&BasicDeliver{ConsumerTag: "c", DeliveryTag: 1},
		&BasicNack{DeliveryTag: 3, Multiple: true, Requeue: true},
	} {
		f.Add(AppendMethodFrame(nil, 0, m)[HeaderSize:])
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeMethod(payload)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || (pe.Code != SyntaxError && pe.Code != NotImplemented) {
				t.Fatalf("error is not SYNTAX_ERROR or NOT_IMPLEMENTED: %v", err)
			}
			return
		}
		// Unused bits and table key order need not survive, so compare the
		// re-encodings of two successive round trips.
		first := m.Append(nil)
		again, _ := NewMethod(m.ClassID(), m.MethodID())
		if err := again.Decode(first); err != nil {
			t.Fatalf("re-decoding our own encoding of %s: %v", m.Name(), err)
		}
		if second := again.Append(nil); !bytes.Equal(first, second) {
			t.Fatalf("%s encoding is not stable:\n%x\n%x", m.Name(), first, second)
		}
		// decode∘encode is the identity on what was decoded, up to AppendTable's one documented
		// normalisation: an 'L' (uint64) value that fits is written as 'l' (int64), because
		// RabbitMQ and amqp091-go do not read 'L'.
		normaliseTables(reflect.ValueOf(m))
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("%s changed in a round trip:\n%#v\n%#v", m.Name(), m, again)
		}
	})
}

func FuzzDecodeTable(f *testing.F) {
	f.Add(AppendTable(nil, Table{"a": int32(1), "b": "s", "c": []any{true, nil}, "d": Table{"e": 1.5}}))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 3, 1, 'k', 'V'})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := DecodeTableBody(b); err != nil && !isCode(err, SyntaxError) {
			t.Fatalf("DecodeTableBody error is not SYNTAX_ERROR: %v", err)
		}
		table, n, err := DecodeTable(b)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != SyntaxError {
				t.Fatalf("error is not SYNTAX_ERROR: %v", err)
			}
			return
		}
		if n < 4 || n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		first := AppendTable(nil, table)
		decoded, _, err := DecodeTable(first)
		if err != nil {
			t.Fatalf("re-decoding our own encoding: %v", err)
		}
		if second := AppendTable(nil, decoded); !bytes.Equal(first, second) {
			t.Fatalf("table encoding is not stable:\n%x\n%x", first, second)
		}
	})
}

func FuzzDecodeProperties(f *testing.F) {
	full := fullProperties()
	f.Add(full.Append(nil))
	f.Add((&Properties{DeliveryMode: 1}).Append(nil))
	f.Add([]byte{0x10, 0x01, 0, 0, 2})
	f.Fuzz(func(t *testing.T, props []byte) {
		p, err := DecodeProperties(props)
		scan, scanErr := ScanProperties(props)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || pe.Code != SyntaxError {
				t.Fatalf("error is not SYNTAX_ERROR: %v", err)
			}
			return
		}
		if scanErr != nil {
			t.Fatalf("DecodeProperties accepted what ScanProperties rejects: %v", scanErr)
		}
		if scan.DeliveryMode != p.DeliveryMode || scan.Priority != p.Priority || string(scan.Expiration) != p.Expiration {
			t.Fatalf("scan %+v disagrees with decode %+v", scan, p)
		}
		first := p.Append(nil)
		again, err := DecodeProperties(first)
		if err != nil {
			t.Fatalf("re-decoding our own encoding: %v", err)
		}
		if second := again.Append(nil); !bytes.Equal(first, second) {
			t.Fatalf("properties encoding is not stable:\n%x\n%x", first, second)
		}
	})
}

// FuzzBodyFrames: a body split into body frames under any frame-max reads back, through the
// frame reader, as frames of that channel none larger than frame-max whose payloads
// concatenate to exactly the body (decode∘encode is the identity).
func FuzzBodyFrames(f *testing.F) {
	f.Add([]byte("hello"), uint16(7), uint32(0))
	f.Add(bytes.Repeat([]byte{0xce}, 5000), uint16(1), uint32(FrameMinSize))
	f.Add([]byte{}, uint16(0), uint32(9))
	f.Fuzz(func(t *testing.T, body []byte, channel uint16, frameMax uint32) {
		if frameMax != 0 {
			frameMax = max(frameMax%(4*FrameMinSize), FrameMinSize)
		}
		stream := AppendBodyFrames(nil, channel, body, frameMax)
		readMax := frameMax
		if readMax == 0 {
			readMax = uint32(len(body) + frameOverhead)
		}
		fr := NewFrameReader(bytes.NewReader(stream), readMax)
		var got []byte
		frames := 0
		for {
			frame, err := fr.ReadFrame()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading back frame %d: %v", frames, err)
			}
			frames++
			if frame.Type != FrameBody || frame.Channel != channel {
				t.Fatalf("frame %d: type %d channel %d, want body frames on %d", frames, frame.Type, frame.Channel, channel)
			}
			if len(frame.Payload) == 0 {
				t.Fatalf("frame %d is empty", frames)
			}
			got = append(got, frame.Payload...)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("%d bytes in %d frames read back as %d bytes", len(body), frames, len(got))
		}
	})
}

// normaliseTables turns, in every Table field of the method v points to, uint64 values that fit
// into int64 (what AppendTable writes for them).
func normaliseTables(v reflect.Value) {
	v = v.Elem()
	for i := 0; i < v.NumField(); i++ {
		if t, ok := v.Field(i).Interface().(Table); ok {
			normaliseValue(t)
		}
	}
}

func normaliseValue(x any) any {
	switch y := x.(type) {
	case uint64:
		if y <= math.MaxInt64 {
			return int64(y)
		}
	case Table:
		for k, e := range y {
			y[k] = normaliseValue(e)
		}
	case []any:
		for i, e := range y {
			y[i] = normaliseValue(e)
		}
	}
	return x
}
