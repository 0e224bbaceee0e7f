package server

import (
	"bytes"
	"testing"
)

// TestSingleFrameBodyIsOneAllocation: the common publish (properties, then a body in one
// frame) costs one allocation, sized exactly.
func TestSingleFrameBodyIsOneAllocation(t *testing.T) {
	props, payload := []byte{0x90, 0, 3, 'a', 'b', 'c'}, bytes.Repeat([]byte{'x'}, 1000)
	var buf []byte
	allocs := testing.AllocsPerRun(100, func() { buf = firstBodyBuf(props, payload, len(payload)) })
	if allocs != 1 {
		t.Fatalf("%.1f allocations per message, want 1", allocs)
	}
	if cap(buf) != len(props)+len(payload) || !bytes.Equal(buf[len(props):], payload) || !bytes.Equal(buf[:len(props)], props) {
		t.Fatalf("buffer len %d cap %d", len(buf), cap(buf))
	}
}

// TestBodyBufferFollowsReceivedBytes: a body announced as 128 MiB and trickled in holds memory
// proportional to what arrived, and a body that arrives in full ends exactly sized.
func TestBodyBufferFollowsReceivedBytes(t *testing.T) {
	const announced = 128 << 20
	buf := firstBodyBuf(nil, []byte{'x'}, announced)
	for range 1000 {
		buf = appendBody(buf, []byte{'y'}, announced)
	}
	if cap(buf) > 2*len(buf)+minBodyGrowth {
		t.Fatalf("%d bytes received hold a buffer of %d", len(buf), cap(buf))
	}
	const size = 1<<20 + 17
	frame := bytes.Repeat([]byte{'z'}, 131064)
	buf = firstBodyBuf([]byte{0, 0}, frame, size)
	for len(buf) < 2+size {
		buf = appendBody(buf, frame[:min(len(frame), 2+size-len(buf))], 2+size)
	}
	if len(buf) != 2+size || cap(buf) != 2+size {
		t.Fatalf("complete body: len %d cap %d, want %d", len(buf), cap(buf), 2+size)
	}
}
