package fsm

import (
	"maps"
	"slices"
	"strings"
)

// OpSetVhostLimits is numbered apart from the iota block of commands.go so that commands
// added there in parallel never collide with it.
const OpSetVhostLimits Op = 64

// Vhost limit names, as RabbitMQ's set_vhost_limits.
const (
	LimitMaxConnections = "max-connections"
	LimitMaxQueues      = "max-queues"
)

// SetVhostLimits replaces a vhost's limits (RabbitMQ's set_vhost_limits / PUT
// /api/vhost-limits): keys LimitMaxConnections and LimitMaxQueues; a negative value means no
// limit; an empty map clears them all (clear_vhost_limits).
type SetVhostLimits struct {
	Vhost  string
	Limits map[string]int
}

func (SetVhostLimits) op() Op { return OpSetVhostLimits }

func init() {
	opNames[OpSetVhostLimits] = "SetVhostLimits"
	extraDecoders[OpSetVhostLimits] = decodeInto[SetVhostLimits]
}

func (f *FSM) setVhostLimits(c SetVhostLimits) *Error {
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	if err := checkLimitNames("vhost", c.Limits, LimitMaxConnections, LimitMaxQueues); err != nil {
		return err
	}
	vh.limits = limiting(c.Limits)
	return nil
}

// VhostLimits returns a vhost's limits (a copy; absent keys are unlimited).
func (f *FSM) VhostLimits(vhost string) map[string]int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if vh := f.vhosts[vhost]; vh != nil {
		return maps.Clone(vh.limits)
	}
	return nil
}

// VhostLimit returns one limit of a vhost and whether it is set.
func (f *FSM) VhostLimit(vhost, name string) (int, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if vh := f.vhosts[vhost]; vh != nil {
		v, ok := vh.limits[name]
		return v, ok
	}
	return 0, false
}

// checkQueueLimit refuses a new queue in a vhost at its max-queues, with RabbitMQ's text.
func checkQueueLimit(vh *vhostState, name string) *Error {
	if limit, ok := vh.limits[LimitMaxQueues]; ok && len(vh.queues) >= limit {
		return refuse(CodePreconditionFailed, "cannot declare queue '%s': queue limit in vhost '%s' (%d) is reached", name, vh.name, limit)
	}
	return nil
}

// OpSetUserLimits, like OpSetVhostLimits, lives outside the iota block of commands.go.
const OpSetUserLimits Op = 65

// User limit names, as RabbitMQ 3.10's set_user_limits (max-connections is shared with the
// vhost limits).
const LimitMaxChannels = "max-channels"

// SetUserLimits replaces a user's limits (rabbitmqctl set_user_limits / PUT
// /api/user-limits/{user}/{name}): keys LimitMaxConnections and LimitMaxChannels, counted
// over the whole cluster; a negative value means no limit; an empty map clears them all
// (clear_user_limits). Changing a user's password or tags keeps its limits.
type SetUserLimits struct {
	User   string
	Limits map[string]int
}

func (SetUserLimits) op() Op { return OpSetUserLimits }

func init() {
	opNames[OpSetUserLimits] = "SetUserLimits"
	extraDecoders[OpSetUserLimits] = decodeInto[SetUserLimits]
}

func (f *FSM) setUserLimits(c SetUserLimits) *Error {
	u := f.users[c.User]
	if u == nil {
		return refuse(CodeNotFound, "no user '%s'", c.User)
	}
	if err := checkLimitNames("user", c.Limits, LimitMaxConnections, LimitMaxChannels); err != nil {
		return err
	}
	u.Limits = limiting(c.Limits)
	return nil
}

// checkLimitNames refuses a limit name that is not one of known (kind is "vhost" or "user").
func checkLimitNames(kind string, limits map[string]int, known ...string) *Error {
	for _, k := range slices.Sorted(maps.Keys(limits)) {
		if !slices.Contains(known, k) {
			return refuse(CodePreconditionFailed, "unknown %s limit '%s' (known: %s)", kind, k, strings.Join(known, ", "))
		}
	}
	return nil
}

// limiting keeps the limits that limit (not negative); nil when none does, so a vhost or user
// without limits has the same state however it got there.
func limiting(in map[string]int) map[string]int {
	var out map[string]int
	for k, v := range in {
		if v >= 0 {
			if out == nil {
				out = map[string]int{}
			}
			out[k] = v
		}
	}
	return out
}

// keptUserLimits are the limits a replaced user keeps (PutUser changes password and tags).
func (f *FSM) keptUserLimits(name string) map[string]int {
	if u := f.users[name]; u != nil {
		return u.Limits
	}
	return nil
}

// UserLimits returns a user's limits (a copy; absent keys are unlimited) and whether the
// user exists.
func (f *FSM) UserLimits(user string) (map[string]int, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if u := f.users[user]; u != nil {
		return maps.Clone(u.Limits), true
	}
	return nil, false
}

// UserLimit returns one limit of a user and whether it is set.
func (f *FSM) UserLimit(user, name string) (int, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if u := f.users[user]; u != nil {
		v, ok := u.Limits[name]
		return v, ok
	}
	return 0, false
}
