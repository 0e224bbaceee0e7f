// Package fsm owns Warren's topology state machine: vhosts, users and
// permissions, exchanges, queues (with their owner node) and bindings, as
// replicated by the hashicorp/raft log. Apply is a pure, deterministic state
// transition with RabbitMQ 3.10's refusals and texts; the same log gives the
// same state (and Digest) on every node. The package also keeps the routing
// index (one exchange.Matcher per exchange, updated on every Apply) that the
// publish path reads through Route.
package fsm

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/warrenmq/warren/exchange"
)

// Options configures an FSM.
type Options struct {
	// DecodeArgs decodes an encoded AMQP field table (in production
	// wire.DecodeTable). Empty args are never passed to it. If nil, any
	// non-empty args are refused.
	DecodeArgs func([]byte) (map[string]any, error)
}

// Error is a refusal with an AMQP reply code and RabbitMQ's text.
type Error struct {
	Code uint16
	Text string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Code, e.Text) }

// AMQP reply codes used by refusals.
const (
	CodeAccessRefused      uint16 = 403
	CodeNotFound           uint16 = 404
	CodeResourceLocked     uint16 = 405
	CodePreconditionFailed uint16 = 406
	CodeCommandInvalid     uint16 = 503
	CodeNotAllowed         uint16 = 530
	CodeInternalError      uint16 = 541
)

// Result is what Apply returns for a command (raft's ApplyFuture.Response()
// holds a Result value).
type Result struct {
	Err *Error
	// Queue is the queue as it now is, for DeclareQueue.
	Queue *Queue
	// Created: DeclareQueue/DeclareExchange/AddVhost created it (false if it
	// already existed and was equivalent).
	Created bool
	// NotFound: a DeleteQueue/DeleteExchange/DeleteUser of something that did
	// not exist. RabbitMQ 3.10 answers such deletes with ok (queue: message
	// count 0), so this is not an error.
	NotFound bool
	// Deleted lists the queues removed by this command (directly or by
	// cascade), sorted by vhost then name.
	Deleted []QueueRef
}

// QueueRef names a queue and the node that hosts it.
type QueueRef struct{ Vhost, Name, Owner string }

// Exchange is an exchange as recorded in the FSM. Args is the encoded
// table; AlternateExchange is its "alternate-exchange" entry.
type Exchange struct {
	Vhost, Name, Kind             string
	Durable, AutoDelete, Internal bool
	Args                          []byte
	AlternateExchange             string
}

// Queue is a queue as recorded in the FSM.
type Queue struct {
	Vhost, Name                    string
	Durable, Exclusive, AutoDelete bool
	Args                           []byte
	ExclusiveConn, Owner           string

	// Replicated (quorum) queues only; see quorum.go. Owner is the leader replica.
	Type     string   `json:",omitempty"` // QueueTypeQuorum, or "" for a classic queue
	Replicas []string `json:",omitempty"` // every node holding a copy, leader included
	InSync   []string `json:",omitempty"` // replicas known to hold every committed message
	Epoch    uint64   `json:",omitempty"` // leader epoch: bumped on every leader change
	// Departed lists nodes forgotten or left while they were replicas: not added back by
	// AddReplica until they start again (NodeStarted).
	Departed []string `json:",omitempty"`
}

// BindingInfo is a binding as recorded in the FSM.
type BindingInfo struct {
	Vhost, Source string
	Dest          exchange.Dest
	Key           string
	Args          []byte
}

// Permissions are a user's configure/write/read regular expressions in one vhost.
type Permissions struct{ Configure, Write, Read string }

// UserInfo is a user as recorded in the FSM.
type UserInfo struct {
	Name, PasswordHash string
	Tags               []string
	// Limits are the user limits (limits.go); omitted when none, so older digests hold.
	Limits map[string]int `json:",omitempty"`
}

// EventKind says what happened to a queue.
type EventKind uint8

const (
	QueueCreated EventKind = iota + 1
	QueueDeleted
	// QueueMoved: Queue.Owner is the new owner, From the old one; the queue keeps existing.
	QueueMoved
	// QueueReplicasChanged: a replicated queue's leader, epoch, replicas or in-sync set
	// changed; From is the previous leader. Its messages stay where they are.
	QueueReplicasChanged
)

func (k EventKind) String() string {
	switch k {
	case QueueCreated:
		return "QueueCreated"
	case QueueDeleted:
		return "QueueDeleted"
	case QueueMoved:
		return "QueueMoved"
	case QueueReplicasChanged:
		return "QueueReplicasChanged"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event reports a change in the set of queues.
type Event struct {
	Kind  EventKind
	Queue Queue
	From  string // QueueMoved, QueueReplicasChanged: the previous owner
}

// DefaultVhost exists in a new FSM.
const DefaultVhost = "/"

// predeclared are the durable exchanges RabbitMQ creates in every vhost.
var predeclared = []struct {
	name, kind string
	internal   bool
}{
	{"", exchange.KindDirect, false},
	{"amq.direct", exchange.KindDirect, false},
	{"amq.fanout", exchange.KindFanout, false},
	{"amq.headers", exchange.KindHeaders, false},
	{"amq.match", exchange.KindHeaders, false},
	{"amq.rabbitmq.trace", exchange.KindTopic, true},
	{"amq.topic", exchange.KindTopic, false},
}

// FSM is the replicated topology state. Apply and Restore take the write
// lock; reads, including Route, take the read lock.
type FSM struct {
	decodeArgs func([]byte) (map[string]any, error)

	mu       sync.RWMutex
	applied  uint64
	vhosts   map[string]*vhostState
	users    map[string]*UserInfo
	perms    map[string]map[string]Permissions // user → vhost → permissions
	observer func(Event)
}

type vhostState struct {
	name      string
	exchanges map[string]*exchangeState
	queues    map[string]*Queue
	bindings  map[bindingKey]*storedBinding
	bySource  map[string]map[bindingKey]struct{}
	byDest    map[exchange.Dest]map[bindingKey]struct{}
	limits    map[string]int // limits.go; nil: none
}

type exchangeState struct {
	info    Exchange
	matcher exchange.Matcher
}

// bindingKey identifies a binding; args is exchange.CanonicalArgs of the
// decoded table so that tables differing only in integer widths coincide.
type bindingKey struct {
	source string
	dest   exchange.Dest
	key    string
	args   string
}

func compareBindingKeys(a, b bindingKey) int {
	if c := cmp.Compare(a.source, b.source); c != 0 {
		return c
	}
	if c := exchange.CompareDest(a.dest, b.dest); c != 0 {
		return c
	}
	if c := cmp.Compare(a.key, b.key); c != 0 {
		return c
	}
	return cmp.Compare(a.args, b.args)
}

type storedBinding struct {
	info BindingInfo
	args map[string]any
}

// New returns an FSM holding vhost "/" with its predeclared exchanges and no
// users.
func New(opts Options) *FSM {
	f := &FSM{decodeArgs: opts.DecodeArgs}
	f.reset()
	f.vhosts[DefaultVhost] = newVhost(DefaultVhost)
	return f
}

func (f *FSM) reset() {
	f.vhosts = make(map[string]*vhostState)
	f.users = make(map[string]*UserInfo)
	f.perms = make(map[string]map[string]Permissions)
}

func newVhost(name string) *vhostState {
	vh := &vhostState{
		name:      name,
		exchanges: make(map[string]*exchangeState),
		queues:    make(map[string]*Queue),
		bindings:  make(map[bindingKey]*storedBinding),
		bySource:  make(map[string]map[bindingKey]struct{}),
		byDest:    make(map[exchange.Dest]map[bindingKey]struct{}),
	}
	for _, p := range predeclared {
		m, _ := exchange.NewMatcher(p.kind) // kinds above are all valid
		vh.exchanges[p.name] = &exchangeState{
			info:    Exchange{Vhost: name, Name: p.name, Kind: p.kind, Durable: true, Internal: p.internal},
			matcher: m,
		}
	}
	return vh
}

// decode turns encoded args into a table; empty args are a nil table.
func (f *FSM) decode(b []byte) (map[string]any, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if f.decodeArgs == nil {
		return nil, errors.New("no DecodeArgs configured")
	}
	t, err := f.decodeArgs(b)
	if err != nil {
		return nil, fmt.Errorf("decode args: %w", err)
	}
	return t, nil
}

// SetObserver installs the function called (synchronously, outside the FSM
// lock, on the applying goroutine) after each command or Restore that
// changes the set of queues.
func (f *FSM) SetObserver(fn func(Event)) {
	f.mu.Lock()
	f.observer = fn
	f.mu.Unlock()
}

// Exchange returns an exchange. Args must not be modified.
func (f *FSM) Exchange(vhost, name string) (Exchange, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if vh := f.vhosts[vhost]; vh != nil {
		if x := vh.exchanges[name]; x != nil {
			return x.info, true
		}
	}
	return Exchange{}, false
}

// Queue returns a queue. Args must not be modified.
func (f *FSM) Queue(vhost, name string) (Queue, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if vh := f.vhosts[vhost]; vh != nil {
		if q := vh.queues[name]; q != nil {
			return *q, true
		}
	}
	return Queue{}, false
}

// VhostExists reports whether a vhost exists.
func (f *FSM) VhostExists(name string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.vhosts[name] != nil
}

// Vhosts lists vhost names, sorted.
func (f *FSM) Vhosts() []string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.vhostNamesLocked()
}

func (f *FSM) vhostNamesLocked() []string {
	names := make([]string, 0, len(f.vhosts))
	for n := range f.vhosts {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// User returns a user's password hash and tags.
func (f *FSM) User(name string) (passwordHash string, tags []string, ok bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	u := f.users[name]
	if u == nil {
		return "", nil, false
	}
	return u.PasswordHash, slices.Clone(u.Tags), true
}

// Users lists users sorted by name.
func (f *FSM) Users() []UserInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]UserInfo, 0, len(f.users))
	for _, u := range f.users {
		out = append(out, UserInfo{Name: u.Name, PasswordHash: u.PasswordHash, Tags: slices.Clone(u.Tags), Limits: maps.Clone(u.Limits)})
	}
	slices.SortFunc(out, func(a, b UserInfo) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Permissions returns a user's permissions in a vhost.
func (f *FSM) Permissions(user, vhost string) (Permissions, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	p, ok := f.perms[user][vhost]
	return p, ok
}

// selectVhosts returns the vhosts named by a listing filter ("" = all), sorted.
func (f *FSM) selectVhosts(vhost string) []*vhostState {
	if vhost != "" {
		if vh := f.vhosts[vhost]; vh != nil {
			return []*vhostState{vh}
		}
		return nil
	}
	var out []*vhostState
	for _, n := range f.vhostNamesLocked() {
		out = append(out, f.vhosts[n])
	}
	return out
}

// Queues lists queues sorted by vhost then name; vhost "" lists all.
func (f *FSM) Queues(vhost string) []Queue {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Queue
	for _, vh := range f.selectVhosts(vhost) {
		for _, n := range sortedKeys(vh.queues) {
			out = append(out, *vh.queues[n])
		}
	}
	return out
}

// Exchanges lists exchanges sorted by vhost then name; vhost "" lists all.
func (f *FSM) Exchanges(vhost string) []Exchange {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []Exchange
	for _, vh := range f.selectVhosts(vhost) {
		for _, n := range sortedKeys(vh.exchanges) {
			out = append(out, vh.exchanges[n].info)
		}
	}
	return out
}

// Bindings lists bindings sorted by vhost, source, destination, key, args;
// vhost "" lists all.
func (f *FSM) Bindings(vhost string) []BindingInfo {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var out []BindingInfo
	for _, vh := range f.selectVhosts(vhost) {
		for _, k := range sortedBindingKeys(vh.bindings) {
			out = append(out, vh.bindings[k].info)
		}
	}
	return out
}

// AppliedIndex is the raft index of the last applied command.
func (f *FSM) AppliedIndex() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.applied
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedBindingKeys[V any](m map[bindingKey]V) []bindingKey {
	keys := make([]bindingKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareBindingKeys)
	return keys
}
