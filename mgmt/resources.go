package mgmt

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"math"
	"net/http"
	"net/url"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/exchange"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/wire"
)

// wireToAMQP turns a decoded stored table into values amqp091-go encodes back the same way.
func wireToAMQP(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := amqp.Table{}
		for k, e := range x {
			out[k] = wireToAMQP(e)
		}
		return out
	case wire.Table:
		return wireToAMQP(map[string]any(x))
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = wireToAMQP(e)
		}
		return out
	case wire.Decimal:
		return amqp.Decimal{Scale: x.Scale, Value: x.Value}
	case uint32:
		return int64(x)
	case uint64:
		return int64(x)
	case uint16:
		return int32(x)
	}
	return v
}

// vhostFilter returns the vhost a listing is limited to ("" for all) and whether the request
// may go on (a named vhost must exist and be visible to the user).
func (s *Server) vhostFilter(w http.ResponseWriter, r *http.Request, p *principal) (string, bool) {
	vhost := pathValue(r, "vhost")
	if vhost == "" {
		return "", true
	}
	return vhost, s.vhostAccess(w, p, vhost, false)
}

func decodeArgs(b []byte) map[string]any {
	if len(b) == 0 {
		return map[string]any{}
	}
	t, err := broker.DecodeArgs(b)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	return jsonable(t).(map[string]any)
}

// jsonable turns decoded AMQP values into what encoding/json writes as RabbitMQ does.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonable(e)
		}
		return out
	case amqp.Table:
		return jsonable(map[string]any(x))
	case wire.Table:
		return jsonable(map[string]any(x))
	case wire.Decimal:
		return float64(x.Value) / math.Pow10(int(x.Scale))
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	case []byte:
		return string(x)
	}
	return v
}

// ---- exchanges

func exchangeJSON(x fsm.Exchange) map[string]any {
	return map[string]any{
		"name": x.Name, "vhost": x.Vhost, "type": x.Kind, "durable": x.Durable,
		"auto_delete": x.AutoDelete, "internal": x.Internal, "arguments": decodeArgs(x.Args),
		"user_who_performed_action": "",
	}
}

func (s *Server) listExchanges(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, ok := s.vhostFilter(w, r, p)
	if !ok {
		return
	}
	var out []map[string]any
	for _, x := range s.src.Node.FSM().Exchanges(vhost) {
		if s.canSee(p, x.Vhost) {
			out = append(out, exchangeJSON(x))
		}
	}
	writeList(w, r, out)
}

// exchangeName maps the API's "amq.default" to the default exchange.
func exchangeName(r *http.Request, key string) string {
	n := pathValue(r, key)
	if n == "amq.default" {
		return ""
	}
	return n
}

func (s *Server) showExchange(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost := pathValue(r, "vhost")
	if !s.vhostAccess(w, p, vhost, false) {
		return
	}
	x, ok := s.src.Node.FSM().Exchange(vhost, exchangeName(r, "name"))
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, exchangeJSON(x))
}

func (s *Server) putExchange(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), pathValue(r, "name")
	if !s.vhostAccess(w, p, vhost, true) {
		return
	}
	var body struct {
		Type       string         `json:"type"`
		Durable    any            `json:"durable"`
		AutoDelete any            `json:"auto_delete"`
		Internal   any            `json:"internal"`
		Arguments  map[string]any `json:"arguments"`
	}
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	durable, err1 := boolField(body.Durable, true)
	autoDelete, err2 := boolField(body.AutoDelete, false)
	internal, err3 := boolField(body.Internal, false)
	args, err4 := toTable(body.Arguments)
	for _, err := range []error{err1, err2, err3, err4} {
		if err != nil {
			badRequest(w, err.Error())
			return
		}
	}
	if body.Type == "" {
		badRequest(w, "[{key_missing,type}]")
		return
	}
	_, existed := s.src.Node.FSM().Exchange(vhost, name)
	err := s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		return ch.ExchangeDeclare(name, body.Type, durable, autoDelete, internal, false, args)
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	created(w, existed)
}

func created(w http.ResponseWriter, existed bool) {
	if existed {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

func (s *Server) deleteExchange(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), exchangeName(r, "name")
	if !s.writableExchange(w, p, vhost, name) {
		return
	}
	ifUnused := r.URL.Query().Get("if-unused") == "true"
	if err := s.withChannel(p, vhost, func(ch *amqp.Channel) error { return ch.ExchangeDelete(name, ifUnused, false) }); err != nil {
		writeAMQPError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- queues

// queueStats indexes every node's queue samples by queue key.
func queueStats(stats []nodeStats) map[string]queueSample {
	out := map[string]queueSample{}
	for _, st := range stats {
		for _, q := range st.Queues {
			out[broker.StoreKey(q.Vhost, q.Name)] = q
		}
	}
	return out
}

func queueJSON(q fsm.Queue, st queueSample, known bool) map[string]any {
	item := map[string]any{
		"name": q.Name, "vhost": q.Vhost, "durable": q.Durable, "exclusive": q.Exclusive,
		"auto_delete": q.AutoDelete, "node": q.Owner, "arguments": decodeArgs(q.Args),
		"type": "classic", "state": "running",
	}
	if q.Type == fsm.QueueTypeQuorum {
		// RabbitMQ's fields for quorum queues, and the in-sync set (docs/replication.md).
		item["type"], item["leader"], item["members"], item["in_sync"], item["epoch"] = q.Type, q.Owner, q.Replicas, q.InSync, q.Epoch
	}
	if known {
		item["messages_ready"], item["messages_unacknowledged"] = st.Ready, st.Unacked
		item["messages"], item["consumers"] = st.Ready+st.Unacked, st.Consumers
		item["messages_details"] = map[string]any{"rate": st.DepthRate}
	} else {
		item["state"] = "down" // its owner did not answer
	}
	return item
}

func (s *Server) listQueues(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, ok := s.vhostFilter(w, r, p)
	if !ok {
		return
	}
	stats := queueStats(s.clusterStats(p))
	var out []map[string]any
	for _, q := range s.src.Node.FSM().Queues(vhost) {
		if s.canSee(p, q.Vhost) {
			st, known := stats[broker.StoreKey(q.Vhost, q.Name)]
			out = append(out, queueJSON(q, st, known))
		}
	}
	writeList(w, r, out)
}

func (s *Server) showQueue(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost := pathValue(r, "vhost")
	if !s.vhostAccess(w, p, vhost, false) {
		return
	}
	q, ok := s.src.Node.FSM().Queue(vhost, pathValue(r, "name"))
	if !ok {
		notFound(w)
		return
	}
	st, known := queueStats(s.clusterStats(p))[broker.StoreKey(q.Vhost, q.Name)]
	writeJSON(w, http.StatusOK, queueJSON(q, st, known))
}

func (s *Server) putQueue(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), pathValue(r, "name")
	if !s.vhostAccess(w, p, vhost, true) {
		return
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(raw))
	var body struct {
		Durable    any            `json:"durable"`
		AutoDelete any            `json:"auto_delete"`
		Arguments  map[string]any `json:"arguments"`
		Node       string         `json:"node"`
	}
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	if body.Node != "" && body.Node != s.src.Node.ID() {
		// RabbitMQ's "node": the queue lives where it was declared, so the node that is to
		// own it declares it.
		s.forwardToNode(w, r, p, body.Node, raw)
		return
	}
	durable, err1 := boolField(body.Durable, true)
	autoDelete, err2 := boolField(body.AutoDelete, false)
	args, err3 := toTable(body.Arguments)
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			badRequest(w, err.Error())
			return
		}
	}
	_, existed := s.src.Node.FSM().Queue(vhost, name)
	err = s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(name, durable, autoDelete, false, false, args)
		return err
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	created(w, existed)
}

func (s *Server) deleteQueue(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), pathValue(r, "name")
	if !s.writableQueue(w, p, vhost, name) {
		return
	}
	q := r.URL.Query()
	err := s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(name, q.Get("if-unused") == "true", q.Get("if-empty") == "true", false)
		return err
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) purgeQueue(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, name := pathValue(r, "vhost"), pathValue(r, "name")
	if !s.writableQueue(w, p, vhost, name) {
		return
	}
	err := s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		_, err := ch.QueuePurge(name, false)
		return err
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- bindings

// propertiesKey names a binding in URLs as RabbitMQ does: the routing key quoted as in a query
// string ("~" for an empty one) when there are no arguments, else the quoted key, "~" and a
// digest of the arguments.
func propertiesKey(key string, args []byte) string {
	if len(args) == 0 {
		if key == "" {
			return "~"
		}
		return url.QueryEscape(key)
	}
	sum := sha256.Sum256(args)
	return url.QueryEscape(key) + "~" + base64.RawURLEncoding.EncodeToString(sum[:6])
}

func bindingJSON(b fsm.BindingInfo) map[string]any {
	kind := "queue"
	if b.Dest.IsExchange {
		kind = "exchange"
	}
	return map[string]any{
		"source": b.Source, "vhost": b.Vhost, "destination": b.Dest.Name, "destination_type": kind,
		"routing_key": b.Key, "arguments": decodeArgs(b.Args), "properties_key": propertiesKey(b.Key, b.Args),
	}
}

// allBindings lists a vhost's bindings ("" for all) with the default exchange's implicit
// binding of every queue first, as RabbitMQ lists them.
func (s *Server) allBindings(vhost string) []fsm.BindingInfo {
	f := s.src.Node.FSM()
	var out []fsm.BindingInfo
	for _, vh := range f.Vhosts() {
		if vhost != "" && vh != vhost {
			continue
		}
		for _, q := range f.Queues(vh) {
			out = append(out, fsm.BindingInfo{Vhost: vh, Source: "", Dest: exchange.Dest{Name: q.Name}, Key: q.Name})
		}
		out = append(out, f.Bindings(vh)...)
	}
	return out
}

func (s *Server) listBindings(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, ok := s.vhostFilter(w, r, p)
	if !ok {
		return
	}
	var out []map[string]any
	for _, b := range s.allBindings(vhost) {
		if s.canSee(p, b.Vhost) {
			out = append(out, bindingJSON(b))
		}
	}
	writeList(w, r, out)
}

func (s *Server) filteredBindings(w http.ResponseWriter, r *http.Request, p *principal, keep func(fsm.BindingInfo) bool) {
	vhost := pathValue(r, "vhost")
	if !s.vhostAccess(w, p, vhost, false) {
		return
	}
	var out []map[string]any
	for _, b := range s.allBindings(vhost) {
		if keep(b) {
			out = append(out, bindingJSON(b))
		}
	}
	writeList(w, r, out)
}

func (s *Server) exchangeBindings(asSource bool) handler {
	return func(w http.ResponseWriter, r *http.Request, p *principal) {
		name := exchangeName(r, "name")
		if _, ok := s.src.Node.FSM().Exchange(pathValue(r, "vhost"), name); !ok {
			notFound(w)
			return
		}
		s.filteredBindings(w, r, p, func(b fsm.BindingInfo) bool {
			if asSource {
				return b.Source == name
			}
			return b.Dest.IsExchange && b.Dest.Name == name
		})
	}
}

func (s *Server) queueBindings(w http.ResponseWriter, r *http.Request, p *principal) {
	name := pathValue(r, "name")
	if _, ok := s.src.Node.FSM().Queue(pathValue(r, "vhost"), name); !ok {
		notFound(w)
		return
	}
	s.filteredBindings(w, r, p, func(b fsm.BindingInfo) bool { return !b.Dest.IsExchange && b.Dest.Name == name })
}

// bindingEnds reads source and destination of a /api/bindings/{vhost}/e/{source}/{kind}/{dest}
// path, answering 404 when either does not exist.
func (s *Server) bindingEnds(w http.ResponseWriter, r *http.Request) (src string, dest exchange.Dest, ok bool) {
	vhost := pathValue(r, "vhost")
	f := s.src.Node.FSM()
	src = exchangeName(r, "source")
	switch pathValue(r, "kind") {
	case "q":
		dest = exchange.Dest{Name: pathValue(r, "dest")}
		_, ok = f.Queue(vhost, dest.Name)
	case "e":
		dest = exchange.Dest{Name: exchangeName(r, "dest"), IsExchange: true}
		_, ok = f.Exchange(vhost, dest.Name)
	}
	if _, found := f.Exchange(vhost, src); !found || !ok {
		notFound(w)
		return "", dest, false
	}
	return src, dest, true
}

func (s *Server) listBindingsBetween(w http.ResponseWriter, r *http.Request, p *principal) {
	if !s.vhostAccess(w, p, pathValue(r, "vhost"), false) {
		return
	}
	src, dest, ok := s.bindingEnds(w, r)
	if !ok {
		return
	}
	s.filteredBindings(w, r, p, func(b fsm.BindingInfo) bool { return b.Source == src && b.Dest == dest })
}

func (s *Server) postBinding(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost := pathValue(r, "vhost")
	if !s.vhostAccess(w, p, vhost, true) {
		return
	}
	src, dest, ok := s.bindingEnds(w, r)
	if !ok {
		return
	}
	var body struct {
		RoutingKey string         `json:"routing_key"`
		Arguments  map[string]any `json:"arguments"`
	}
	if err := decodeBody(r, &body); err != nil {
		badRequest(w, err.Error())
		return
	}
	args, err := toTable(body.Arguments)
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	err = s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		if dest.IsExchange {
			return ch.ExchangeBind(dest.Name, body.RoutingKey, src, false, args)
		}
		return ch.QueueBind(dest.Name, body.RoutingKey, src, false, args)
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	var enc []byte
	for _, b := range s.src.Node.FSM().Bindings(vhost) {
		if b.Source == src && b.Dest == dest && b.Key == body.RoutingKey && len(args) > 0 {
			enc = b.Args
		}
	}
	w.Header().Set("Location", url.PathEscape(propertiesKey(body.RoutingKey, enc)))
	w.WriteHeader(http.StatusCreated)
}

// findBinding finds the binding a properties key names.
func (s *Server) findBinding(r *http.Request, src string, dest exchange.Dest) (fsm.BindingInfo, bool) {
	props := pathValue(r, "props")
	for _, b := range s.allBindings(pathValue(r, "vhost")) {
		if b.Source == src && b.Dest == dest && propertiesKey(b.Key, b.Args) == props {
			return b, true
		}
	}
	return fsm.BindingInfo{}, false
}

func (s *Server) showBinding(w http.ResponseWriter, r *http.Request, p *principal) {
	if !s.vhostAccess(w, p, pathValue(r, "vhost"), false) {
		return
	}
	src, dest, ok := s.bindingEnds(w, r)
	if !ok {
		return
	}
	b, ok := s.findBinding(r, src, dest)
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, bindingJSON(b))
}

func (s *Server) deleteBinding(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost := pathValue(r, "vhost")
	if !s.vhostAccess(w, p, vhost, true) {
		return
	}
	src, dest, ok := s.bindingEnds(w, r)
	if !ok {
		return
	}
	b, ok := s.findBinding(r, src, dest)
	if !ok {
		notFound(w)
		return
	}
	args := amqp.Table(nil)
	if len(b.Args) > 0 {
		t, err := broker.DecodeArgs(b.Args)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "internal_error", err.Error())
			return
		}
		args = wireToAMQP(t).(amqp.Table)
	}
	err := s.withChannel(p, vhost, func(ch *amqp.Channel) error {
		if dest.IsExchange {
			return ch.ExchangeUnbind(dest.Name, b.Key, src, false, args)
		}
		return ch.QueueUnbind(dest.Name, b.Key, src, args)
	})
	if err != nil {
		writeAMQPError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// writableExchange checks that p may change vhost and that the exchange exists, answering the
// request (403 or 404) when not.
func (s *Server) writableExchange(w http.ResponseWriter, p *principal, vhost, name string) bool {
	if !s.vhostAccess(w, p, vhost, true) {
		return false
	}
	if _, ok := s.src.Node.FSM().Exchange(vhost, name); !ok {
		notFound(w)
		return false
	}
	return true
}

// writableQueue is writableExchange for a queue.
func (s *Server) writableQueue(w http.ResponseWriter, p *principal, vhost, name string) bool {
	if !s.vhostAccess(w, p, vhost, true) {
		return false
	}
	if _, ok := s.src.Node.FSM().Queue(vhost, name); !ok {
		notFound(w)
		return false
	}
	return true
}
