package fsm

import (
	"sync"

	"github.com/warrenmq/warren/exchange"
)

// Limits on exchange-to-exchange routing. A publish reads the topology under the FSM's read
// lock, and every topology change waits for it: without a bound, a chain of 100k exchanges
// made one publish walk for seconds and stalled the node. A publish that would go deeper or
// through more exchanges is refused with 406 (see docs/limits.md).
const (
	// MaxRouteDepth is the most exchange-to-exchange hops a publish follows.
	MaxRouteDepth = 64
	// MaxRouteExchanges is the most exchanges one publish routes through.
	MaxRouteExchanges = 1024
)

// routeScratch holds the working slices of one Route call; pooling them keeps
// the publish path free of allocations beyond the caller's out slice.
type routeScratch struct {
	matched []exchange.Dest  // output of one matcher
	queues  []exchange.Dest  // queue destinations found so far
	pending []*exchangeState // exchanges to route through, breadth first
	seen    []*exchangeState // exchanges already reached (cycle guard), while few
	seenSet map[*exchangeState]struct{}
}

var scratchPool = sync.Pool{New: func() any { return new(routeScratch) }}

// maxPooledScratch stops a single huge fan-out from pinning memory in the pool.
const maxPooledScratch = 1 << 16

// seenScanMax is where the cycle guard switches from scanning a slice (cheaper for the usual
// one or two exchanges) to a set.
const seenScanMax = 8

func (s *routeScratch) release() {
	if cap(s.matched) > maxPooledScratch || cap(s.queues) > maxPooledScratch {
		return
	}
	s.matched, s.queues = s.matched[:0], s.queues[:0]
	clear(s.pending)
	s.pending = s.pending[:0]
	if len(s.seen) > 0 {
		clear(s.seen)
		s.seen = s.seen[:0]
	}
	if len(s.seenSet) > 0 {
		clear(s.seenSet)
	}
	scratchPool.Put(s)
}

// visit records x and reports whether it was new.
func (s *routeScratch) visit(x *exchangeState) bool {
	if len(s.seenSet) > 0 {
		if _, ok := s.seenSet[x]; ok {
			return false
		}
		s.seenSet[x] = struct{}{}
		return true
	}
	for _, y := range s.seen {
		if y == x {
			return false
		}
	}
	s.seen = append(s.seen, x)
	if len(s.seen) > seenScanMax {
		if s.seenSet == nil {
			s.seenSet = make(map[*exchangeState]struct{}, 2*seenScanMax)
		}
		for _, y := range s.seen {
			s.seenSet[y] = struct{}{}
		}
	}
	return true
}

// Route resolves a publish to target queues, appended to out once each. The
// default exchange ("") targets the queue named by routingKey, if any.
// Exchange-to-exchange bindings are followed breadth first (each exchange at
// most once, so cycles terminate; at most MaxRouteDepth hops and
// MaxRouteExchanges exchanges), and an exchange whose own bindings match
// nothing falls back to its alternate exchange, as in RabbitMQ. Publishing to a
// missing exchange is refused with 404, to an internal one with 403.
func (f *FSM) Route(vhost, exchangeName, routingKey string, headers map[string]any, out []QueueRef) ([]QueueRef, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	vh := f.vhosts[vhost]
	if vh == nil {
		return out, NoExchange(vhost, exchangeName)
	}
	if exchangeName == "" {
		if q := vh.queues[routingKey]; q != nil {
			out = append(out, QueueRef{Vhost: vhost, Name: q.Name, Owner: q.Owner})
		}
		return out, nil
	}
	x := vh.exchanges[exchangeName]
	if x == nil {
		return out, NoExchange(vhost, exchangeName)
	}
	if x.info.Internal {
		return out, refuse(CodeAccessRefused, "cannot publish to internal exchange '%s' in vhost '%s'", exchangeName, vhost)
	}

	s := scratchPool.Get().(*routeScratch)
	defer s.release()
	s.pending = append(s.pending, x) // visited once an exchange destination shows up
	depth, levelEnd := 0, 1
	for head := 0; head < len(s.pending); head++ {
		if head == levelEnd {
			depth++
			levelEnd = len(s.pending)
		}
		cur := s.pending[head]
		s.matched = cur.matcher.Route(routingKey, headers, s.matched[:0])
		if len(s.matched) == 0 && cur.info.AlternateExchange != "" {
			s.matched = append(s.matched, exchange.Dest{Name: cur.info.AlternateExchange, IsExchange: true})
		}
		for _, d := range s.matched {
			if !d.IsExchange {
				s.queues = append(s.queues, d)
				continue
			}
			next := vh.exchanges[d.Name]
			if d.Name == "" || next == nil {
				continue
			}
			if len(s.seen) == 0 {
				s.visit(x) // the first exchange destination: the start counts as visited
			}
			if !s.visit(next) {
				continue
			}
			if depth+1 > MaxRouteDepth {
				return out, refuse(CodePreconditionFailed, "routing from exchange '%s' in vhost '%s' goes deeper than %d exchange-to-exchange bindings",
					exchangeName, vhost, MaxRouteDepth)
			}
			if len(s.pending) >= MaxRouteExchanges {
				return out, refuse(CodePreconditionFailed, "routing from exchange '%s' in vhost '%s' reaches more than %d exchanges",
					exchangeName, vhost, MaxRouteExchanges)
			}
			s.pending = append(s.pending, next)
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
