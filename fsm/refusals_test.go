package fsm

import (
	"testing"

	"github.com/warrenmq/warren/exchange"
)

// TestRefusalConstructors pins each constructor's code and text: these are the texts
// RabbitMQ 3.10 sends (recorded against a running broker), which clients may match on.
func TestRefusalConstructors(t *testing.T) {
	cases := []struct {
		name string
		err  *Error
		code uint16
		text string
	}{
		{"NoVhost", NoVhost("v1"), 404, "NOT_FOUND - no vhost 'v1'"},
		{"NoExchange", NoExchange("v1", "x1"), 404, "NOT_FOUND - no exchange 'x1' in vhost 'v1'"},
		{"NoQueue", NoQueue("v1", "q1"), 404, "NOT_FOUND - no queue 'q1' in vhost 'v1'"},
		{"DefaultExchangeRefused", DefaultExchangeRefused(), 403,
			"ACCESS_REFUSED - operation not permitted on the default exchange"},
		{"UnknownExchangeType", UnknownExchangeType("nosuch"), 503, "COMMAND_INVALID - unknown exchange type 'nosuch'"},
		{"QueueLocked", QueueLocked("v1", "q1"), 405,
			"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue 'q1' in vhost 'v1'. " +
				"It could be originally declared on another connection or the exclusive property value " +
				"does not match that of the original declaration."},
		{"QueueInExclusiveUse", QueueInExclusiveUse("v1", "q1"), 403,
			"ACCESS_REFUSED - queue 'q1' in vhost 'v1' in exclusive use"},
		{"InUse queue", InUse("queue", "v1", "q1"), 406, "PRECONDITION_FAILED - queue 'q1' in vhost 'v1' in use"},
		{"InUse exchange", InUse("exchange", "v1", "x1"), 406, "PRECONDITION_FAILED - exchange 'x1' in vhost 'v1' in use"},
		{"QueueNotEmpty", QueueNotEmpty("v1", "q1"), 406, "PRECONDITION_FAILED - queue 'q1' in vhost 'v1' is not empty"},
		{"CheckQueueName", CheckQueueName("amq.q"), 403,
			"ACCESS_REFUSED - queue name 'amq.q' contains reserved prefix 'amq.*'"},
		{"AccessRefused queue", AccessRefused("u1", "v1", "queue", "q1"), 403,
			"ACCESS_REFUSED - access to queue 'q1' in vhost 'v1' refused for user 'u1'"},
		{"AccessRefused exchange", AccessRefused("u1", "/", "exchange", "amq.default"), 403,
			"ACCESS_REFUSED - access to exchange 'amq.default' in vhost '/' refused for user 'u1'"},
		{"VhostAccessRefused", VhostAccessRefused("u1", "v1"), 530,
			"NOT_ALLOWED - access to vhost 'v1' refused for user 'u1'"},
		{"VhostConnectionLimit", VhostConnectionLimit("u1", "v1", 3), 530,
			"NOT_ALLOWED - access to vhost 'v1' refused for user 'u1': connection limit (3) is reached"},
		{"ConsumerTagReused", ConsumerTagReused("ctag"), 530, "NOT_ALLOWED - attempt to reuse consumer tag 'ctag'"},
		{"UnknownDeliveryTag", UnknownDeliveryTag(7), 406, "PRECONDITION_FAILED - unknown delivery tag 7"},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: nil", c.name)
			continue
		}
		if c.err.Code != c.code || c.err.Text != c.text {
			t.Errorf("%s = %d %q\nwant   %d %q", c.name, c.err.Code, c.err.Text, c.code, c.text)
		}
	}
	if err := CheckQueueName("q.amq"); err != nil {
		t.Errorf("CheckQueueName(q.amq) = %v, want nil", err)
	}
	if err := CheckQueueName(""); err != nil {
		t.Errorf("CheckQueueName(\"\") = %v, want nil (the server names the queue)", err)
	}
}

// TestRefusalsShareConstructors checks that the FSM's own refusals are the exported ones a
// server or broker would build for the same resource.
func TestRefusalsShareConstructors(t *testing.T) {
	h := newHarness(t)
	h.refused(DeclareQueue{Vhost: "nope", Name: "q"}, 404, NoVhost("nope").Text)
	h.refused(Bind{Vhost: "/", Source: "nosuch", Dest: exchange.Dest{Name: "q"}}, 404, NoExchange("/", "nosuch").Text)
	h.refused(Bind{Vhost: "/", Source: "amq.direct", Dest: exchange.Dest{Name: "nosuch"}}, 404, NoQueue("/", "nosuch").Text)
	h.refused(DeleteExchange{Vhost: "/", Name: ""}, 403, DefaultExchangeRefused().Text)
	h.refused(DeclareExchange{Vhost: "/", Name: "x", Kind: "nosuch"}, 503, UnknownExchangeType("nosuch").Text)
	h.ok(DeclareQueue{Vhost: "/", Name: "ex", Exclusive: true, ExclusiveConn: "n1/1", Owner: "n1"})
	h.refused(DeclareQueue{Vhost: "/", Name: "ex", Exclusive: true, ExclusiveConn: "n1/2", Owner: "n1"}, 405, QueueLocked("/", "ex").Text)
	h.exch("src", "direct")
	h.exch("dst", "fanout")
	h.bindX("src", "dst", "k")
	h.refused(DeleteExchange{Vhost: "/", Name: "src", IfUnused: true}, 406, InUse("exchange", "/", "src").Text)
}
