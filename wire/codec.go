package wire

import (
	"encoding/binary"
	"time"
)

// MaxShortStringLen is the longest string a shortstr (one length octet) can carry.
const MaxShortStringLen = 255

// AppendUint16 appends v in network byte order.
func AppendUint16(dst []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(dst, v) }

// AppendUint32 appends v in network byte order.
func AppendUint32(dst []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(dst, v) }

// AppendUint64 appends v in network byte order.
func AppendUint64(dst []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(dst, v) }

// AppendShortString appends s as a shortstr. Append functions cannot fail, so a
// string longer than 255 bytes is truncated to 255; callers that take names
// from clients validate lengths before they get here.
func AppendShortString(dst []byte, s string) []byte {
	if len(s) > MaxShortStringLen {
		s = s[:MaxShortStringLen]
	}
	dst = append(dst, byte(len(s)))
	return append(dst, s...)
}

// AppendLongString appends s as a longstr (32-bit length prefix).
func AppendLongString(dst []byte, s string) []byte {
	dst = AppendUint32(dst, uint32(len(s)))
	return append(dst, s...)
}

// AppendLongBytes appends b as a longstr (32-bit length prefix).
func AppendLongBytes(dst []byte, b []byte) []byte {
	dst = AppendUint32(dst, uint32(len(b)))
	return append(dst, b...)
}

// argDecoder reads method arguments with a sticky error: after the first
// failure every read returns a zero value, so generated Decode methods stay
// straight-line code and report only the first problem.
type argDecoder struct {
	buf    []byte
	off    int
	method string
	err    error
}

func (d *argDecoder) need(n int, field, what string) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || len(d.buf)-d.off < n {
		d.err = syntaxErrorf("%s: truncated %s field %q at offset %d", d.method, what, field, d.off)
		return false
	}
	return true
}

func (d *argDecoder) octet(field string) uint8 {
	if !d.need(1, field, "octet") {
		return 0
	}
	v := d.buf[d.off]
	d.off++
	return v
}

func (d *argDecoder) short(field string) uint16 {
	if !d.need(2, field, "short") {
		return 0
	}
	v := binary.BigEndian.Uint16(d.buf[d.off:])
	d.off += 2
	return v
}

func (d *argDecoder) long(field string) uint32 {
	if !d.need(4, field, "long") {
		return 0
	}
	v := binary.BigEndian.Uint32(d.buf[d.off:])
	d.off += 4
	return v
}

func (d *argDecoder) longlong(field string) uint64 {
	if !d.need(8, field, "longlong") {
		return 0
	}
	v := binary.BigEndian.Uint64(d.buf[d.off:])
	d.off += 8
	return v
}

func (d *argDecoder) timestamp(field string) time.Time {
	if !d.need(8, field, "timestamp") {
		return time.Time{}
	}
	return timeFromUnix(d.longlong(field))
}

// shortstr decodes a shortstr. When the bytes equal prev it returns prev, so
// a method struct reused across frames (a channel decoding publishes to the
// same exchange and routing key) decodes without allocating.
func (d *argDecoder) shortstr(field, prev string) string {
	if !d.need(1, field, "shortstr") {
		return ""
	}
	n := int(d.buf[d.off])
	if !d.need(1+n, field, "shortstr") {
		return ""
	}
	raw := d.buf[d.off+1 : d.off+1+n]
	d.off += 1 + n
	if string(raw) == prev {
		return prev
	}
	return string(raw)
}

func (d *argDecoder) longstr(field string) string {
	if !d.need(4, field, "longstr") {
		return ""
	}
	n := binary.BigEndian.Uint32(d.buf[d.off:])
	if uint64(n) > uint64(len(d.buf)-d.off-4) {
		d.need(-1, field, "longstr")
		return ""
	}
	s := string(d.buf[d.off+4 : d.off+4+int(n)])
	d.off += 4 + int(n)
	return s
}

func (d *argDecoder) table(field string) Table {
	if d.err != nil {
		return nil
	}
	t, n, err := DecodeTable(d.buf[d.off:])
	if err != nil {
		d.err = syntaxErrorf("%s: field %q: %s", d.method, field, tableErrText(err))
		return nil
	}
	d.off += n
	return t
}

// finish rejects trailing bytes, as RabbitMQ's exact-match parser does: they
// mean the peer and we disagree on the method's layout.
func (d *argDecoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if d.off != len(d.buf) {
		return syntaxErrorf("%s: %d unexpected trailing bytes", d.method, len(d.buf)-d.off)
	}
	return nil
}

// timeFromUnix converts an AMQP timestamp (seconds since the epoch, unsigned on
// the wire) to UTC so decoded values compare equal independent of time zone.
func timeFromUnix(sec uint64) time.Time {
	return time.Unix(int64(sec), 0).UTC()
}

func tableErrText(err error) string {
	if pe, ok := err.(*ProtocolError); ok {
		return pe.Text
	}
	return err.Error()
}
