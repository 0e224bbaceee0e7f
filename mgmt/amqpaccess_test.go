package mgmt_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestAMQPPermissionsLikeRabbitMQ: a user limited to "^p-" (configure, write) and "^p-|^amq\."
// (read) gets the same answer, reply code and text from Warren as from Debian's RabbitMQ for
// declares (also with a dead-letter or alternate exchange outside its permissions), binds,
// publishes, gets, consumes, purges and deletes.
func TestAMQPPermissionsLikeRabbitMQ(t *testing.T) {
	rAMQP, rMgmt := startRabbit(t)
	nodes := startCluster(t, 2)
	setup := []struct{ method, path, body string }{
		{"PUT", "/api/vhosts/perm-vh", "{}"},
		{"PUT", "/api/users/perm-user", `{"password":"p","tags":""}`},
		{"PUT", "/api/permissions/perm-vh/perm-user", `{"configure":"^p-","write":"^p-","read":"^p-|^amq\\."}`},
		{"PUT", "/api/queues/perm-vh/other-q", `{"durable":true}`},
		{"PUT", "/api/exchanges/perm-vh/other-x", `{"type":"fanout"}`},
	}
	for _, addr := range []string{"127.0.0.1:" + rMgmt, nodes[0].HTTP.Addr()} {
		for _, s := range setup {
			if r := call(t, addr, s.method, s.path, "guest", "guest", s.body); r.status >= 300 {
				t.Fatalf("%s %s %s: %v", addr, s.method, s.path, r)
			}
		}
	}
	t.Cleanup(func() {
		call(t, "127.0.0.1:"+rMgmt, "DELETE", "/api/vhosts/perm-vh", "guest", "guest", "")
		call(t, "127.0.0.1:"+rMgmt, "DELETE", "/api/users/perm-user", "guest", "guest", "")
	})
	ops := []struct {
		name string
		do   func(ch *amqp.Channel) error
	}{
		{"declare p-q", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("p-q", false, true, false, false, nil)
			return err
		}},
		{"declare other", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("o-q", false, true, false, false, nil)
			return err
		}},
		{"declare with dlx outside", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclare("p-dlx", false, true, false, false, amqp.Table{"x-dead-letter-exchange": "other-x"})
			return err
		}},
		{"declare exchange with ae outside", func(ch *amqp.Channel) error {
			return ch.ExchangeDeclare("p-ae", "fanout", false, true, false, false, amqp.Table{"alternate-exchange": "other-x"})
		}},
		{"declare passive other", func(ch *amqp.Channel) error {
			_, err := ch.QueueDeclarePassive("other-q", true, false, false, false, nil)
			return err
		}},
		{"declare exchange p-x", func(ch *amqp.Channel) error {
			return ch.ExchangeDeclare("p-x", "direct", false, true, false, false, nil)
		}},
		{"bind p-q to amq.direct", func(ch *amqp.Channel) error { return ch.QueueBind("p-q", "k", "amq.direct", false, nil) }},
		{"bind p-q to other-x", func(ch *amqp.Channel) error { return ch.QueueBind("p-q", "k", "other-x", false, nil) }},
		{"bind other-q to amq.direct", func(ch *amqp.Channel) error { return ch.QueueBind("other-q", "k", "amq.direct", false, nil) }},
		{"bind exchange p-x to other-x", func(ch *amqp.Channel) error { return ch.ExchangeBind("p-x", "k", "other-x", false, nil) }},
		{"get other-q", func(ch *amqp.Channel) error { _, _, err := ch.Get("other-q", true); return err }},
		{"consume other-q", func(ch *amqp.Channel) error {
			_, err := ch.Consume("other-q", "", true, false, false, false, nil)
			return err
		}},
		{"purge other-q", func(ch *amqp.Channel) error { _, err := ch.QueuePurge("other-q", false); return err }},
		{"delete other-q", func(ch *amqp.Channel) error { _, err := ch.QueueDelete("other-q", false, false, false); return err }},
		{"delete other-x", func(ch *amqp.Channel) error { return ch.ExchangeDelete("other-x", false, false) }},
		{"publish to other-x", func(ch *amqp.Channel) error {
			if err := ch.PublishWithContext(context.Background(), "other-x", "", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
				return err
			}
			_, err := ch.QueueDeclarePassive("p-q", false, true, false, false, nil) // a round trip: the refusal closes the channel first
			return err
		}},
		{"publish to default", func(ch *amqp.Channel) error {
			if err := ch.PublishWithContext(context.Background(), "", "p-q", false, false, amqp.Publishing{Body: []byte("x")}); err != nil {
				return err
			}
			_, err := ch.QueueDeclarePassive("p-q", false, true, false, false, nil)
			return err
		}},
		{"delete p-q", func(ch *amqp.Channel) error { _, err := ch.QueueDelete("p-q", false, false, false); return err }},
	}
	run := func(addr string) []string {
		c, err := amqp.DialConfig("amqp://perm-user:p@"+addr+"/perm-vh", amqp.Config{Dial: amqp.DefaultDial(10 * time.Second)})
		if err != nil {
			t.Fatalf("%s: login: %v", addr, err)
		}
		defer c.Close()
		var out []string
		for _, op := range ops {
			ch, err := c.Channel()
			if err != nil {
				t.Fatalf("%s: channel: %v", addr, err)
			}
			closed := ch.NotifyClose(make(chan *amqp.Error, 1))
			res := "ok"
			if err := op.do(ch); err != nil {
				var ae *amqp.Error
				if errors.Is(err, amqp.ErrClosed) {
					// The broker's channel.close can reach the client before the next call
					// does: the reason is what the channel was closed with.
					select {
					case why := <-closed:
						if why != nil {
							ae = why
						}
					case <-time.After(5 * time.Second):
					}
				}
				if ae != nil || errors.As(err, &ae) {
					res = fmt.Sprintf("%d %s", ae.Code, ae.Reason)
				} else {
					res = err.Error()
				}
			} else {
				_ = ch.Close()
			}
			out = append(out, op.name+": "+res)
		}
		return out
	}
	rabbit := run("127.0.0.1:" + rAMQP)
	warren := run(nodes[1].AMQPAddr())
	for i := range rabbit {
		if rabbit[i] != warren[i] {
			t.Errorf("\nRabbitMQ: %s\nWarren:   %s", rabbit[i], warren[i])
		}
	}
}
