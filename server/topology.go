package server

import (
	"errors"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/exchange"
	"github.com/warrenmq/warren/fsm"
	"github.com/warrenmq/warren/queue"
	"github.com/warrenmq/warren/wire"
)

// encodeArgs turns a decoded argument table back into the canonical bytes the FSM stores
// (keys sorted, so equal tables give equal commands on every node).
func encodeArgs(t wire.Table) []byte {
	if len(t) == 0 {
		return nil
	}
	return wire.AppendTable(nil, t)
}

func (ch *channel) exchangeDeclare(m *wire.ExchangeDeclare) error {
	c := ch.c
	if m.Passive {
		if _, ok := c.s.node.FSM().Exchange(c.vhost, m.Exchange); !ok {
			return fsm.NoExchange(c.vhost, m.Exchange)
		}
		if !m.NoWait {
			c.sendMethod(ch.id, &wire.ExchangeDeclareOk{})
		}
		return nil
	}
	if m.Exchange == "" {
		return fsm.DefaultExchangeRefused()
	}
	if _, err := exchange.NewMatcher(m.Type); err != nil {
		return fsm.UnknownExchangeType(m.Type)
	}
	if err := c.permitted(permConfigure, "exchange", m.Exchange); err != nil {
		return err
	}
	if err := c.permitArgExchange("exchange", m.Exchange, m.Arguments); err != nil {
		return err
	}
	cmd := fsm.DeclareExchange{
		Vhost: c.vhost, Name: m.Exchange, Kind: m.Type, Durable: m.Durable,
		AutoDelete: m.AutoDelete, Internal: m.Internal, Args: encodeArgs(m.Arguments),
	}
	// An equal re-declare changes nothing: answered from the local replica (no Raft round trip,
	// and it works on a node that has lost its majority).
	if _, same := c.s.node.FSM().Redeclare(cmd); !same {
		if _, err := c.s.node.Apply(cmd); err != nil {
			return err
		}
	}
	if !m.NoWait {
		c.sendMethod(ch.id, &wire.ExchangeDeclareOk{})
	}
	return nil
}

func (ch *channel) exchangeDelete(m *wire.ExchangeDelete) error {
	c := ch.c
	if m.Exchange == "" {
		return fsm.DefaultExchangeRefused()
	}
	if err := c.permitted(permConfigure, "exchange", m.Exchange); err != nil {
		return err
	}
	if _, err := c.s.node.Apply(fsm.DeleteExchange{Vhost: c.vhost, Name: m.Exchange, IfUnused: m.IfUnused}); err != nil {
		return err
	}
	if !m.NoWait {
		c.sendMethod(ch.id, &wire.ExchangeDeleteOk{})
	}
	return nil
}

func (ch *channel) queueDeclare(m *wire.QueueDeclare) error {
	c := ch.c
	name := m.Queue
	if m.Passive && (name == broker.ReplyToQueue || broker.IsReplyName(name)) {
		return ch.declareReplyPassive(m)
	}
	if m.Passive {
		qd, ok := c.s.node.FSM().Queue(c.vhost, name)
		if !ok {
			return fsm.NoQueue(c.vhost, name)
		}
		if qd.Exclusive && qd.ExclusiveConn != c.id {
			return fsm.QueueLocked(c.vhost, name)
		}
		return ch.declareOk(m.NoWait, name)
	}
	args := ch.withDefaultQueueType(m)
	replicated := broker.StringArg(args, "x-queue-type") == fsm.QueueTypeQuorum
	if name == "" {
		if replicated {
			return errorf(wire.PreconditionFailed, "Cannot declare a server-named queue for type rabbit_quorum_queue")
		}
		name = "amq.gen-" + randomName()
	} else if err := fsm.CheckQueueName(name); err != nil {
		return err
	}
	if err := c.permitted(permConfigure, "queue", name); err != nil {
		return err
	}
	if err := c.permitArgExchange("queue", name, m.Arguments); err != nil {
		return err
	}
	cmd := fsm.DeclareQueue{
		Vhost: c.vhost, Name: name, Durable: m.Durable, Exclusive: m.Exclusive,
		AutoDelete: m.AutoDelete, Args: encodeArgs(args), Owner: c.s.node.ID(),
	}
	if m.Exclusive {
		cmd.ExclusiveConn = c.id
		c.hasExclusive = true
	} else if m.Queue != "" && balancedPlacement(args) {
		// Exclusive and server-named queues always stay on the client's node.
		cmd.Owner = c.s.node.BalancedOwner()
	}
	if replicated {
		size := int64(fsm.DefaultReplicas)
		if v, ok := broker.IntArg(args, "x-quorum-initial-group-size"); ok && v > 0 {
			size = min(v, 64)
		}
		if _, exists := c.s.node.FSM().Queue(c.vhost, name); !exists {
			cmd.Replicas = c.s.node.ReplicaSet(cmd.Owner, int(size))
		}
	}
	res, same := c.s.node.FSM().Redeclare(cmd)
	if !same {
		var err error
		if res, err = c.s.node.Apply(cmd); err != nil {
			return err
		}
	}
	if !res.Created {
		if q := c.s.node.LocalQueue(c.vhost, name); q != nil {
			q.Touch()
		}
	}
	return ch.declareOk(m.NoWait, name)
}

// withDefaultQueueType adds x-queue-type: quorum to the arguments of a queue that
// --default-queue-type quorum makes replicated (durable, not exclusive, not auto-delete,
// client-named, no x-queue-type of its own).
func (ch *channel) withDefaultQueueType(m *wire.QueueDeclare) wire.Table {
	if ch.c.s.cfg.DefaultQueueType != fsm.QueueTypeQuorum || !m.Durable || m.Exclusive || m.AutoDelete || m.Queue == "" {
		return m.Arguments
	}
	if _, set := m.Arguments["x-queue-type"]; set {
		return m.Arguments
	}
	args := make(wire.Table, len(m.Arguments)+1)
	for k, v := range m.Arguments {
		args[k] = v
	}
	args["x-queue-type"] = fsm.QueueTypeQuorum
	return args
}

// balancedPlacement reads RabbitMQ 3.10's placement arguments: x-queue-leader-locator
// "balanced" (or, absent that, the classic x-queue-master-locator "min-masters" or "random")
// places the queue on the live node with the fewest queues; "client-local", the default,
// on the node the client is connected to. x-queue-leader-locator wins when both are given.
func balancedPlacement(args wire.Table) bool {
	if l := broker.StringArg(args, "x-queue-leader-locator"); l != "" {
		return l == "balanced"
	}
	switch broker.StringArg(args, "x-queue-master-locator") {
	case "min-masters", "random":
		return true
	}
	return false
}

func (ch *channel) declareOk(noWait bool, name string) error {
	ch.lastQueue = name
	if noWait {
		return nil
	}
	var ready, consumers int
	if q := ch.c.s.node.LocalQueue(ch.c.vhost, name); q != nil {
		ready, _, consumers = q.Counts()
	}
	ch.c.sendMethod(ch.id, &wire.QueueDeclareOk{Queue: name, MessageCount: uint32(ready), ConsumerCount: uint32(consumers)})
	return nil
}

// bind handles queue.bind/unbind and exchange.bind/unbind.
func (ch *channel) bind(dest string, destIsExchange bool, source, key string, args wire.Table, noWait, unbind bool) error {
	c := ch.c
	if source == "" || (destIsExchange && dest == "") {
		return fsm.DefaultExchangeRefused()
	}
	destKind := "queue"
	if destIsExchange {
		destKind = "exchange"
	}
	if err := c.permitted(permWrite, destKind, dest); err != nil {
		return err
	}
	if err := c.permitted(permRead, "exchange", source); err != nil {
		return err
	}
	d := exchange.Dest{Name: dest, IsExchange: destIsExchange}
	var err error
	if unbind {
		_, err = c.s.node.Apply(fsm.Unbind{Vhost: c.vhost, Source: source, Dest: d, Key: key, Args: encodeArgs(args), Conn: c.id})
	} else {
		cmd := fsm.Bind{Vhost: c.vhost, Source: source, Dest: d, Key: key, Args: encodeArgs(args), Conn: c.id}
		if _, same := c.s.node.FSM().Redeclare(cmd); !same {
			_, err = c.s.node.Apply(cmd)
		}
	}
	if err != nil {
		return err
	}
	switch {
	case unbind && destIsExchange:
		if !noWait {
			c.sendMethod(ch.id, &wire.ExchangeUnbindOk{})
		}
	case unbind:
		c.sendMethod(ch.id, &wire.QueueUnbindOk{})
	case destIsExchange:
		if !noWait {
			c.sendMethod(ch.id, &wire.ExchangeBindOk{})
		}
	default:
		if !noWait {
			c.sendMethod(ch.id, &wire.QueueBindOk{})
		}
	}
	return nil
}

// lookupQueue finds a queue this node serves, checking exclusivity like RabbitMQ.
func (c *conn) lookupQueue(name string) (*queue.Queue, error) {
	q, qd, err := c.lookupAnyQueue(name)
	if err == nil && q == nil {
		return nil, errorf(wire.NotFound, "queue '%s' in vhost '%s' is owned by node '%s', which does not serve it here", name, c.vhost, qd.Owner)
	}
	return q, err
}

// lookupAnyQueue finds a queue wherever it lives: q is nil when another node owns it (qd says
// which).
func (c *conn) lookupAnyQueue(name string) (*queue.Queue, fsm.Queue, error) {
	qd, ok := c.s.node.FSM().Queue(c.vhost, name)
	if !ok {
		return nil, qd, fsm.NoQueue(c.vhost, name)
	}
	if qd.Exclusive && qd.ExclusiveConn != c.id {
		return nil, qd, fsm.QueueLocked(c.vhost, name)
	}
	q := c.s.node.LocalQueue(c.vhost, name)
	if q == nil && qd.Owner != c.s.node.ID() {
		return nil, qd, nil
	}
	if q == nil {
		// Owned here by the FSM, but its queue object is gone (being deleted meanwhile).
		return nil, qd, fsm.NoQueue(c.vhost, name)
	}
	return q, qd, nil
}

func (ch *channel) queuePurge(m *wire.QueuePurge) error {
	if err := ch.c.permitted(permRead, "queue", m.Queue); err != nil {
		return err
	}
	q, qd, err := ch.c.lookupAnyQueue(m.Queue)
	if err != nil {
		return err
	}
	var n int
	if q != nil {
		n = q.Purge()
	} else if n, err = ch.purgeRemote(qd); err != nil {
		return err
	}
	if !m.NoWait {
		ch.c.sendMethod(ch.id, &wire.QueuePurgeOk{MessageCount: uint32(n)})
	}
	return nil
}

func (ch *channel) queueDelete(m *wire.QueueDelete) error {
	c := ch.c
	if err := c.permitted(permConfigure, "queue", m.Queue); err != nil {
		return err
	}
	qd, ok := c.s.node.FSM().Queue(c.vhost, m.Queue)
	if !ok {
		// RabbitMQ 3.10 answers delete-ok for a queue that does not exist.
		if !m.NoWait {
			c.sendMethod(ch.id, &wire.QueueDeleteOk{})
		}
		return nil
	}
	if qd.Exclusive && qd.ExclusiveConn != c.id {
		return fsm.QueueLocked(c.vhost, m.Queue)
	}
	var count int
	if q := c.s.node.LocalQueue(c.vhost, m.Queue); q != nil {
		if err := q.CheckDelete(m.IfUnused, m.IfEmpty); err != nil {
			if errors.Is(err, queue.ErrInUse) {
				return fsm.InUse("queue", c.vhost, m.Queue)
			}
			return fsm.QueueNotEmpty(c.vhost, m.Queue)
		}
		count, _, _ = q.Counts()
	}
	if _, err := c.s.node.Apply(fsm.DeleteQueue{Vhost: c.vhost, Name: m.Queue, ExclusiveConn: c.id}); err != nil {
		return err
	}
	if !m.NoWait {
		c.sendMethod(ch.id, &wire.QueueDeleteOk{MessageCount: uint32(count)})
	}
	return nil
}
