// Package mgmt owns a node's HTTP side: RabbitMQ's management API (3.10 shapes and status codes,
// enough for rabbitmqadmin and definitions files), Warren's cluster operations, Prometheus
// metrics at /metrics and the web console at /. Users, tags and per-vhost permissions are
// checked as RabbitMQ does; changes to a vhost's resources go over an AMQP connection to this
// node as the requesting user, so the broker's own permission checks and refusals apply.
// Views that span the cluster (queue depths, connections, rates) ask the other nodes' APIs.
package mgmt

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/msgstore"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/server"
)

// Clients is what the API needs from the node's AMQP server.
type Clients interface {
	Addr() net.Addr
	ConnectionCount() int
	Connections() []server.ConnInfo
	CloseConnection(name, reason string) bool
	MessageStats() server.MessageStats
	IsLoopbackUser(user string) bool
	MemoryAlarm() (on bool, limit uint64)
}

// Broker is what the API needs from the node's broker runtime (*broker.Node).
type Broker interface {
	ID() string
	// FSM is the local topology replica, read-only here.
	FSM() *fsm.FSM
	// Apply commits a topology command (users, vhosts, permissions, imported definitions).
	Apply(c fsm.Command) (fsm.Result, error)
	LocalQueue(vhost, name string) *queue.Queue
	BalancedOwner() string
	HandOffs() (active int, moved int64)
}

// Source is what the API reads from a running node.
type Source struct {
	Node Broker
	// AMQP is the node's AMQP server (connections, counters, loopback users).
	AMQP      Clients
	RaftStats func() map[string]string
	Version   string
	// StoreStats reports the message store's counters (nil: no store).
	StoreStats func() msgstore.Stats
	// Members lists the cluster's nodes as gossip sees them (nil: a node without gossip).
	// Every view of the cluster's nodes reads them through members().
	Members func() []cluster.Member
	// Leader returns the Raft leader's node id ("" when none is known).
	Leader func() string
	// ClusterSecret signs the API's calls to the other nodes (cluster-wide views).
	ClusterSecret string
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
	// ClusterName is shown as cluster_name (default "warren").
	ClusterName string
	// Topology says whether this node can commit topology changes, and why not (nil: always).
	Topology func() (writable bool, reason string)
	// Limits reports this node's connection caps and memory/disk alarms (nil: none); they
	// are merged into this node's entry of /api/nodes.
	Limits func() any
	// PeerTLS checks the certificate of another node whose API is https only (its address
	// in gossip is then an https:// URL); nil: Go's defaults.
	PeerTLS *tls.Config
}

// Server serves the HTTP API.
type Server struct {
	src     Source
	log     *slog.Logger
	http    *http.Server
	ln      net.Listener
	done    chan struct{}
	rates   *sampler
	metrics *metricsCollector
	peers   *http.Client
	// started is when the API started, for the node's uptime.
	started time.Time

	progressMu sync.Mutex
	progress   map[string]*Progress
	// bg runs progress tracking that outlives a request; quit stops it.
	bg   sync.WaitGroup
	quit chan struct{}
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
	s := &Server{src: src, log: log, ln: ln, done: make(chan struct{}),
		peers: &http.Client{Timeout: 3 * time.Second, Transport: peerTransport(src.PeerTLS)}, started: time.Now(), progress: map[string]*Progress{}, quit: make(chan struct{})}
	s.metrics = &metricsCollector{s: s}
	s.rates = startSampler(s.sample)
	s.http = &http.Server{Handler: s.limitsFirst(keepEscapedSlashes(s.routes())), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http api stopped", "err", err)
		}
	}()
	return s
}

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	m, mon, adm := levelManagement, levelMonitoring, levelAdministrator
	h := func(pattern string, level accessLevel, fn handler) { mux.HandleFunc(pattern, s.authed(level, fn)) }

	h("GET /api/overview", m, s.overview)
	h("GET /api/whoami", m, s.whoami)
	h("GET /api/nodes", m, s.nodes)
	h("GET /api/nodes/{node}", m, s.node)
	h("GET /api/cluster-name", m, s.clusterName)

	h("GET /api/vhosts", m, s.listVhosts)
	h("GET /api/vhosts/{vhost}", m, s.showVhost)
	h("PUT /api/vhosts/{vhost}", adm, s.putVhost)
	h("DELETE /api/vhosts/{vhost}", adm, s.deleteVhost)
	h("GET /api/vhosts/{vhost}/permissions", adm, s.vhostPermissions)

	h("GET /api/users", adm, s.listUsers)
	h("GET /api/users/{user}", adm, s.showUser)
	h("PUT /api/users/{user}", adm, s.putUser)
	h("DELETE /api/users/{user}", adm, s.deleteUser)
	h("GET /api/users/{user}/permissions", adm, s.userPermissions)
	h("GET /api/permissions", adm, s.listPermissions)
	h("GET /api/permissions/{vhost}/{user}", adm, s.showPermission)
	h("PUT /api/permissions/{vhost}/{user}", adm, s.putPermission)
	h("DELETE /api/permissions/{vhost}/{user}", adm, s.deletePermission)

	h("GET /api/exchanges", m, s.listExchanges)
	h("GET /api/exchanges/{vhost}", m, s.listExchanges)
	h("GET /api/exchanges/{vhost}/{name}", m, s.showExchange)
	h("PUT /api/exchanges/{vhost}/{name}", m, s.putExchange)
	h("DELETE /api/exchanges/{vhost}/{name}", m, s.deleteExchange)
	h("POST /api/exchanges/{vhost}/{name}/publish", m, s.publish)
	h("GET /api/exchanges/{vhost}/{name}/bindings/source", m, s.exchangeBindings(true))
	h("GET /api/exchanges/{vhost}/{name}/bindings/destination", m, s.exchangeBindings(false))

	h("GET /api/queues", m, s.listQueues)
	h("GET /api/queues/{vhost}", m, s.listQueues)
	h("GET /api/queues/{vhost}/{name}", m, s.showQueue)
	h("PUT /api/queues/{vhost}/{name}", m, s.putQueue)
	h("DELETE /api/queues/{vhost}/{name}", m, s.deleteQueue)
	h("DELETE /api/queues/{vhost}/{name}/contents", m, s.purgeQueue)
	h("POST /api/queues/{vhost}/{name}/get", m, s.getMessages)
	h("GET /api/queues/{vhost}/{name}/bindings", m, s.queueBindings)

	h("GET /api/bindings", m, s.listBindings)
	h("GET /api/bindings/{vhost}", m, s.listBindings)
	h("GET /api/bindings/{vhost}/e/{source}/{kind}/{dest}", m, s.listBindingsBetween)
	h("POST /api/bindings/{vhost}/e/{source}/{kind}/{dest}", m, s.postBinding)
	h("GET /api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}", m, s.showBinding)
	h("DELETE /api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}", m, s.deleteBinding)

	h("GET /api/connections", m, s.listConnections)
	h("GET /api/connections/{name}", m, s.showConnection)
	h("DELETE /api/connections/{name}", m, s.closeConnection)
	h("GET /api/connections/{name}/channels", m, s.connectionChannels)
	h("GET /api/channels", m, s.listChannels)
	h("GET /api/consumers", m, s.listConsumers)
	h("GET /api/consumers/{vhost}", m, s.listConsumers)
	h("GET /api/vhosts/{vhost}/connections", m, s.listConnections)

	h("GET /api/definitions", adm, s.exportDefinitions)
	h("GET /api/definitions/{vhost}", adm, s.exportDefinitions)
	h("POST /api/definitions", adm, s.importDefinitions)
	h("POST /api/definitions/{vhost}", adm, s.importDefinitions)

	// Endpoints rabbitmqadmin lists that Warren has nothing behind: empty, as an unconfigured
	// RabbitMQ answers.
	for _, p := range []string{"parameters", "policies", "operator-policies", "vhost-limits", "topic-permissions", "global-parameters"} {
		h("GET /api/"+p, m, s.emptyList)
	}

	// Warren's own.
	h("POST /api/cluster/forget/{node}", adm, s.forget)
	h("POST /api/cluster/leave", adm, s.leave)
	h("POST /api/cluster/join", adm, s.join)
	h("POST /api/cluster/rebalance", adm, s.rebalance)
	h("GET /api/progress", mon, s.listProgress)
	h("GET /api/health/checks/alarms", m, s.healthAlarms(false))
	h("GET /api/health/checks/local-alarms", m, s.healthAlarms(true))
	h("GET /api/health/checks/virtual-hosts", m, s.healthVhosts)
	mux.HandleFunc("GET /api/warren/local", s.peerOnly(s.localStats))
	mux.HandleFunc("GET /api/warren/applied", s.authed(levelManagement, func(w http.ResponseWriter, r *http.Request, _ *principal) { s.appliedIndex(w, r) }))
	mux.HandleFunc("DELETE /api/warren/local/connections/{name}", s.peerOnly(s.closeLocalConnection))

	mux.Handle("GET /metrics", s.metricsHandler())
	s.consoleRoutes(mux)
	return mux
}

// slashMark stands for a "/" inside one path segment ("%2F", RabbitMQ's default vhost) while
// ServeMux matches: it would otherwise clean "/api/queues/%2F/q" into another path.
const slashMark = "\uE000"

func keepEscapedSlashes(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.RawPath != "" {
			segs := strings.Split(r.URL.RawPath, "/")
			for i, seg := range segs {
				if u, err := url.PathUnescape(seg); err == nil {
					segs[i] = strings.ReplaceAll(u, "/", slashMark)
				}
			}
			u := *r.URL
			u.Path, u.RawPath = strings.Join(segs, "/"), ""
			r2 := *r
			r2.URL = &u
			r = &r2
		}
		h.ServeHTTP(w, r)
	})
}

// pathValue is r.PathValue with escaped slashes restored.
func pathValue(r *http.Request, key string) string {
	return strings.ReplaceAll(r.PathValue(key), slashMark, "/")
}

// Addr returns the bound address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and waits for its goroutines.
func (s *Server) Close() {
	_ = s.http.Close()
	<-s.done
	close(s.quit)
	s.bg.Wait()
	s.rates.stop()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers in RabbitMQ's error shape.
func writeError(w http.ResponseWriter, status int, kind, reason string) {
	writeJSON(w, status, map[string]string{"error": kind, "reason": reason})
}

func notFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, "Object Not Found", "Not Found")
}

func badRequest(w http.ResponseWriter, reason string) {
	writeError(w, http.StatusBadRequest, "bad_request", reason)
}

// writeList answers a listing, honouring RabbitMQ's columns=a,b.c and sort/sort_reverse.
func writeList(w http.ResponseWriter, r *http.Request, items []map[string]any) {
	q := r.URL.Query()
	if key := q.Get("sort"); key != "" {
		sort.SliceStable(items, func(i, j int) bool { return lessAny(pick(items[i], key), pick(items[j], key)) })
	}
	if q.Get("sort_reverse") == "true" {
		for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
			items[i], items[j] = items[j], items[i]
		}
	}
	if cols := q.Get("columns"); cols != "" {
		for i, it := range items {
			items[i] = selectColumns(it, strings.Split(cols, ","))
		}
	}
	if items == nil {
		items = []map[string]any{}
	}
	writeJSON(w, http.StatusOK, items)
}

func pick(m map[string]any, path string) any {
	var cur any = m
	for _, part := range strings.Split(path, ".") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[part]
	}
	return cur
}

func selectColumns(m map[string]any, cols []string) map[string]any {
	out := map[string]any{}
	for _, c := range cols {
		v := pick(m, c)
		if v == nil {
			continue
		}
		parts := strings.Split(c, ".")
		dst := out
		for _, p := range parts[:len(parts)-1] {
			next, ok := dst[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				dst[p] = next
			}
			dst = next
		}
		dst[parts[len(parts)-1]] = v
	}
	return out
}

func lessAny(a, b any) bool {
	switch x := a.(type) {
	case int:
		if y, ok := b.(int); ok {
			return x < y
		}
	case float64:
		if y, ok := b.(float64); ok {
			return x < y
		}
	case string:
		if y, ok := b.(string); ok {
			return x < y
		}
	}
	return fmt.Sprint(a) < fmt.Sprint(b)
}

func (s *Server) emptyList(w http.ResponseWriter, r *http.Request, _ *principal) {
	writeList(w, r, nil)
}
