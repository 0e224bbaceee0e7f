package queue

// consumerRing holds a queue's consumers in round-robin order: a circular doubly linked list
// whose cursor is the next consumer offered a message, and an index from consumer to its node.
// Adding or removing a consumer is O(1), so a connection with 100k consumers goes away in
// linear time, while dispatch still walks consumers in a fixed, fair order.
type consumerRing struct {
	next  *consumerSlot // the consumer offered the next message; nil when empty
	n     int
	index map[Consumer]*consumerSlot
}

type consumerSlot struct {
	c          Consumer
	noAck      bool
	prev, next *consumerSlot
}

func (r *consumerRing) len() int { return r.n }

// add puts c last in the current round: just before the cursor. A consumer added twice keeps
// its place and takes the newer noAck.
func (r *consumerRing) add(c Consumer, noAck bool) {
	if s, ok := r.index[c]; ok {
		s.noAck = noAck
		return
	}
	if r.index == nil {
		r.index = make(map[Consumer]*consumerSlot)
	}
	s := &consumerSlot{c: c, noAck: noAck}
	r.index[c] = s
	r.n++
	if r.next == nil {
		s.prev, s.next = s, s
		r.next = s
		return
	}
	s.next, s.prev = r.next, r.next.prev
	s.prev.next = s
	r.next.prev = s
}

// remove takes c out, keeping the order of the others; the cursor moves on if it pointed at c.
func (r *consumerRing) remove(c Consumer) bool {
	s, ok := r.index[c]
	if !ok {
		return false
	}
	delete(r.index, c)
	r.n--
	if r.n == 0 {
		r.next = nil
	} else {
		if r.next == s {
			r.next = s.next
		}
		s.prev.next = s.next
		s.next.prev = s.prev
	}
	s.prev, s.next = nil, nil
	return true
}

// takeAll empties the ring and returns its consumers in round-robin order.
func (r *consumerRing) takeAll() []Consumer {
	out := make([]Consumer, 0, r.n)
	for i, s := 0, r.next; i < r.n; i, s = i+1, s.next {
		out = append(out, s.c)
	}
	*r = consumerRing{}
	return out
}
