package server_test

import (
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func TestMessageTTLAndPerMessageExpiration(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("ttl", false, false, false, false, amqp.Table{"x-message-ttl": int32(50)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("exp", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "ttl", body("short"))
	publish(t, ch, "", "exp", amqp.Publishing{Body: []byte("short"), Expiration: "50"})
	publish(t, ch, "", "exp", amqp.Publishing{Body: []byte("long"), Expiration: "60000"})
	time.Sleep(200 * time.Millisecond)
	if _, ok, _ := ch.Get("ttl", true); ok {
		t.Fatal("x-message-ttl message survived its TTL")
	}
	m := getOne(t, ch, "exp", true)
	if string(m.Body) != "long" {
		t.Fatalf("got %q; the expired message should be gone", m.Body)
	}
}

func TestInvalidExpirationClosesChannel(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "", "whatever", amqp.Publishing{Body: []byte("x"), Expiration: "soon"})
	select {
	case e := <-closed:
		if e == nil || e.Code != 406 {
			t.Fatalf("closed with %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("invalid expiration accepted")
	}
}

func TestQueueExpires(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	// py-amqp sends x-expires as a signed 32-bit 'I'; amqp091-go's int64 goes as 'l'.
	if _, err := ch.QueueDeclare("expiring", false, false, false, false, amqp.Table{"x-expires": int32(100)}); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("expiring64", false, false, false, false, amqp.Table{"x-expires": int64(100)}); err != nil {
		t.Fatal(err)
	}
	waitGone(t, n, "expiring")
	waitGone(t, n, "expiring64")
}

func TestMaxLengthDropHead(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("ml", false, false, false, false, amqp.Table{"x-max-length": int32(2)}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		publish(t, ch, "", "ml", body(fmt.Sprint(i)))
	}
	a, b := getOne(t, ch, "ml", true), getOne(t, ch, "ml", true)
	if string(a.Body)+string(b.Body) != "34" {
		t.Fatalf("kept %s%s, want the newest two (34)", a.Body, b.Body)
	}
}

func TestMaxLengthBytes(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("mlb", false, false, false, false, amqp.Table{"x-max-length-bytes": int32(10)}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "mlb", body("123456"))
	publish(t, ch, "", "mlb", body("abcdef"))
	q, _ := ch.QueueDeclarePassive("mlb", false, false, false, false, amqp.Table{"x-max-length-bytes": int32(10)})
	if q.Messages != 1 {
		t.Fatalf("messages = %d, want 1 (12 bytes > 10)", q.Messages)
	}
}

func TestDeadLetteringWithXDeath(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if err := ch.ExchangeDeclare("dlx", "direct", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	declareBound(t, ch, "dlx", map[string]string{"dead": "dead-key"})
	if _, err := ch.QueueDeclare("src", false, false, false, false, amqp.Table{
		"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "dead-key",
	}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "src", amqp.Publishing{Body: []byte("bad"), Headers: amqp.Table{"app": "x"}})
	m := getOne(t, ch, "src", false)
	if err := m.Reject(false); err != nil {
		t.Fatal(err)
	}
	d := getOne(t, ch, "dead", true)
	if string(d.Body) != "bad" || d.Headers["app"] != "x" || d.Exchange != "dlx" || d.RoutingKey != "dead-key" {
		t.Fatalf("dead letter = %+v", d)
	}
	deaths, ok := d.Headers["x-death"].([]interface{})
	if !ok || len(deaths) != 1 {
		t.Fatalf("x-death = %#v", d.Headers["x-death"])
	}
	death := deaths[0].(amqp.Table)
	if death["reason"] != "rejected" || death["queue"] != "src" || death["exchange"] != "" || death["count"] != int64(1) {
		t.Fatalf("x-death entry = %#v", death)
	}
	if keys, _ := death["routing-keys"].([]interface{}); len(keys) != 1 || keys[0] != "src" {
		t.Fatalf("routing-keys = %#v", death["routing-keys"])
	}
	if d.Headers["x-first-death-reason"] != "rejected" {
		t.Fatalf("x-first-death-reason = %v", d.Headers["x-first-death-reason"])
	}
}

func TestExpiredMessagesDeadLetter(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("parking", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	// Dead-letter to the default exchange, keeping the routing key: the classic delay queue.
	if _, err := ch.QueueDeclare("delay", false, false, false, false, amqp.Table{
		"x-message-ttl": int32(30), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "parking",
	}); err != nil {
		t.Fatal(err)
	}
	publish(t, ch, "", "delay", body("later"))
	d := getOne(t, ch, "parking", true)
	death := d.Headers["x-death"].([]interface{})[0].(amqp.Table)
	if death["reason"] != "expired" || string(d.Body) != "later" {
		t.Fatalf("expired dead letter %+v", death)
	}
}

func TestPriorityQueue(t *testing.T) {
	n := startNode(t)
	ch := channel(t, dial(t, n))
	if _, err := ch.QueueDeclare("prio", false, false, false, false, amqp.Table{"x-max-priority": int32(10)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []uint8{1, 5, 0, 9} {
		publish(t, ch, "", "prio", amqp.Publishing{Body: []byte{'0' + p}, Priority: p})
	}
	var got string
	for i := 0; i < 4; i++ {
		got += string(getOne(t, ch, "prio", true).Body)
	}
	if got != "9510" {
		t.Fatalf("priority order %s, want 9510", got)
	}
}
