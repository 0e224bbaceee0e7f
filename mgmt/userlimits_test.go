package mgmt_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// TestUserLimitsLikeRabbitMQ: the same user-limits API calls against Debian's RabbitMQ 3.10 and
// a Warren cluster (written through one node, read and connected through the other) give the
// same status codes, the same listings and the same refusals, word for word, of a connection
// and a channel past the limits; the limits are in the user's JSON and in the definitions.
func TestUserLimitsLikeRabbitMQ(t *testing.T) {
	rAMQP, rMgmt := startRabbit(t)
	nodes := startCluster(t, 2)
	type side struct {
		name, write, read, amqp string
	}
	sides := []side{
		{"RabbitMQ", "127.0.0.1:" + rMgmt, "127.0.0.1:" + rMgmt, "127.0.0.1:" + rAMQP},
		{"Warren", nodes[0].HTTP.Addr(), nodes[1].HTTP.Addr(), nodes[1].AMQPAddr()},
	}
	// sameBody: the error body is compared too (not where RabbitMQ prints Erlang terms).
	steps := []struct {
		method, path, body string
		sameBody           bool
	}{
		{"PUT", "/api/users/ul-user", `{"password":"p","tags":""}`, true},
		{"PUT", "/api/permissions/%2F/ul-user", `{"configure":".*","write":".*","read":".*"}`, true},
		{"PUT", "/api/user-limits/ul-user/max-connections", `{"value": 1}`, true},
		{"PUT", "/api/user-limits/ul-user/max-channels", `{"value": 2}`, true},
		{"PUT", "/api/user-limits/ul-user/max-channels", `{"value": "two"}`, false},
		{"PUT", "/api/user-limits/ul-user/max-queues", `{"value": 2}`, false},
		{"PUT", "/api/user-limits/ul-nobody/max-channels", `{"value": 2}`, true},
		{"GET", "/api/user-limits/ul-nobody", "", true},
	}
	type outcome struct {
		statuses          []int
		errors            []string
		all, one, user    string
		conn2, chan3, def string
	}
	run := func(s side) outcome {
		var o outcome
		for _, st := range steps {
			r := call(t, s.write, st.method, st.path, "guest", "guest", st.body)
			o.statuses = append(o.statuses, r.status)
			if r.status >= 400 && st.sameBody {
				o.errors = append(o.errors, r.body)
			}
		}
		t.Cleanup(func() { call(t, s.write, "DELETE", "/api/users/ul-user", "guest", "guest", "") })
		// Only the entry of this test's user: the reference broker is shared.
		var all []map[string]any
		if err := json.Unmarshal([]byte(call(t, s.read, "GET", "/api/user-limits", "guest", "guest", "").body), &all); err != nil {
			t.Fatalf("%s: /api/user-limits: %v", s.name, err)
		}
		for _, e := range all {
			if e["user"] == "ul-user" {
				o.all = fmt.Sprint(e)
			}
		}
		o.one = call(t, s.read, "GET", "/api/user-limits/ul-user", "guest", "guest", "").body
		var u map[string]any
		if err := json.Unmarshal([]byte(call(t, s.read, "GET", "/api/users/ul-user", "guest", "guest", "").body), &u); err != nil {
			t.Fatalf("%s: /api/users/ul-user: %v", s.name, err)
		}
		o.user = fmt.Sprint(u["limits"])
		var defs struct{ Users []map[string]any }
		if err := json.Unmarshal([]byte(call(t, s.read, "GET", "/api/definitions", "guest", "guest", "").body), &defs); err != nil {
			t.Fatalf("%s: definitions: %v", s.name, err)
		}
		for _, du := range defs.Users {
			if du["name"] == "ul-user" {
				o.def = fmt.Sprint(du["limits"])
			}
		}

		url := "amqp://ul-user:p@" + s.amqp + "/"
		c, err := amqp.Dial(url)
		if err != nil {
			t.Fatalf("%s: first connection: %v", s.name, err)
		}
		defer c.Close()
		_, err = amqp.Dial(url)
		o.conn2 = refusal(err)
		for range 2 {
			if _, err := c.Channel(); err != nil {
				t.Fatalf("%s: channel within the limit: %v", s.name, err)
			}
		}
		_, err = c.Channel()
		o.chan3 = refusal(err)
		return o
	}
	want, got := run(sides[0]), run(sides[1])
	if fmt.Sprint(want) != fmt.Sprint(got) {
		t.Fatalf("user limits differ:\nRabbitMQ: %+v\nWarren:   %+v", want, got)
	}
	// RabbitMQ 3.10 crashes (500, no body) on this one; Warren answers as to the PUT.
	if r := call(t, nodes[1].HTTP.Addr(), "DELETE", "/api/user-limits/ul-nobody/max-channels", "guest", "guest", ""); r.status != 400 || !strings.Contains(r.body, "no_such_user") {
		t.Fatalf("DELETE a limit of a missing user: %v", r)
	}
	// Definitions carry the limits in: imported through one node, listed by the other.
	defs := `{"users": [{"name": "ul-imported", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": [], "limits": {"max-connections": 3}}]}`
	if r := call(t, nodes[0].HTTP.Addr(), "POST", "/api/definitions", "guest", "guest", defs); r.status/100 != 2 {
		t.Fatalf("import: %v", r)
	}
	waitFor(t, 5*time.Second, "imported limits", func() bool {
		r := call(t, nodes[1].HTTP.Addr(), "GET", "/api/user-limits/ul-imported", "guest", "guest", "")
		return r.body == `[{"user":"ul-imported","value":{"max-connections":3}}]`
	})
	bad := strings.Replace(defs, "3}", `"3"}`, 1)
	if r := call(t, nodes[0].HTTP.Addr(), "POST", "/api/definitions", "guest", "guest", bad); r.status != 400 {
		t.Fatalf("import of a limit that is not a number: %v", r)
	}
	if !strings.Contains(got.chan3, "530 NOT_ALLOWED - number of channels") || !strings.Contains(got.conn2, "user connection limit (1)") {
		t.Fatalf("refusals: %+v", got)
	}
}

// refusal is what a client sees of a refused connection or channel.
func refusal(err error) string {
	var ae *amqp.Error
	if errors.As(err, &ae) {
		return fmt.Sprintf("%d %s", ae.Code, ae.Reason)
	}
	return fmt.Sprint(err)
}
