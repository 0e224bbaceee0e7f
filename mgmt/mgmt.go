// Package mgmt owns a node's HTTP API: read-only JSON views in RabbitMQ's management shape
// (/api/overview, /api/nodes, /api/queues, /api/exchanges, /api/bindings) behind basic auth
// against the FSM's users, and Prometheus metrics at /metrics.
package mgmt

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/msgstore"
)

// Source is what the API reads from a running node.
type Source struct {
	Node        *broker.Node
	Connections func() int
	RaftStats   func() map[string]string
	Version     string
	// StoreStats reports the message store's counters (nil: no store).
	StoreStats func() msgstore.Stats
	// Members lists the cluster's nodes as gossip sees them (nil: a node without gossip).
	Members func() []cluster.Member
	// Leader returns the Raft leader's node id ("" when none is known).
	Leader func() string
	// Forget removes a dead node for good; ErrNotLeader when this node is not the leader.
	Forget       func(id string) error
	ErrNotLeader error
	// Leave hands this node's queues over and takes it out of the cluster (`node leave`);
	// the report is answered as JSON.
	Leave func(timeout time.Duration) (any, error)
	// Join makes a fresh node join the cluster at the given gossip seeds (`node join`).
	Join func(seeds []string, timeout time.Duration) error
	// Rebalance spreads queues evenly over the live nodes and says how many moved.
	Rebalance func() (int, error)
	// Limits reports this node's connection caps and memory/disk alarms (nil: none); they
	// are merged into this node's entry of /api/nodes.
	Limits func() any
}

// Server serves the HTTP API.
type Server struct {
	src  Source
	log  *slog.Logger
	http *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen starts serving on addr in the background.
func Listen(addr string, src Source, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen http on %s: %w", addr, err)
	}
	return Serve(ln, src, log), nil
}

// Serve serves the API on ln (a TLS listener for https) in the background.
func Serve(ln net.Listener, src Source, log *slog.Logger) *Server {
	s := &Server{src: src, log: log, ln: ln, done: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/overview", s.auth(s.overview))
	mux.HandleFunc("GET /api/nodes", s.auth(s.nodes))
	mux.HandleFunc("GET /api/queues", s.auth(s.queues))
	mux.HandleFunc("GET /api/exchanges", s.auth(s.exchanges))
	mux.HandleFunc("GET /api/bindings", s.auth(s.bindings))
	mux.HandleFunc("GET /metrics", s.metrics)
	mux.HandleFunc("POST /api/cluster/forget/{node}", s.auth(s.forget))
	mux.HandleFunc("POST /api/cluster/leave", s.auth(s.leave))
	mux.HandleFunc("POST /api/cluster/join", s.auth(s.join))
	mux.HandleFunc("POST /api/cluster/rebalance", s.auth(s.rebalance))
	s.http = &http.Server{Handler: s.limitsFirst(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http api stopped", "err", err)
		}
	}()
	return s
}

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and waits for its goroutine.
func (s *Server) Close() {
	_ = s.http.Close()
	<-s.done
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if ok {
			hash, _, found := s.src.Node.FSM().User(user)
			ok = found && broker.CheckPassword(hash, pass)
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Basic realm="Warren"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "not_authorised", "reason": "Login failed"})
			return
		}
		h(w, r)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) overview(w http.ResponseWriter, _ *http.Request) {
	f := s.src.Node.FSM()
	stats := s.src.RaftStats()
	ready, unacked, consumers := s.totals()
	writeJSON(w, http.StatusOK, map[string]any{
		"product_name":    "Warren",
		"product_version": s.src.Version,
		"node":            s.src.Node.ID(),
		"cluster_name":    "warren",
		"leader":          s.leader(),
		"topology_digest": f.Digest(),
		"raft": map[string]string{
			"state": stats["state"], "term": stats["term"], "applied_index": stats["applied_index"],
			"commit_index": stats["commit_index"], "last_log_index": stats["last_log_index"],
		},
		"object_totals": map[string]int{
			"connections": s.src.Connections(), "queues": len(f.Queues("")),
			"exchanges": len(f.Exchanges("")), "consumers": consumers,
		},
		"queue_totals": map[string]int{
			"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
		},
	})
}

func (s *Server) leader() string {
	if s.src.Leader == nil {
		return ""
	}
	return s.src.Leader()
}

func (s *Server) totals() (ready, unacked, consumers int) {
	for _, q := range s.src.Node.FSM().Queues("") {
		if lq := s.src.Node.LocalQueue(q.Vhost, q.Name); lq != nil {
			r, u, c := lq.Counts()
			ready, unacked, consumers = ready+r, unacked+u, consumers+c
		}
	}
	return
}

// nodes answers in RabbitMQ's shape (name, running) plus Warren's own fields: gossip state,
// addresses, whether the node leads Raft, and how many queues it owns.
func (s *Server) nodes(w http.ResponseWriter, _ *http.Request) {
	owned := map[string]int{}
	for _, q := range s.src.Node.FSM().Queues("") {
		owned[q.Owner]++
	}
	leader := ""
	if s.src.Leader != nil {
		leader = s.src.Leader()
	}
	self := s.src.Node.ID()
	var members []cluster.Member
	if s.src.Members != nil {
		members = s.src.Members()
	}
	if len(members) == 0 {
		members = []cluster.Member{{ID: self, State: cluster.MemberAlive}}
	}
	out := []map[string]any{}
	for _, m := range members {
		out = append(out, map[string]any{
			"name": m.ID, "running": m.State == cluster.MemberAlive, "state": m.State.String(),
			"type": "disc", "leader": m.ID == leader, "queues": owned[m.ID],
			"amqp_addr": m.Meta.AMQPAddr, "http_addr": m.Meta.HTTPAddr, "self": m.ID == self,
		})
		if m.ID == self && s.src.Limits != nil {
			mergeLimits(out[len(out)-1], s.src.Limits())
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["name"].(string) < out[j]["name"].(string) })
	writeJSON(w, http.StatusOK, out)
}

// forget answers 204 when the node was forgotten, 409 with the reason when it may not be (alive,
// or this node is not the leader: the client asks the leader), 501 on a node without a cluster.
func (s *Server) forget(w http.ResponseWriter, r *http.Request) {
	if s.src.Forget == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not_clustered"})
		return
	}
	if err := s.src.Forget(r.PathValue("node")); err != nil {
		reason := "conflict"
		if s.src.ErrNotLeader != nil && errors.Is(err, s.src.ErrNotLeader) {
			reason = "not_leader"
		}
		writeJSON(w, http.StatusConflict, map[string]string{"error": reason, "reason": err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// leave answers 200 with the leave report once this node has handed its queues over and left
// Raft and gossip (it then shuts down), 409 with the reason when it could not.
func (s *Server) leave(w http.ResponseWriter, r *http.Request) {
	if s.src.Leave == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not_clustered"})
		return
	}
	timeout := 2 * time.Minute
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "reason": "timeout must be a positive duration such as 2m"})
			return
		}
		timeout = d
	}
	rep, err := s.src.Leave(timeout)
	if err != nil {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "conflict", "reason": err.Error(), "report": rep})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// join answers 204 once this node is a member of the cluster at the seeds in the JSON body
// ({"seeds": ["host:port"]}), 409 with the reason when it refused or failed.
func (s *Server) join(w http.ResponseWriter, r *http.Request) {
	if s.src.Join == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not_clustered"})
		return
	}
	var body struct {
		Seeds []string `json:"seeds"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body); err != nil || len(body.Seeds) == 0 {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "reason": `body must be {"seeds": ["host:port", ...]}`})
		return
	}
	if err := s.src.Join(body.Seeds, time.Minute); err != nil {
		writeJSON(w, http.StatusConflict, map[string]string{"error": "conflict", "reason": err.Error()})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// rebalance answers 200 {"moved": N} once the moves are committed (the messages follow).
func (s *Server) rebalance(w http.ResponseWriter, _ *http.Request) {
	if s.src.Rebalance == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not_clustered"})
		return
	}
	moved, err := s.src.Rebalance()
	if err != nil {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "conflict", "reason": err.Error(), "moved": moved})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"moved": moved})
}

func (s *Server) queues(w http.ResponseWriter, _ *http.Request) {
	out := []map[string]any{}
	for _, q := range s.src.Node.FSM().Queues("") {
		item := map[string]any{
			"name": q.Name, "vhost": q.Vhost, "durable": q.Durable, "exclusive": q.Exclusive,
			"auto_delete": q.AutoDelete, "node": q.Owner, "arguments": decodeArgs(q.Args),
		}
		if lq := s.src.Node.LocalQueue(q.Vhost, q.Name); lq != nil {
			r, u, c := lq.Counts()
			item["messages_ready"], item["messages_unacknowledged"], item["messages"], item["consumers"] = r, u, r+u, c
		}
		out = append(out, item)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) exchanges(w http.ResponseWriter, _ *http.Request) {
	out := []map[string]any{}
	for _, x := range s.src.Node.FSM().Exchanges("") {
		out = append(out, map[string]any{
			"name": x.Name, "vhost": x.Vhost, "type": x.Kind, "durable": x.Durable,
			"auto_delete": x.AutoDelete, "internal": x.Internal, "arguments": decodeArgs(x.Args),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) bindings(w http.ResponseWriter, _ *http.Request) {
	out := []map[string]any{}
	for _, b := range s.src.Node.FSM().Bindings("") {
		kind := "queue"
		if b.Dest.IsExchange {
			kind = "exchange"
		}
		out = append(out, map[string]any{
			"source": b.Source, "vhost": b.Vhost, "destination": b.Dest.Name, "destination_type": kind,
			"routing_key": b.Key, "arguments": decodeArgs(b.Args),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func decodeArgs(b []byte) map[string]any {
	if len(b) == 0 {
		return map[string]any{}
	}
	t, err := broker.DecodeArgs(b)
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	return t
}

// metrics writes Prometheus text exposition, one sample per queue plus node totals.
func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	var b strings.Builder
	f := s.src.Node.FSM()
	qs := f.Queues("")
	sort.Slice(qs, func(i, j int) bool { return qs[i].Vhost+qs[i].Name < qs[j].Vhost+qs[j].Name })
	fmt.Fprintf(&b, "# TYPE warren_connections gauge\nwarren_connections %d\n", s.src.Connections())
	fmt.Fprintf(&b, "# TYPE warren_queues gauge\nwarren_queues %d\n", len(qs))
	fmt.Fprintf(&b, "# TYPE warren_raft_applied_index gauge\nwarren_raft_applied_index %d\n", f.AppliedIndex())
	if s.src.StoreStats != nil {
		st := s.src.StoreStats()
		fmt.Fprintf(&b, "# TYPE warren_store_fsyncs_total counter\nwarren_store_fsyncs_total %d\n", st.Fsyncs)
		fmt.Fprintf(&b, "# TYPE warren_store_records_total counter\nwarren_store_records_total %d\n", st.Records)
		fmt.Fprintf(&b, "# TYPE warren_store_bytes_written_total counter\nwarren_store_bytes_written_total %d\n", st.BytesWritten)
		fmt.Fprintf(&b, "# TYPE warren_store_live_messages gauge\nwarren_store_live_messages %d\n", st.LiveMessages)
		fmt.Fprintf(&b, "# TYPE warren_store_segments gauge\nwarren_store_segments %d\n", st.Segments)
	}
	b.WriteString("# TYPE warren_queue_messages_ready gauge\n# TYPE warren_queue_messages_unacked gauge\n# TYPE warren_queue_consumers gauge\n")
	for _, q := range qs {
		lq := s.src.Node.LocalQueue(q.Vhost, q.Name)
		if lq == nil {
			continue
		}
		r, u, c := lq.Counts()
		labels := fmt.Sprintf(`{vhost=%q,queue=%q}`, q.Vhost, q.Name)
		fmt.Fprintf(&b, "warren_queue_messages_ready%s %d\nwarren_queue_messages_unacked%s %d\nwarren_queue_consumers%s %d\n",
			labels, r, labels, u, labels, c)
	}
	_, _ = w.Write([]byte(b.String()))
}
