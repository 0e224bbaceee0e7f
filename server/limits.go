package server

import (
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/wire"
)

// defaultDiskFreeLimit is RabbitMQ's default disk_free_limit (50 MB).
const defaultDiskFreeLimit = 50_000_000

// diskCheckEvery: statfs runs on every this many memory checks (once a second).
const diskCheckEvery = 5

// diskAlarm is RabbitMQ's disk free limit: while the file system holding the data dir has less
// free space than the limit, publishers are blocked as by the memory alarm.
type diskAlarm struct {
	path  string
	limit atomic.Uint64
	free  atomic.Uint64
	low   atomic.Bool
	force atomic.Bool // check at the next tick (the limit changed)
	ticks int         // run goroutine only
}

func (d *diskAlarm) check() {
	if d.path == "" {
		return
	}
	if d.ticks++; d.ticks%diskCheckEvery != 1 && !d.force.Swap(false) {
		return
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.path, &st); err != nil {
		return // keep the last reading: a transient error must not raise or clear the alarm
	}
	free := st.Bavail * uint64(st.Bsize)
	d.free.Store(free)
	d.low.Store(free < d.limit.Load())
}

// reason is connection.blocked's text, RabbitMQ's "low on memory", "low on disk" or both.
func (a *memoryAlarm) reason() string {
	mem, disk := a.memHigh.Load(), a.disk.low.Load()
	switch {
	case mem && disk:
		return "low on memory & disk"
	case disk:
		return "low on disk"
	}
	return "low on memory"
}

// SetDiskFreeLimit changes the disk free limit (bytes) at run time; it applies at the next
// check (within a second).
func (s *Server) SetDiskFreeLimit(limit uint64) {
	s.mem.disk.limit.Store(limit)
	s.mem.disk.force.Store(true)
}

// connLimits counts open connections (past connection.open) per node and per vhost.
type connLimits struct {
	mu      sync.Mutex
	total   int
	byVhost map[string]int
}

// admit applies, at connection.open, the node's connection cap and the vhost's
// max-connections, with RabbitMQ's 530 NOT_ALLOWED texts. The vhost count is this node's
// (RabbitMQ counts the whole cluster).
func (c *conn) admit(vhost string) error {
	l := &c.s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	if max := c.s.cfg.MaxConnections; max > 0 && l.total >= max {
		c.closeWithError(errorf(wire.NotAllowed, "connection refused: node connection limit (%d) is reached", max))
		return fmt.Errorf("node connection limit %d reached", max)
	}
	if max, ok := c.s.node.FSM().VhostLimit(vhost, fsm.LimitMaxConnections); ok && l.byVhost[vhost] >= max {
		c.closeWithError(asAMQPError(fsm.VhostConnectionLimit(c.user, vhost, max)))
		return fmt.Errorf("vhost %q connection limit %d reached", vhost, max)
	}
	l.total++
	if l.byVhost == nil {
		l.byVhost = map[string]int{}
	}
	l.byVhost[vhost]++
	c.admitted = vhost
	c.admittedOK = true
	return nil
}

// release gives back what admit counted; cleanup calls it once.
func (c *conn) release() {
	if !c.admittedOK {
		return
	}
	l := &c.s.limits
	l.mu.Lock()
	l.total--
	if l.byVhost[c.admitted]--; l.byVhost[c.admitted] <= 0 {
		delete(l.byVhost, c.admitted)
	}
	l.mu.Unlock()
}

// Limits is what `node status` and the API show of a node's protection.
type Limits struct {
	Connections   int    `json:"connections"`
	ConnectionMax int    `json:"connection_max"` // 0: no cap
	ChannelMax    uint16 `json:"channel_max"`
	MemUsed       uint64 `json:"mem_used"`
	MemLimit      uint64 `json:"mem_limit"`
	MemAlarm      bool   `json:"mem_alarm"`
	DiskFree      uint64 `json:"disk_free"`
	DiskFreeLimit uint64 `json:"disk_free_limit"`
	DiskFreeAlarm bool   `json:"disk_free_alarm"`
	BlockedReason string `json:"blocked_reason,omitempty"`
}

// Limits reports the node's connection count, caps and alarms.
func (s *Server) Limits() Limits {
	s.limits.mu.Lock()
	open := s.limits.total
	s.limits.mu.Unlock()
	l := Limits{
		Connections: open, ConnectionMax: s.cfg.MaxConnections, ChannelMax: s.cfg.ChannelMax,
		MemUsed: s.mem.memUsed.Load(), MemLimit: s.mem.limit.Load(), MemAlarm: s.mem.memHigh.Load(),
		DiskFree: s.mem.disk.free.Load(), DiskFreeLimit: s.mem.disk.limit.Load(), DiskFreeAlarm: s.mem.disk.low.Load(),
	}
	if s.mem.blocked.Load() {
		l.BlockedReason = s.mem.reason()
	}
	return l
}

// tuneChannelMax takes the client's channel_max from tune-ok: a lower one (not 0, "no
// limit") applies to this connection; a higher one is refused as RabbitMQ does.
func (c *conn) tuneChannelMax(client uint16) error {
	server := c.s.cfg.ChannelMax
	if client > server {
		c.closeWithError(errorf(wire.NotAllowed, "channel_max=%d > %d max size", client, server))
		return fmt.Errorf("channel_max %d above %d", client, server)
	}
	if client != 0 {
		c.channelMax = client
	}
	return nil
}

func (c *conn) negotiatedChannelMax() uint16 {
	if c.channelMax != 0 {
		return c.channelMax
	}
	return c.s.cfg.ChannelMax
}
