package wire

import (
	"encoding/binary"
	"errors"
	"io"
)

// Frame types and the frame-end octet.
const (
	FrameMethod    = 1
	FrameHeader    = 2
	FrameBody      = 3
	FrameHeartbeat = 8
	FrameEnd       = 0xCE
)

// Frame sizes. FrameMinSize is the frame-max every peer must accept, also
// before connection.tune settles the real limit.
const (
	FrameMinSize    = 4096
	DefaultFrameMax = 131072
	HeaderSize      = 7 // type(1) channel(2) size(4)
)

// frameOverhead is the header plus the frame-end octet: what frame-max counts
// on top of the payload.
const frameOverhead = HeaderSize + 1

// ProtocolHeader is what a client sends first to ask for AMQP 0-9-1.
var ProtocolHeader = []byte("AMQP\x00\x00\x09\x01")

// Frame is one frame read by a FrameReader. Payload aliases the reader's
// buffer and is valid only until the next ReadFrame.
type Frame struct {
	Type    uint8
	Channel uint16
	Payload []byte
}

// The read buffer starts small so that idle connections stay cheap, and
// doubles (up to maxReadBuffer) whenever a read fills all the room it had: a
// busy connection then batches many small frames per read syscall.
const (
	initialReadBuffer = 4 * 1024
	maxReadBuffer     = 64 * 1024
)

// maxEmptyReads mirrors bufio's guard against readers that return (0, nil) forever.
const maxEmptyReads = 100

// FrameReader reads frames from a stream into one reused buffer, so reading a
// frame does not allocate once the buffer has grown to the largest frame seen.
// It is not safe for concurrent use.
type FrameReader struct {
	r          io.Reader
	buf        []byte
	start, end int // unread bytes are buf[start:end]
	maxFrame   uint32
	grow       bool // the last read filled the buffer: double it when next empty
}

// NewFrameReader returns a reader that rejects frames larger than
// maxFrameSize, counted as AMQP frame-max counts: payload plus the 8 octets of
// header and frame-end. Values below FrameMinSize (including 0, which the
// server never negotiates) are raised to FrameMinSize.
func NewFrameReader(r io.Reader, maxFrameSize uint32) *FrameReader {
	fr := &FrameReader{r: r}
	fr.SetMaxFrameSize(maxFrameSize)
	return fr
}

// SetMaxFrameSize changes the frame size limit, typically after connection.tune-ok.
func (r *FrameReader) SetMaxFrameSize(n uint32) {
	if n < FrameMinSize {
		n = FrameMinSize
	}
	r.maxFrame = n
}

// Buffered returns how many bytes are already read but not yet returned as
// frames. While it is non-zero the next ReadFrame may not need the network,
// so the server can keep working before it flushes its writes.
func (r *FrameReader) Buffered() int { return r.end - r.start }

// ReadFrame reads the next frame. I/O errors are returned as they are (io.EOF
// on a clean close between frames, io.ErrUnexpectedEOF inside a frame). A
// frame larger than the limit, of unknown type, or without the 0xCE frame-end
// octet yields *ProtocolError{Code: FrameError}.
func (r *FrameReader) ReadFrame() (Frame, error) {
	if err := r.fill(HeaderSize); err != nil {
		return Frame{}, err
	}
	hdr := r.buf[r.start : r.start+HeaderSize]
	typ := hdr[0]
	channel := binary.BigEndian.Uint16(hdr[1:])
	size := binary.BigEndian.Uint32(hdr[3:])

	switch typ {
	case FrameMethod, FrameHeader, FrameBody, FrameHeartbeat:
	default:
		if string(hdr[:4]) == "AMQP" {
			return Frame{}, frameErrorf("unexpected protocol header where a frame should start")
		}
		return Frame{}, frameErrorf("unknown frame type %d on channel %d", typ, channel)
	}
	if uint64(size)+frameOverhead > uint64(r.maxFrame) {
		return Frame{}, frameErrorf("type %d frame on channel %d of %d bytes exceeds frame-max %d", typ, channel, uint64(size)+frameOverhead, r.maxFrame)
	}

	total := int(size) + frameOverhead
	if err := r.fill(total); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	frame := r.buf[r.start : r.start+total]
	if end := frame[total-1]; end != FrameEnd {
		return Frame{}, frameErrorf("type %d frame on channel %d of %d payload bytes ends with 0x%02x instead of frame-end 0xCE", typ, channel, size, end)
	}
	r.start += total
	return Frame{Type: typ, Channel: channel, Payload: frame[HeaderSize : total-1]}, nil
}

// fill makes at least n unread bytes available, compacting or growing the
// buffer as needed. It returns io.EOF only when no byte of the needed ones
// arrived and io.ErrUnexpectedEOF when the stream ended part way.
func (r *FrameReader) fill(n int) error {
	if r.end-r.start >= n {
		return nil
	}
	if r.start == r.end {
		r.start, r.end = 0, 0 // everything consumed: reuse the buffer from its start
		if r.grow && cap(r.buf) < maxReadBuffer {
			r.buf = make([]byte, min(2*cap(r.buf), maxReadBuffer))
		}
		r.grow = false
	}
	if len(r.buf)-r.start < n {
		// The previous frame's payload may alias buf, but its validity ended
		// with this call, so moving bytes is safe.
		if cap(r.buf) < n {
			grown := make([]byte, roomFor(n))
			r.end = copy(grown, r.buf[r.start:r.end])
			r.buf = grown
		} else {
			r.buf = r.buf[:cap(r.buf)]
			r.end = copy(r.buf, r.buf[r.start:r.end])
		}
		r.start = 0
	}
	empty := 0
	for r.end-r.start < n {
		got, err := r.r.Read(r.buf[r.end:])
		r.end += got
		if got > 0 && r.end == len(r.buf) {
			r.grow = true
		}
		if r.end-r.start >= n {
			return nil
		}
		if err != nil {
			if errors.Is(err, io.EOF) && r.end > r.start {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		if got == 0 {
			empty++
			if empty >= maxEmptyReads {
				return io.ErrNoProgress
			}
		}
	}
	return nil
}

// roomFor sizes a buffer that must hold n bytes: the next power of two, so a
// large frame leaves room for the frames behind it in the same read.
func roomFor(n int) int {
	size := initialReadBuffer
	for size < n {
		size *= 2
	}
	return size
}

// AppendMethodFrame appends a complete method frame carrying m.
func AppendMethodFrame(dst []byte, channel uint16, m Method) []byte {
	start := len(dst)
	dst = append(dst, FrameMethod, byte(channel>>8), byte(channel), 0, 0, 0, 0)
	dst = AppendUint16(dst, m.ClassID())
	dst = AppendUint16(dst, m.MethodID())
	dst = m.Append(dst)
	binary.BigEndian.PutUint32(dst[start+3:], uint32(len(dst)-start-HeaderSize))
	return append(dst, FrameEnd)
}

// AppendHeaderFrame appends a content header frame. props is the raw
// property-flags and property-list encoding, as in ContentHeader.Props or
// from Properties.Append, so the broker can forward a publisher's properties
// without decoding them.
func AppendHeaderFrame(dst []byte, channel uint16, classID uint16, bodySize uint64, props []byte) []byte {
	payload := 12 + len(props)
	dst = append(dst, FrameHeader, byte(channel>>8), byte(channel))
	dst = AppendUint32(dst, uint32(payload))
	dst = AppendUint16(dst, classID)
	dst = append(dst, 0, 0) // weight, always zero
	dst = AppendUint64(dst, bodySize)
	dst = append(dst, props...)
	return append(dst, FrameEnd)
}

// AppendBodyFrames appends body as content body frames of at most frameMax
// bytes each (header and frame-end included). An empty body appends nothing.
// frameMax 0 means no limit; other values too small to carry a payload byte
// are raised to FrameMinSize.
func AppendBodyFrames(dst []byte, channel uint16, body []byte, frameMax uint32) []byte {
	chunk := len(body)
	if frameMax != 0 {
		if frameMax <= frameOverhead {
			frameMax = FrameMinSize
		}
		if uint64(chunk) > uint64(frameMax-frameOverhead) {
			chunk = int(frameMax - frameOverhead)
		}
	}
	for len(body) > 0 {
		n := min(chunk, len(body))
		dst = append(dst, FrameBody, byte(channel>>8), byte(channel))
		dst = AppendUint32(dst, uint32(n))
		dst = append(dst, body[:n]...)
		dst = append(dst, FrameEnd)
		body = body[n:]
	}
	return dst
}

// AppendHeartbeat appends a heartbeat frame (always on channel 0).
func AppendHeartbeat(dst []byte) []byte {
	return append(dst, FrameHeartbeat, 0, 0, 0, 0, 0, 0, FrameEnd)
}

// ContentHeader is the payload of a content header frame.
type ContentHeader struct {
	ClassID  uint16
	BodySize uint64
	Props    []byte // property flags and list; aliases the frame payload
}

// ParseContentHeader parses a content header frame payload: class-id(2)
// weight(2) body-size(8), then property flags and list, which stay encoded.
func ParseContentHeader(payload []byte) (ContentHeader, error) {
	if len(payload) < 14 {
		return ContentHeader{}, syntaxErrorf("content header of %d bytes is shorter than its 14 fixed bytes", len(payload))
	}
	return ContentHeader{
		ClassID:  binary.BigEndian.Uint16(payload),
		BodySize: binary.BigEndian.Uint64(payload[4:]),
		Props:    payload[12:],
	}, nil
}
