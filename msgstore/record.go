package msgstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// On-disk record layout (little endian):
//
//	[4] length of type+payload
//	[4] CRC-32C (Castagnoli) of type+payload
//	[1] type
//	[…] payload
//
// Payloads:
//
//	publish:    uvarint id, uvarint queue count, queue count × (uvarint len, bytes), data (rest)
//	ack:        uvarint len, queue bytes, uvarint id count, id count × uvarint id
//	drop-queue: uvarint len, queue bytes
//	ack-range:  uvarint len, queue bytes, uvarint after, uvarint upTo (releases the queue's ids in (after, upTo])
const (
	recordHeaderSize = 8

	// maxRecordBody bounds a record's type+payload. It protects recovery from allocating
	// gigabytes because of a corrupt length field, and Publish from writing records that
	// recovery would refuse.
	maxRecordBody = 1 << 29

	recPublish   byte = 1
	recAck       byte = 2
	recDropQueue byte = 3
	recAckRange  byte = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	errShortPayload   = errors.New("payload ends early")
	errTrailingBytes  = errors.New("unexpected bytes after payload")
	errUnknownType    = errors.New("unknown record type")
	errBadVarint      = errors.New("malformed varint")
	errLengthTooLarge = errors.New("length field exceeds what is left")
)

// beginRecord reserves the header and writes the type; sealRecord fills the header in once
// the payload is appended. Encoding in place into the shared batch buffer is what keeps
// the publish path free of per-message allocations.
func beginRecord(buf []byte, typ byte) ([]byte, int) {
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0, 0, 0, 0, 0, typ)
	return buf, start
}

func sealRecord(buf []byte, start int) []byte {
	body := buf[start+recordHeaderSize:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(body, castagnoli))
	return buf
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// publishRecordSize is the exact encoded size of a publish record, used to reject
// oversized messages before touching the buffer.
func publishRecordSize(id uint64, queues []string, data []byte) int {
	n := recordHeaderSize + 1 + uvarintLen(id) + uvarintLen(uint64(len(queues))) + len(data)
	for _, q := range queues {
		n += uvarintLen(uint64(len(q))) + len(q)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func appendPublish(buf []byte, id uint64, queues []string, data []byte) []byte {
	buf, start := beginRecord(buf, recPublish)
	buf = binary.AppendUvarint(buf, id)
	buf = binary.AppendUvarint(buf, uint64(len(queues)))
	for _, q := range queues {
		buf = appendString(buf, q)
	}
	buf = append(buf, data...)
	return sealRecord(buf, start)
}

func appendAck(buf []byte, queue string, ids []uint64) []byte {
	buf, start := beginRecord(buf, recAck)
	buf = appendString(buf, queue)
	buf = binary.AppendUvarint(buf, uint64(len(ids)))
	for _, id := range ids {
		buf = binary.AppendUvarint(buf, id)
	}
	return sealRecord(buf, start)
}

func appendAckRange(buf []byte, queue string, after, upTo uint64) []byte {
	buf, start := beginRecord(buf, recAckRange)
	buf = appendString(buf, queue)
	buf = binary.AppendUvarint(buf, after)
	buf = binary.AppendUvarint(buf, upTo)
	return sealRecord(buf, start)
}

func appendDropQueue(buf []byte, queue string) []byte {
	buf, start := beginRecord(buf, recDropQueue)
	buf = appendString(buf, queue)
	return sealRecord(buf, start)
}

// record is one decoded record. Its slices are reused from record to record by the
// decoder, so a consumer must copy what it keeps.
type record struct {
	typ    byte
	size   int64    // whole record including header
	id     uint64   // publish
	queues []string // publish
	data   []byte   // publish; aliases the read buffer
	queue  string   // ack, drop-queue, ack-range
	ids    []uint64 // ack
	after  uint64   // ack-range
	upTo   uint64   // ack-range
}

// stringInterner turns queue-key bytes into strings, allocating each distinct key once;
// recovery sees the same few keys millions of times, mostly the same one in a row.
type stringInterner struct {
	m    map[string]string
	last string
}

func newInterner() *stringInterner { return &stringInterner{m: make(map[string]string)} }

func (in *stringInterner) intern(b []byte) string {
	if in.last == string(b) {
		return in.last
	}
	s, ok := in.m[string(b)]
	if !ok {
		s = string(b)
		in.m[s] = s
	}
	in.last = s
	return s
}

// payloadReader decodes the payload defensively: every length is checked against what is
// left before it is used, so corrupt input yields an error, never a panic or a huge
// allocation.
type payloadReader struct {
	b   []byte
	err error
}

func (r *payloadReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			r.err = errShortPayload
		} else {
			r.err = errBadVarint
		}
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *payloadReader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.err = errLengthTooLarge
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// decodeBody decodes type+payload (the checksummed part of a record) into rec.
func decodeBody(body []byte, rec *record, in *stringInterner) error {
	if len(body) == 0 {
		return errShortPayload
	}
	rec.typ = body[0]
	r := payloadReader{b: body[1:]}
	switch rec.typ {
	case recPublish:
		rec.id = r.uvarint()
		if r.err == nil && rec.id == 0 {
			// Ids start at 1; 0 means "none" in the store's accounting.
			return errors.New("publish: message id 0")
		}
		count := r.uvarint()
		// Every queue key takes at least one byte, which bounds count by what is left.
		if r.err == nil && count > uint64(len(r.b)) {
			return fmt.Errorf("publish queue count %d: %w", count, errLengthTooLarge)
		}
		rec.queues = rec.queues[:0]
		for i := uint64(0); i < count && r.err == nil; i++ {
			q := r.bytes()
			if r.err == nil {
				rec.queues = append(rec.queues, in.intern(q))
			}
		}
		if r.err != nil {
			return fmt.Errorf("publish: %w", r.err)
		}
		rec.data = r.b
	case recAck:
		q := r.bytes()
		count := r.uvarint()
		if r.err == nil && count > uint64(len(r.b)) {
			return fmt.Errorf("ack id count %d: %w", count, errLengthTooLarge)
		}
		rec.ids = rec.ids[:0]
		for i := uint64(0); i < count && r.err == nil; i++ {
			id := r.uvarint()
			if r.err == nil {
				rec.ids = append(rec.ids, id)
			}
		}
		if r.err != nil {
			return fmt.Errorf("ack: %w", r.err)
		}
		if len(r.b) != 0 {
			return fmt.Errorf("ack: %w", errTrailingBytes)
		}
		rec.queue = in.intern(q)
	case recDropQueue:
		q := r.bytes()
		if r.err != nil {
			return fmt.Errorf("drop-queue: %w", r.err)
		}
		if len(r.b) != 0 {
			return fmt.Errorf("drop-queue: %w", errTrailingBytes)
		}
		rec.queue = in.intern(q)
	case recAckRange:
		q := r.bytes()
		rec.after = r.uvarint()
		rec.upTo = r.uvarint()
		if r.err != nil {
			return fmt.Errorf("ack-range: %w", r.err)
		}
		if len(r.b) != 0 {
			return fmt.Errorf("ack-range: %w", errTrailingBytes)
		}
		rec.queue = in.intern(q)
	default:
		return fmt.Errorf("type %d: %w", rec.typ, errUnknownType)
	}
	return nil
}
