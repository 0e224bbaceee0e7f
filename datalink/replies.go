package datalink

import "sync"

// Publish replies leave the owner in publish order: the Handler may answer a later publish
// first (its queue needed no fsync, another did), but the publisher's node turns replies into
// AMQP confirms and must be able to rely on their order, so an early answer waits in its slot
// until every earlier one is in.

type replySlot struct {
	reqID    uint64
	done     bool
	rejected bool
	errCode  uint16
	errText  string
	body     []byte
	hasBody  bool
}

// replyQueue holds the publish replies not yet sent, oldest first. Slot numbers count every
// publish on the link; base is the number of slots[head].
type replyQueue struct {
	slots []replySlot
	head  int
	base  uint64
	next  uint64
}

func (q *replyQueue) push(reqID uint64) uint64 {
	slot := q.next
	q.next++
	q.slots = append(q.slots, replySlot{reqID: reqID})
	return slot
}

func (q *replyQueue) at(slot uint64) *replySlot {
	if slot < q.base {
		return nil
	}
	i := uint64(q.head) + (slot - q.base)
	if i >= uint64(len(q.slots)) {
		return nil
	}
	return &q.slots[i]
}

// popReady hands every answered slot at the head to emit, in order.
func (q *replyQueue) popReady(emit func(*replySlot)) {
	for q.head < len(q.slots) && q.slots[q.head].done {
		emit(&q.slots[q.head])
		q.slots[q.head] = replySlot{}
		q.head++
		q.base++
	}
	switch {
	case q.head == len(q.slots):
		q.slots = q.slots[:0]
		q.head = 0
	case q.head >= 1024 && q.head*2 >= len(q.slots):
		n := copy(q.slots, q.slots[q.head:])
		q.slots = q.slots[:n]
		q.head = 0
	}
}

func (sl *serverLink) reservePublish(reqID uint64) uint64 {
	sl.l.mu.Lock()
	defer sl.l.mu.Unlock()
	return sl.replies.push(reqID)
}

// replyFunc returns the Handler's reply callback for one publish; calls after the first are
// ignored, as are calls after the link broke (the publisher already got ErrLinkDown).
func (sl *serverLink) replyFunc(slot uint64) func(rejected bool, err error) {
	return func(rejected bool, err error) { sl.answer(slot, rejected, nil, false, err) }
}

// replicaReply answers a replication request as soon as the Handler does, outside the
// publishes' reply order (flagReplicaAck); calls after the first are ignored.
func (sl *serverLink) replicaReply(reqID uint64) func(body []byte, err error) {
	var once sync.Once
	return func(body []byte, err error) {
		once.Do(func() {
			f := frame{typ: framePublishReply, reqID: reqID, flags: flagReplicaAck}
			f.errCode, f.errText = toRemoteError(err)
			if f.errCode == 0 && f.errText == "" && body != nil {
				f.flags |= flagReplyBody
				f.msg = body
			}
			sl.sendControl(&f)
		})
	}
}

func (sl *serverLink) answer(slot uint64, rejected bool, body []byte, hasBody bool, err error) {
	l := sl.l
	if l.acquire(sendControl, nil) != nil {
		return
	}
	s := sl.replies.at(slot)
	if s == nil || s.done {
		l.mu.Unlock()
		return
	}
	s.done, s.rejected, s.body, s.hasBody = true, rejected, body, hasBody
	s.errCode, s.errText = toRemoteError(err)
	sl.replies.popReady(func(s *replySlot) {
		f := frame{typ: framePublishReply, reqID: s.reqID, errCode: s.errCode, errText: s.errText}
		if s.rejected {
			f.flags = flagRejected
		}
		if s.hasBody && s.errCode == 0 && s.errText == "" {
			f.flags |= flagReplyBody
			f.msg = s.body
		}
		l.out = appendFrame(l.out, &f)
	})
	l.release()
}
