package mgmt

import (
	"cmp"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/warrenmq/warren/cluster"
)

// APIVersion is the RabbitMQ management API level Warren answers as (rabbitmq_version and
// management_version in /api/overview): tools pick their requests by it.
const APIVersion = "3.10.8"

const clusterName = "warren"

func (s *Server) leader() string {
	if s.src.Leader == nil {
		return ""
	}
	return s.src.Leader()
}

func (s *Server) overview(w http.ResponseWriter, _ *http.Request, p *principal) {
	f := s.src.Node.FSM()
	stats := s.clusterStats(p)
	var ready, unacked, consumers, conns, chans int
	var totals messageTotals
	for _, st := range stats {
		for _, q := range st.Queues {
			ready, unacked, consumers = ready+q.Ready, unacked+q.Unacked, consumers+q.Consumers
		}
		conns += len(st.Connections)
		for _, c := range st.Connections {
			chans += len(c.Channels)
		}
		totals.add(st)
	}
	var raft map[string]string
	if len(stats) > 0 {
		raft = stats[0].Raft
	}
	host := ""
	port := 0
	if s.src.AMQP != nil && s.src.AMQP.Addr() != nil {
		h, p, _ := net.SplitHostPort(s.src.AMQP.Addr().String())
		host = h
		port, _ = strconv.Atoi(p)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"management_version": APIVersion, "rabbitmq_version": APIVersion, "rates_mode": "basic",
		"product_name": "Warren", "product_version": s.src.Version,
		"cluster_name": cmp.Or(s.src.ClusterName, clusterName), "node": s.src.Node.ID(),
		"topology": s.topology(),
		"exchange_types": []map[string]any{
			{"name": "direct", "enabled": true}, {"name": "fanout", "enabled": true},
			{"name": "headers", "enabled": true}, {"name": "topic", "enabled": true},
		},
		"listeners":     []map[string]any{{"node": s.src.Node.ID(), "protocol": "amqp", "ip_address": host, "port": port}},
		"message_stats": totals.json(),
		"object_totals": map[string]int{
			"connections": conns, "channels": chans, "queues": len(f.Queues("")),
			"exchanges": len(f.Exchanges("")), "consumers": consumers,
		},
		"queue_totals": map[string]any{
			"messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked,
		},
		// Warren's own.
		"leader": s.leader(), "topology_digest": f.Digest(), "raft": raft,
	})
}

// messageTotals sums the nodes' message counters and rates into RabbitMQ's message_stats.
type messageTotals struct {
	publish, deliver, get, ack, redeliver                     uint64
	deliverNoAck, getNoAck, confirm, returned, dropped        uint64
	publishRate, deliverRate, getRate, ackRate, redeliverRate float64
}

func (t *messageTotals) add(st nodeStats) {
	m, r := st.Messages, st.Rates
	t.publish += m.Publish
	t.deliver += m.Deliver
	t.get += m.Get
	t.ack += m.Ack
	t.redeliver += m.Redeliver
	t.deliverNoAck += m.DeliverNoAck
	t.getNoAck += m.GetNoAck
	t.confirm += m.Confirm
	t.returned += m.ReturnedUnroutable
	t.dropped += m.DroppedUnroutable
	t.publishRate += r.Publish
	t.deliverRate += r.Deliver
	t.getRate += r.Get
	t.ackRate += r.Ack
	t.redeliverRate += r.Redeliver
}

func (t *messageTotals) json() map[string]any {
	rate := func(v float64) map[string]float64 { return map[string]float64{"rate": v} }
	return map[string]any{
		"publish": t.publish, "publish_details": rate(t.publishRate),
		"deliver": t.deliver - t.deliverNoAck, "deliver_details": rate(t.deliverRate),
		"deliver_no_ack": t.deliverNoAck, "get_no_ack": t.getNoAck, "confirm": t.confirm,
		"return_unroutable": t.returned, "drop_unroutable": t.dropped,
		"get": t.get - t.getNoAck, "get_details": rate(t.getRate),
		"deliver_get": t.deliver + t.get, "deliver_get_details": rate(t.deliverRate + t.getRate),
		"ack": t.ack, "ack_details": rate(t.ackRate),
		"redeliver": t.redeliver, "redeliver_details": rate(t.redeliverRate),
	}
}

func (s *Server) clusterName(w http.ResponseWriter, _ *http.Request, _ *principal) {
	writeJSON(w, http.StatusOK, map[string]string{"name": clusterName})
}

// nodeList answers in RabbitMQ's shape (name, running, type, mem_used, uptime) plus Warren's
// own fields: gossip state, addresses, whether the node leads Raft, how many queues it owns and
// its Raft state.
func (s *Server) nodeList(p *principal) []map[string]any {
	owned := map[string]int{}
	for _, q := range s.src.Node.FSM().Queues("") {
		owned[q.Owner]++
	}
	byNode := map[string]nodeStats{}
	for _, st := range s.clusterStats(p) {
		byNode[st.Node] = st
	}
	leader, self := s.leader(), s.src.Node.ID()
	out := []map[string]any{}
	for _, m := range s.members() {
		st, known := byNode[m.ID]
		item := map[string]any{
			"name": m.ID, "running": m.State == cluster.MemberAlive, "state": m.State.String(),
			"type": "disc", "leader": m.ID == leader, "queues": owned[m.ID],
			"amqp_addr": m.Meta.AMQPAddr, "http_addr": m.Meta.HTTPAddr, "self": m.ID == self,
		}
		if known && st.Err == "" {
			item["mem_used"], item["uptime"], item["raft"] = st.MemUsed, st.Uptime, st.Raft
			item["connections"] = len(st.Connections)
			item["mem_alarm"], item["mem_limit"] = st.MemAlarm, st.MemLimit
			item["message_rates"] = st.Rates
		}
		if m.ID == self && s.src.Limits != nil {
			mergeLimits(item, s.src.Limits())
		}
		out = append(out, item)
	}
	return out
}

func (s *Server) nodes(w http.ResponseWriter, r *http.Request, p *principal) {
	writeList(w, r, s.nodeList(p))
}

func (s *Server) node(w http.ResponseWriter, r *http.Request, p *principal) {
	for _, n := range s.nodeList(p) {
		if n["name"] == pathValue(r, "node") {
			writeJSON(w, http.StatusOK, n)
			return
		}
	}
	notFound(w)
}

// forget answers 204 when the node was forgotten, 409 with the reason when it may not be (alive,
// or this node is not the leader: the client asks the leader), 501 on a node without a cluster.
func (s *Server) forget(w http.ResponseWriter, r *http.Request, _ *principal) {
	if s.src.Forget == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not_clustered"})
		return
	}
	if err := s.src.Forget(pathValue(r, "node")); err != nil {
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
func (s *Server) leave(w http.ResponseWriter, r *http.Request, _ *principal) {
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
	pr := s.startProgress("leave")
	stop := s.trackLeave(pr)
	rep, err := s.src.Leave(timeout)
	stop()
	s.finishProgress(pr, err)
	if err != nil {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "conflict", "reason": err.Error(), "report": rep})
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// join answers 204 once this node is a member of the cluster at the seeds in the JSON body
// ({"seeds": ["host:port"]}), 409 with the reason when it refused or failed.
func (s *Server) join(w http.ResponseWriter, r *http.Request, _ *principal) {
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
func (s *Server) rebalance(w http.ResponseWriter, _ *http.Request, p *principal) {
	if s.src.Rebalance == nil {
		writeJSON(w, http.StatusNotImplemented, map[string]string{"error": "not_clustered"})
		return
	}
	pr := s.startProgress("rebalance")
	_, before := s.clusterHandOffs(p)
	moved, err := s.src.Rebalance()
	pr.add(moved, 0)
	if err != nil || moved == 0 {
		s.finishProgress(pr, err)
	} else {
		s.trackRebalance(pr, p, before)
	}
	if err != nil {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "conflict", "reason": err.Error(), "moved": moved})
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"moved": moved})
}

// healthAlarms is RabbitMQ's /api/health/checks/alarms (every live node) and local-alarms (this
// node): 200 {"status":"ok"}, or 503 naming the nodes whose memory alarm blocks publishers.
func (s *Server) healthAlarms(local bool) handler {
	return func(w http.ResponseWriter, _ *http.Request, p *principal) {
		stats := []nodeStats{s.local()}
		if !local {
			stats = s.clusterStats(p)
		}
		var alarms []map[string]string
		for _, st := range stats {
			if st.MemAlarm {
				alarms = append(alarms, map[string]string{"node": st.Node, "resource": "memory"})
			}
		}
		if len(alarms) > 0 {
			reason := "resource alarm(s) in effect in the cluster"
			if local {
				reason = "resource alarm(s) in effect on the node"
			}
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "failed", "reason": reason, "alarms": alarms})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

// healthVhosts: every vhost runs wherever the node runs (there is no per-vhost process to fail).
func (s *Server) healthVhosts(w http.ResponseWriter, _ *http.Request, _ *principal) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// topology is {"writable": bool, "reason": why not}: read-only when no majority is reachable.
func (s *Server) topology() map[string]any {
	if s.src.Topology == nil {
		return map[string]any{"writable": true}
	}
	w, why := s.src.Topology()
	out := map[string]any{"writable": w}
	if !w {
		out["reason"] = why
	}
	return out
}
