package server

import (
	"context"
	"fmt"
	"strings"

	"github.com/warrenmq/warren/fsm"
)

// Per-user limits (RabbitMQ 3.10's max-connections and max-channels user limits, fsm
// SetUserLimits) and a vhost's max-connections hold across the cluster: this node counts its
// own connections and channels per user and vhost, answers its peers' count requests over the
// data link, and before admitting a connection or channel under such a limit asks every other
// live node for theirs.
// Like RabbitMQ's, the check is not atomic across nodes: two nodes admitting at the same
// instant can both pass; a node that does not answer counts as holding none.

// Count keys asked over the data link: a prefix and the user or vhost name.
const (
	countUserConns  = "user-connections/"
	countUserChans  = "user-channels/"
	countVhostConns = "vhost-connections/"
)

// userCounts is this node's count of each user's open connections and channels; guarded by
// connLimits.mu.
type userCounts struct {
	conns     map[string]int
	chans     map[string]int
	connChans map[*conn]int // channels counted per connection, given back when it closes
}

func (u *userCounts) addConn(user string) {
	if u.conns == nil {
		u.conns = map[string]int{}
	}
	u.conns[user]++
}

// registerUserCounts answers the peers' count requests with this node's counts.
func (s *Server) registerUserCounts() {
	if s.node == nil {
		return
	}
	s.node.SetCounter(func(key string) (int, error) {
		l := &s.limits
		l.mu.Lock()
		defer l.mu.Unlock()
		if user, ok := strings.CutPrefix(key, countUserConns); ok {
			return l.users.conns[user], nil
		}
		if user, ok := strings.CutPrefix(key, countUserChans); ok {
			return l.users.chans[user], nil
		}
		if vhost, ok := strings.CutPrefix(key, countVhostConns); ok {
			return l.byVhost[vhost], nil
		}
		return 0, fmt.Errorf("unknown count key %q", key)
	})
}

// countElsewhere is, when limited, how many the other live nodes count under key (asked
// before a check takes connLimits.mu: the answer takes a round trip).
func (c *conn) countElsewhere(limited bool, key string) int {
	if !limited {
		return 0
	}
	n, _ := c.s.node.PeerCount(context.Background(), key)
	return n
}

// admitChannel applies the user's max-channels at channel.open; past it RabbitMQ closes the
// connection with 530.
func (c *conn) admitChannel() error {
	limit, limited := c.s.node.FSM().UserLimit(c.user, fsm.LimitMaxChannels)
	elsewhere := c.countElsewhere(limited, countUserChans+c.user)
	l := &c.s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	u := &l.users
	if limited && u.chans[c.user]+elsewhere >= limit {
		return asAMQPError(fsm.UserChannelLimit(c.user, limit))
	}
	if u.chans == nil {
		u.chans, u.connChans = map[string]int{}, map[*conn]int{}
	}
	u.chans[c.user]++
	u.connChans[c]++
	return nil
}

// releaseChannel gives back one channel counted by admitChannel.
func (c *conn) releaseChannel() {
	l := &c.s.limits
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.users.connChans[c] > 0 {
		l.users.connChans[c]--
		l.users.dropChans(c.user, 1)
	}
}

func (u *userCounts) dropChans(user string, n int) {
	if u.chans[user] -= n; u.chans[user] <= 0 {
		delete(u.chans, user)
	}
}

// releaseUser gives back the connection and its remaining channels; release calls it under
// connLimits.mu.
func (c *conn) releaseUser() {
	u := &c.s.limits.users
	if u.conns[c.user]--; u.conns[c.user] <= 0 {
		delete(u.conns, c.user)
	}
	if n := u.connChans[c]; n > 0 {
		u.dropChans(c.user, n)
	}
	delete(u.connChans, c)
}
