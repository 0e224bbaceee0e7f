package server_test

import (
	"strings"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/server"
)

func mustApply(t *testing.T, n *testNode, c fsm.Command) {
	t.Helper()
	if _, err := n.Broker.Apply(c); err != nil {
		t.Fatalf("%T: %v", c, err)
	}
}

// wantRefused asserts err is 403 ACCESS_REFUSED with RabbitMQ's text.
func wantRefused(t *testing.T, err error, text string) {
	t.Helper()
	wantCode(t, err, 403)
	if ae := err.(*amqp.Error); ae.Reason != "ACCESS_REFUSED - "+text {
		t.Fatalf("reason %q, want %q", ae.Reason, "ACCESS_REFUSED - "+text)
	}
}

// TestPermissionsEnforced: a user limited to configure "^bob\.", write "^bob\." and read
// "^bob\.|^amq\.direct$" gets 403 ACCESS_REFUSED (RabbitMQ's texts) for everything outside, and
// nothing changes; what is inside works. A user without permissions in a vhost may not open it
// (530), and a wrong password is refused (403).
func TestPermissionsEnforced(t *testing.T) {
	n := startNode(t)
	mustApply(t, n, fsm.PutUser{Name: "bob", PasswordHash: broker.HashPassword("pw")})
	mustApply(t, n, fsm.SetPermissions{User: "bob", Vhost: "/", Configure: `^bob\.`, Write: `^bob\.`, Read: `^bob\.|^amq\.direct$`})
	mustApply(t, n, fsm.AddVhost{Name: "other"})
	url := "amqp://bob:pw@" + n.AMQPAddr() + "/"

	if _, err := amqp.Dial("amqp://bob:pw@" + n.AMQPAddr() + "/other"); err == nil || !strings.Contains(err.Error(), "access to vhost 'other' refused for user 'bob'") {
		t.Fatalf("open of a vhost without permissions: %v", err)
	}
	if _, err := amqp.Dial("amqp://bob:wrong@" + n.AMQPAddr() + "/"); err == nil {
		t.Fatal("wrong password accepted")
	}

	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fresh := func() *amqp.Channel { return channel(t, c) }

	ch := fresh()
	if _, err := ch.QueueDeclare("bob.q", false, false, false, false, nil); err != nil {
		t.Fatalf("declare inside configure: %v", err)
	}
	if err := ch.QueueBind("bob.q", "k", "amq.direct", false, nil); err != nil {
		t.Fatalf("bind with write on queue and read on amq.direct: %v", err)
	}
	_, err = ch.QueueDeclare("alice.q", false, false, false, false, nil)
	wantRefused(t, err, "access to queue 'alice.q' in vhost '/' refused for user 'bob'")
	if _, ok := n.FSM.Queue("/", "alice.q"); ok {
		t.Fatal("refused declare created the queue")
	}
	// A new queue's dead-letter exchange needs write on it (RabbitMQ), an existing one's not.
	_, err = fresh().QueueDeclare("bob.dlx", false, false, false, false, amqp.Table{"x-dead-letter-exchange": "amq.fanout"})
	wantRefused(t, err, "access to exchange 'amq.fanout' in vhost '/' refused for user 'bob'")
	if _, err := fresh().QueueDeclare("bob.q", false, false, false, false, nil); err != nil {
		t.Fatalf("re-declare: %v", err)
	}
	err = fresh().ExchangeDeclare("x", "direct", false, false, false, false, nil)
	wantRefused(t, err, "access to exchange 'x' in vhost '/' refused for user 'bob'")
	err = fresh().QueueBind("bob.q", "k", "amq.topic", false, nil)
	wantRefused(t, err, "access to exchange 'amq.topic' in vhost '/' refused for user 'bob'")

	// guest owns a queue bob may not read; bob may not consume, get, purge or delete it.
	g := channel(t, dial(t, n))
	if _, err := g.QueueDeclare("private", false, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, g, "", "private", body("secret"))
	_, _, err = fresh().Get("private", true)
	wantRefused(t, err, "access to queue 'private' in vhost '/' refused for user 'bob'")
	_, err = fresh().Consume("private", "", true, false, false, false, nil)
	wantRefused(t, err, "access to queue 'private' in vhost '/' refused for user 'bob'")
	_, err = fresh().QueuePurge("private", false)
	wantRefused(t, err, "access to queue 'private' in vhost '/' refused for user 'bob'")
	_, err = fresh().QueueDelete("private", false, false, false)
	wantRefused(t, err, "access to queue 'private' in vhost '/' refused for user 'bob'")
	if m := getOne(t, g, "private", true); string(m.Body) != "secret" {
		t.Fatalf("guest's message changed: %q", m.Body)
	}

	// Publishing to the default exchange needs write on amq.default: refused (channel closed).
	ch = fresh()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	publish(t, ch, "", "bob.q", body("x"))
	if e := <-closed; e == nil || e.Code != 403 || !strings.Contains(e.Reason, "access to exchange 'amq.default' in vhost '/' refused for user 'bob'") {
		t.Fatalf("publish to the default exchange: %v", e)
	}
	// Granting write on amq.default at runtime takes effect on the next publish.
	mustApply(t, n, fsm.SetPermissions{User: "bob", Vhost: "/", Configure: `^bob\.`, Write: `^bob\.|^amq\.default$`, Read: `^bob\.`})
	ch = fresh()
	publish(t, ch, "", "bob.q", body("mine"))
	if m := getOne(t, ch, "bob.q", true); string(m.Body) != "mine" {
		t.Fatalf("got %q", m.Body)
	}
}

func TestPermitsName(t *testing.T) {
	for _, tc := range []struct {
		pattern, name string
		want          bool
	}{
		{".*", "anything", true}, {"", "", true}, {"", "q", false}, {"^$", "q", false},
		{"^amq\\.gen", "amq.gen-1", true}, {"foo", "xfoox", true}, {"(", "(", false},
	} {
		if got := server.PermitsName(tc.pattern, tc.name); got != tc.want {
			t.Errorf("PermitsName(%q, %q) = %v", tc.pattern, tc.name, got)
		}
	}
}
