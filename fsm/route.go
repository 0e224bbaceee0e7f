package fsm

import (
	"sync"

	"github.com/warrenmq/warren/exchange"
)

// routeScratch holds the working slices of one Route call; pooling them keeps
// the publish path free of allocations beyond the caller's out slice.
type routeScratch struct {
	matched []exchange.Dest  // output of one matcher
	queues  []exchange.Dest  // queue destinations found so far
	pending []*exchangeState // exchanges still to route through
	seen    []string         // exchanges already routed through (cycle guard)
}

var scratchPool = sync.Pool{New: func() any { return new(routeScratch) }}

// maxPooledScratch stops a single huge fan-out from pinning memory in the pool.
const maxPooledScratch = 1 << 16

func (s *routeScratch) release() {
	if cap(s.matched) > maxPooledScratch || cap(s.queues) > maxPooledScratch {
		return
	}
	s.matched, s.queues = s.matched[:0], s.queues[:0]
	clear(s.pending)
	s.pending, s.seen = s.pending[:0], s.seen[:0]
	scratchPool.Put(s)
}

func (s *routeScratch) visit(name string) bool {
	for _, n := range s.seen {
		if n == name {
			return false
		}
	}
	s.seen = append(s.seen, name)
	return true
}

// Route resolves a publish to target queues, appended to out once each. The
// default exchange ("") targets the queue named by routingKey, if any.
// Exchange-to-exchange bindings are followed (each exchange at most once, so
// cycles terminate), and an exchange whose own bindings match nothing falls
// back to its alternate exchange, as in RabbitMQ. Publishing to a missing
// exchange is refused with 404, to an internal one with 403.
func (f *FSM) Route(vhost, exchangeName, routingKey string, headers map[string]any, out []QueueRef) ([]QueueRef, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vh := f.vhosts[vhost]
	if vh == nil {
		return out, errNoExchange(vhost, exchangeName)
	}
	if exchangeName == "" {
		if q := vh.queues[routingKey]; q != nil {
			out = append(out, QueueRef{Vhost: vhost, Name: q.Name, Owner: q.Owner})
		}
		return out, nil
	}
	x := vh.exchanges[exchangeName]
	if x == nil {
		return out, errNoExchange(vhost, exchangeName)
	}
	if x.info.Internal {
		return out, refuse(CodeAccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", exchangeName, vhost)
	}

	s := scratchPool.Get().(*routeScratch)
	defer s.release()
	s.visit(exchangeName)
	s.pending = append(s.pending, x)
	for len(s.pending) > 0 {
		cur := s.pending[len(s.pending)-1]
		s.pending = s.pending[:len(s.pending)-1]
		s.matched = cur.matcher.Route(routingKey, headers, s.matched[:0])
		if len(s.matched) == 0 && cur.info.AlternateExchange != "" {
			s.matched = append(s.matched, exchange.Dest{Name: cur.info.AlternateExchange, IsExchange: true})
		}
		for _, d := range s.matched {
			if !d.IsExchange {
				s.queues = append(s.queues, d)
				continue
			}
			if d.Name == "" || !s.visit(d.Name) {
				continue
			}
			if next := vh.exchanges[d.Name]; next != nil {
				s.pending = append(s.pending, next)
			}
		}
	}
	s.queues = exchange.DedupeTail(s.queues, 0)
	for _, d := range s.queues {
		if q := vh.queues[d.Name]; q != nil {
			out = append(out, QueueRef{Vhost: vhost, Name: q.Name, Owner: q.Owner})
		}
	}
	return out, nil
}
