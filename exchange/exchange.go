// Package exchange owns the routing matchers of AMQP 0-9-1 exchanges: the
// per-exchange index (direct, fanout, topic, headers) that maps a routing key
// and message headers to the set of bound destinations, with RabbitMQ 3.10
// semantics. It is pure data: no network, no clocks, no knowledge of the FSM.
// Matchers are not safe for concurrent mutation; the owner (the fsm package)
// serialises writes and may run any number of Route calls concurrently with
// each other while no write is in progress.
package exchange

import (
	"cmp"
	"fmt"
	"slices"
)

// Exchange kinds understood by NewMatcher.
const (
	KindDirect  = "direct"
	KindFanout  = "fanout"
	KindTopic   = "topic"
	KindHeaders = "headers"
)

// Dest is the destination of a binding: a queue or (for exchange-to-exchange
// bindings) an exchange.
type Dest struct {
	Name       string
	IsExchange bool
}

// Binding ties a destination to an exchange with a binding key and optional
// arguments (used by the headers kind). A matcher keeps a reference to Args:
// callers must not modify the map after Add.
type Binding struct {
	Dest Dest
	Key  string
	Args map[string]any
}

// Matcher is the routing index of one exchange.
type Matcher interface {
	// Add records b; it returns false if an identical binding (same dest, key
	// and equal args) already exists.
	Add(b Binding) bool
	// Remove deletes b; it returns false if no identical binding exists.
	Remove(b Binding) bool
	// Route appends matching destinations (each at most once per call) to out.
	Route(routingKey string, headers map[string]any, out []Dest) []Dest
	// Len is the number of bindings.
	Len() int
	// Bindings lists every binding in a deterministic order (for snapshots
	// and listings): by destination kind, destination name, key, then args.
	Bindings() []Binding
}

// NewMatcher returns an empty matcher for an exchange kind.
func NewMatcher(kind string) (Matcher, error) {
	switch kind {
	case KindDirect:
		return newDirect(), nil
	case KindFanout:
		return newFanout(), nil
	case KindTopic:
		return newTopic(), nil
	case KindHeaders:
		return newHeaders(), nil
	default:
		return nil, fmt.Errorf("exchange: unknown exchange kind %q", kind)
	}
}

// ValidKind reports whether NewMatcher accepts kind.
func ValidKind(kind string) bool {
	switch kind {
	case KindDirect, KindFanout, KindTopic, KindHeaders:
		return true
	}
	return false
}

// CompareDest orders destinations: queues before exchanges, then by name.
func CompareDest(a, b Dest) int {
	if a.IsExchange != b.IsExchange {
		if !a.IsExchange {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.Name, b.Name)
}

// bindingID identifies a binding up to argument equivalence: two bindings
// whose args differ only in integer width are the same binding.
type bindingID struct {
	dest Dest
	key  string
	args string
}

func idOf(b Binding) bindingID {
	return bindingID{dest: b.Dest, key: b.Key, args: CanonicalArgs(b.Args)}
}

// registry is the set of bindings of one matcher, shared by every kind so
// that duplicate detection and deterministic listing behave the same.
type registry struct {
	byID map[bindingID]Binding
}

func newRegistry() registry { return registry{byID: make(map[bindingID]Binding)} }

func (r *registry) add(b Binding) (bindingID, bool) {
	id := idOf(b)
	if _, ok := r.byID[id]; ok {
		return id, false
	}
	r.byID[id] = b
	return id, true
}

// remove returns the stored binding (whose Args are the ones the matcher
// indexed) so that kind-specific indexes can be updated consistently.
func (r *registry) remove(b Binding) (Binding, bindingID, bool) {
	id := idOf(b)
	stored, ok := r.byID[id]
	if !ok {
		return Binding{}, id, false
	}
	delete(r.byID, id)
	return stored, id, true
}

func (r *registry) len() int { return len(r.byID) }

func (r *registry) sorted() []Binding {
	ids := make([]bindingID, 0, len(r.byID))
	for id := range r.byID {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b bindingID) int {
		if c := CompareDest(a.dest, b.dest); c != 0 {
			return c
		}
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.args, b.args)
	})
	out := make([]Binding, len(ids))
	for i, id := range ids {
		out[i] = r.byID[id]
	}
	return out
}

// refDests is a multiset of destinations: several bindings (differing only
// in args, or topic patterns that collapse to the same trie path) can lead to
// one destination, which must still be delivered to once. Route reads dests
// directly, so it stays a plain slice; an index map is kept only once the set
// is large enough for linear search to hurt.
type refDests struct {
	dests  []Dest
	counts []int
	index  map[Dest]int
}

const refDestsIndexAt = 16

func (r *refDests) find(d Dest) int {
	if r.index != nil {
		if i, ok := r.index[d]; ok {
			return i
		}
		return -1
	}
	for i, x := range r.dests {
		if x == d {
			return i
		}
	}
	return -1
}

func (r *refDests) inc(d Dest) {
	if i := r.find(d); i >= 0 {
		r.counts[i]++
		return
	}
	r.dests = append(r.dests, d)
	r.counts = append(r.counts, 1)
	switch {
	case r.index != nil:
		r.index[d] = len(r.dests) - 1
	case len(r.dests) > refDestsIndexAt:
		r.index = make(map[Dest]int, len(r.dests))
		for i, x := range r.dests {
			r.index[x] = i
		}
	}
}

// dec returns false when d was not present. The last element moves into the
// freed slot, so the order depends only on the sequence of operations and is
// the same on every replica.
func (r *refDests) dec(d Dest) bool {
	i := r.find(d)
	if i < 0 {
		return false
	}
	r.counts[i]--
	if r.counts[i] > 0 {
		return true
	}
	last := len(r.dests) - 1
	if i != last {
		r.dests[i] = r.dests[last]
		r.counts[i] = r.counts[last]
		if r.index != nil {
			r.index[r.dests[i]] = i
		}
	}
	r.dests[last] = Dest{}
	r.dests = r.dests[:last]
	r.counts = r.counts[:last]
	if r.index != nil {
		delete(r.index, d)
	}
	return true
}

// smallDedupe is the size up to which a quadratic in-place dedupe beats
// sorting; both are allocation-free.
const smallDedupe = 24

// DedupeTail removes duplicate destinations from out[start:] in place,
// without allocating, and returns the shortened slice. Order is preserved
// for short tails; long tails come back sorted.
func DedupeTail(out []Dest, start int) []Dest {
	tail := out[start:]
	if len(tail) < 2 {
		return out
	}
	if len(tail) <= smallDedupe {
		n := 0
	next:
		for _, d := range tail {
			for _, kept := range tail[:n] {
				if kept == d {
					continue next
				}
			}
			tail[n] = d
			n++
		}
		return out[:start+n]
	}
	slices.SortFunc(tail, CompareDest)
	tail = slices.Compact(tail)
	return out[:start+len(tail)]
}
