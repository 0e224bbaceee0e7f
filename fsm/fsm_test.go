package fsm

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/warrenmq/warren/exchange"
)

func TestNewHasRabbitMQDefaults(t *testing.T) {
	f := New(Options{})
	if !f.VhostExists("/") {
		t.Fatal("vhost / missing")
	}
	want := map[string]string{"": "direct", "amq.direct": "direct", "amq.fanout": "fanout",
		"amq.topic": "topic", "amq.headers": "headers", "amq.match": "headers"}
	for name, kind := range want {
		x, ok := f.Exchange("/", name)
		if !ok || x.Kind != kind || !x.Durable {
			t.Errorf("exchange %q = %+v, %v", name, x, ok)
		}
	}
	if len(f.Users()) != 0 {
		t.Fatal("a new FSM must have no users")
	}
}

func TestCommandsRoundTrip(t *testing.T) {
	cmds := []Command{
		AddVhost{Name: "v"}, DeleteVhost{Name: "v"},
		PutUser{Name: "u", PasswordHash: "h", Tags: []string{"administrator"}},
		DeleteUser{Name: "u"}, SetPermissions{User: "u", Vhost: "/", Configure: ".*", Write: ".*", Read: ""},
		DeclareExchange{Vhost: "/", Name: "x", Kind: "topic", Durable: true, Internal: true, Args: []byte{1, 2}},
		DeleteExchange{Vhost: "/", Name: "x", IfUnused: true},
		DeclareQueue{Vhost: "/", Name: "q", Exclusive: true, ExclusiveConn: "n1/7", Owner: "n1", Args: []byte("a")},
		DeleteQueue{Vhost: "/", Name: "q", IfUnused: true, ExclusiveConn: "n1/7"},
		Bind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "y", IsExchange: true}, Key: "k", Args: []byte{0}, Conn: "c"},
		Unbind{Vhost: "/", Source: "x", Dest: exchange.Dest{Name: "q"}, Key: "k"},
		DropConnection{Conn: "n1/7"}, NodeStarted{Node: "n1"},
	}
	for _, c := range cmds {
		b, err := Encode(c)
		if err != nil {
			t.Fatalf("encode %T: %v", c, err)
		}
		b2, _ := Encode(c)
		if string(b) != string(b2) {
			t.Fatalf("encoding of %T not deterministic", c)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("decode %T: %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip %T: got %+v want %+v", c, got, c)
		}
	}
	for _, bad := range [][]byte{nil, {0}, {200, '{', '}'}, {byte(OpBind), '{'}, {byte(OpBind), '[', ']'}} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%v) accepted", bad)
		}
	}
	if _, err := Encode(nil); err == nil {
		t.Error("Encode(nil) accepted")
	}
}

const lockedQ = "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'qx' in vhost '/'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration."

func TestQueueDeclareRefusals(t *testing.T) {
	h := newHarness(t)
	r := h.ok(DeclareQueue{Vhost: "/", Name: "q1", Owner: "n1"})
	if !r.Created || r.Queue == nil || r.Queue.Owner != "n1" {
		t.Fatalf("declare result %+v", r)
	}
	r = h.ok(DeclareQueue{Vhost: "/", Name: "q1", Owner: "n2", Args: encodeArgs(map[string]any{"foo": int32(1)})})
	if r.Created || r.Queue.Owner != "n1" {
		t.Fatalf("equivalent redeclare (non-compared args differ) = %+v", r)
	}
	h.refused(DeclareQueue{Vhost: "/", Name: "q1", Durable: true}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q1' in vhost '/': received 'true' but current is 'false'")
	h.refused(DeclareQueue{Vhost: "/", Name: "q1", AutoDelete: true}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue 'q1' in vhost '/': received 'true' but current is 'false'")
	h.refused(DeclareQueue{Vhost: "/", Name: "q1", Args: encodeArgs(map[string]any{"x-max-priority": int32(10)})}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q1' in vhost '/': received the value '10' of type 'signedint' but current is none")

	h.ok(DeclareQueue{Vhost: "/", Name: "q2", Args: encodeArgs(map[string]any{"x-max-priority": int32(10), "x-message-ttl": int32(5)})})
	// py-amqp sends 'I' (int32), amqp091-go 'l' (int64): both are the same declaration.
	h.ok(DeclareQueue{Vhost: "/", Name: "q2", Args: encodeArgs(map[string]any{"x-max-priority": int64(10), "x-message-ttl": uint8(5)})})
	h.refused(DeclareQueue{Vhost: "/", Name: "q2"}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q2' in vhost '/': received none but current is the value '5' of type 'signedint'")
	h.refused(DeclareQueue{Vhost: "/", Name: "q2", Args: encodeArgs(map[string]any{"x-max-priority": int32(11), "x-message-ttl": int32(5)})}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'x-max-priority' for queue 'q2' in vhost '/': received '11' but current is '10'")
	h.refused(DeclareQueue{Vhost: "/", Name: "q2", Args: encodeArgs(map[string]any{"x-max-priority": "10", "x-message-ttl": int32(5)})}, 406,
		"PRECONDITION_FAILED - invalid arg 'x-max-priority' for queue 'q2' in vhost '/': \"expected integer, got longstr\"")

	// Exclusivity mismatches in any direction are 405, as in RabbitMQ.
	h.ok(DeclareQueue{Vhost: "/", Name: "qx", Exclusive: true, ExclusiveConn: "n1/1", Owner: "n1"})
	h.ok(DeclareQueue{Vhost: "/", Name: "qx", Exclusive: true, ExclusiveConn: "n1/1", Owner: "n1"})
	h.refused(DeclareQueue{Vhost: "/", Name: "qx", Exclusive: true, ExclusiveConn: "n1/2"}, 405, lockedQ)
	h.refused(DeclareQueue{Vhost: "/", Name: "qx"}, 405, lockedQ)
	h.refused(DeleteQueue{Vhost: "/", Name: "qx", ExclusiveConn: "n2/1"}, 405, lockedQ)
	h.refused(Bind{Vhost: "/", Source: "amq.direct", Dest: exchange.Dest{Name: "qx"}, Key: "k", Conn: "n1/2"}, 405, lockedQ)
	h.ok(Bind{Vhost: "/", Source: "amq.direct", Dest: exchange.Dest{Name: "qx"}, Key: "k", Conn: "n1/1"})
	h.ok(Unbind{Vhost: "/", Source: "amq.direct", Dest: exchange.Dest{Name: "qx"}, Key: "k", Conn: "other"})
	h.ok(DeclareQueue{Vhost: "/", Name: "q6"})
	h.refused(DeclareQueue{Vhost: "/", Name: "q6", Exclusive: true, ExclusiveConn: "n1/1"}, 405,
		strings.ReplaceAll(lockedQ, "'qx'", "'q6'"))

	h.refused(DeclareQueue{Vhost: "nope", Name: "q"}, 404, "NOT_FOUND - no vhost 'nope'")
	h.refused(DeclareQueue{Vhost: "/", Name: ""}, 541, "INTERNAL_ERROR - queue name must be chosen before DeclareQueue is proposed")
	h.refused(DeclareQueue{Vhost: "/", Name: "q9", Args: []byte("{")}, 541,
		"INTERNAL_ERROR - cannot decode arguments: decode args: test args: unexpected end of JSON input")
	if err := CheckQueueName("amq.foo"); err == nil || err.Text != "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'" {
		t.Fatalf("CheckQueueName = %v", err)
	}
}

func TestQueueArgValidation(t *testing.T) {
	pre := "PRECONDITION_FAILED - invalid arg '%s' for queue 'q' in vhost '/': "
	cases := []struct {
		args map[string]any
		text string
	}{
		{map[string]any{"x-max-priority": int32(-1)}, "x-max-priority|{value_negative,-1}"},
		{map[string]any{"x-max-priority": int64(300)}, "x-max-priority|{max_value_exceeded,300}"},
		{map[string]any{"x-max-priority": uint64(1 << 63)}, "x-max-priority|{max_value_exceeded,9223372036854775807}"},
		{map[string]any{"x-max-priority": true}, "x-max-priority|\"expected integer, got bool\""},
		{map[string]any{"x-message-ttl": int8(-1)}, "x-message-ttl|{value_negative,-1}"},
		{map[string]any{"x-message-ttl": int64(1099511627776)}, "x-message-ttl|{value_too_large,1099511627776}"},
		{map[string]any{"x-expires": int32(0)}, "x-expires|{value_zero,0}"},
		{map[string]any{"x-expires": int32(-5)}, "x-expires|{value_negative,-5}"},
		{map[string]any{"x-expires": "s"}, "x-expires|\"expected integer, got longstr\""},
		{map[string]any{"x-max-length": int16(-5)}, "x-max-length|{value_negative,-5}"},
		{map[string]any{"x-max-length-bytes": int32(-5)}, "x-max-length-bytes|{value_negative,-5}"},
		{map[string]any{"x-overflow": "foo"}, "x-overflow|invalid_overflow"},
		{map[string]any{"x-overflow": int32(5)}, "x-overflow|{unacceptable_type,signedint}"},
		{map[string]any{"x-dead-letter-routing-key": "a"}, "x-dead-letter-routing-key|routing_key_but_no_dlx_defined"},
		{map[string]any{"x-dead-letter-exchange": "a", "x-dead-letter-routing-key": int32(5)}, "x-dead-letter-routing-key|{unacceptable_type,signedint}"},
		{map[string]any{"x-queue-type": "foo"}, "x-queue-type|\"unsupported queue type 'foo'\""},
		{map[string]any{"x-queue-type": "stream"}, "x-queue-type|\"queue type 'stream' is not supported by this broker (only classic and quorum)\""},
		{map[string]any{"x-queue-type": int32(5)}, "x-queue-type|{unacceptable_type,signedint}"},
		{map[string]any{"x-queue-mode": "foo"}, "x-queue-mode|\"unsupported queue mode 'foo'\""},
		{map[string]any{"x-single-active-consumer": int32(1)}, "x-single-active-consumer|{unacceptable_type,signedint}"},
	}
	for _, c := range cases {
		h := newHarness(t)
		key, reason, _ := strings.Cut(c.text, "|")
		h.refused(DeclareQueue{Vhost: "/", Name: "q", Args: encodeArgs(c.args)}, 406, strings.Replace(pre, "%s", key, 1)+reason)
	}
	h := newHarness(t)
	h.refused(DeclareQueue{Vhost: "/", Name: "q", Args: encodeArgs(map[string]any{"x-dead-letter-exchange": int32(5)})}, 406,
		"PRECONDITION_FAILED - invalid type 'signedint' for arg 'x-dead-letter-exchange' in queue 'q' in vhost '/'")
	valid := map[string]any{
		"x-max-priority": uint8(255), "x-message-ttl": int64(315360000000), "x-expires": uint32(1),
		"x-max-length": int64(0), "x-max-length-bytes": uint64(10), "x-overflow": "reject-publish-dlx",
		"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "rk", "x-queue-type": "classic",
		"x-queue-mode": "lazy", "x-single-active-consumer": true,
	}
	h.ok(DeclareQueue{Vhost: "/", Name: "q", Args: encodeArgs(valid)})
}

func TestExchangeRefusals(t *testing.T) {
	h := newHarness(t)
	r := h.ok(DeclareExchange{Vhost: "/", Name: "px1", Kind: "direct"})
	if !r.Created {
		t.Fatal("Created not set")
	}
	if r := h.ok(DeclareExchange{Vhost: "/", Name: "px1", Kind: "direct", Args: encodeArgs(map[string]any{"foo": "bar"})}); r.Created {
		t.Fatal("equivalent redeclare reported Created")
	}
	h.refused(DeclareExchange{Vhost: "/", Name: "px1", Kind: "fanout"}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'px1' in vhost '/': received 'fanout' but current is 'direct'")
	h.refused(DeclareExchange{Vhost: "/", Name: "px1", Kind: "direct", Durable: true}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'px1' in vhost '/': received 'true' but current is 'false'")
	h.refused(DeclareExchange{Vhost: "/", Name: "px1", Kind: "direct", AutoDelete: true}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'auto_delete' for exchange 'px1' in vhost '/': received 'true' but current is 'false'")
	h.refused(DeclareExchange{Vhost: "/", Name: "px1", Kind: "direct", Internal: true}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'internal' for exchange 'px1' in vhost '/': received 'true' but current is 'false'")
	h.refused(DeclareExchange{Vhost: "/", Name: "px1", Kind: "direct", Args: encodeArgs(map[string]any{"alternate-exchange": "foo"})}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'alternate-exchange' for exchange 'px1' in vhost '/': received the value 'foo' of type 'longstr' but current is none")
	h.refused(DeclareExchange{Vhost: "/", Name: "px6", Kind: "direct", Args: encodeArgs(map[string]any{"alternate-exchange": int32(5)})}, 406,
		"PRECONDITION_FAILED - invalid type 'signedint' for arg 'alternate-exchange' in exchange 'px6' in vhost '/'")
	h.refused(DeclareExchange{Vhost: "/", Name: "px2", Kind: "nosuch"}, 503, "COMMAND_INVALID - unknown exchange type 'nosuch'")
	h.refused(DeclareExchange{Vhost: "/", Name: "amq.foo", Kind: "direct"}, 403,
		"ACCESS_REFUSED - exchange name 'amq.foo' contains reserved prefix 'amq.*'")
	h.ok(DeclareExchange{Vhost: "/", Name: "amq.direct", Kind: "direct", Durable: true})
	h.refused(DeclareExchange{Vhost: "/", Name: "amq.direct", Kind: "direct"}, 406,
		"PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' in vhost '/': received 'false' but current is 'true'")
	h.refused(DeleteExchange{Vhost: "/", Name: "amq.direct"}, 403,
		"ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed")
	def := "ACCESS_REFUSED - operation not permitted on the default exchange"
	h.refused(DeleteExchange{Vhost: "/", Name: ""}, 403, def)
	h.refused(DeclareExchange{Vhost: "/", Name: "", Kind: "direct", Durable: true}, 403, def)
	h.queue("pq1")
	h.refused(Bind{Vhost: "/", Source: "", Dest: exchange.Dest{Name: "pq1"}, Key: "k"}, 403, def)
	h.refused(Unbind{Vhost: "/", Source: "", Dest: exchange.Dest{Name: "pq1"}, Key: "pq1"}, 403, def)
	h.refused(Bind{Vhost: "/", Source: "px1", Dest: exchange.Dest{Name: "", IsExchange: true}, Key: "k"}, 403, def)

	h.bindQ("px1", "pq1", "k")
	h.refused(DeleteExchange{Vhost: "/", Name: "px1", IfUnused: true}, 406,
		"PRECONDITION_FAILED - exchange 'px1' in vhost '/' in use")
	if r := h.ok(DeleteExchange{Vhost: "/", Name: "nosuchx"}); !r.NotFound {
		t.Fatal("delete of a missing exchange must report NotFound")
	}
	if r := h.ok(DeleteQueue{Vhost: "/", Name: "nosuchq"}); !r.NotFound || len(r.Deleted) != 0 {
		t.Fatalf("delete of a missing queue: %+v", r)
	}
	h.ok(DeleteExchange{Vhost: "/", Name: "px1"})
	if len(h.f.Bindings("/")) != 0 {
		t.Fatal("deleting an exchange must remove its bindings")
	}
}

func TestBindRefusals(t *testing.T) {
	h := newHarness(t)
	h.exch("px1", "direct")
	h.queue("pq1")
	h.refused(Bind{Vhost: "/", Source: "nosuchx", Dest: exchange.Dest{Name: "pq1"}}, 404, "NOT_FOUND - no exchange 'nosuchx' in vhost '/'")
	h.refused(Bind{Vhost: "/", Source: "px1", Dest: exchange.Dest{Name: "nosuchq"}}, 404, "NOT_FOUND - no queue 'nosuchq' in vhost '/'")
	h.refused(Bind{Vhost: "/", Source: "nosuchx", Dest: exchange.Dest{Name: "nosuchq"}}, 404, "NOT_FOUND - no exchange 'nosuchx' in vhost '/'")
	h.refused(Bind{Vhost: "/", Source: "px1", Dest: exchange.Dest{Name: "nosuchx", IsExchange: true}}, 404, "NOT_FOUND - no exchange 'nosuchx' in vhost '/'")
	h.refused(Bind{Vhost: "/", Source: "amq.headers", Dest: exchange.Dest{Name: "pq1"}, Args: encodeArgs(map[string]any{"x-match": "foo"})}, 406,
		`PRECONDITION_FAILED - Invalid x-match field value <<"foo">>; expected all, any, all-with-x, or any-with-x`)
	for _, u := range []Unbind{
		{Vhost: "/", Source: "px1", Dest: exchange.Dest{Name: "pq1"}, Key: "k"},
		{Vhost: "/", Source: "px1", Dest: exchange.Dest{Name: "nosuchq"}, Key: "k"},
		{Vhost: "/", Source: "nosuchx", Dest: exchange.Dest{Name: "pq1"}, Key: "k"},
	} {
		if r := h.ok(u); !r.NotFound {
			t.Fatalf("unbind of a missing binding: %+v", r)
		}
	}
	// Re-binding with args that differ only in integer width is a no-op.
	h.ok(Bind{Vhost: "/", Source: "amq.headers", Dest: exchange.Dest{Name: "pq1"}, Args: encodeArgs(map[string]any{"a": int32(1)})})
	h.ok(Bind{Vhost: "/", Source: "amq.headers", Dest: exchange.Dest{Name: "pq1"}, Args: encodeArgs(map[string]any{"a": int64(1)})})
	if n := len(h.f.Bindings("/")); n != 1 {
		t.Fatalf("%d bindings, want 1", n)
	}
	h.ok(Unbind{Vhost: "/", Source: "amq.headers", Dest: exchange.Dest{Name: "pq1"}, Args: encodeArgs(map[string]any{"a": uint8(1)})})
	if n := len(h.f.Bindings("/")); n != 0 {
		t.Fatalf("%d bindings after unbind, want 0", n)
	}
}

func TestRouting(t *testing.T) {
	h := newHarness(t)
	for _, q := range []string{"q1", "q2", "q3", "alt"} {
		h.queue(q)
	}
	h.exch("t", "topic")
	h.exch("f", "fanout")
	h.exch("hdr", "headers")
	h.ok(DeclareExchange{Vhost: "/", Name: "inner", Kind: "fanout", Internal: true})
	h.exch("altx", "fanout")
	h.ok(DeclareExchange{Vhost: "/", Name: "withalt", Kind: "direct", Args: encodeArgs(map[string]any{"alternate-exchange": "altx"})})

	h.bindQ("t", "q1", "*.hades.#")
	h.bindX("t", "f", "#")
	h.bindQ("f", "q2", "")
	h.bindQ("f", "q1", "") // q1 reachable twice: must be delivered once
	h.bindX("f", "inner", "")
	h.bindQ("inner", "q3", "")
	h.bindX("inner", "t", "") // cycle t → f → inner → t
	h.bindQ("altx", "alt", "")
	h.bindQ("withalt", "q2", "known")
	h.ok(Bind{Vhost: "/", Source: "hdr", Dest: exchange.Dest{Name: "q3"}, Args: encodeArgs(map[string]any{"x-match": "any", "a": int32(1)})})

	sorted := func(s []string) []string { slices.Sort(s); return s }
	if got := sorted(h.route("t", "tom.hades", nil)); !slices.Equal(got, []string{"q1", "q2", "q3"}) {
		t.Fatalf("through e2e with cycle: %v", got)
	}
	if got := h.route("", "q2", nil); !slices.Equal(got, []string{"q2"}) {
		t.Fatalf("default exchange: %v", got)
	}
	if got := h.route("", "nosuch", nil); len(got) != 0 {
		t.Fatalf("default exchange to missing queue: %v", got)
	}
	if got := h.route("withalt", "known", nil); !slices.Equal(got, []string{"q2"}) {
		t.Fatalf("matched, no AE: %v", got)
	}
	if got := h.route("withalt", "unknown", nil); !slices.Equal(got, []string{"alt"}) {
		t.Fatalf("unmatched falls back to AE: %v", got)
	}
	if got := h.route("hdr", "", map[string]any{"a": uint16(1)}); !slices.Equal(got, []string{"q3"}) {
		t.Fatalf("headers: %v", got)
	}
	_, err := h.f.Route("/", "inner", "", nil, nil)
	if e, ok := err.(*Error); !ok || e.Code != 403 || e.Text != "ACCESS_REFUSED - cannot publish to internal exchange 'inner' in vhost '/'" {
		t.Fatalf("internal: %v", err)
	}
	_, err = h.f.Route("/", "nosuchx", "", nil, nil)
	if e, ok := err.(*Error); !ok || e.Code != 404 || e.Text != "NOT_FOUND - no exchange 'nosuchx' in vhost '/'" {
		t.Fatalf("missing: %v", err)
	}
	refs, err := h.f.Route("/", "withalt", "known", nil, []QueueRef{{Name: "kept"}})
	if err != nil || len(refs) != 2 || refs[0].Name != "kept" || refs[1] != (QueueRef{Vhost: "/", Name: "q2", Owner: "n1"}) {
		t.Fatalf("out prefix and owner: %v %v", refs, err)
	}
	// An AE cycle (a's AE is b, b's AE is a) terminates.
	h.ok(DeclareExchange{Vhost: "/", Name: "a", Kind: "direct", Args: encodeArgs(map[string]any{"alternate-exchange": "b"})})
	h.ok(DeclareExchange{Vhost: "/", Name: "b", Kind: "direct", Args: encodeArgs(map[string]any{"alternate-exchange": "a"})})
	if got := h.route("a", "k", nil); len(got) != 0 {
		t.Fatalf("AE cycle: %v", got)
	}
}

func TestAutoDeleteCascade(t *testing.T) {
	h := newHarness(t)
	h.queue("q")
	h.ok(DeclareExchange{Vhost: "/", Name: "ad", Kind: "direct", AutoDelete: true})
	h.bindQ("ad", "q", "k1")
	h.bindQ("ad", "q", "k2")
	h.ok(Unbind{Vhost: "/", Source: "ad", Dest: exchange.Dest{Name: "q"}, Key: "k1"})
	if _, ok := h.f.Exchange("/", "ad"); !ok {
		t.Fatal("auto-delete exchange removed while it still had a binding")
	}
	h.ok(Unbind{Vhost: "/", Source: "ad", Dest: exchange.Dest{Name: "q"}, Key: "k2"})
	if _, ok := h.f.Exchange("/", "ad"); ok {
		t.Fatal("auto-delete exchange kept after its last binding went")
	}

	// Chain: ad1 → ad2 → q; deleting q empties ad2, whose deletion empties ad1.
	h.ok(DeclareExchange{Vhost: "/", Name: "ad1", Kind: "fanout", AutoDelete: true})
	h.ok(DeclareExchange{Vhost: "/", Name: "ad2", Kind: "fanout", AutoDelete: true})
	h.exch("keep", "fanout")
	h.bindX("ad1", "ad2", "")
	h.bindQ("ad2", "q", "")
	h.bindX("keep", "ad2", "")
	r := h.ok(DeleteQueue{Vhost: "/", Name: "q"})
	if !slices.Equal(r.Deleted, []QueueRef{{Vhost: "/", Name: "q", Owner: "n1"}}) {
		t.Fatalf("Deleted = %v", r.Deleted)
	}
	for _, x := range []string{"ad1", "ad2"} {
		if _, ok := h.f.Exchange("/", x); ok {
			t.Fatalf("%s survived the cascade", x)
		}
	}
	if _, ok := h.f.Exchange("/", "keep"); !ok || len(h.f.Bindings("/")) != 0 {
		t.Fatalf("keep must remain, without bindings: %v", h.f.Bindings("/"))
	}
	// An auto-delete exchange never bound stays.
	h.ok(DeclareExchange{Vhost: "/", Name: "lonely", Kind: "direct", AutoDelete: true})
	if _, ok := h.f.Exchange("/", "lonely"); !ok {
		t.Fatal("never-bound auto-delete exchange vanished")
	}
}

func TestDropConnectionAndNodeStarted(t *testing.T) {
	h := newHarness(t)
	var events []Event
	h.f.SetObserver(func(e Event) { events = append(events, e) })
	h.ok(DeclareQueue{Vhost: "/", Name: "ex1", Exclusive: true, ExclusiveConn: "n1/1", Owner: "n1"})
	h.ok(DeclareQueue{Vhost: "/", Name: "ex2", Exclusive: true, ExclusiveConn: "n1/1", Owner: "n1"})
	h.ok(DeclareQueue{Vhost: "/", Name: "ex3", Exclusive: true, ExclusiveConn: "n1/2", Owner: "n1"})
	h.ok(DeclareQueue{Vhost: "/", Name: "durable", Durable: true, Owner: "n1"})
	h.ok(DeclareQueue{Vhost: "/", Name: "transient2", Owner: "n2"})
	h.ok(DeclareQueue{Vhost: "/", Name: "transient1", Owner: "n1"})
	h.ok(DeclareExchange{Vhost: "/", Name: "tx", Kind: "fanout"})
	h.ok(DeclareExchange{Vhost: "/", Name: "dx", Kind: "fanout", Durable: true})
	h.bindQ("dx", "durable", "")
	h.bindQ("dx", "transient1", "")
	h.bindQ("tx", "durable", "")
	h.ok(Bind{Vhost: "/", Source: "amq.fanout", Dest: exchange.Dest{Name: "ex1"}, Conn: "n1/1"})
	if len(events) != 6 || events[0].Kind != QueueCreated || events[0].Queue.Name != "ex1" {
		t.Fatalf("create events: %v", events)
	}
	events = nil

	r := h.ok(DropConnection{Conn: "n1/1"})
	want := []QueueRef{{"/", "ex1", "n1"}, {"/", "ex2", "n1"}}
	if !slices.Equal(r.Deleted, want) {
		t.Fatalf("DropConnection deleted %v", r.Deleted)
	}
	if len(events) != 2 || events[0].Kind != QueueDeleted || events[1].Queue.Name != "ex2" {
		t.Fatalf("drop events: %v", events)
	}
	if _, ok := h.f.Queue("/", "ex3"); !ok {
		t.Fatal("other connection's exclusive queue deleted")
	}
	if len(h.f.Bindings("/")) != 3 {
		t.Fatalf("binding to ex1 not removed: %v", h.f.Bindings("/"))
	}

	r = h.ok(NodeStarted{Node: "n1"})
	want = []QueueRef{{"/", "ex3", "n1"}, {"/", "transient1", "n1"}}
	if !slices.Equal(r.Deleted, want) {
		t.Fatalf("NodeStarted deleted %v", r.Deleted)
	}
	if _, ok := h.f.Queue("/", "transient2"); !ok {
		t.Fatal("another node's transient queue deleted")
	}
	if _, ok := h.f.Exchange("/", "tx"); ok {
		t.Fatal("transient exchange kept")
	}
	b := h.f.Bindings("/")
	if len(b) != 1 || b[0].Source != "dx" || b[0].Dest.Name != "durable" {
		t.Fatalf("bindings after NodeStarted: %v", b)
	}
}

func TestVhostsUsersPermissions(t *testing.T) {
	h := newHarness(t)
	if r := h.ok(AddVhost{Name: "v"}); !r.Created {
		t.Fatal("AddVhost not Created")
	}
	if r := h.ok(AddVhost{Name: "v"}); r.Created {
		t.Fatal("second AddVhost Created")
	}
	if _, ok := h.f.Exchange("v", "amq.topic"); !ok {
		t.Fatal("new vhost lacks predeclared exchanges")
	}
	h.ok(PutUser{Name: "guest", PasswordHash: "h1", Tags: []string{"administrator"}})
	h.ok(SetPermissions{User: "guest", Vhost: "v", Configure: ".*", Write: ".*", Read: ".*"})
	h.refused(SetPermissions{User: "nobody", Vhost: "v"}, 404, "NOT_FOUND - no user 'nobody'")
	h.refused(SetPermissions{User: "guest", Vhost: "nov"}, 404, "NOT_FOUND - no vhost 'nov'")
	if hash, tags, ok := h.f.User("guest"); !ok || hash != "h1" || !slices.Equal(tags, []string{"administrator"}) {
		t.Fatalf("User = %q %v %v", hash, tags, ok)
	}
	h.ok(DeclareQueue{Vhost: "v", Name: "b", Owner: "n1"})
	h.ok(DeclareQueue{Vhost: "v", Name: "a", Owner: "n2"})
	h.ok(Bind{Vhost: "v", Source: "amq.direct", Dest: exchange.Dest{Name: "a"}, Key: "a"})
	if got := h.route("", "a", nil); len(got) != 0 {
		t.Fatal("queues are per vhost")
	}
	r := h.ok(DeleteVhost{Name: "v"})
	if !slices.Equal(r.Deleted, []QueueRef{{"v", "a", "n2"}, {"v", "b", "n1"}}) {
		t.Fatalf("DeleteVhost deleted %v", r.Deleted)
	}
	if _, ok := h.f.Permissions("guest", "v"); ok || h.f.VhostExists("v") {
		t.Fatal("vhost or its permissions survived")
	}
	h.refused(DeleteVhost{Name: "v"}, 404, "NOT_FOUND - no vhost 'v'")
	h.ok(DeleteUser{Name: "guest"})
	if r := h.ok(DeleteUser{Name: "guest"}); !r.NotFound {
		t.Fatal("second DeleteUser must report NotFound")
	}
}
