package fsm

import "github.com/warrenmq/warren/exchange"

// A re-declare of an exchange or queue that exists with equal properties changes nothing, so
// a node answers it from its own replica without a Raft round trip: faster for every client
// that declares its topology on connect, and possible on a node that has lost its majority.
// Apply and Redeclare share the equivalence checks below, so both give the same answer.

// Redeclare reports whether c (DeclareExchange, DeclareQueue or Bind) names something that
// exists with properties equivalent to c's, and if so what Apply would return for it. Anything else
// (new names, inequivalent properties, refusals, other commands) gives ok=false: it must go
// through Raft, which also produces the exact refusal.
func (f *FSM) Redeclare(c Command) (res Result, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch c := c.(type) {
	case DeclareExchange:
		vh := f.vhosts[c.Vhost]
		if vh == nil || c.Name == "" || !exchange.ValidKind(c.Kind) {
			return Result{}, false
		}
		x := vh.exchanges[c.Name]
		if x == nil {
			return Result{}, false
		}
		args, err := f.decode(c.Args)
		if err != nil || f.exchangeEquivalent(resourceName("exchange", c.Name, c.Vhost), x.info, c, args) != nil {
			return Result{}, false
		}
		return Result{}, true
	case DeclareQueue:
		vh := f.vhosts[c.Vhost]
		if vh == nil || c.Name == "" || c.Exclusive != (c.ExclusiveConn != "") {
			return Result{}, false
		}
		q := vh.queues[c.Name]
		if q == nil {
			return Result{}, false
		}
		args, err := f.decode(c.Args)
		if err != nil {
			return Result{}, false
		}
		qa, refusal := DecodeQueueArgs(c.Vhost, c.Name, args)
		if refusal != nil || validateTypedProperties(c, qa.Type) != nil || f.queueEquivalent(q, c, qa.Type, args) != nil {
			return Result{}, false
		}
		existing := *q
		return Result{Queue: &existing}, true
	case Bind:
		vh := f.vhosts[c.Vhost]
		if vh == nil || c.Source == "" || vh.exchanges[c.Source] == nil {
			return Result{}, false
		}
		if c.Dest.IsExchange {
			if vh.exchanges[c.Dest.Name] == nil {
				return Result{}, false
			}
		} else if q := vh.queues[c.Dest.Name]; q == nil || q.Exclusive && q.ExclusiveConn != c.Conn {
			return Result{}, false
		}
		args, err := f.decode(c.Args)
		if err != nil {
			return Result{}, false
		}
		// An existing binding passed every other check of bind when it was made.
		key := bindingKey{source: c.Source, dest: c.Dest, key: c.Key, args: exchange.CanonicalArgs(args)}
		return Result{}, vh.bindings[key] != nil
	}
	return Result{}, false
}

// exchangeEquivalent checks a declare of an existing exchange as RabbitMQ 3.10 does.
func (f *FSM) exchangeEquivalent(what string, cur Exchange, c DeclareExchange, args map[string]any) *Error {
	switch {
	case cur.Kind != c.Kind:
		return inequivalent(what, "type", "'"+c.Kind+"'", "'"+cur.Kind+"'")
	case cur.Durable != c.Durable:
		return inequivalentBool(what, "durable", c.Durable, cur.Durable)
	case cur.AutoDelete != c.AutoDelete:
		return inequivalentBool(what, "auto_delete", c.AutoDelete, cur.AutoDelete)
	case cur.Internal != c.Internal:
		return inequivalentBool(what, "internal", c.Internal, cur.Internal)
	}
	curArgs, err := f.decode(cur.Args)
	if err != nil {
		return errBadArgs(err)
	}
	return compareArgKeys(what, exchangeEquivalenceKeys, args, curArgs)
}

// queueEquivalent checks a declare of an existing queue as RabbitMQ 3.10 does.
func (f *FSM) queueEquivalent(q *Queue, c DeclareQueue, typ string, args map[string]any) *Error {
	what := resourceName("queue", c.Name, c.Vhost)
	switch {
	case q.Exclusive != c.Exclusive || q.ExclusiveConn != c.ExclusiveConn:
		return QueueLocked(c.Vhost, c.Name)
	case q.Durable != c.Durable:
		return inequivalentBool(what, "durable", c.Durable, q.Durable)
	case q.AutoDelete != c.AutoDelete:
		return inequivalentBool(what, "auto_delete", c.AutoDelete, q.AutoDelete)
	}
	curArgs, err := f.decode(q.Args)
	if err != nil {
		return errBadArgs(err)
	}
	if refusal := compareQueueType(what, typ, q.Type, args, curArgs); refusal != nil {
		return refusal
	}
	if refusal := compareArgKeys(what, queueEquivalenceKeys, args, curArgs); refusal != nil {
		return refusal
	}
	if q.Type == QueueTypeQuorum {
		return compareArgKeys(what, quorumEquivalenceKeys, args, curArgs)
	}
	return nil
}
