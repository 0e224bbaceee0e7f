package fsm

import (
	"maps"
	"slices"
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
	for _, k := range slices.Sorted(maps.Keys(c.Limits)) {
		if k != LimitMaxConnections && k != LimitMaxQueues {
			return refuse(CodePreconditionFailed, "unknown vhost limit '%s' (known: %s, %s)", k, LimitMaxConnections, LimitMaxQueues)
		}
	}
	vh.limits = nil
	for k, v := range c.Limits {
		if v >= 0 {
			if vh.limits == nil {
				vh.limits = map[string]int{}
			}
			vh.limits[k] = v
		}
	}
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
