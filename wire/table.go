package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"time"
)

// Table is an AMQP field table. Values use the Go types listed at AppendTable.
type Table map[string]any

// Decimal is an AMQP decimal: Value × 10^-Scale.
type Decimal struct {
	Scale uint8
	Value int32
}

// maxTableDepth bounds nesting of tables and arrays. Real clients nest a few
// levels; the bound keeps hostile input from recursing once per five bytes.
const maxTableDepth = 64

// AppendTable appends t with its 4-byte length prefix. Keys are sorted so the
// same table always encodes to the same bytes.
//
// Go types map to RabbitMQ's type tags: bool 't', int8 'b', uint8 'B',
// int16 's', uint16 'u', int32 'I', uint32 'i', int64 and int 'l', uint64 and
// uint 'l' (or 'L' above MaxInt64), float32 'f', float64 'd', Decimal 'D',
// string 'S', []byte 'x', []any and []string 'A', time.Time 'T',
// Table and map[string]any 'F', nil 'V'. Any other type is written as void
// ('V'); use Table.Validate to catch that before encoding.
func AppendTable(dst []byte, t Table) []byte {
	return appendTableDepth(dst, t, 0)
}

func appendTableDepth(dst []byte, t Table, depth int) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	if len(t) > 0 {
		// Sorting needs the keys in a slice; a small stack array covers the
		// usual handful of arguments without a heap allocation.
		var stack [16]string
		keys := stack[:0]
		for k := range t {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = AppendShortString(dst, k)
			dst = appendFieldValue(dst, t[k], depth)
		}
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendArray(dst []byte, a []any, depth int) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	for _, v := range a {
		dst = appendFieldValue(dst, v, depth)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func appendFieldValue(dst []byte, v any, depth int) []byte {
	if depth >= maxTableDepth {
		return append(dst, 'V')
	}
	switch v := v.(type) {
	case nil:
		return append(dst, 'V')
	case bool:
		b := byte(0)
		if v {
			b = 1
		}
		return append(dst, 't', b)
	case int8:
		return append(dst, 'b', byte(v))
	case uint8:
		return append(dst, 'B', v)
	case int16:
		return AppendUint16(append(dst, 's'), uint16(v))
	case uint16:
		return AppendUint16(append(dst, 'u'), v)
	case int32:
		return AppendUint32(append(dst, 'I'), uint32(v))
	case uint32:
		return AppendUint32(append(dst, 'i'), v)
	case int64:
		return AppendUint64(append(dst, 'l'), uint64(v))
	case int:
		return AppendUint64(append(dst, 'l'), uint64(v))
	case uint64:
		return appendUnsigned64(dst, v)
	case uint:
		return appendUnsigned64(dst, uint64(v))
	case float32:
		return AppendUint32(append(dst, 'f'), math.Float32bits(v))
	case float64:
		return AppendUint64(append(dst, 'd'), math.Float64bits(v))
	case Decimal:
		return AppendUint32(append(dst, 'D', v.Scale), uint32(v.Value))
	case string:
		return AppendLongString(append(dst, 'S'), v)
	case []byte:
		return AppendLongBytes(append(dst, 'x'), v)
	case time.Time:
		return AppendUint64(append(dst, 'T'), uint64(v.Unix()))
	case Table:
		return appendTableDepth(append(dst, 'F'), v, depth+1)
	case map[string]any:
		return appendTableDepth(append(dst, 'F'), Table(v), depth+1)
	case []any:
		return appendArray(append(dst, 'A'), v, depth+1)
	case []string:
		dst = append(dst, 'A')
		start := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		for _, s := range v {
			dst = AppendLongString(append(dst, 'S'), s)
		}
		binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
		return dst
	default:
		return append(dst, 'V')
	}
}

// appendUnsigned64 writes 'l' when the value fits: RabbitMQ and amqp091-go
// do not read 'L', so it is only the last resort for values above MaxInt64.
func appendUnsigned64(dst []byte, v uint64) []byte {
	if v <= math.MaxInt64 {
		return AppendUint64(append(dst, 'l'), v)
	}
	return AppendUint64(append(dst, 'L'), v)
}

// Validate reports the first value AppendTable cannot encode faithfully: an
// unsupported Go type, a key longer than 255 bytes, or nesting deeper than 64.
func (t Table) Validate() error {
	return validateTable(t, 0)
}

func validateTable(t Table, depth int) error {
	for k, v := range t {
		if len(k) > MaxShortStringLen {
			return fmt.Errorf("table key %.20q...: longer than %d bytes", k, MaxShortStringLen)
		}
		if err := validateValue(v, depth); err != nil {
			return fmt.Errorf("table key %q: %w", k, err)
		}
	}
	return nil
}

func validateValue(v any, depth int) error {
	if depth >= maxTableDepth {
		return fmt.Errorf("nested deeper than %d levels", maxTableDepth)
	}
	switch v := v.(type) {
	case nil, bool, int8, uint8, int16, uint16, int32, uint32, int64, int, uint64, uint,
		float32, float64, Decimal, string, []byte, time.Time, []string:
		return nil
	case Table:
		return validateTable(v, depth+1)
	case map[string]any:
		return validateTable(Table(v), depth+1)
	case []any:
		for i, e := range v {
			if err := validateValue(e, depth+1); err != nil {
				return fmt.Errorf("array index %d: %w", i, err)
			}
		}
		return nil
	default:
		return fmt.Errorf("unsupported field value type %T", v)
	}
}

// DecodeTable decodes a field table starting at its 4-byte length prefix and
// returns it with the number of bytes consumed. Malformed input yields a
// *ProtocolError with code SyntaxError and a text naming the problem. The
// result never aliases b.
//
// Type tags decode as RabbitMQ reads them (see AppendTable), plus 'L' as
// uint64 and 'U' as int16, which py-amqp and Qpid write.
func DecodeTable(b []byte) (t Table, n int, err error) {
	return decodeTableDepth(b, 0)
}

// DecodeTableBody decodes the entries of a field table that comes without
// its length prefix, as in the AMQPLAIN response py-amqp and kombu send in
// connection.start-ok ({LOGIN, PASSWORD}).
func DecodeTableBody(body []byte) (Table, error) {
	return decodeTableEntries(body, 0)
}

func decodeTableDepth(b []byte, depth int) (Table, int, error) {
	body, n, err := lengthPrefixed(b, "table")
	if err != nil {
		return nil, 0, err
	}
	t, err := decodeTableEntries(body, depth)
	if err != nil {
		return nil, 0, err
	}
	return t, n, nil
}

func decodeTableEntries(body []byte, depth int) (Table, error) {
	if depth >= maxTableDepth {
		return nil, syntaxErrorf("field table nested deeper than %d levels", maxTableDepth)
	}
	t := make(Table)
	for off := 0; off < len(body); {
		keyLen := int(body[off])
		if off+1+keyLen > len(body) {
			return nil, syntaxErrorf("field table: key at offset %d overruns the table", off)
		}
		key := string(body[off+1 : off+1+keyLen])
		off += 1 + keyLen
		v, used, err := decodeFieldValue(body[off:], depth)
		if err != nil {
			return nil, syntaxErrorf("field table key %q: %s", key, tableErrText(err))
		}
		t[key] = v
		off += used
	}
	return t, nil
}

func decodeArray(b []byte, depth int) ([]any, int, error) {
	body, n, err := lengthPrefixed(b, "array")
	if err != nil {
		return nil, 0, err
	}
	if depth >= maxTableDepth {
		return nil, 0, syntaxErrorf("field array nested deeper than %d levels", maxTableDepth)
	}
	a := []any{}
	for off, i := 0, 0; off < len(body); i++ {
		v, used, err := decodeFieldValue(body[off:], depth)
		if err != nil {
			return nil, 0, syntaxErrorf("field array index %d: %s", i, tableErrText(err))
		}
		a = append(a, v)
		off += used
	}
	return a, n, nil
}

// lengthPrefixed returns the body of a 32-bit length-prefixed value and the
// total bytes it occupies, checking the length against what is there before
// anything is allocated for it.
func lengthPrefixed(b []byte, what string) (body []byte, n int, err error) {
	if len(b) < 4 {
		return nil, 0, syntaxErrorf("truncated %s length", what)
	}
	size := binary.BigEndian.Uint32(b)
	if uint64(size) > uint64(len(b)-4) {
		return nil, 0, syntaxErrorf("%s length %d exceeds the %d bytes available", what, size, len(b)-4)
	}
	return b[4 : 4+int(size)], 4 + int(size), nil
}

// fixedSizes gives the payload size of each fixed-width type tag.
var fixedSizes = [256]int8{
	't': 1, 'b': 1, 'B': 1, 's': 2, 'u': 2, 'U': 2, 'I': 4, 'i': 4,
	'l': 8, 'L': 8, 'f': 4, 'd': 8, 'D': 5, 'T': 8, 'V': 0,
}

// decodeFieldValue decodes one tagged value and returns the bytes it used
// including the tag.
func decodeFieldValue(b []byte, depth int) (any, int, error) {
	if len(b) == 0 {
		return nil, 0, syntaxErrorf("missing value type tag")
	}
	tag, rest := b[0], b[1:]
	switch tag {
	case 'S', 'x':
		body, n, err := lengthPrefixed(rest, "long string")
		if err != nil {
			return nil, 0, err
		}
		if tag == 'x' {
			return append([]byte{}, body...), 1 + n, nil
		}
		return string(body), 1 + n, nil
	case 'F':
		t, n, err := decodeTableDepth(rest, depth+1)
		return t, 1 + n, err
	case 'A':
		a, n, err := decodeArray(rest, depth+1)
		return a, 1 + n, err
	}
	size := int(fixedSizes[tag])
	if size == 0 && tag != 'V' {
		return nil, 0, syntaxErrorf("unknown field value type tag %q (0x%02x)", tag, tag)
	}
	if len(rest) < size {
		return nil, 0, syntaxErrorf("truncated value of type %q", tag)
	}
	var v any
	switch tag {
	case 't':
		v = rest[0] != 0
	case 'b':
		v = int8(rest[0])
	case 'B':
		v = rest[0]
	case 's', 'U':
		v = int16(binary.BigEndian.Uint16(rest))
	case 'u':
		v = binary.BigEndian.Uint16(rest)
	case 'I':
		v = int32(binary.BigEndian.Uint32(rest))
	case 'i':
		v = binary.BigEndian.Uint32(rest)
	case 'l':
		v = int64(binary.BigEndian.Uint64(rest))
	case 'L':
		v = binary.BigEndian.Uint64(rest)
	case 'f':
		v = math.Float32frombits(binary.BigEndian.Uint32(rest))
	case 'd':
		v = math.Float64frombits(binary.BigEndian.Uint64(rest))
	case 'D':
		v = Decimal{Scale: rest[0], Value: int32(binary.BigEndian.Uint32(rest[1:]))}
	case 'T':
		v = timeFromUnix(binary.BigEndian.Uint64(rest))
	case 'V':
		v = nil
	}
	return v, 1 + size, nil
}

// Int64 converts any integer field value (whatever tag the client chose:
// py-amqp writes 'I', amqp091-go 'l', others 'b', 's', 'u', 'i', 'L') to
// int64, so x-expires, x-message-ttl and friends read the same from every
// client. ok is false for non-integers and for uint64 values above MaxInt64.
func Int64(v any) (n int64, ok bool) {
	switch v := v.(type) {
	case int8:
		return int64(v), true
	case uint8:
		return int64(v), true
	case int16:
		return int64(v), true
	case uint16:
		return int64(v), true
	case int32:
		return int64(v), true
	case uint32:
		return int64(v), true
	case int64:
		return v, true
	case int:
		return int64(v), true
	case uint64:
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	case uint:
		if uint64(v) > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	}
	return 0, false
}
