package fsm

import (
	"cmp"
	"log/slog"
	"slices"
	"strings"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/exchange"
)

// applyCtx collects what one command did, for the Result and the observer.
type applyCtx struct {
	res    Result
	events []Event
}

// Apply implements raft.FSM. It returns a Result value.
func (f *FSM) Apply(l *raft.Log) any {
	c, err := Decode(l.Data)
	if err != nil {
		// Every replica fails the same way on the same bytes, so the state
		// stays identical; the index still advances.
		slog.Error("fsm: undecodable raft log entry", "index", l.Index, "err", err)
		f.mu.Lock()
		f.applied = l.Index
		f.mu.Unlock()
		return Result{Err: refuse(CodeInternalError, "undecodable command: %v", err)}
	}
	return f.ApplyCommand(l.Index, c)
}

// ApplyCommand is the pure state transition for one command at a raft index.
// A refused command changes nothing but the applied index.
func (f *FSM) ApplyCommand(index uint64, c Command) Result {
	ctx := &applyCtx{}
	f.mu.Lock()
	f.applied = index
	ctx.res.Err = f.apply(ctx, c)
	observer := f.observer
	f.mu.Unlock()

	slices.SortFunc(ctx.res.Deleted, func(a, b QueueRef) int {
		if c := cmp.Compare(a.Vhost, b.Vhost); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	if observer != nil {
		for _, ev := range ctx.events {
			observer(ev)
		}
	}
	return ctx.res
}

func (f *FSM) apply(ctx *applyCtx, c Command) *Error {
	switch c := c.(type) {
	case AddVhost:
		return f.addVhost(ctx, c)
	case DeleteVhost:
		return f.deleteVhost(ctx, c)
	case PutUser:
		return f.putUser(c)
	case DeleteUser:
		return f.deleteUser(ctx, c)
	case SetPermissions:
		return f.setPermissions(c)
	case ClearPermissions:
		return f.clearPermissions(ctx, c)
	case DeclareExchange:
		return f.declareExchange(ctx, c)
	case DeleteExchange:
		return f.deleteExchange(ctx, c)
	case DeclareQueue:
		return f.declareQueue(ctx, c)
	case DeleteQueue:
		return f.deleteQueue(ctx, c)
	case Bind:
		return f.bind(c)
	case Unbind:
		return f.unbind(ctx, Bind(c))
	case DropConnection:
		return f.dropConnection(ctx, c)
	case NodeStarted:
		return f.nodeStarted(ctx, c)
	case NodeFailed:
		return f.nodeFailed(ctx, c)
	case MoveQueues:
		return f.moveQueues(ctx, c)
	case SetInSync:
		return f.setInSync(ctx, c)
	case ElectLeader:
		return f.electLeader(ctx, c)
	case AddReplica:
		return f.addReplica(ctx, c)
	case SetVhostLimits:
		return f.setVhostLimits(c)
	case nil:
		return refuse(CodeInternalError, "nil command")
	}
	return refuse(CodeInternalError, "unsupported command %T", c)
}

func (f *FSM) addVhost(ctx *applyCtx, c AddVhost) *Error {
	if c.Name == "" {
		return refuse(CodePreconditionFailed, "vhost name must not be empty")
	}
	if f.vhosts[c.Name] != nil {
		return nil
	}
	f.vhosts[c.Name] = newVhost(c.Name)
	ctx.res.Created = true
	return nil
}

func (f *FSM) deleteVhost(ctx *applyCtx, c DeleteVhost) *Error {
	vh := f.vhosts[c.Name]
	if vh == nil {
		return NoVhost(c.Name)
	}
	for _, name := range sortedKeys(vh.queues) {
		f.recordQueueDeleted(ctx, vh.queues[name])
	}
	delete(f.vhosts, c.Name)
	for _, byVhost := range f.perms {
		delete(byVhost, c.Name)
	}
	return nil
}

func (f *FSM) putUser(c PutUser) *Error {
	if c.Name == "" {
		return refuse(CodePreconditionFailed, "user name must not be empty")
	}
	f.users[c.Name] = &UserInfo{Name: c.Name, PasswordHash: c.PasswordHash, Tags: slices.Clone(c.Tags)}
	return nil
}

func (f *FSM) deleteUser(ctx *applyCtx, c DeleteUser) *Error {
	if f.users[c.Name] == nil {
		ctx.res.NotFound = true
		return nil
	}
	delete(f.users, c.Name)
	delete(f.perms, c.Name)
	return nil
}

func (f *FSM) setPermissions(c SetPermissions) *Error {
	if f.users[c.User] == nil {
		return refuse(CodeNotFound, "no user '%s'", c.User)
	}
	if f.vhosts[c.Vhost] == nil {
		return NoVhost(c.Vhost)
	}
	if f.perms[c.User] == nil {
		f.perms[c.User] = make(map[string]Permissions)
	}
	f.perms[c.User][c.Vhost] = Permissions{Configure: c.Configure, Write: c.Write, Read: c.Read}
	return nil
}

// clearPermissions of a user or vhost that does not exist, or of permissions never set, is
// NotFound (the HTTP API answers 404), not an error.
func (f *FSM) clearPermissions(ctx *applyCtx, c ClearPermissions) *Error {
	if _, ok := f.perms[c.User][c.Vhost]; !ok {
		ctx.res.NotFound = true
		return nil
	}
	delete(f.perms[c.User], c.Vhost)
	if len(f.perms[c.User]) == 0 {
		delete(f.perms, c.User)
	}
	return nil
}

func (f *FSM) declareExchange(ctx *applyCtx, c DeclareExchange) *Error {
	if c.Name == "" {
		return DefaultExchangeRefused()
	}
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	if !exchange.ValidKind(c.Kind) {
		return UnknownExchangeType(c.Kind)
	}
	args, err := f.decode(c.Args)
	if err != nil {
		return errBadArgs(err)
	}
	what := resourceName("exchange", c.Name, c.Vhost)
	if x := vh.exchanges[c.Name]; x != nil {
		return f.exchangeEquivalent(what, x.info, c, args)
	}
	if strings.HasPrefix(c.Name, "amq.") {
		return refuse(CodeAccessRefused, "exchange name '%s' contains reserved prefix 'amq.*'", c.Name)
	}
	ae, refusal := alternateExchange(c.Vhost, c.Name, args)
	if refusal != nil {
		return refusal
	}
	m, err := exchange.NewMatcher(c.Kind)
	if err != nil {
		return UnknownExchangeType(c.Kind)
	}
	vh.exchanges[c.Name] = &exchangeState{
		info: Exchange{
			Vhost: c.Vhost, Name: c.Name, Kind: c.Kind,
			Durable: c.Durable, AutoDelete: c.AutoDelete, Internal: c.Internal,
			Args: slices.Clone(c.Args), AlternateExchange: ae,
		},
		matcher: m,
	}
	ctx.res.Created = true
	return nil
}

func (f *FSM) deleteExchange(ctx *applyCtx, c DeleteExchange) *Error {
	if c.Name == "" {
		return DefaultExchangeRefused()
	}
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	if strings.HasPrefix(c.Name, "amq.") {
		return refuse(CodeAccessRefused, "deletion of system exchange '%s' in vhost '%s' not allowed", c.Name, c.Vhost)
	}
	if vh.exchanges[c.Name] == nil {
		ctx.res.NotFound = true
		return nil
	}
	if c.IfUnused && len(vh.bySource[c.Name]) > 0 {
		return InUse("exchange", c.Vhost, c.Name)
	}
	f.removeExchange(ctx, vh, c.Name)
	return nil
}

func (f *FSM) declareQueue(ctx *applyCtx, c DeclareQueue) *Error {
	if c.Name == "" {
		return refuse(CodeInternalError, "queue name must be chosen before DeclareQueue is proposed")
	}
	if c.Exclusive != (c.ExclusiveConn != "") {
		return refuse(CodeInternalError, "ExclusiveConn must be set iff the queue is exclusive")
	}
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	args, err := f.decode(c.Args)
	if err != nil {
		return errBadArgs(err)
	}
	qa, refusal := DecodeQueueArgs(c.Vhost, c.Name, args)
	if refusal != nil {
		return refusal
	}
	typ := qa.Type
	if refusal := validateTypedProperties(c, typ); refusal != nil {
		return refusal
	}
	if q := vh.queues[c.Name]; q != nil {
		if refusal := f.queueEquivalent(q, c, typ, args); refusal != nil {
			return refusal
		}
		existing := *q
		ctx.res.Queue = &existing
		return nil
	}
	if refusal := checkQueueLimit(vh, c.Name); refusal != nil {
		return refusal
	}
	q := &Queue{
		Vhost: c.Vhost, Name: c.Name,
		Durable: c.Durable, Exclusive: c.Exclusive, AutoDelete: c.AutoDelete,
		Args: slices.Clone(c.Args), ExclusiveConn: c.ExclusiveConn, Owner: c.Owner,
	}
	if typ == QueueTypeQuorum {
		q.Type, q.Epoch = typ, 1
		q.Replicas = initialReplicas(c.Owner, c.Replicas)
		q.InSync = q.Replicas
	}
	vh.queues[c.Name] = q
	created := *q
	ctx.res.Queue = &created
	ctx.res.Created = true
	ctx.events = append(ctx.events, Event{Kind: QueueCreated, Queue: created})
	return nil
}

func (f *FSM) deleteQueue(ctx *applyCtx, c DeleteQueue) *Error {
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	q := vh.queues[c.Name]
	if q == nil {
		ctx.res.NotFound = true
		return nil
	}
	if q.Exclusive && q.ExclusiveConn != c.ExclusiveConn {
		return QueueLocked(c.Vhost, c.Name)
	}
	f.removeQueue(ctx, vh, c.Name)
	return nil
}

func (f *FSM) bind(c Bind) *Error {
	if c.Source == "" || c.Dest.IsExchange && c.Dest.Name == "" {
		return DefaultExchangeRefused()
	}
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	src := vh.exchanges[c.Source]
	if src == nil {
		return NoExchange(c.Vhost, c.Source)
	}
	if c.Dest.IsExchange {
		if vh.exchanges[c.Dest.Name] == nil {
			return NoExchange(c.Vhost, c.Dest.Name)
		}
	} else {
		q := vh.queues[c.Dest.Name]
		if q == nil {
			return NoQueue(c.Vhost, c.Dest.Name)
		}
		if q.Exclusive && q.ExclusiveConn != c.Conn {
			return QueueLocked(c.Vhost, c.Dest.Name)
		}
	}
	args, err := f.decode(c.Args)
	if err != nil {
		return errBadArgs(err)
	}
	if src.info.Kind == exchange.KindHeaders {
		if err := exchange.ValidateHeadersArgs(args); err != nil {
			return refuse(CodePreconditionFailed, "%s", err.Error())
		}
	}
	key := bindingKey{source: c.Source, dest: c.Dest, key: c.Key, args: exchange.CanonicalArgs(args)}
	if vh.bindings[key] != nil {
		return nil
	}
	vh.bindings[key] = &storedBinding{
		info: BindingInfo{Vhost: c.Vhost, Source: c.Source, Dest: c.Dest, Key: c.Key, Args: slices.Clone(c.Args)},
		args: args,
	}
	addToSet(vh.bySource, c.Source, key)
	addToSet(vh.byDest, c.Dest, key)
	src.matcher.Add(exchange.Binding{Dest: c.Dest, Key: c.Key, Args: args})
	return nil
}

// unbind succeeds when the binding, its source or its destination does not
// exist, as in RabbitMQ 3.10; it does not check exclusive ownership either.
func (f *FSM) unbind(ctx *applyCtx, c Bind) *Error {
	if c.Source == "" || c.Dest.IsExchange && c.Dest.Name == "" {
		return DefaultExchangeRefused()
	}
	vh := f.vhosts[c.Vhost]
	if vh == nil {
		return NoVhost(c.Vhost)
	}
	args, err := f.decode(c.Args)
	if err != nil {
		return errBadArgs(err)
	}
	key := bindingKey{source: c.Source, dest: c.Dest, key: c.Key, args: exchange.CanonicalArgs(args)}
	if vh.bindings[key] == nil {
		ctx.res.NotFound = true
		return nil
	}
	f.removeBinding(ctx, vh, key)
	return nil
}

func (f *FSM) dropConnection(ctx *applyCtx, c DropConnection) *Error {
	if c.Conn == "" {
		return nil
	}
	f.removeQueuesWhere(ctx, func(q *Queue) bool { return q.Exclusive && q.ExclusiveConn == c.Conn })
	return nil
}

func (f *FSM) nodeStarted(ctx *applyCtx, c NodeStarted) *Error {
	f.nodeReturned(c.Node)
	connPrefix := c.Node + "/"
	f.removeQueuesWhere(ctx, func(q *Queue) bool {
		transientHere := !q.Durable && q.Owner == c.Node
		exclusiveHere := q.Exclusive && strings.HasPrefix(q.ExclusiveConn, connPrefix)
		return transientHere || exclusiveHere
	})
	if c.KeepTransientExchanges {
		return nil
	}
	for _, vname := range f.vhostNamesLocked() {
		vh := f.vhosts[vname]
		for _, name := range sortedKeys(vh.exchanges) {
			if x := vh.exchanges[name]; x != nil && !x.info.Durable {
				f.removeExchange(ctx, vh, name)
			}
		}
	}
	return nil
}

// removeQueuesWhere deletes, in a deterministic order, every queue matching drop.
func (f *FSM) removeQueuesWhere(ctx *applyCtx, drop func(*Queue) bool) {
	for _, vname := range f.vhostNamesLocked() {
		vh := f.vhosts[vname]
		for _, name := range sortedKeys(vh.queues) {
			if q := vh.queues[name]; q != nil && drop(q) {
				f.removeQueue(ctx, vh, name)
			}
		}
	}
}

func (f *FSM) nodeFailed(ctx *applyCtx, c NodeFailed) *Error {
	connPrefix := c.Node + "/"
	f.removeQueuesWhere(ctx, func(q *Queue) bool {
		return q.Exclusive && strings.HasPrefix(q.ExclusiveConn, connPrefix)
	})
	f.failoverReplicated(ctx, c)
	for _, r := range c.Rehome {
		vh := f.vhosts[r.Vhost]
		if vh == nil || r.Owner == "" || r.Owner == c.Node {
			continue
		}
		q := vh.queues[r.Name]
		if q == nil || q.Owner != c.Node || (q.Durable && !c.Forget) || q.Exclusive || q.Type == QueueTypeQuorum {
			continue // changed since the leader looked (or replicated: failoverReplicated): leave it
		}
		// Seen by observers as the queue leaving its old owner and appearing, empty, on the new one.
		ctx.events = append(ctx.events, Event{Kind: QueueDeleted, Queue: *q})
		q.Owner = r.Owner
		ctx.events = append(ctx.events, Event{Kind: QueueCreated, Queue: *q})
	}
	return nil
}

func (f *FSM) moveQueues(ctx *applyCtx, c MoveQueues) *Error {
	for _, r := range c.Moves {
		vh := f.vhosts[r.Vhost]
		if vh == nil || r.Owner == "" || r.Owner == c.From {
			continue
		}
		q := vh.queues[r.Name]
		if q == nil || q.Owner != c.From || q.Exclusive || q.Type == QueueTypeQuorum {
			continue // changed since the move was planned (replicated queues fail over instead): leave it
		}
		q.Owner = r.Owner
		ctx.events = append(ctx.events, Event{Kind: QueueMoved, Queue: *q, From: c.From})
	}
	return nil
}

func addToSet[K comparable](index map[K]map[bindingKey]struct{}, k K, key bindingKey) {
	set := index[k]
	if set == nil {
		set = make(map[bindingKey]struct{})
		index[k] = set
	}
	set[key] = struct{}{}
}

func removeFromSet[K comparable](index map[K]map[bindingKey]struct{}, k K, key bindingKey) {
	if set := index[k]; set != nil {
		delete(set, key)
		if len(set) == 0 {
			delete(index, k)
		}
	}
}

// removeBinding deletes one binding and, if that was the last binding from
// an auto-delete exchange, the exchange too (which may cascade further).
func (f *FSM) removeBinding(ctx *applyCtx, vh *vhostState, key bindingKey) {
	sb := vh.bindings[key]
	if sb == nil {
		return
	}
	delete(vh.bindings, key)
	removeFromSet(vh.bySource, key.source, key)
	removeFromSet(vh.byDest, key.dest, key)
	src := vh.exchanges[key.source]
	if src == nil {
		return // the source itself is being deleted
	}
	src.matcher.Remove(exchange.Binding{Dest: key.dest, Key: key.key, Args: sb.args})
	if src.info.AutoDelete && len(vh.bySource[key.source]) == 0 {
		f.removeExchange(ctx, vh, key.source)
	}
}

// removeExchange deletes an exchange with every binding from or to it. It
// leaves the map first so that cascades never revisit it.
func (f *FSM) removeExchange(ctx *applyCtx, vh *vhostState, name string) {
	if vh.exchanges[name] == nil {
		return
	}
	delete(vh.exchanges, name)
	for _, k := range sortedBindingKeys(vh.bySource[name]) {
		f.removeBinding(ctx, vh, k)
	}
	for _, k := range sortedBindingKeys(vh.byDest[exchange.Dest{Name: name, IsExchange: true}]) {
		f.removeBinding(ctx, vh, k)
	}
}

func (f *FSM) removeQueue(ctx *applyCtx, vh *vhostState, name string) {
	q := vh.queues[name]
	if q == nil {
		return
	}
	delete(vh.queues, name)
	for _, k := range sortedBindingKeys(vh.byDest[exchange.Dest{Name: name}]) {
		f.removeBinding(ctx, vh, k)
	}
	f.recordQueueDeleted(ctx, q)
}

func (f *FSM) recordQueueDeleted(ctx *applyCtx, q *Queue) {
	ctx.res.Deleted = append(ctx.res.Deleted, QueueRef{Vhost: q.Vhost, Name: q.Name, Owner: q.Owner})
	ctx.events = append(ctx.events, Event{Kind: QueueDeleted, Queue: *q})
}
