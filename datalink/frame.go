package datalink

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire format: every frame is a 4-byte big-endian length n, then n bytes: a type byte and the
// type's fields. Integers are big-endian; a "str16" is a 2-byte length and bytes; a frame's
// message body, when it has one, runs to the end of the frame so it is never length-checked
// twice or copied into a separate length-prefixed field.

type frameType uint8

const (
	frameHello     frameType = 1 // client → server: version, node ID, nonce
	frameChallenge frameType = 2 // server → client: version, node ID, nonce, server proof
	frameProof     frameType = 3 // client → server: client proof
	frameWelcome   frameType = 4 // server → client: authenticated, requests may flow
	frameHeartbeat frameType = 10

	framePublish      frameType = 20
	framePublishReply frameType = 21
	frameConsume      frameType = 22
	frameConsumeReply frameType = 23
	frameCancel       frameType = 24
	frameCancelOk     frameType = 25
	frameSettle       frameType = 26
	frameCredit       frameType = 27
	frameGet          frameType = 28
	frameGetReply     frameType = 29
	frameDeliver      frameType = 30
	frameCancelled    frameType = 31 // owner cancelled a consumer (queue deleted)
)

// Flag bits. Decoding refuses unknown bits so that a frame re-encodes to the same bytes.
const (
	flagPersistent = 1 << 0 // publish
	flagReplicate  = 1 << 1 // publish: a replication request for the stream named as its one queue
	flagRejected   = 1 << 0 // publish reply
	flagReplyBody  = 1 << 1 // publish reply: the rest of the frame is the reply's body
	flagReplicaAck = 1 << 2 // publish reply to a replication request: sent as soon as it is
	// answered, not in publish order, so a follower's acknowledgement never waits behind a
	// forwarded publish that waits for replication itself (head-of-line blocking across nodes)
	flagNoAck       = 1 << 0 // consume, get
	flagExclusive   = 1 << 1 // consume
	flagOK          = 1 << 0 // get reply: a message was returned
	flagRedelivered = 1 << 1 // get reply, deliver
	flagPurge       = 1 << 1 // get: purge the queue instead; the reply's n is the count
	flagCount       = 1 << 2 // get: count (count.go); the queue field is the key, the reply's n the count
)

const (
	protocolVersion = 1
	// maxFrameSize bounds what a peer can make us allocate. It leaves room for the largest
	// message RabbitMQ accepts (512 MiB) plus frame fields.
	maxFrameSize = 512<<20 + 64<<10
	// MaxMessageSize is the largest message body a link carries.
	MaxMessageSize = 512 << 20
	// maxHandshakeFrame bounds frames read before the peer proved it knows the secret.
	maxHandshakeFrame = 1024
	// maxNameLen bounds queue names and node IDs (they travel as str16).
	maxNameLen = 1<<16 - 1
	// maxSeqsPerFrame keeps settle frames small; longer lists are split.
	maxSeqsPerFrame = 8192
	// frameOverhead is an upper bound on the bytes a delivery or publish adds to its body
	// besides queue names.
	frameOverhead = 64
)

// frame is the decoded form of every frame type; only the fields of its type are meaningful.
type frame struct {
	typ        frameType
	flags      uint8
	reqID      uint64
	consumerID uint64
	seq        uint64
	n          uint32 // prefetch (consume), credit, count remaining (deliver, get reply)
	kind       SettleKind
	queue      string
	queues     []string
	seqs       []uint64
	errCode    uint16
	errText    string
	msg        []byte
	nodeID     string
	nonce      []byte
	proof      []byte
}

var errFrameTooLarge = errors.New("frame too large")

// appendFrame encodes f (length prefix included) onto b. Callers keep strings within
// maxNameLen and message bodies within MaxMessageSize; error texts are truncated.
func appendFrame(b []byte, f *frame) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, byte(f.typ))
	switch f.typ {
	case frameHello:
		b = append(b, protocolVersion)
		b = appendStr16(b, f.nodeID)
		b = appendBytes16(b, f.nonce)
	case frameChallenge:
		b = append(b, protocolVersion)
		b = appendStr16(b, f.nodeID)
		b = appendBytes16(b, f.nonce)
		b = appendBytes16(b, f.proof)
	case frameProof:
		b = appendBytes16(b, f.proof)
	case frameWelcome, frameHeartbeat:
	case framePublish:
		b = binary.BigEndian.AppendUint64(b, f.reqID)
		b = append(b, f.flags)
		b = binary.BigEndian.AppendUint16(b, uint16(len(f.queues)))
		for _, q := range f.queues {
			b = appendStr16(b, q)
		}
		b = append(b, f.msg...)
	case framePublishReply:
		b = binary.BigEndian.AppendUint64(b, f.reqID)
		b = append(b, f.flags)
		b = binary.BigEndian.AppendUint16(b, f.errCode)
		b = appendStr16(b, f.errText)
		if f.flags&flagReplyBody != 0 {
			b = append(b, f.msg...)
		}
	case frameConsume:
		b = binary.BigEndian.AppendUint64(b, f.reqID)
		b = binary.BigEndian.AppendUint64(b, f.consumerID)
		b = binary.BigEndian.AppendUint32(b, f.n)
		b = append(b, f.flags)
		b = appendStr16(b, f.queue)
	case frameConsumeReply:
		b = binary.BigEndian.AppendUint64(b, f.reqID)
		b = binary.BigEndian.AppendUint16(b, f.errCode)
		b = appendStr16(b, f.errText)
	case frameCancel, frameCancelOk, frameCancelled:
		b = binary.BigEndian.AppendUint64(b, f.consumerID)
	case frameSettle:
		b = binary.BigEndian.AppendUint64(b, f.consumerID)
		b = append(b, byte(f.kind))
		b = appendStr16(b, f.queue)
		b = binary.BigEndian.AppendUint32(b, uint32(len(f.seqs)))
		for _, s := range f.seqs {
			b = binary.BigEndian.AppendUint64(b, s)
		}
	case frameCredit:
		b = binary.BigEndian.AppendUint64(b, f.consumerID)
		b = binary.BigEndian.AppendUint32(b, f.n)
	case frameGet:
		b = binary.BigEndian.AppendUint64(b, f.reqID)
		b = append(b, f.flags)
		b = appendStr16(b, f.queue)
	case frameGetReply:
		b = binary.BigEndian.AppendUint64(b, f.reqID)
		b = append(b, f.flags)
		b = binary.BigEndian.AppendUint16(b, f.errCode)
		b = appendStr16(b, f.errText)
		b = binary.BigEndian.AppendUint64(b, f.seq)
		b = binary.BigEndian.AppendUint32(b, f.n)
		b = append(b, f.msg...)
	case frameDeliver:
		b = binary.BigEndian.AppendUint64(b, f.consumerID)
		b = binary.BigEndian.AppendUint64(b, f.seq)
		b = append(b, f.flags)
		b = binary.BigEndian.AppendUint32(b, f.n)
		b = append(b, f.msg...)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(len(b)-start-4))
	return b
}

func appendStr16(b []byte, s string) []byte {
	if len(s) > maxNameLen {
		s = s[:maxNameLen]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendBytes16(b []byte, p []byte) []byte {
	if len(p) > maxNameLen {
		p = p[:maxNameLen]
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
	return append(b, p...)
}

// decoder reads fields from one frame body; the first short read makes every later read
// return zero values and leaves the error in err.
type decoder struct {
	b      []byte
	err    error
	intern *interner
}

func (d *decoder) need(n int) bool {
	if d.err != nil {
		return false
	}
	if len(d.b) < n {
		d.err = io.ErrUnexpectedEOF
		return false
	}
	return true
}

func (d *decoder) u8() uint8 {
	if !d.need(1) {
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) u16() uint16 {
	if !d.need(2) {
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return v
}

func (d *decoder) u32() uint32 {
	if !d.need(4) {
		return 0
	}
	v := binary.BigEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if !d.need(8) {
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// bytes16 returns a length-prefixed field aliasing the frame buffer.
func (d *decoder) bytes16() []byte {
	n := int(d.u16())
	if !d.need(n) {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str16() string {
	b := d.bytes16()
	if d.err != nil {
		return ""
	}
	return d.intern.get(b)
}

func (d *decoder) flags(allowed uint8) uint8 {
	v := d.u8()
	if d.err == nil && v&^allowed != 0 {
		d.err = fmt.Errorf("unknown flag bits %#x", v&^allowed)
	}
	return v
}

func (d *decoder) rest() []byte {
	if d.err != nil {
		return nil
	}
	v := d.b
	d.b = nil
	return v
}

func (d *decoder) end() {
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
}

// decodeFrame decodes body (type byte first, length prefix stripped) into f. Byte-slice fields
// (msg, nonce, proof) alias body; strings are copies (interned through in, which may be nil).
// It never panics and refuses anything that would not re-encode to the same bytes.
func decodeFrame(body []byte, f *frame, in *interner) error {
	*f = frame{}
	if len(body) == 0 {
		return errors.New("datalink: empty frame")
	}
	f.typ = frameType(body[0])
	d := decoder{b: body[1:], intern: in}
	switch f.typ {
	case frameHello, frameChallenge:
		if v := d.u8(); d.err == nil && v != protocolVersion {
			return fmt.Errorf("datalink: unsupported protocol version %d", v)
		}
		f.nodeID = d.str16()
		f.nonce = d.bytes16()
		if f.typ == frameChallenge {
			f.proof = d.bytes16()
		}
	case frameProof:
		f.proof = d.bytes16()
	case frameWelcome, frameHeartbeat:
	case framePublish:
		f.reqID = d.u64()
		f.flags = d.flags(flagPersistent | flagReplicate)
		n := int(d.u16())
		// Each name takes at least its 2-byte length: refuse counts the body cannot hold
		// before allocating for them.
		if d.err == nil && n*2 > len(d.b) {
			d.err = io.ErrUnexpectedEOF
		}
		if d.err == nil {
			f.queues = make([]string, n)
			for i := range f.queues {
				f.queues[i] = d.str16()
			}
		}
		f.msg = d.rest()
	case framePublishReply:
		f.reqID = d.u64()
		f.flags = d.flags(flagRejected | flagReplyBody | flagReplicaAck)
		f.errCode = d.u16()
		f.errText = string(d.bytes16())
		if f.flags&flagReplyBody != 0 {
			f.msg = d.rest()
		}
	case frameConsume:
		f.reqID = d.u64()
		f.consumerID = d.u64()
		f.n = d.u32()
		f.flags = d.flags(flagNoAck | flagExclusive)
		f.queue = d.str16()
	case frameConsumeReply:
		f.reqID = d.u64()
		f.errCode = d.u16()
		f.errText = string(d.bytes16())
	case frameCancel, frameCancelOk, frameCancelled:
		f.consumerID = d.u64()
	case frameSettle:
		f.consumerID = d.u64()
		f.kind = SettleKind(d.u8())
		if d.err == nil && (f.kind < SettleAck || f.kind > SettleReject) {
			d.err = fmt.Errorf("unknown settle kind %d", f.kind)
		}
		f.queue = d.str16()
		n := d.u32()
		if d.err == nil && uint64(n)*8 != uint64(len(d.b)) {
			d.err = fmt.Errorf("settle of %d seqs in %d bytes", n, len(d.b))
		}
		if d.err == nil {
			f.seqs = make([]uint64, n)
			for i := range f.seqs {
				f.seqs[i] = d.u64()
			}
		}
	case frameCredit:
		f.consumerID = d.u64()
		f.n = d.u32()
	case frameGet:
		f.reqID = d.u64()
		f.flags = d.flags(flagNoAck | flagPurge | flagCount)
		f.queue = d.str16()
	case frameGetReply:
		f.reqID = d.u64()
		f.flags = d.flags(flagOK | flagRedelivered)
		f.errCode = d.u16()
		f.errText = string(d.bytes16())
		f.seq = d.u64()
		f.n = d.u32()
		f.msg = d.rest()
	case frameDeliver:
		f.consumerID = d.u64()
		f.seq = d.u64()
		f.flags = d.flags(flagRedelivered)
		f.n = d.u32()
		f.msg = d.rest()
	default:
		return fmt.Errorf("datalink: unknown frame type %d", f.typ)
	}
	d.end()
	if d.err != nil {
		return fmt.Errorf("datalink: decode frame type %d: %w", f.typ, d.err)
	}
	return nil
}

// frameReader reads length-prefixed frames into one reused buffer.
type frameReader struct {
	r   *bufio.Reader
	buf []byte
	max int
}

// reuseLimit is the largest frame read into the reused buffer; bigger ones get their own
// allocation, which the caller may keep, so one huge message does not pin memory forever.
const reuseLimit = 1 << 20

// next returns the next frame's body. owned reports a fresh allocation the caller may keep;
// otherwise body is valid until the next call.
func (fr *frameReader) next() (body []byte, owned bool, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(fr.r, hdr[:]); err != nil {
		return nil, false, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n == 0 || n > fr.max {
		return nil, false, fmt.Errorf("datalink: frame of %d bytes: %w", n, errFrameTooLarge)
	}
	if n <= reuseLimit {
		if cap(fr.buf) < n {
			fr.buf = make([]byte, max(n, 4096))
		}
		body = fr.buf[:n]
	} else {
		body = make([]byte, n)
		owned = true
	}
	if _, err := io.ReadFull(fr.r, body); err != nil {
		return nil, false, fmt.Errorf("datalink: read frame body: %w", err)
	}
	traffic.framesIn.Add(1)
	traffic.bytesIn.Add(uint64(4 + n))
	return body, owned, nil
}

// interner turns repeated queue names into one shared string each, so a stream of publishes
// to the same queues allocates no name strings. It is used by one reader goroutine only.
type interner struct {
	m map[string]string
}

const internLimit = 4096

func (in *interner) get(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := in.m[string(b)]; ok {
		return s
	}
	if in.m == nil || len(in.m) >= internLimit {
		in.m = make(map[string]string)
	}
	s := string(b)
	in.m[s] = s
	return s
}
