package server_test

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// routeOnce publishes key to exchange and returns which of queues received it.
func routeOnce(t *testing.T, ch *amqp.Channel, exchange, key string, headers amqp.Table, queues ...string) map[string]bool {
	t.Helper()
	for _, q := range queues {
		if _, err := ch.QueuePurge(q, false); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, ch, exchange, key, amqp.Publishing{Body: []byte(key), Headers: headers})
	// A basic.get after a publish on the same channel sees it: frames are handled in order.
	got := map[string]bool{}
	for _, q := range queues {
		if _, ok, err := ch.Get(q, true); err != nil {
			t.Fatal(err)
		} else if ok {
			got[q] = true
		}
	}
	return got
}

func declareBound(t *testing.T, ch *amqp.Channel, exchange string, bindings map[string]string) {
	t.Helper()
	for q, key := range bindings {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
		if err := ch.QueueBind(q, key, exchange, false, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestTopicExchange(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if err := ch.ExchangeDeclare("topics", "topic", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declareBound(t, ch, "topics", map[string]string{"hades": "*.hades.#", "all": "#", "two": "*.*"})
	cases := map[string][]string{
		"tom.hades":      {"hades", "all", "two"},
		"tom.hades.jack": {"hades", "all"},
		"hades.jack":     {"all", "two"},
		"":               {"all"},
	}
	for key, want := range cases {
		got := routeOnce(t, ch, "topics", key, nil, "hades", "all", "two")
		if len(got) != len(want) {
			t.Fatalf("key %q routed to %v, want %v", key, got, want)
		}
		for _, q := range want {
			if !got[q] {
				t.Fatalf("key %q routed to %v, want %v", key, got, want)
			}
		}
	}
}

func TestDirectFanoutHeadersExchanges(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	declareBound(t, ch, "amq.direct", map[string]string{"d1": "k1", "d2": "k2"})
	if got := routeOnce(t, ch, "amq.direct", "k1", nil, "d1", "d2"); !got["d1"] || got["d2"] {
		t.Fatalf("direct routed to %v", got)
	}
	declareBound(t, ch, "amq.fanout", map[string]string{"f1": "", "f2": "ignored"})
	if got := routeOnce(t, ch, "amq.fanout", "anything", nil, "f1", "f2"); !got["f1"] || !got["f2"] {
		t.Fatalf("fanout routed to %v", got)
	}
	for _, q := range []string{"hall", "hany"} {
		if _, err := ch.QueueDeclare(q, false, false, false, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := ch.QueueBind("hall", "", "amq.headers", false, amqp.Table{"x-match": "all", "a": int32(1), "b": "two"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("hany", "", "amq.match", false, amqp.Table{"x-match": "any", "a": int32(1), "b": "two"}); err != nil {
		t.Fatal(err)
	}
	got := routeOnce(t, ch, "amq.headers", "", amqp.Table{"a": int64(1), "b": "two"}, "hall")
	if !got["hall"] {
		t.Fatal("x-match all did not match equal headers (int64 vs int32 must compare equal)")
	}
	if got := routeOnce(t, ch, "amq.headers", "", amqp.Table{"a": int32(1)}, "hall"); got["hall"] {
		t.Fatal("x-match all matched with a header missing")
	}
	if got := routeOnce(t, ch, "amq.match", "", amqp.Table{"b": "two"}, "hany"); !got["hany"] {
		t.Fatal("x-match any did not match")
	}
}

func TestExchangeToExchangeAndAlternate(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if err := ch.ExchangeDeclare("unrouted", "fanout", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("front", "direct", false, false, false, false, amqp.Table{"alternate-exchange": "unrouted"}); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("inner", "topic", false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeBind("inner", "orders.*", "front", false, nil); err != nil {
		t.Fatal(err)
	}
	declareBound(t, ch, "inner", map[string]string{"orders": "orders.#"})
	declareBound(t, ch, "unrouted", map[string]string{"lost": ""})
	if got := routeOnce(t, ch, "front", "orders.*", nil, "orders", "lost"); !got["orders"] || got["lost"] {
		t.Fatalf("e2e routing: %v", got)
	}
	if got := routeOnce(t, ch, "front", "other", nil, "orders", "lost"); got["orders"] || !got["lost"] {
		t.Fatalf("alternate exchange: %v", got)
	}
	// An internal exchange refuses direct publishes with 403.
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "inner", "orders.x", body("x"))
	select {
	case e := <-closed:
		if e == nil || e.Code != 403 {
			t.Fatalf("publish to internal exchange: %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("publish to internal exchange accepted")
	}
}

func TestDefaultExchangeRules(t *testing.T) {
	n := startNode(t)
	conn := dial(t, n)
	ch := channel(t, conn)
	if _, err := ch.QueueDeclare("dq", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ch.QueueBind("dq", "dq", "", false, nil), 403)
	ch = channel(t, conn)
	wantCode(t, ch.ExchangeDeclare("amq.custom", "direct", false, false, false, false, nil), 403)
	ch = channel(t, conn)
	if err := ch.ExchangeDeclare("amq.topic", "topic", true, false, false, false, nil); err != nil {
		t.Fatalf("equivalent redeclare of amq.topic: %v", err)
	}
	wantCode(t, ch.ExchangeDeclare("amq.topic", "direct", true, false, false, false, nil), 406)
}

func TestExchangeDeclareAndDelete(t *testing.T) {
	n := startNode(t)
	conn := dial(t, n)
	ch := channel(t, conn)
	wantCode(t, ch.ExchangeDeclarePassive("nope", "direct", false, false, false, false, nil), 404)
	ch = channel(t, conn)
	if err := ch.ExchangeDeclare("x1", "direct", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ch.ExchangeDeclare("x1", "direct", false, false, false, false, nil), 406)
	ch = channel(t, conn)
	wantCode(t, ch.ExchangeDeclare("x2", "no-such-type", false, false, false, false, nil), 503)
	ch = channel(t, dial(t, n))
	declareBound(t, ch, "x1", map[string]string{"xq": "k"})
	wantCode(t, ch.ExchangeDelete("x1", true, false), 406)
	ch = channel(t, dial(t, n))
	if err := ch.ExchangeDelete("x1", false, false); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ch.ExchangeDeclarePassive("x1", "direct", true, false, false, false, nil), 404)
}

func TestAutoDeleteExchange(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if err := ch.ExchangeDeclare("ad", "fanout", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declareBound(t, ch, "ad", map[string]string{"adq": ""})
	if err := ch.QueueUnbind("adq", "", "ad", nil); err != nil {
		t.Fatal(err)
	}
	wantCode(t, ch.ExchangeDeclarePassive("ad", "fanout", false, true, false, false, nil), 404)
}

func TestQueueDeclareRules(t *testing.T) {
	n := startNode(t)
	conn := dial(t, n)
	ch := channel(t, conn)
	_, err := ch.QueueDeclarePassive("missing", false, false, false, false, nil)
	wantCode(t, err, 404)
	ch = channel(t, conn)
	if _, err := ch.QueueDeclare("q1", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	_, err = ch.QueueDeclare("q1", false, false, false, false, nil)
	wantCode(t, err, 406)
	ch = channel(t, conn)
	_, err = ch.QueueDeclare("q1", true, false, false, false, amqp.Table{"x-message-ttl": int32(5)})
	wantCode(t, err, 406)
	ch = channel(t, conn)
	_, err = ch.QueueDeclare("amq.mine", false, false, false, false, nil)
	wantCode(t, err, 403)
	ch = channel(t, conn)
	q, err := ch.QueueDeclare("", false, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(q.Name, "amq.gen-") {
		t.Fatalf("server-named queue %q", q.Name)
	}
	_, err = ch.QueueDeclare("bad-args", false, false, false, false, amqp.Table{"x-max-priority": int32(-1)})
	wantCode(t, err, 406)
}

func TestExclusiveQueue(t *testing.T) {
	n := startNode(t)
	owner := dial(t, n)
	och := channel(t, owner)
	if _, err := och.QueueDeclare("mine", false, false, true, false, nil); err != nil {
		t.Fatal(err)
	}
	other := channel(t, dial(t, n))
	_, err := other.QueueDeclare("mine", false, false, true, false, nil)
	wantCode(t, err, 405)
	other = channel(t, dial(t, n))
	_, err = other.Consume("mine", "", false, false, false, false, nil)
	wantCode(t, err, 405)
	if err := owner.Close(); err != nil {
		t.Fatal(err)
	}
	// Gone as soon as close-ok reached the client, not some time later.
	probe := channel(t, dial(t, n))
	_, err = probe.QueueDeclarePassive("mine", false, false, true, false, nil)
	wantCode(t, err, 404)
}

func TestAutoDeleteQueue(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("adq", false, true, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Consume("adq", "c", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.Cancel("c", false); err != nil {
		t.Fatal(err)
	}
	waitGone(t, n, "adq")
}

func waitGone(t *testing.T, n *testNode, q string) {
	t.Helper()
	conn := dial(t, n)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ch := channel(t, conn)
		_, err := ch.QueueDeclarePassive(q, false, false, false, false, nil)
		if isCode(err, 404) {
			return
		}
		if err != nil && !isCode(err, 405) { // 405: an exclusive queue, still there
			t.Fatalf("passive declare of %s: %v", q, err)
		}
		if err == nil {
			_ = ch.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s still exists", q)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestQueueDeleteAndPurge(t *testing.T) {
	n := startNode(t)
	conn := dial(t, n)
	ch := channel(t, conn)
	if _, err := ch.QueueDeclare("dp", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		publish(t, ch, "", "dp", body("m"))
	}
	_, err := ch.QueueDelete("dp", false, true, false)
	wantCode(t, err, 406)
	ch = channel(t, conn)
	if n, err := ch.QueuePurge("dp", false); err != nil || n != 3 {
		t.Fatalf("purge = %d, %v", n, err)
	}
	if _, err := ch.Consume("dp", "c", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	ch2 := channel(t, conn)
	_, err = ch2.QueueDelete("dp", true, false, false)
	wantCode(t, err, 406)
	ch2 = channel(t, conn)
	publish(t, ch2, "", "dp", body("last"))
	if n, err := ch2.QueueDelete("dp", false, false, false); err != nil || n > 1 {
		t.Fatalf("delete = %d, %v", n, err)
	}
	_, err = ch2.QueuePurge("dp", false)
	wantCode(t, err, 404)
}
