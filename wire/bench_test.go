package wire

import (
	"bytes"
	"testing"
)

// loopReader replays one stream forever, so the benchmark measures the
// reader and not the source.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

func BenchmarkReadFrame(b *testing.B) {
	var stream []byte
	stream = AppendMethodFrame(stream, 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "rpc.topic"})
	stream = AppendHeaderFrame(stream, 1, ClassBasic, 256, (&Properties{DeliveryMode: 2, ContentType: "application/json"}).Append(nil))
	stream = AppendBodyFrames(stream, 1, bytes.Repeat([]byte("x"), 256), DefaultFrameMax)
	fr := NewFrameReader(&loopReader{data: stream}, DefaultFrameMax)
	b.SetBytes(int64(len(stream) / 3))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBasicPublish(b *testing.B) {
	payload := AppendMethodFrame(nil, 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "rpc.topic", Mandatory: true})
	payload = payload[HeaderSize : len(payload)-1]
	var m BasicPublish
	b.ReportAllocs()
	for b.Loop() {
		_, _, args, err := SplitMethod(payload)
		if err != nil {
			b.Fatal(err)
		}
		if err := m.Decode(args); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeMethodBasicPublish(b *testing.B) {
	payload := AppendMethodFrame(nil, 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "rpc.topic", Mandatory: true})
	payload = payload[HeaderSize : len(payload)-1]
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeMethod(payload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendDeliver(b *testing.B) {
	deliver := &BasicDeliver{ConsumerTag: "amq.ctag-abcdefgh", DeliveryTag: 1, Exchange: "amq.direct", RoutingKey: "rpc.topic"}
	props := (&Properties{DeliveryMode: 2, ContentType: "application/json", Headers: Table{"x": int32(1)}}).Append(nil)
	body := bytes.Repeat([]byte("x"), 256)
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		deliver.DeliveryTag++
		buf = AppendMethodFrame(buf[:0], 1, deliver)
		buf = AppendHeaderFrame(buf, 1, ClassBasic, uint64(len(body)), props)
		buf = AppendBodyFrames(buf, 1, body, DefaultFrameMax)
	}
}

func BenchmarkScanProperties(b *testing.B) {
	full := fullProperties()
	props := full.Append(nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ScanProperties(props); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendProperties(b *testing.B) {
	p := Properties{DeliveryMode: 2, ContentType: "application/json", Headers: Table{"a": int32(1), "b": "x"}}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = p.Append(buf[:0])
	}
}

// The server's per-message paths must not allocate; a regression here is a
// throughput regression, so it fails a test rather than only a benchmark.
func TestHotPathsDoNotAllocate(t *testing.T) {
	var stream []byte
	stream = AppendMethodFrame(stream, 1, &BasicPublish{Exchange: "amq.direct", RoutingKey: "rpc"})
	stream = AppendHeaderFrame(stream, 1, ClassBasic, 4, (&Properties{DeliveryMode: 2, Expiration: "100"}).Append(nil))
	stream = AppendBodyFrames(stream, 1, []byte("body"), DefaultFrameMax)
	fr := NewFrameReader(&loopReader{data: stream}, DefaultFrameMax)
	var publish BasicPublish
	deliver := &BasicDeliver{ConsumerTag: "ctag", Exchange: "amq.direct", RoutingKey: "rpc"}
	out := make([]byte, 0, 1024)

	allocs := testing.AllocsPerRun(200, func() {
		for range 3 {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			switch f.Type {
			case FrameMethod:
				_, _, args, err := SplitMethod(f.Payload)
				if err == nil {
					err = publish.Decode(args)
				}
				if err != nil {
					t.Fatal(err)
				}
			case FrameHeader:
				ch, err := ParseContentHeader(f.Payload)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ScanProperties(ch.Props); err != nil {
					t.Fatal(err)
				}
				out = AppendHeaderFrame(out[:0], 1, ClassBasic, ch.BodySize, ch.Props)
			case FrameBody:
				out = AppendBodyFrames(out, 1, f.Payload, DefaultFrameMax)
			}
		}
		deliver.DeliveryTag++
		out = AppendMethodFrame(out, 1, deliver)
	})
	if allocs != 0 {
		t.Errorf("publish-in/deliver-out path allocates %.1f times per message, want 0", allocs)
	}
}
