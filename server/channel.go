package server

import (
	"errors"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/datalink"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// channel is one AMQP channel. Fields without a comment belong to the connection's reader
// goroutine; mu guards what queues touch while dispatching to this channel's consumers.
type channel struct {
	c       *conn
	id      uint16
	closing bool // we sent channel.close; waiting for close-ok

	pending   publishState
	propsBuf  []byte // a publish's properties until its first body frame (reused)
	scratch   broker.Scratch
	lastQueue string // the queue an empty queue name means (RabbitMQ: last declared on this channel)

	confirm        bool
	publishSeq     uint64       // last publish sequence number in confirm mode
	ackPending     []uint64     // confirms earned, sent at the next flush
	durablePending atomic.Int64 // publishes whose confirm waits for the message store

	tx        bool
	txPublish []txPublish
	txSettle  []txSettle

	mu             sync.Mutex
	nextTag        uint64
	unacked        unackedList
	consumers      map[string]*consumer
	prefetch       int // basic.qos global=false: the limit new consumers get
	prefetchGlobal int // basic.qos global=true: the channel-wide limit
	flowActive     bool
	starved        map[*queue.Queue]struct{} // queues that found no credit here
	confirmsClosed bool                      // the channel closed: late disk confirms are dropped
	reply          *replyConsumer            // direct reply-to consumer (directreply.go)
	held           []heldDelivery            // remote deliveries over the global prefetch (globalprefetch.go)
}

type txPublish struct {
	exchange  string
	mandatory bool
	msg       *queue.Message
	headers   map[string]any
}

type txSettle struct {
	kind     uint8 // 0 ack, 1 reject/nack
	tag      uint64
	multiple bool
	requeue  bool
}

func newChannel(c *conn, id uint16) *channel {
	return &channel{c: c, id: id, consumers: make(map[string]*consumer), flowActive: true}
}

// run executes one method; a soft exception closes this channel only, a hard one the connection.
func (ch *channel) run(cls, mth uint16, f func() error) error {
	err := f()
	if err == nil {
		return nil
	}
	ae := asAMQPError(err)
	if ae.classID == 0 {
		ae.classID, ae.methodID = cls, mth
	}
	if wire.IsHardError(ae.code) && !ae.channelOnly {
		return ae
	}
	ch.c.log.Info("closing channel on error", "channel", ch.id, "code", ae.code, "text", ae.text)
	ch.closeWithError(ae)
	return nil
}

func (ch *channel) closeWithError(ae *amqpError) {
	ch.flushConfirms()
	ch.shutdown()
	ch.closing = true
	ch.c.sendMethod(ch.id, &wire.ChannelClose{ReplyCode: ae.code, ReplyText: truncate(ae.text), ClassId: ae.classID, MethodId: ae.methodID})
}

// shutdown cancels the channel's consumers and requeues its unacknowledged messages.
func (ch *channel) shutdown() {
	ch.abandonPublish()
	ch.dropReply()
	ch.mu.Lock()
	ch.confirmsClosed = true
	cons := make([]*consumer, 0, len(ch.consumers))
	for _, cs := range ch.consumers {
		cs.closed = true
		cons = append(cons, cs)
	}
	ch.consumers = make(map[string]*consumer)
	ch.held = nil
	all := ch.unacked.takeAll()
	ch.mu.Unlock()
	// Unacked remote deliveries go back first, then the subscriptions end.
	requeueByQueue(all, true)
	for _, cs := range cons {
		cs.leave()
	}
}

// handle runs every method except the hot publish/ack paths.
func (ch *channel) handle(m wire.Method) error {
	switch m := m.(type) {
	case *wire.ChannelClose:
		ch.shutdown()
		ch.c.sendMethod(ch.id, &wire.ChannelCloseOk{})
		ch.c.dropChannel(ch)
		return nil
	case *wire.ChannelCloseOk:
		return nil
	case *wire.ChannelOpen:
		return errorf(wire.ChannelError, "second 'channel.open' seen")
	case *wire.ChannelFlow:
		ch.mu.Lock()
		ch.flowActive = m.Active
		ch.mu.Unlock()
		ch.c.sendMethod(ch.id, &wire.ChannelFlowOk{Active: m.Active})
		if m.Active {
			ch.kickConsumers()
		}
		return nil
	case *wire.ChannelFlowOk:
		return nil

	case *wire.ExchangeDeclare:
		return ch.exchangeDeclare(m)
	case *wire.ExchangeDelete:
		return ch.exchangeDelete(m)
	case *wire.ExchangeBind:
		return ch.bind(m.Destination, true, m.Source, m.RoutingKey, m.Arguments, m.NoWait, false)
	case *wire.ExchangeUnbind:
		return ch.bind(m.Destination, true, m.Source, m.RoutingKey, m.Arguments, m.NoWait, true)
	case *wire.QueueDeclare:
		return ch.queueDeclare(m)
	case *wire.QueueBind:
		if err := ch.defaultQueue(&m.Queue); err != nil {
			return err
		}
		return ch.bind(m.Queue, false, m.Exchange, m.RoutingKey, m.Arguments, m.NoWait, false)
	case *wire.QueueUnbind:
		if err := ch.defaultQueue(&m.Queue); err != nil {
			return err
		}
		return ch.bind(m.Queue, false, m.Exchange, m.RoutingKey, m.Arguments, false, true)
	case *wire.QueuePurge:
		if err := ch.defaultQueue(&m.Queue); err != nil {
			return err
		}
		return ch.queuePurge(m)
	case *wire.QueueDelete:
		if err := ch.defaultQueue(&m.Queue); err != nil {
			return err
		}
		return ch.queueDelete(m)

	case *wire.BasicQos:
		return ch.qos(m)
	case *wire.BasicConsume:
		if err := ch.defaultQueue(&m.Queue); err != nil {
			return err
		}
		return ch.consume(m)
	case *wire.BasicCancel:
		return ch.cancel(m)
	case *wire.BasicPublish:
		return ch.startPublish(m)
	case *wire.BasicGet:
		if err := ch.defaultQueue(&m.Queue); err != nil {
			return err
		}
		return ch.get(m)
	case *wire.BasicAck:
		return ch.ack(m.DeliveryTag, m.Multiple)
	case *wire.BasicReject:
		return ch.reject(m.DeliveryTag, false, m.Requeue)
	case *wire.BasicNack:
		return ch.reject(m.DeliveryTag, m.Multiple, m.Requeue)
	case *wire.BasicRecover:
		ch.recover()
		ch.c.sendMethod(ch.id, &wire.BasicRecoverOk{})
		return nil
	case *wire.BasicRecoverAsync:
		ch.recover()
		return nil

	case *wire.ConfirmSelect:
		if ch.tx {
			return errorf(wire.PreconditionFailed, "cannot switch from tx to confirm mode")
		}
		ch.confirm = true
		if !m.Nowait {
			ch.c.sendMethod(ch.id, &wire.ConfirmSelectOk{})
		}
		return nil
	case *wire.TxSelect:
		if ch.confirm {
			return errorf(wire.PreconditionFailed, "cannot switch from confirm to tx mode")
		}
		ch.tx = true
		ch.c.sendMethod(ch.id, &wire.TxSelectOk{})
		return nil
	case *wire.TxCommit:
		if !ch.tx {
			return errorf(wire.PreconditionFailed, "channel is not transactional")
		}
		if err := ch.commit(); err != nil {
			return err
		}
		ch.c.sendMethod(ch.id, &wire.TxCommitOk{})
		return nil
	case *wire.TxRollback:
		if !ch.tx {
			return errorf(wire.PreconditionFailed, "channel is not transactional")
		}
		ch.txPublish, ch.txSettle = nil, nil
		ch.c.sendMethod(ch.id, &wire.TxRollbackOk{})
		return nil
	}
	return &amqpError{code: wire.NotImplemented, text: "NOT_IMPLEMENTED - method " + m.Name() + " is not implemented",
		classID: m.ClassID(), methodID: m.MethodID()}
}

// defaultQueue replaces an empty queue name with the channel's last declared queue.
func (ch *channel) defaultQueue(name *string) error {
	if *name != "" {
		return nil
	}
	if ch.lastQueue == "" {
		return errorf(wire.NotFound, "no previously declared queue")
	}
	*name = ch.lastQueue
	return nil
}

// unackedMsg is one delivery awaiting ack on this channel.
type unackedMsg struct {
	tag      uint64
	cons     *consumer         // nil for basic.get
	q        *queue.Queue      // nil for a delivery from another node's queue
	rsub     *broker.RemoteSub // that delivery's subscription
	rseq     uint64            // and its owner-side sequence number
	settled  queue.Settled
	tombnote bool // settled out of order; removed when it reaches the front
}

// unackedList keeps deliveries in tag order: acks in order pop the front in O(1), an ack out of
// order is found by binary search and leaves a tombstone.
type unackedList struct {
	items []unackedMsg
	head  int
	live  int
}

func (l *unackedList) push(u unackedMsg) {
	if l.head > 0 && l.head == len(l.items) {
		l.items, l.head = l.items[:0], 0
	}
	l.items = append(l.items, u)
	l.live++
}

func (l *unackedList) compactFront() {
	for l.head < len(l.items) && l.items[l.head].tombnote {
		l.items[l.head] = unackedMsg{}
		l.head++
	}
	if l.head == len(l.items) {
		l.items, l.head = l.items[:0], 0
	} else if l.head > 1024 && l.head > len(l.items)/2 {
		n := copy(l.items, l.items[l.head:])
		clear(l.items[n:])
		l.items, l.head = l.items[:n], 0
	}
}

// take removes the delivery with tag (multiple: every delivery up to tag) and appends them to out.
func (l *unackedList) take(tag uint64, multiple bool, out []unackedMsg) ([]unackedMsg, bool) {
	live := l.items[l.head:]
	if multiple {
		found := false
		i := 0
		for ; i < len(live) && live[i].tag <= tag; i++ {
			if !live[i].tombnote {
				out = append(out, live[i])
				live[i].tombnote = true
				l.live--
				found = true
			}
		}
		l.compactFront()
		return out, found || tag == 0
	}
	i := sort.Search(len(live), func(i int) bool { return live[i].tag >= tag })
	if i == len(live) || live[i].tag != tag || live[i].tombnote {
		return out, false
	}
	out = append(out, live[i])
	live[i].tombnote = true
	l.live--
	l.compactFront()
	return out, true
}

func (l *unackedList) takeAll() []unackedMsg {
	var out []unackedMsg
	for _, u := range l.items[l.head:] {
		if !u.tombnote {
			out = append(out, u)
		}
	}
	l.items, l.head, l.live = nil, 0, 0
	return out
}

// releaseLocked returns credit for settled deliveries; ch.mu must be held.
func (ch *channel) releaseLocked(msgs []unackedMsg) {
	for i := range msgs {
		if cs := msgs[i].cons; cs != nil {
			cs.unacked--
		}
	}
	ch.releaseHeldLocked()
}

// requeueByQueue returns messages to their queues (requeue) or drops/dead-letters them.
func requeueByQueue(msgs []unackedMsg, requeue bool) {
	if len(msgs) == 0 {
		return
	}
	kind := datalink.SettleReject
	if requeue {
		kind = datalink.SettleRequeue
	}
	settleRemote(msgs, kind)
	byQueue := make(map[*queue.Queue][]queue.Settled)
	order := make([]*queue.Queue, 0, 1)
	for _, u := range msgs {
		if u.q == nil {
			continue
		}
		if _, ok := byQueue[u.q]; !ok {
			order = append(order, u.q)
		}
		byQueue[u.q] = append(byQueue[u.q], u.settled)
	}
	for _, q := range order {
		if requeue {
			q.Requeue(byQueue[q])
		} else {
			q.Reject(byQueue[q])
		}
	}
}

var errUnknownTag = errors.New("unknown delivery tag")
