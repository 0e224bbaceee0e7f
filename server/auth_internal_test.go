package server

import (
	"net"
	"testing"

	"github.com/warrenmq/warren/wire"
)

func TestSASLCredentials(t *testing.T) {
	if u, p, err := saslCredentials("PLAIN", "\x00alice\x00s3cret"); err != nil || u != "alice" || p != "s3cret" {
		t.Fatalf("PLAIN: %q %q %v", u, p, err)
	}
	// AMQPLAIN as py-amqp sends it: a field table without its 4-byte length prefix.
	table := wire.AppendTable(nil, wire.Table{"LOGIN": "bob", "PASSWORD": "pw"})[4:]
	if u, p, err := saslCredentials("AMQPLAIN", string(table)); err != nil || u != "bob" || p != "pw" {
		t.Fatalf("AMQPLAIN: %q %q %v", u, p, err)
	}
	for _, c := range []struct{ mech, resp string }{
		{"PLAIN", "no-separators"}, {"AMQPLAIN", "\x05LOGIN"}, {"EXTERNAL", ""},
	} {
		if _, _, err := saslCredentials(c.mech, c.resp); err == nil {
			t.Fatalf("%s %q accepted", c.mech, c.resp)
		}
	}
}

func TestLoopbackUsersNeedLoopbackAddress(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:5": true, "[::1]:5": true, "10.1.2.3:5": false, "192.0.2.7:5": false} {
		a, err := net.ResolveTCPAddr("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := isLoopback(a); got != want {
			t.Fatalf("isLoopback(%s) = %v", addr, got)
		}
	}
}
