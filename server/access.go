package server

import (
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/wire"
)

// This file holds who may do what on AMQP (RabbitMQ's configure/write/read permissions per
// vhost), and what the management API reads about live connections: their details, channels,
// consumers and the node's message counters.

// Permission kinds, as RabbitMQ names them in its refusals.
const (
	permConfigure = "configure"
	permWrite     = "write"
	permRead      = "read"
)

var permRegexps sync.Map // pattern → *regexp.Regexp (or nil: a pattern that does not compile)

// PermitsName reports whether a RabbitMQ permission pattern allows a resource name. As in
// RabbitMQ the match is unanchored, and "" is a synonym for "^$".
func PermitsName(pattern, name string) bool {
	if pattern == "" {
		return name == ""
	}
	v, ok := permRegexps.Load(pattern)
	if !ok {
		re, err := regexp.Compile(pattern)
		if err != nil {
			re = nil
		}
		v, _ = permRegexps.LoadOrStore(pattern, re)
	}
	re := v.(*regexp.Regexp)
	return re != nil && re.MatchString(name)
}

// permitted checks one of the user's permissions on a resource of the connection's vhost:
// 403 ACCESS_REFUSED with RabbitMQ's text otherwise.
func (c *conn) permitted(perm, kind, name string) error {
	p, _ := c.s.node.FSM().Permissions(c.user, c.vhost)
	pattern := p.Read
	switch perm {
	case permConfigure:
		pattern = p.Configure
	case permWrite:
		pattern = p.Write
	}
	resource := name
	if kind == "exchange" && name == "" {
		resource = "amq.default" // RabbitMQ checks the default exchange under this name
	}
	if PermitsName(pattern, resource) {
		return nil
	}
	return fsm.AccessRefused(c.user, c.vhost, kind, resource)
}

// permitPublish is permitted(write, exchange) with the answer remembered per exchange for as
// long as the user's permissions in the vhost stay the same (publishes are the hot path).
func (c *conn) permitPublish(exchange string) error {
	p, _ := c.s.node.FSM().Permissions(c.user, c.vhost)
	m := c.meta()
	if m.pubPerms != p || m.pubAllowed == nil {
		m.pubPerms, m.pubAllowed = p, make(map[string]bool)
	}
	if ok, known := m.pubAllowed[exchange]; known && ok {
		return nil
	}
	if err := c.permitted(permWrite, "exchange", exchange); err != nil {
		return err
	}
	if len(m.pubAllowed) < 1024 {
		m.pubAllowed[exchange] = true
	}
	return nil
}

// checkVhostAccess: a user without permissions in the vhost may not open it (RabbitMQ: 530).
func (c *conn) checkVhostAccess(user, vhost string) *amqpError {
	if _, ok := c.s.node.FSM().Permissions(user, vhost); !ok {
		return asAMQPError(fsm.VhostAccessRefused(user, vhost))
	}
	return nil
}

// IsLoopbackUser reports whether user may log in only from a loopback address; the
// management API applies the same rule to HTTP.
func (s *Server) IsLoopbackUser(user string) bool { return slices.Contains(s.cfg.LoopbackUsers, user) }

// connMeta is what the management API shows about a connection, plus the publish
// permission cache (reader goroutine only).
type connMeta struct {
	mu          sync.Mutex
	clientProps map[string]any
	connectedAt time.Time
	opened      bool

	pubPerms   fsm.Permissions
	pubAllowed map[string]bool
}

func (c *conn) meta() *connMeta {
	if m := c.info.Load(); m != nil {
		return m
	}
	m := &connMeta{connectedAt: time.Now()}
	if c.info.CompareAndSwap(nil, m) {
		return m
	}
	return c.info.Load()
}

// closedConn counts a connection that had been opened, once it is gone.
func (c *conn) closedConn() {
	if m := c.info.Load(); m != nil {
		m.mu.Lock()
		opened := m.opened
		m.mu.Unlock()
		if opened {
			c.s.stats.connectionsClosed.Add(1)
		}
	}
}

// opened records a connection that finished its handshake, for the management API.
func (c *conn) opened(props wire.Table) {
	m := c.meta()
	m.mu.Lock()
	m.clientProps = tableToJSON(props)
	m.opened = true
	m.mu.Unlock()
	c.s.stats.connectionsOpened.Add(1)
}

func tableToJSON(t wire.Table) map[string]any {
	out := make(map[string]any, len(t))
	for k, v := range t {
		switch x := v.(type) {
		case wire.Table:
			out[k] = tableToJSON(x)
		case []byte:
			out[k] = string(x)
		default:
			out[k] = x
		}
	}
	return out
}

// MessageStats are a node's message and connection counters since start (RabbitMQ's
// message_stats and rabbitmq_prometheus's global counters). Deliver and Get include their
// no-ack parts (DeliverNoAck, GetNoAck).
type MessageStats struct {
	Publish, Deliver, Get, Ack, Redeliver uint64
	DeliverNoAck, GetNoAck                uint64
	Confirm, Routed, ReturnedUnroutable   uint64
	DroppedUnroutable                     uint64
	ConnectionsOpened, ConnectionsClosed  uint64
}

type messageCounters struct {
	publish, deliver, get, ack, redeliver atomic.Uint64
	deliverNoAck, getNoAck                atomic.Uint64
	confirm, routed, returned, dropped    atomic.Uint64
	connectionsOpened, connectionsClosed  atomic.Uint64
}

// MessageStats returns the node's message counters.
func (s *Server) MessageStats() MessageStats {
	st := &s.stats
	return MessageStats{Publish: st.publish.Load(), Deliver: st.deliver.Load(), Get: st.get.Load(),
		Ack: st.ack.Load(), Redeliver: st.redeliver.Load(), DeliverNoAck: st.deliverNoAck.Load(),
		GetNoAck: st.getNoAck.Load(), Confirm: st.confirm.Load(), Routed: st.routed.Load(),
		ReturnedUnroutable: st.returned.Load(), DroppedUnroutable: st.dropped.Load(),
		ConnectionsOpened: st.connectionsOpened.Load(), ConnectionsClosed: st.connectionsClosed.Load()}
}

// countRouting counts where a publish went: to queues, back to a mandatory publisher, or nowhere.
func (st *messageCounters) countRouting(routed int, mandatory bool) {
	switch {
	case routed > 0:
		st.routed.Add(1)
	case mandatory:
		st.returned.Add(1)
	default:
		st.dropped.Add(1)
	}
}

// ConnInfo is one open client connection as the management API lists it.
type ConnInfo struct {
	Name, ID, User, Vhost string
	PeerHost, Host        string
	PeerPort, Port        int
	Heartbeat             uint16
	FrameMax              uint32
	ConnectedAt           time.Time
	ClientProperties      map[string]any
	Channels              []ChannelInfo
}

// ChannelInfo is one open channel of a connection.
type ChannelInfo struct {
	Number    uint16
	Prefetch  int
	Unacked   int
	Consumers []ConsumerInfo
}

// ConsumerInfo is one consumer of a channel.
type ConsumerInfo struct {
	Tag, Queue       string
	NoAck, Exclusive bool
	Prefetch         int
}

// connName is RabbitMQ's connection name: "peer -> local".
func (c *conn) connName() string {
	return c.nc.RemoteAddr().String() + " -> " + c.nc.LocalAddr().String()
}

// Connections lists the open (handshake finished) client connections, sorted by name.
func (s *Server) Connections() []ConnInfo {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	out := make([]ConnInfo, 0, len(conns))
	for _, c := range conns {
		m := c.info.Load()
		if m == nil {
			continue
		}
		m.mu.Lock()
		opened, props, at := m.opened, m.clientProps, m.connectedAt
		m.mu.Unlock()
		if !opened {
			continue
		}
		ph, pp := splitAddr(c.nc.RemoteAddr())
		lh, lp := splitAddr(c.nc.LocalAddr())
		ci := ConnInfo{Name: c.connName(), ID: c.id, User: c.user, Vhost: c.vhost, PeerHost: ph, PeerPort: pp,
			Host: lh, Port: lp, Heartbeat: c.heartbeat, FrameMax: c.frameMax, ConnectedAt: at, ClientProperties: props}
		c.chansMu.Lock()
		chans := make([]*channel, 0, len(c.allChans))
		for ch := range c.allChans {
			chans = append(chans, ch)
		}
		c.chansMu.Unlock()
		for _, ch := range chans {
			ch.mu.Lock()
			info := ChannelInfo{Number: ch.id, Prefetch: ch.prefetch, Unacked: ch.unacked.live}
			for _, cs := range ch.consumers {
				info.Consumers = append(info.Consumers, ConsumerInfo{Tag: cs.tag, Queue: cs.queue, NoAck: cs.noAck, Exclusive: cs.exclusive, Prefetch: cs.prefetch})
			}
			ch.mu.Unlock()
			sort.Slice(info.Consumers, func(i, j int) bool { return info.Consumers[i].Tag < info.Consumers[j].Tag })
			ci.Channels = append(ci.Channels, info)
		}
		sort.Slice(ci.Channels, func(i, j int) bool { return ci.Channels[i].Number < ci.Channels[j].Number })
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// CloseConnection closes the connection with that name (RabbitMQ's, or Warren's id) with 320
// CONNECTION_FORCED and reason; false when there is none.
func (s *Server) CloseConnection(name, reason string) bool {
	s.mu.Lock()
	var found *conn
	for c := range s.conns {
		if c.id == name || c.connName() == name {
			found = c
			break
		}
	}
	s.mu.Unlock()
	if found == nil {
		return false
	}
	if reason == "" {
		reason = "Closed via management plugin"
	}
	found.forceClose(wire.ConnectionForced, "CONNECTION_FORCED - "+reason)
	return true
}

func splitAddr(a net.Addr) (string, int) {
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String(), 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// permitArgExchange applies RabbitMQ's extra checks when a new queue names a dead-letter
// exchange, or a new exchange an alternate exchange: read on the declared resource and write on
// the exchange it names. A re-declare of an existing one checks nothing more.
func (c *conn) permitArgExchange(kind, name string, args wire.Table) error {
	key := "x-dead-letter-exchange"
	exists := false
	if kind == "exchange" {
		key = "alternate-exchange"
		_, exists = c.s.node.FSM().Exchange(c.vhost, name)
	} else {
		_, exists = c.s.node.FSM().Queue(c.vhost, name)
	}
	target, ok := args[key].(string)
	if exists || !ok {
		return nil
	}
	if err := c.permitted(permRead, kind, name); err != nil {
		return err
	}
	return c.permitted(permWrite, "exchange", target)
}

// MemoryAlarm reports whether the memory alarm blocks publishers now, and its limit in bytes.
func (s *Server) MemoryAlarm() (on bool, limit uint64) {
	return s.mem.blocked.Load(), s.mem.limit.Load()
}
