package mgmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// clientProduct marks the API's own AMQP connections, which listings leave out.
const clientProduct = "Warren management API"

// localAMQP is the address to reach this node's AMQP listener from inside the node.
func (s *Server) localAMQP() (string, error) {
	if s.src.AMQP == nil || s.src.AMQP.Addr() == nil {
		return "", errors.New("this node has no AMQP listener")
	}
	host, port, err := net.SplitHostPort(s.src.AMQP.Addr().String())
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port), nil
}

// withChannel runs fn on a channel of a fresh AMQP connection to this node, logged in as the
// requesting user in vhost: the broker checks the user's permissions and gives its answers.
// Another node's call acts as the broker itself, so it is refused.
func (s *Server) withChannel(p *principal, vhost string, fn func(*amqp.Channel) error) error {
	if p.peer {
		return &amqp.Error{Code: amqp.AccessRefused, Reason: "ACCESS_REFUSED - cluster peers do not change vhost resources"}
	}
	addr, err := s.localAMQP()
	if err != nil {
		return err
	}
	conn, err := amqp.DialConfig("amqp://"+addr+"/", amqp.Config{
		SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: p.name, Password: p.password}},
		Vhost:      vhost,
		Heartbeat:  0,
		Properties: amqp.Table{"product": clientProduct, "connection_name": clientProduct},
		Dial:       amqp.DefaultDial(10 * time.Second),
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return fn(ch)
}

// writeAMQPError answers a broker refusal as RabbitMQ's management API does: 403 → 401
// not_authorised, 404 → 404, 405/406 → 400 bad_request, anything else 500.
func writeAMQPError(w http.ResponseWriter, err error) {
	var ae *amqp.Error
	if !errors.As(err, &ae) {
		writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
		return
	}
	reason := ae.Reason
	if code, rest, ok := strings.Cut(reason, " - "); ok && code == strings.ToUpper(code) {
		reason = rest // "NOT_FOUND - no queue ..." → "no queue ..."
	}
	switch ae.Code {
	case amqp.AccessRefused:
		writeError(w, http.StatusUnauthorized, "not_authorised", reason)
	case amqp.NotFound:
		writeError(w, http.StatusNotFound, "not_found", reason)
	case amqp.ResourceLocked, amqp.PreconditionFailed, amqp.CommandInvalid, amqp.NotAllowed:
		writeError(w, http.StatusBadRequest, "bad_request", reason)
	default:
		writeError(w, http.StatusInternalServerError, "internal_error", reason)
	}
}

// decodeBody reads a JSON request body into v (an empty body leaves v as it is).
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<20))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("bad JSON body: %w", err)
	}
	return nil
}

// toTable turns JSON arguments into an AMQP table: whole numbers become integers (as RabbitMQ
// stores x-message-ttl and friends), other numbers floats.
func toTable(m map[string]any) (amqp.Table, error) {
	if len(m) == 0 {
		return nil, nil
	}
	t := amqp.Table{}
	for k, v := range m {
		x, err := toAMQPValue(v)
		if err != nil {
			return nil, fmt.Errorf("argument %q: %w", k, err)
		}
		t[k] = x
	}
	return t, nil
}

func toAMQPValue(v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("bad number %s", x)
		}
		return f, nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), nil
		}
		return x, nil
	case string, bool, int64:
		return x, nil
	case map[string]any:
		return toTable(x)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			y, err := toAMQPValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = y
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported value %v", v)
}

// boolField reads a JSON boolean that rabbitmqadmin may send as "true"/"false".
func boolField(v any, def bool) (bool, error) {
	switch x := v.(type) {
	case nil:
		return def, nil
	case bool:
		return x, nil
	case string:
		switch strings.ToLower(x) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
	}
	return false, fmt.Errorf("%v is not a boolean", v)
}
