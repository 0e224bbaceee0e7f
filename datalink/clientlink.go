package datalink

import (
	"fmt"
)

// clientLink is the client-side state of one connection of a Peer.
type clientLink struct {
	p        *Peer
	l        *link
	remoteID string

	// Guarded by l.mu, so that registering a request and queueing its frame are one step
	// and requests are numbered in wire order.
	nextReq   uint64
	publishes []pendingPublish // awaiting replies, oldest first (the owner answers in order)
	pubHead   int
	requests  map[uint64]*pendingRequest // consume and get
	replicas  map[uint64]pendingPublish  // replication requests sent, answered out of order
	flushed   bool                       // the link failed and every callback has been called
}

type pendingPublish struct {
	reqID uint64
	done  func(rejected bool, err error)
	// replied, for a replication request, gets the reply's body (a copy) instead of done.
	replied func(body []byte, err error)
	unsent  bool // queued on a link that had already failed: never written
}

func (pp pendingPublish) fail(err error) {
	if pp.replied != nil {
		pp.replied(nil, err)
		return
	}
	pp.done(false, err)
}

type pendingRequest struct {
	consumerID uint64 // consume
	isGet      bool
	queue      string // get
	noAck      bool   // get
	abandoned  bool   // get whose caller gave up: requeue a late message
	ch         chan requestResult
}

type requestResult struct {
	d   Delivery
	ok  bool
	err error
}

// sendControl queues a frame that ignores the buffer limit; false if the link is down.
func (cl *clientLink) sendControl(f *frame) bool {
	if cl.l.acquire(sendControl, nil) != nil {
		return false
	}
	cl.l.out = appendFrame(cl.l.out, f)
	cl.l.release()
	return true
}

// sendRequest numbers f, registers req for its reply and queues f; false if the link is down.
func (cl *clientLink) sendRequest(f *frame, req *pendingRequest) bool {
	if cl.l.acquire(sendControl, nil) != nil {
		return false
	}
	f.reqID = cl.nextReq
	cl.nextReq++
	cl.requests[f.reqID] = req
	cl.l.out = appendFrame(cl.l.out, f)
	cl.l.release()
	return true
}

// abandon marks a get whose caller stopped waiting; false if its reply is already out.
func (cl *clientLink) abandon(reqID uint64, req *pendingRequest) bool {
	cl.l.mu.Lock()
	defer cl.l.mu.Unlock()
	if cl.requests[reqID] != req {
		return false
	}
	req.abandoned = true
	return true
}

func (cl *clientLink) settle(consumerID uint64, queue string, kind SettleKind, seqs []uint64) {
	for len(seqs) > 0 {
		n := min(len(seqs), maxSeqsPerFrame)
		if !cl.sendControl(&frame{typ: frameSettle, consumerID: consumerID, kind: kind, queue: queue, seqs: seqs[:n]}) {
			return
		}
		seqs = seqs[n:]
	}
}

// publishOnBrokenLink handles a publish that found the link failed. Until the reader has
// called every earlier callback, done joins that queue, so callbacks keep publish order even
// on failure; afterwards the caller reports the error itself.
func (cl *clientLink) publishOnBrokenLink(pp pendingPublish) error {
	cl.l.mu.Lock()
	if cl.flushed {
		cl.l.mu.Unlock()
		// linkDownError reads the link's cause under the same lock: not while holding it.
		return cl.p.linkDownError(cl)
	}
	cl.publishes = append(cl.publishes, pp)
	cl.l.mu.Unlock()
	return nil
}

func (cl *clientLink) popPublish() (pendingPublish, bool) {
	cl.l.mu.Lock()
	defer cl.l.mu.Unlock()
	return cl.popPublishLocked()
}

func (cl *clientLink) popPublishLocked() (pendingPublish, bool) {
	if cl.pubHead == len(cl.publishes) {
		return pendingPublish{}, false
	}
	pp := cl.publishes[cl.pubHead]
	cl.publishes[cl.pubHead] = pendingPublish{}
	cl.pubHead++
	switch {
	case cl.pubHead == len(cl.publishes):
		cl.publishes = cl.publishes[:0]
		cl.pubHead = 0
	case cl.pubHead >= 1024 && cl.pubHead*2 >= len(cl.publishes):
		n := copy(cl.publishes, cl.publishes[cl.pubHead:])
		cl.publishes = cl.publishes[:n]
		cl.pubHead = 0
	}
	return pp, true
}

// flushPending fails every outstanding request once the link is dead. Publish callbacks are
// called one at a time, in order, each after the previous returned; flushed is set only when
// none is left, so a publish racing with the failure cannot report before an earlier one.
func (cl *clientLink) flushPending(err error) {
	for {
		cl.l.mu.Lock()
		pp, ok := cl.popPublishLocked()
		if !ok {
			cl.flushed = true
			reqs := cl.requests
			cl.requests = nil
			repls := cl.replicas
			cl.replicas = nil
			cl.l.mu.Unlock()
			for _, req := range reqs {
				req.ch <- requestResult{err: err}
			}
			for _, pp := range repls {
				pp.fail(err)
			}
			return
		}
		cl.l.mu.Unlock()
		if pp.unsent {
			pp.fail(fmt.Errorf("%w: %w", ErrNotSent, err))
			continue
		}
		pp.fail(err)
	}
}

func remoteErr(f *frame) error {
	if f.errCode == 0 && f.errText == "" {
		return nil
	}
	return &RemoteError{Code: f.errCode, Text: f.errText}
}

// readLoop runs on the Peer's supervisor goroutine and dispatches the owner's frames.
func (cl *clientLink) readLoop(fr *frameReader) error {
	var f frame
	p := cl.p
	for {
		if err := nextFrame(fr, &f, nil); err != nil {
			return fmt.Errorf("datalink: read from %s: %w", cl.remoteID, err)
		}
		switch f.typ {
		case frameHeartbeat:
		case framePublishReply:
			if f.flags&flagReplicaAck != 0 {
				cl.l.mu.Lock()
				pp, ok := cl.replicas[f.reqID]
				delete(cl.replicas, f.reqID)
				cl.l.mu.Unlock()
				if !ok {
					return fmt.Errorf("%w: %s answered replication request %d nobody waits for", errProtocol, cl.remoteID, f.reqID)
				}
				var body []byte
				if f.flags&flagReplyBody != 0 {
					body = append([]byte(nil), f.msg...)
				}
				pp.replied(body, remoteErr(&f))
				continue
			}
			pp, ok := cl.popPublish()
			if !ok {
				return fmt.Errorf("%w: %s sent a publish reply nobody waits for", errProtocol, cl.remoteID)
			}
			if pp.reqID != f.reqID {
				pp.fail(fmt.Errorf("%w: reply out of order", ErrLinkDown))
				return fmt.Errorf("%w: %s answered publish %d, expected %d", errProtocol, cl.remoteID, f.reqID, pp.reqID)
			}
			if pp.replied != nil {
				var body []byte
				if f.flags&flagReplyBody != 0 {
					body = append([]byte(nil), f.msg...)
				}
				pp.replied(body, remoteErr(&f))
				continue
			}
			pp.done(f.flags&flagRejected != 0, remoteErr(&f))
		case frameConsumeReply:
			cl.consumeReplied(&f)
		case frameGetReply:
			cl.getReplied(&f)
		case frameDeliver:
			cl.delivered(&f)
		case frameCancelled:
			p.mu.Lock()
			c := p.consumers[f.consumerID]
			notify := c != nil && c.cl == cl && c.state != consumerCancelling
			if c != nil && c.cl == cl {
				delete(p.consumers, f.consumerID)
			}
			p.mu.Unlock()
			if notify {
				p.events.ConsumerCancelled(f.consumerID)
			}
		case frameCancelOk:
			p.mu.Lock()
			if c := p.consumers[f.consumerID]; c != nil && c.cl == cl && c.state == consumerCancelling {
				delete(p.consumers, f.consumerID)
			}
			p.mu.Unlock()
		default:
			return fmt.Errorf("%w: %s sent frame type %d", errProtocol, cl.remoteID, f.typ)
		}
	}
}

func (cl *clientLink) takeRequest(reqID uint64) (*pendingRequest, bool) {
	cl.l.mu.Lock()
	defer cl.l.mu.Unlock()
	req := cl.requests[reqID]
	delete(cl.requests, reqID)
	if req == nil {
		return nil, false
	}
	return req, req.abandoned
}

func (cl *clientLink) consumeReplied(f *frame) {
	req, _ := cl.takeRequest(f.reqID)
	if req == nil || req.isGet {
		cl.l.log.Warn("datalink: unexpected consume reply", "req", f.reqID)
		return
	}
	err := remoteErr(f)
	p := cl.p
	p.mu.Lock()
	if c := p.consumers[req.consumerID]; c != nil && c.cl == cl && c.state == consumerPending {
		if err != nil {
			delete(p.consumers, req.consumerID)
		} else {
			c.state = consumerActive
		}
	}
	p.mu.Unlock()
	req.ch <- requestResult{err: err}
}

func (cl *clientLink) getReplied(f *frame) {
	req, abandoned := cl.takeRequest(f.reqID)
	if req == nil || !req.isGet {
		cl.l.log.Warn("datalink: unexpected get reply", "req", f.reqID)
		return
	}
	ok := f.flags&flagOK != 0
	if abandoned {
		if ok && !req.noAck {
			cl.settle(GetConsumerID, req.queue, SettleRequeue, []uint64{f.seq})
		}
		return
	}
	r := requestResult{err: remoteErr(f), ok: ok}
	if ok {
		r.d = Delivery{Seq: f.seq, Redelivered: f.flags&flagRedelivered != 0, Remaining: f.n, Msg: f.msg}
	} else {
		r.d.Remaining = f.n
	}
	req.ch <- r
}

func (cl *clientLink) delivered(f *frame) {
	p := cl.p
	p.mu.Lock()
	c := p.consumers[f.consumerID]
	if c != nil && c.cl != cl {
		c = nil
	}
	var state consumerState
	var queue string
	var noAck bool
	if c != nil {
		state, queue, noAck = c.state, c.queue, c.noAck
	}
	p.mu.Unlock()
	switch {
	case c == nil:
		cl.l.log.Debug("datalink: delivery for unknown consumer dropped", "consumer", f.consumerID)
	case state == consumerCancelling:
		// In flight when we cancelled: give it back rather than to a consumer that is gone.
		if !noAck {
			cl.settle(f.consumerID, queue, SettleRequeue, []uint64{f.seq})
		}
	default:
		p.events.Delivered(f.consumerID, Delivery{
			Seq:         f.seq,
			Redelivered: f.flags&flagRedelivered != 0,
			Remaining:   f.n,
			Msg:         f.msg,
		})
	}
}
