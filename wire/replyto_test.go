package wire

import (
	"bytes"
	"testing"
	"time"
)

func TestReplaceReplyToKeepsOtherProperties(t *testing.T) {
	p := Properties{
		ContentType: "application/json", Headers: Table{"n": int16(7), "s": "x"},
		DeliveryMode: 2, CorrelationID: "c1", ReplyTo: "amq.rabbitmq.reply-to",
		Expiration: "1000", Timestamp: time.Unix(1700000000, 0), AppID: "app",
	}
	props := p.Append(nil)
	out, ok := ReplaceReplyTo(props, "amq.rabbitmq.reply-to.bjE.tok")
	if !ok {
		t.Fatal("reply-to not found")
	}
	got, err := DecodeProperties(out)
	if err != nil {
		t.Fatal(err)
	}
	want := p
	want.ReplyTo = "amq.rabbitmq.reply-to.bjE.tok"
	if !bytes.Equal(out, want.Append(nil)) {
		t.Fatalf("rewritten properties %+v, want %+v", got, want)
	}
	other := Properties{CorrelationID: "c"}
	if _, ok := ReplaceReplyTo(other.Append(nil), "x"); ok {
		t.Fatal("replaced a reply-to that is not there")
	}
	if _, ok := ReplaceReplyTo([]byte{0x02}, "x"); ok {
		t.Fatal("accepted truncated property flags")
	}
}
