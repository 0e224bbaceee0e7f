package mgmt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// publish is POST /api/exchanges/{vhost}/{name}/publish: one message, published mandatory in
// confirm mode so the answer says whether it reached a queue ({"routed": bool}).
func (s *Server) publish(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), exchangeName(r, "name")
	if !s.writableExchange(w, p, vhost, name) {
		return
	}
	var body struct {
		RoutingKey      string         `json:"routing_key"`
		Payload         *string        `json:"payload"`
		PayloadEncoding string         `json:"payload_encoding"`
		Properties      map[string]any `json:"properties"`
	}
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	if body.Payload == nil {
		badRequest(w, "[{key_missing,payload}]")
		return
	}
	payload := []byte(*body.Payload)
	switch body.PayloadEncoding {
	case "", "string":
	case "base64":
		b, err := base64.StdEncoding.DecodeString(*body.Payload)
		if err != nil {
			badRequest(w, "payload is not valid base64")
			return
		}
		payload = b
	default:
		badRequest(w, "payload_encoding must be string or base64")
		return
	}
	msg, err := publishing(body.Properties)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	msg.Body = payload
	routed := false
	err = s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		returns := ch.NotifyReturn(make(chan amqp.Return, 1))
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, name, body.RoutingKey, true, false, msg)
		if err != nil {
			return err
		}
		ok, err := dc.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("the broker refused the message (basic.nack)")
		}
		// basic.return comes before the confirm of the same publish.
		select {
		case <-returns:
		default:
			routed = true
		}
		return nil
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"routed": routed})
}

// publishing reads RabbitMQ's JSON message properties.
func publishing(props map[string]any) (amqp.Publishing, error) {
	var m amqp.Publishing
	str := func(k string) string { s, _ := props[k].(string); return s }
	num := func(k string) (int64, bool, error) {
		v, ok := props[k]
		if !ok {
			return 0, false, nil
		}
		switch x := v.(type) {
		case json.Number:
			n, err := x.Int64()
			return n, true, err
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			return n, true, err
		}
		return 0, true, fmt.Errorf("property %s must be a number", k)
	}
	m.ContentType, m.ContentEncoding = str("content_type"), str("content_encoding")
	m.CorrelationId, m.ReplyTo, m.Expiration = str("correlation_id"), str("reply_to"), str("expiration")
	m.MessageId, m.Type, m.UserId, m.AppId = str("message_id"), str("type"), str("user_id"), str("app_id")
	if n, ok, err := num("delivery_mode"); err != nil {
		return m, err
	} else if ok {
		m.DeliveryMode = uint8(n)
	}
	if n, ok, err := num("priority"); err != nil {
		return m, err
	} else if ok {
		m.Priority = uint8(n)
	}
	if n, ok, err := num("timestamp"); err != nil {
		return m, err
	} else if ok {
		m.Timestamp = time.Unix(n, 0)
	}
	if h, ok := props["headers"].(map[string]any); ok {
		t, err := toTable(h)
		if err != nil {
			return m, err
		}
		m.Headers = t
	}
	return m, nil
}

// getMessages is POST /api/queues/{vhost}/{name}/get: up to count messages with basic.get, then
// settled as ackmode says (ack_requeue_true and reject_requeue_true put them back).
func (s *Server) getMessages(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), pathValue(r, "name")
	if !s.writableQueue(w, p, vhost, name) {
		return
	}
	var body struct {
		Count    any    `json:"count"`
		Ackmode  string `json:"ackmode"`
		Encoding string `json:"encoding"`
		Truncate any    `json:"truncate"`
	}
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	count, err := intField(body.Count, 1)
	if err != nil || count < 1 {
		badRequest(w, "count must be a positive integer")
		return
	}
	truncate, err := intField(body.Truncate, -1)
	if err != nil {
		badRequest(w, "truncate must be an integer")
		return
	}
	switch body.Ackmode {
	case "ack_requeue_true", "ack_requeue_false", "reject_requeue_true", "reject_requeue_false":
	default:
		badRequest(w, "ackmode must be ack_requeue_true, ack_requeue_false, reject_requeue_true or reject_requeue_false")
		return
	}
	if body.Encoding != "" && body.Encoding != "auto" && body.Encoding != "base64" {
		badRequest(w, "encoding must be auto or base64")
		return
	}
	out := []map[string]any{}
	err = s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		autoAck := body.Ackmode == "ack_requeue_false"
		var last uint64
		for range count {
			d, ok, err := ch.Get(name, autoAck)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			last = d.DeliveryTag
			out = append(out, deliveryJSON(d, body.Encoding, truncate))
		}
		if last == 0 || autoAck {
			return nil
		}
		return ch.Nack(last, true, body.Ackmode == "ack_requeue_true" || body.Ackmode == "reject_requeue_true")
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func intField(v any, def int) (int, error) {
	switch x := v.(type) {
	case nil:
		return def, nil
	case json.Number:
		n, err := x.Int64()
		return int(n), err
	case string:
		if x == "" {
			return def, nil
		}
		return strconv.Atoi(x)
	}
	return 0, fmt.Errorf("%v is not an integer", v)
}

func deliveryJSON(d amqp.Delivery, encoding string, truncate int) map[string]any {
	body := d.Body
	size := len(body)
	if truncate >= 0 && len(body) > truncate {
		body = body[:truncate]
	}
	item := map[string]any{
		"payload_bytes": size, "redelivered": d.Redelivered, "exchange": d.Exchange,
		"routing_key": d.RoutingKey, "message_count": d.MessageCount, "properties": propertiesJSON(d),
	}
	if encoding != "base64" && utf8.Valid(body) {
		item["payload"], item["payload_encoding"] = string(body), "string"
	} else {
		item["payload"], item["payload_encoding"] = base64.StdEncoding.EncodeToString(body), "base64"
	}
	return item
}

// propertiesJSON lists the properties a message has; RabbitMQ writes an empty list, not an
// empty object, when it has none.
func propertiesJSON(d amqp.Delivery) any {
	p := map[string]any{}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	set("content_type", d.ContentType)
	set("content_encoding", d.ContentEncoding)
	set("correlation_id", d.CorrelationId)
	set("reply_to", d.ReplyTo)
	set("expiration", d.Expiration)
	set("message_id", d.MessageId)
	set("type", d.Type)
	set("user_id", d.UserId)
	set("app_id", d.AppId)
	if d.DeliveryMode != 0 {
		p["delivery_mode"] = d.DeliveryMode
	}
	if d.Priority != 0 {
		p["priority"] = d.Priority
	}
	if !d.Timestamp.IsZero() {
		p["timestamp"] = d.Timestamp.Unix()
	}
	if len(d.Headers) > 0 {
		p["headers"] = jsonable(map[string]any(d.Headers))
	}
	if len(p) == 0 {
		return []any{}
	}
	return p
}
