package mgmt

import (
	"fmt"
	"net/http"
	"net/url"

	"github.com/warrenmq/warren/server"
)

// connJSON is a connection in RabbitMQ's shape.
func connJSON(node string, c server.ConnInfo) map[string]any {
	props := c.ClientProperties
	if props == nil {
		props = map[string]any{}
	}
	return map[string]any{
		"name": c.Name, "node": node, "user": c.User, "vhost": c.Vhost, "type": "network", "protocol": "AMQP 0-9-1",
		"state": "running", "channels": len(c.Channels), "peer_host": c.PeerHost, "peer_port": c.PeerPort,
		"host": c.Host, "port": c.Port, "timeout": c.Heartbeat, "frame_max": c.FrameMax,
		"connected_at": c.ConnectedAt.UnixMilli(), "client_properties": jsonable(props), "auth_mechanism": "PLAIN",
		"ssl": false, "user_who_performed_action": c.User,
	}
}

// allConnections lists the connections of every live node that p may see: monitors all,
// other users their own.
func (s *Server) allConnections(p *principal) []map[string]any {
	var out []map[string]any
	for _, st := range s.clusterStats(p) {
		for _, c := range st.Connections {
			if p.isMonitor() || c.User == p.name {
				out = append(out, connJSON(st.Node, c))
			}
		}
	}
	return out
}

func (s *Server) listConnections(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost := pathValue(r, "vhost")
	var out []map[string]any
	for _, c := range s.allConnections(p) {
		if vhost == "" || c["vhost"] == vhost {
			out = append(out, c)
		}
	}
	writeList(w, r, out)
}

func (s *Server) findConnection(p *principal, name string) (map[string]any, nodeStats, server.ConnInfo, bool) {
	for _, st := range s.clusterStats(p) {
		for _, c := range st.Connections {
			if (c.Name == name || c.ID == name) && (p.isMonitor() || c.User == p.name) {
				return connJSON(st.Node, c), st, c, true
			}
		}
	}
	return nil, nodeStats{}, server.ConnInfo{}, false
}

func (s *Server) showConnection(w http.ResponseWriter, r *http.Request, p *principal) {
	c, _, _, ok := s.findConnection(p, pathValue(r, "name"))
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, c)
}

// closeConnection closes a connection on whichever node holds it (320 CONNECTION_FORCED with
// the X-Reason header's text, as RabbitMQ). Users may close their own; administrators any.
func (s *Server) closeConnection(w http.ResponseWriter, r *http.Request, p *principal) {
	_, st, c, ok := s.findConnection(p, pathValue(r, "name"))
	if !ok || (!p.isAdmin() && c.User != p.name) {
		notFound(w)
		return
	}
	reason := r.Header.Get("X-Reason")
	if st.Node == s.src.Node.ID() {
		s.src.AMQP.CloseConnection(c.ID, reason)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	addr := ""
	for _, m := range s.members() {
		if m.ID == st.Node {
			addr = m.Meta.HTTPAddr
		}
	}
	path := "/api/warren/local/connections/" + url.PathEscape(c.ID)
	if err := s.peerCallWithReason(p, addr, path, reason); err != nil {
		writeError(w, http.StatusBadGateway, "internal_error", fmt.Sprintf("close connection on node %s: %v", st.Node, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) closeLocalConnection(w http.ResponseWriter, r *http.Request) {
	if s.src.AMQP == nil || !s.src.AMQP.CloseConnection(pathValue(r, "name"), r.Header.Get("X-Reason")) {
		notFound(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func channelJSON(node string, c server.ConnInfo, ch server.ChannelInfo) map[string]any {
	return map[string]any{
		"name": fmt.Sprintf("%s (%d)", c.Name, ch.Number), "number": ch.Number, "node": node, "user": c.User,
		"vhost": c.Vhost, "prefetch_count": ch.Prefetch, "messages_unacknowledged": ch.Unacked,
		"consumer_count": len(ch.Consumers), "state": "running",
		"connection_details": map[string]any{"name": c.Name, "peer_host": c.PeerHost, "peer_port": c.PeerPort},
	}
}

func (s *Server) channels(p *principal, keep func(server.ConnInfo) bool) []map[string]any {
	var out []map[string]any
	for _, st := range s.clusterStats(p) {
		for _, c := range st.Connections {
			if !(p.isMonitor() || c.User == p.name) || !keep(c) {
				continue
			}
			for _, ch := range c.Channels {
				out = append(out, channelJSON(st.Node, c, ch))
			}
		}
	}
	return out
}

func (s *Server) listChannels(w http.ResponseWriter, r *http.Request, p *principal) {
	writeList(w, r, s.channels(p, func(server.ConnInfo) bool { return true }))
}

func (s *Server) connectionChannels(w http.ResponseWriter, r *http.Request, p *principal) {
	name := pathValue(r, "name")
	if _, _, _, ok := s.findConnection(p, name); !ok {
		notFound(w)
		return
	}
	writeList(w, r, s.channels(p, func(c server.ConnInfo) bool { return c.Name == name || c.ID == name }))
}

func (s *Server) listConsumers(w http.ResponseWriter, r *http.Request, p *principal) {
	vhost, ok := s.vhostFilter(w, r, p)
	if !ok {
		return
	}
	var out []map[string]any
	for _, st := range s.clusterStats(p) {
		for _, c := range st.Connections {
			if (vhost != "" && c.Vhost != vhost) || !s.canSee(p, c.Vhost) {
				continue
			}
			for _, ch := range c.Channels {
				for _, cs := range ch.Consumers {
					out = append(out, map[string]any{
						"consumer_tag": cs.Tag, "exclusive": cs.Exclusive, "ack_required": !cs.NoAck,
						"prefetch_count": cs.Prefetch, "active": true, "activity_status": "up", "arguments": map[string]any{},
						"queue":           map[string]any{"name": cs.Queue, "vhost": c.Vhost},
						"channel_details": channelJSON(st.Node, c, ch),
					})
				}
			}
		}
	}
	writeList(w, r, out)
}

// closeConnectionsWhere closes, on every live node, the client connections that match (a
// deleted vhost's or user's, as RabbitMQ closes them) with 320 CONNECTION_FORCED and reason.
func (s *Server) closeConnectionsWhere(p *principal, match func(server.ConnInfo) bool, reason string) {
	addrs := map[string]string{}
	for _, m := range s.members() {
		addrs[m.ID] = m.Meta.HTTPAddr
	}
	for _, st := range s.clusterStats(p) {
		for _, c := range st.Connections {
			if !match(c) {
				continue
			}
			if st.Node == s.src.Node.ID() {
				s.src.AMQP.CloseConnection(c.ID, reason)
			} else if err := s.peerCallWithReason(p, addrs[st.Node], "/api/warren/local/connections/"+url.PathEscape(c.ID), reason); err != nil {
				s.log.Warn("close connection on another node", "node", st.Node, "connection", c.Name, "err", err)
			}
		}
	}
}
