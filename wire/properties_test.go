package wire

import (
	"bytes"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func fullProperties() Properties {
	return Properties{
		ContentType:     "application/json",
		ContentEncoding: "utf-8",
		Headers:         Table{"x-death": []any{Table{"count": int64(1)}}, "n": int32(7)},
		DeliveryMode:    2,
		Priority:        5,
		CorrelationID:   "corr",
		ReplyTo:         "reply_q",
		Expiration:      "60000",
		MessageID:       "mid",
		Timestamp:       time.Unix(1700000000, 0).UTC(),
		Type:            "event",
		UserID:          "guest",
		AppID:           "warren",
		ClusterID:       "c1",
	}
}

func TestPropertiesRoundTrip(t *testing.T) {
	full := fullProperties()
	got, err := DecodeProperties(full.Append(nil))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, full) {
		t.Fatalf("got %#v\nwant %#v", got, full)
	}

	// Every subset of properties: each field is independently present or absent.
	r := rand.New(rand.NewPCG(5, 6))
	fv := reflect.ValueOf(full)
	for range 300 {
		var p Properties
		pv := reflect.ValueOf(&p).Elem()
		for i := range pv.NumField() {
			if r.IntN(2) == 1 {
				pv.Field(i).Set(fv.Field(i))
			}
		}
		enc := p.Append(nil)
		got, err := DecodeProperties(enc)
		if err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		if !reflect.DeepEqual(got, p) {
			t.Fatalf("got %#v\nwant %#v", got, p)
		}
		s, err := ScanProperties(enc)
		if err != nil {
			t.Fatalf("ScanProperties: %v", err)
		}
		if s.DeliveryMode != p.DeliveryMode || s.Priority != p.Priority ||
			s.HasExpiration != (p.Expiration != "") || string(s.Expiration) != p.Expiration {
			t.Fatalf("ScanProperties %+v disagrees with %+v", s, p)
		}
		if p.Headers == nil && s.Headers != nil {
			t.Fatalf("ScanProperties found headers that are absent: %x", s.Headers)
		}
		if p.Headers != nil && !bytes.Equal(s.Headers, AppendTable(nil, p.Headers)) {
			t.Fatalf("ScanProperties headers %x, want the encoded table", s.Headers)
		}
		for cut := range len(enc) {
			if _, err := DecodeProperties(enc[:cut]); !isCode(err, SyntaxError) {
				t.Fatalf("DecodeProperties of %d/%d bytes: got %v", cut, len(enc), err)
			}
			if _, err := ScanProperties(enc[:cut]); !isCode(err, SyntaxError) {
				t.Fatalf("ScanProperties of %d/%d bytes: got %v", cut, len(enc), err)
			}
		}
	}
}

func TestPropertiesGolden(t *testing.T) {
	p := Properties{ContentType: "text/plain", DeliveryMode: 2, Expiration: "100", Timestamp: time.Unix(1, 0)}
	want := mustHex(t, `9140  0a 746578742f706c61696e  02  03 313030  0000000000000001`)
	if got := p.Append(nil); !bytes.Equal(got, want) {
		t.Errorf("got %x\nwant %x", got, want)
	}
	if got := (&Properties{}).Append(nil); !bytes.Equal(got, []byte{0, 0}) {
		t.Errorf("empty properties: got %x", got)
	}
}

func TestPropertiesContinuationAndUnknownFlags(t *testing.T) {
	// A continuation word with no further properties is legal and skipped.
	withCont := mustHex(t, `1001 0000 02`)
	p, err := DecodeProperties(withCont)
	if err != nil || p.DeliveryMode != 2 {
		t.Fatalf("continuation word: %+v, %v", p, err)
	}
	if s, err := ScanProperties(withCont); err != nil || s.DeliveryMode != 2 {
		t.Fatalf("ScanProperties continuation word: %+v, %v", s, err)
	}
	for name, raw := range map[string]string{
		"unused bit 1":              "0002 00",
		"flag in continuation word": "0001 8000 00",
		"trailing bytes":            "1000 02 ff",
		"missing continuation word": "0001",
	} {
		if _, err := DecodeProperties(mustHex(t, raw)); !isCode(err, SyntaxError) {
			t.Errorf("DecodeProperties %s: got %v, want SYNTAX_ERROR", name, err)
		}
		if _, err := ScanProperties(mustHex(t, raw)); !isCode(err, SyntaxError) {
			t.Errorf("ScanProperties %s: got %v, want SYNTAX_ERROR", name, err)
		}
	}
}
