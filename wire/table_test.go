package wire

import (
	"bytes"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// One key per type tag, in sorted key order so the encoding is fixed.
func TestGoldenTableEveryType(t *testing.T) {
	ts := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	table := Table{
		"A": []any{int32(1), "x"},
		"B": uint8(200),
		"D": Decimal{Scale: 2, Value: 123},
		"F": Table{"k": false},
		"I": int32(-5),
		"S": "hi",
		"T": ts,
		"V": nil,
		"b": int8(-2),
		"d": 1.5,
		"f": float32(0.25),
		"i": uint32(4000000000),
		"l": int64(-1),
		"s": int16(-300),
		"t": true,
		"u": uint16(65000),
		"x": []byte{0xde, 0xad},
	}
	want := mustHex(t, `
		00000086
		01 41 41 0000000b  49 00000001  53 00000001 78
		01 42 42 c8
		01 44 44 02 0000007b
		01 46 46 00000004 01 6b 74 00
		01 49 49 fffffffb
		01 53 53 00000002 6869
		01 54 54 0000000065937d25
		01 56 56
		01 62 62 fe
		01 64 64 3ff8000000000000
		01 66 66 3e800000
		01 69 69 ee6b2800
		01 6c 6c ffffffffffffffff
		01 73 73 fed4
		01 74 74 01
		01 75 75 fde8
		01 78 78 00000002 dead`)
	got := AppendTable(nil, table)
	if !bytes.Equal(got, want) {
		t.Fatalf("AppendTable:\n got %x\nwant %x", got, want)
	}
	decoded, n, err := DecodeTable(append(want, 0xff)) // trailing byte belongs to the caller
	if err != nil {
		t.Fatalf("DecodeTable: %v", err)
	}
	if n != len(want) {
		t.Errorf("consumed %d bytes, want %d", n, len(want))
	}
	if !reflect.DeepEqual(decoded, table) {
		t.Errorf("decoded %#v\nwant %#v", decoded, table)
	}
}

// Bytes written by py-amqp 5 (amqp.serialization._write_table) for
// {"x-expires": 60000, "neg": -5, "big": 2**40, "s": "héllo", "b": True,
// "f": 1.5, "d": Decimal("1.23"), "t": datetime(2024,1,2,3,4,5), "n": None,
// "a": [1, "x"], "nested": {"k": False}}: it writes 'I' for small ints, a
// signed 'L' for large ones, and keys in insertion order.
func TestDecodePyAMQPTable(t *testing.T) {
	raw := mustHex(t, "0000007909782d65787069726573490000ea60036e656749fffffffb036269674c00000100000000000173530000000668c3a96c6c6f016274010166643ff8000000000000016444020000007b0174540000000065937d25016e560161410000000b4900000001530000000178066e65737465644600000004016b7400")
	got, n, err := DecodeTable(raw)
	if err != nil {
		t.Fatalf("DecodeTable: %v", err)
	}
	if n != len(raw) {
		t.Errorf("consumed %d of %d bytes", n, len(raw))
	}
	want := Table{
		"x-expires": int32(60000),
		"neg":       int32(-5),
		"big":       uint64(1 << 40),
		"s":         "héllo",
		"b":         true,
		"f":         1.5,
		"d":         Decimal{Scale: 2, Value: 123},
		"t":         time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC),
		"n":         nil,
		"a":         []any{int32(1), "x"},
		"nested":    Table{"k": false},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded %#v\nwant %#v", got, want)
	}
	if v, ok := Int64(got["x-expires"]); !ok || v != 60000 {
		t.Errorf("Int64(x-expires) = %d, %t", v, ok)
	}
}

func TestTableRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 500 {
		table := randomTable(r, 0)
		enc := AppendTable(nil, table)
		got, n, err := DecodeTable(enc)
		if err != nil {
			t.Fatalf("case %d: DecodeTable: %v", i, err)
		}
		if n != len(enc) || !reflect.DeepEqual(got, table) {
			t.Fatalf("case %d: round trip mismatch (n=%d/%d)\n got %#v\nwant %#v", i, n, len(enc), got, table)
		}
		for cut := range len(enc) {
			if _, _, err := DecodeTable(enc[:cut]); !isCode(err, SyntaxError) {
				t.Fatalf("case %d: truncated to %d/%d bytes: got %v, want SYNTAX_ERROR", i, cut, len(enc), err)
			}
		}
	}
}

func TestTableGoTypesEncodeCanonically(t *testing.T) {
	in := Table{
		"int":    42,
		"uint":   uint(7),
		"u64":    uint64(9),
		"huge":   uint64(math.MaxUint64),
		"map":    map[string]any{"a": "b"},
		"strs":   []string{"x", "y"},
		"nilmap": Table(nil),
		"bad":    struct{}{},
	}
	got, _, err := DecodeTable(AppendTable(nil, in))
	if err != nil {
		t.Fatal(err)
	}
	want := Table{
		"int":    int64(42),
		"uint":   int64(7),
		"u64":    int64(9),
		"huge":   uint64(math.MaxUint64),
		"map":    Table{"a": "b"},
		"strs":   []any{"x", "y"},
		"nilmap": Table{},
		"bad":    nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
	if err := in.Validate(); err == nil || !strings.Contains(err.Error(), "struct {}") {
		t.Errorf("Validate should reject struct{}: %v", err)
	}
	delete(in, "bad")
	if err := in.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if err := (Table{strings.Repeat("k", 256): 1}).Validate(); err == nil {
		t.Error("Validate should reject a 256-byte key")
	}
}

func TestDecodeTableErrors(t *testing.T) {
	tests := []struct {
		name string
		hex  string
		text string
	}{
		{"no length", "0000", "truncated table length"},
		{"length overruns", "00000005 01 61 74", "exceeds"},
		{"key overruns", "00000002 05 61", "key"},
		{"missing tag", "00000002 01 61", "missing value type tag"},
		{"unknown tag", "00000003 01 61 7a", "unknown field value type tag"},
		{"short int32", "00000005 01 61 49 0000", "truncated value"},
		{"string overruns", "00000008 01 61 53 000000ff 61", "exceeds"},
		{"array overruns", "00000008 01 61 41 00000009 74", "exceeds"},
		{"bad nested value", "0000000a 01 61 46 00000004 01 62 49 00", `"a"`},
	}
	for _, tt := range tests {
		_, _, err := DecodeTable(mustHex(t, tt.hex))
		if !isCode(err, SyntaxError) || !strings.Contains(err.Error(), tt.text) {
			t.Errorf("%s: got %v, want SYNTAX_ERROR mentioning %q", tt.name, err, tt.text)
		}
	}
}

func TestDecodeTableDepthLimit(t *testing.T) {
	// Arrays nested one level deeper than allowed: each level is 'A' + length.
	var nest func(depth int) []byte
	nest = func(depth int) []byte {
		if depth == 0 {
			return []byte{0, 0, 0, 0}
		}
		inner := nest(depth - 1)
		return AppendLongBytes(nil, append([]byte{'A'}, inner...))
	}
	deep := append([]byte{}, 0, 0, 0, 0)
	body := append([]byte{1, 'k', 'A'}, nest(maxTableDepth+1)...)
	deep = AppendLongBytes(deep[:0], body)
	if _, _, err := DecodeTable(deep); !isCode(err, SyntaxError) || !strings.Contains(err.Error(), "nested deeper") {
		t.Errorf("deep nesting: got %v, want SYNTAX_ERROR about nesting", err)
	}
	shallow := AppendLongBytes(nil, append([]byte{1, 'k', 'A'}, nest(10)...))
	if _, _, err := DecodeTable(shallow); err != nil {
		t.Errorf("10 levels should decode: %v", err)
	}
}

func TestInt64(t *testing.T) {
	for _, v := range []any{int8(-3), uint8(3), int16(-3), uint16(3), int32(-3), uint32(3), int64(-3), 3, uint64(3), uint(3)} {
		n, ok := Int64(v)
		if !ok || (n != 3 && n != -3) {
			t.Errorf("Int64(%T %v) = %d, %t", v, v, n, ok)
		}
	}
	for _, v := range []any{"3", 3.0, uint64(math.MaxUint64), nil} {
		if _, ok := Int64(v); ok {
			t.Errorf("Int64(%T %v) should fail", v, v)
		}
	}
}

func TestAppendShortStringTruncates(t *testing.T) {
	got := AppendShortString(nil, strings.Repeat("a", 300))
	if got[0] != 255 || len(got) != 256 {
		t.Errorf("got length octet %d and %d bytes, want 255 and 256", got[0], len(got))
	}
}

func TestDecodeTableBodyAMQPLAIN(t *testing.T) {
	// py-amqp's AMQPLAIN("guest", "secret").start(): a table without its length prefix.
	got, err := DecodeTableBody(mustHex(t, "054c4f47494e530000000567756573740850415353574f52445300000006736563726574"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Table{"LOGIN": "guest", "PASSWORD": "secret"}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v, want %#v", got, want)
	}
	if _, err := DecodeTableBody([]byte{5, 'L', 'O'}); !isCode(err, SyntaxError) {
		t.Errorf("truncated AMQPLAIN body: got %v", err)
	}
}
