package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// randomTable builds a table from the types DecodeTable produces, so a
// round trip must give back a deeply equal value.
func randomTable(r *rand.Rand, depth int) Table {
	t := Table{}
	n := r.IntN(4)
	for i := range n {
		key := randomString(r, 1+r.IntN(20)) + string(rune('a'+i))
		t[key] = randomValue(r, depth)
	}
	return t
}

func randomValue(r *rand.Rand, depth int) any {
	kinds := 17
	if depth > 2 {
		kinds = 15 // no further nesting
	}
	switch r.IntN(kinds) {
	case 0:
		return r.IntN(2) == 1
	case 1:
		return int8(r.Uint32())
	case 2:
		return uint8(r.Uint32())
	case 3:
		return int16(r.Uint32())
	case 4:
		return uint16(r.Uint32())
	case 5:
		return int32(r.Uint32())
	case 6:
		return r.Uint32()
	case 7:
		return int64(r.Uint64())
	case 8:
		return r.Float32()
	case 9:
		return r.NormFloat64()
	case 10:
		return Decimal{Scale: uint8(r.IntN(10)), Value: int32(r.Uint32())}
	case 11:
		return randomString(r, r.IntN(300))
	case 12:
		return []byte(randomString(r, r.IntN(10)))
	case 13:
		return time.Unix(r.Int64N(1<<40), 0).UTC()
	case 14:
		return nil
	case 15:
		return randomTable(r, depth+1)
	default:
		a := []any{}
		for range r.IntN(4) {
			a = append(a, randomValue(r, depth+1))
		}
		return a
	}
}

func randomString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

// fillRandom sets every field of the method struct behind v.
func fillRandom(t *testing.T, r *rand.Rand, v reflect.Value) {
	t.Helper()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			f.SetUint(r.Uint64())
		case reflect.Bool:
			f.SetBool(r.IntN(2) == 1)
		case reflect.String:
			f.SetString(randomString(r, r.IntN(MaxShortStringLen+1)))
		case reflect.Map:
			f.Set(reflect.ValueOf(randomTable(r, 0)))
		case reflect.Struct:
			f.Set(reflect.ValueOf(time.Unix(r.Int64N(1<<40), 0).UTC()))
		default:
			t.Fatalf("%s: no random filler for field %s of kind %s", v.Type(), v.Type().Field(i).Name, f.Kind())
		}
	}
}

func TestAllMethodsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	methods := AllMethods()
	if len(methods) < 60 {
		t.Fatalf("AllMethods returned %d methods, the extended spec has more than 60", len(methods))
	}
	for _, proto := range methods {
		t.Run(proto.Name(), func(t *testing.T) {
			for range 50 {
				m, ok := NewMethod(proto.ClassID(), proto.MethodID())
				if !ok {
					t.Fatalf("NewMethod(%d, %d) not found", proto.ClassID(), proto.MethodID())
				}
				fillRandom(t, r, reflect.ValueOf(m).Elem())

				frame := AppendMethodFrame(nil, 7, m)
				fr := NewFrameReader(bytes.NewReader(frame), uint32(len(frame))+FrameMinSize)
				f, err := fr.ReadFrame()
				if err != nil {
					t.Fatalf("ReadFrame: %v", err)
				}
				if f.Type != FrameMethod || f.Channel != 7 {
					t.Fatalf("frame type %d channel %d, want method frame on channel 7", f.Type, f.Channel)
				}
				got, err := DecodeMethod(f.Payload)
				if err != nil {
					t.Fatalf("DecodeMethod: %v", err)
				}
				if !reflect.DeepEqual(got, m) {
					t.Fatalf("round trip mismatch:\n got %#v\nwant %#v", got, m)
				}

				args := m.Append(nil)
				for cut := range len(args) {
					err := got.Decode(args[:cut])
					if !isCode(err, SyntaxError) {
						t.Fatalf("Decode of %d/%d bytes: got %v, want SYNTAX_ERROR", cut, len(args), err)
					}
				}
				if err := got.Decode(append(args, 0)); !isCode(err, SyntaxError) {
					t.Fatalf("Decode with a trailing byte: got %v, want SYNTAX_ERROR", err)
				}
			}
		})
	}
}

func isCode(err error, code uint16) bool {
	var pe *ProtocolError
	return errors.As(err, &pe) && pe.Code == code
}

func TestMethodMetadata(t *testing.T) {
	tests := []struct {
		m       Method
		name    string
		class   uint16
		method  uint16
		content bool
		sync    bool
	}{
		{&ConnectionStart{}, "connection.start", 10, 10, false, true},
		{&ConnectionBlocked{}, "connection.blocked", 10, 60, false, false},
		{&ConnectionUpdateSecret{}, "connection.update-secret", 10, 70, false, true},
		{&ExchangeBind{}, "exchange.bind", 40, 30, false, true},
		{&ExchangeUnbindOk{}, "exchange.unbind-ok", 40, 51, false, true},
		{&BasicPublish{}, "basic.publish", 60, 40, true, false},
		{&BasicDeliver{}, "basic.deliver", 60, 60, true, false},
		{&BasicGetOk{}, "basic.get-ok", 60, 71, true, true},
		{&BasicRecoverAsync{}, "basic.recover-async", 60, 100, false, false},
		{&BasicNack{}, "basic.nack", 60, 120, false, false},
		{&ConfirmSelect{}, "confirm.select", 85, 10, false, true},
		{&TxRollbackOk{}, "tx.rollback-ok", 90, 31, false, true},
	}
	for _, tt := range tests {
		if tt.m.Name() != tt.name || tt.m.ClassID() != tt.class || tt.m.MethodID() != tt.method ||
			tt.m.HasContent() != tt.content || tt.m.Sync() != tt.sync {
			t.Errorf("%T: got %s %d.%d content=%t sync=%t, want %s %d.%d content=%t sync=%t", tt.m,
				tt.m.Name(), tt.m.ClassID(), tt.m.MethodID(), tt.m.HasContent(), tt.m.Sync(),
				tt.name, tt.class, tt.method, tt.content, tt.sync)
		}
	}
}

func TestDecodeMethodErrors(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		code    uint16
	}{
		{"empty", nil, SyntaxError},
		{"short ids", []byte{0, 60, 0}, SyntaxError},
		{"unknown class", []byte{0, 99, 0, 10}, NotImplemented},
		{"unknown method", []byte{0, 60, 0, 99}, NotImplemented},
		{"truncated publish", []byte{0, 60, 0, 40, 0, 0, 5, 'a'}, SyntaxError},
		{"bad table in queue.declare", append([]byte{0, 50, 0, 10, 0, 0, 1, 'q', 0}, 0, 0, 0, 2, 1, 'k'), SyntaxError},
	}
	for _, tt := range tests {
		_, err := DecodeMethod(tt.payload)
		if !isCode(err, tt.code) {
			t.Errorf("%s: got %v, want code %d", tt.name, err, tt.code)
		}
	}
	_, err := DecodeMethod([]byte{0, 99, 0, 10})
	if err == nil || !strings.Contains(err.Error(), "NOT_IMPLEMENTED") || !strings.Contains(err.Error(), "class 99") {
		t.Errorf("unknown method error text %q should name the code and the class", err)
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatalf("bad hex in test: %v", err)
	}
	return b
}

// Golden frames written out by hand from the 0-9-1 spec's grammar.
func TestGoldenMethodFrames(t *testing.T) {
	tests := []struct {
		name    string
		channel uint16
		m       Method
		hex     string
	}{
		{
			name: "connection.start",
			m: &ConnectionStart{
				VersionMajor:     0,
				VersionMinor:     9,
				ServerProperties: Table{"product": "Warren"},
				Mechanisms:       "PLAIN AMQPLAIN",
				Locales:          "en_US",
			},
			hex: `01 0000 00000038  000a 000a  00 09
			      00000013 07 70726f64756374 53 00000006 57617272656e
			      0000000e 504c41494e20414d51504c41494e
			      00000005 656e5f5553  ce`,
		},
		{
			name:    "basic.publish",
			channel: 1,
			m:       &BasicPublish{Exchange: "amq.direct", RoutingKey: "key", Mandatory: true},
			hex: `01 0001 00000016  003c 0028  0000
			      0a 616d712e646972656374  03 6b6579  01  ce`,
		},
		{
			name:    "basic.deliver",
			channel: 2,
			m:       &BasicDeliver{ConsumerTag: "ctag", DeliveryTag: 42, Redelivered: true, RoutingKey: "q"},
			hex:     `01 0002 00000015  003c 003c  04 63746167  000000000000002a  01  00  01 71  ce`,
		},
		{
			name: "queue.declare packs four bits and no-wait",
			m:    &QueueDeclare{Queue: "q", Durable: true, AutoDelete: true, NoWait: true, Arguments: Table{}},
			hex:  `01 0000 0000000d  0032 000a  0000  01 71  1a  00000000  ce`,
		},
		{
			name: "basic.nack bits",
			m:    &BasicNack{DeliveryTag: 1, Multiple: false, Requeue: true},
			hex:  `01 0000 0000000d  003c 0078  0000000000000001  02  ce`,
		},
	}
	for _, tt := range tests {
		want := mustHex(t, tt.hex)
		got := AppendMethodFrame(nil, tt.channel, tt.m)
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %x\nwant %x", tt.name, got, want)
			continue
		}
		decoded, err := DecodeMethod(want[HeaderSize : len(want)-1])
		if err != nil {
			t.Errorf("%s: decoding golden bytes: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(decoded, tt.m) {
			t.Errorf("%s: decoded %#v, want %#v", tt.name, decoded, tt.m)
		}
	}
}

func TestProtocolErrorText(t *testing.T) {
	e := &ProtocolError{Code: FrameError, Text: "bad"}
	if e.Error() != "FRAME_ERROR - bad" {
		t.Errorf("got %q", e.Error())
	}
	e = &ProtocolError{Code: 999, Text: "odd"}
	if e.Error() != "reply code 999 - odd" {
		t.Errorf("got %q", e.Error())
	}
	if !IsHardError(ChannelError) || IsHardError(NotFound) || IsHardError(ReplySuccess) {
		t.Error("IsHardError disagrees with the spec's classes")
	}
}
