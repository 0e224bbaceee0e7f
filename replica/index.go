package replica

import "sort"

// Index maps the identities of the messages one replica of a queue holds to their ids in the
// node's message store. Both grow together (a replica stores messages in identity order), so
// two parallel sorted slices serve lookups either way by binary search, at 17 bytes a message.
// Not safe for concurrent use.
type Index struct {
	idents []Ident
	ids    []uint64
	dead   []bool
	gone   int
	last   Ident // the newest identity ever added (or the truncation point): the replica's position
}

// Add records that ident is stored under id; both must exceed everything added before.
// It reports false (and records nothing) otherwise.
func (x *Index) Add(ident Ident, id uint64) bool {
	if ident <= x.last || len(x.ids) > 0 && id <= x.ids[len(x.ids)-1] {
		return false
	}
	x.idents = append(x.idents, ident)
	x.ids = append(x.ids, id)
	x.dead = append(x.dead, false)
	x.last = ident
	return true
}

// LastID is the newest store id of a live message (0: none).
func (x *Index) LastID() uint64 {
	for i := len(x.ids) - 1; i >= 0; i-- {
		if !x.dead[i] {
			return x.ids[i]
		}
	}
	return 0
}

// Last is the replica's position: the newest identity it received.
func (x *Index) Last() Ident { return x.last }

// Len counts live messages.
func (x *Index) Len() int { return len(x.idents) - x.gone }

// ID returns the store id of a live message.
func (x *Index) ID(ident Ident) (uint64, bool) {
	i := sort.Search(len(x.idents), func(i int) bool { return x.idents[i] >= ident })
	if i < len(x.idents) && x.idents[i] == ident && !x.dead[i] {
		return x.ids[i], true
	}
	return 0, false
}

// IdentOf returns the identity of a live message by store id.
func (x *Index) IdentOf(id uint64) (Ident, bool) {
	i := sort.Search(len(x.ids), func(i int) bool { return x.ids[i] >= id })
	if i < len(x.ids) && x.ids[i] == id && !x.dead[i] {
		return x.idents[i], true
	}
	return 0, false
}

// RemoveID forgets a message by store id and returns its identity.
func (x *Index) RemoveID(id uint64) (Ident, bool) {
	i := sort.Search(len(x.ids), func(i int) bool { return x.ids[i] >= id })
	if i >= len(x.ids) || x.ids[i] != id || x.dead[i] {
		return 0, false
	}
	ident := x.idents[i]
	x.kill(i) // may compact
	return ident, true
}

// Remove forgets a message by identity and returns its store id.
func (x *Index) Remove(ident Ident) (uint64, bool) {
	i := sort.Search(len(x.idents), func(i int) bool { return x.idents[i] >= ident })
	if i >= len(x.idents) || x.idents[i] != ident || x.dead[i] {
		return 0, false
	}
	id := x.ids[i]
	x.kill(i)
	return id, true
}

func (x *Index) kill(i int) {
	x.dead[i] = true
	x.gone++
	if x.gone > 1024 && x.gone*2 > len(x.idents) {
		x.compact()
	}
}

func (x *Index) compact() {
	j := 0
	for i := range x.idents {
		if !x.dead[i] {
			x.idents[j], x.ids[j], x.dead[j] = x.idents[i], x.ids[i], false
			j++
		}
	}
	x.idents, x.ids, x.dead, x.gone = x.idents[:j], x.ids[:j], x.dead[:j], 0
}

// Live lists the live identities up to and including upTo, ascending.
func (x *Index) Live(upTo Ident) []Ident {
	var out []Ident
	for i, id := range x.idents {
		if id > upTo {
			break
		}
		if !x.dead[i] {
			out = append(out, id)
		}
	}
	return out
}

// After returns the live entries with identities above after, ascending, at most max.
func (x *Index) After(after Ident, max int) (idents []Ident, ids []uint64) {
	i := sort.Search(len(x.idents), func(i int) bool { return x.idents[i] > after })
	for ; i < len(x.idents) && len(idents) < max; i++ {
		if !x.dead[i] {
			idents = append(idents, x.idents[i])
			ids = append(ids, x.ids[i])
		}
	}
	return idents, ids
}

// Truncate removes every live message up to upTo whose identity is not in keep (ascending)
// and returns their store ids; the position becomes upTo if it was beyond it.
func (x *Index) Truncate(upTo Ident, keep []Ident) []uint64 {
	var dropped []uint64
	k := 0
	for i, id := range x.idents {
		if id > upTo {
			break
		}
		for k < len(keep) && keep[k] < id {
			k++
		}
		if x.dead[i] || k < len(keep) && keep[k] == id {
			continue
		}
		dropped = append(dropped, x.ids[i])
		x.dead[i] = true
		x.gone++
	}
	// Messages above upTo were never committed under the new leader: drop them too.
	for i := len(x.idents) - 1; i >= 0 && x.idents[i] > upTo; i-- {
		if !x.dead[i] {
			dropped = append(dropped, x.ids[i])
			x.dead[i] = true
			x.gone++
		}
	}
	if x.last > upTo {
		x.last = upTo
	}
	x.compact()
	return dropped
}

// SetPosition moves the position forward (a follower that was told to truncate to a point
// beyond what it holds).
func (x *Index) SetPosition(p Ident) {
	if p > x.last {
		x.last = p
	}
}
