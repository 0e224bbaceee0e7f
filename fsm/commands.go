package fsm

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/warrenmq/warren/exchange"
)

// Op identifies a command kind; it is the first byte of an encoded command
// and must never be renumbered, since logs and snapshots outlive binaries.
type Op uint8

const (
	OpAddVhost Op = iota + 1
	OpDeleteVhost
	OpPutUser
	OpDeleteUser
	OpSetPermissions
	OpDeclareExchange
	OpDeleteExchange
	OpDeclareQueue
	OpDeleteQueue
	OpBind
	OpUnbind
	OpDropConnection
	OpNodeStarted
	OpNodeFailed
	OpMoveQueues
	OpClearPermissions
	OpSetInSync
	OpElectLeader
	OpAddReplica
)

var opNames = map[Op]string{
	OpAddVhost: "AddVhost", OpDeleteVhost: "DeleteVhost", OpPutUser: "PutUser",
	OpDeleteUser: "DeleteUser", OpSetPermissions: "SetPermissions",
	OpDeclareExchange: "DeclareExchange", OpDeleteExchange: "DeleteExchange",
	OpDeclareQueue: "DeclareQueue", OpDeleteQueue: "DeleteQueue", OpBind: "Bind",
	OpUnbind: "Unbind", OpDropConnection: "DropConnection", OpNodeStarted: "NodeStarted",
	OpNodeFailed: "NodeFailed", OpMoveQueues: "MoveQueues", OpClearPermissions: "ClearPermissions",
	OpSetInSync: "SetInSync", OpElectLeader: "ElectLeader", OpAddReplica: "AddReplica",
}

func (o Op) String() string {
	if n, ok := opNames[o]; ok {
		return n
	}
	return fmt.Sprintf("Op(%d)", uint8(o))
}

// Command is one topology change. The set is closed: only the types of this
// package implement it.
type Command interface{ op() Op }

// OpOf returns the op byte of a command.
func OpOf(c Command) Op { return c.op() }

type AddVhost struct{ Name string }
type DeleteVhost struct{ Name string }

// PutUser creates or replaces a user; the hash format is the caller's.
type PutUser struct {
	Name, PasswordHash string
	Tags               []string
}
type DeleteUser struct{ Name string }
type SetPermissions struct{ User, Vhost, Configure, Write, Read string }

// ClearPermissions takes a user's permissions in a vhost away (rabbitmqctl clear_permissions).
type ClearPermissions struct{ User, Vhost string }

// DeclareExchange carries Args as an encoded AMQP field table.
type DeclareExchange struct {
	Vhost, Name, Kind             string
	Durable, AutoDelete, Internal bool
	Args                          []byte
}
type DeleteExchange struct {
	Vhost, Name string
	IfUnused    bool
}

// DeclareQueue needs a concrete name: server-named queues ("amq.gen-...")
// are named by the caller before the command is proposed, because Apply must
// be deterministic. ExclusiveConn ("node/connID") is set iff Exclusive; Owner
// is the node that will host the queue.
type DeclareQueue struct {
	Vhost, Name                    string
	Durable, Exclusive, AutoDelete bool
	Args                           []byte
	ExclusiveConn                  string
	Owner                          string
	// Replicas of a replicated (quorum) queue, Owner first, chosen by the proposer.
	Replicas []string `json:",omitempty"`
}

// DeleteQueue: IfUnused/IfEmpty are checked by the caller, which knows the
// consumers and messages; ExclusiveConn is the requester's connection.
type DeleteQueue struct {
	Vhost, Name   string
	IfUnused      bool
	ExclusiveConn string
}

// Bind adds a binding from Source to Dest; Conn is the requester's
// connection, checked against exclusive destination queues.
type Bind struct {
	Vhost, Source string
	Dest          exchange.Dest
	Key           string
	Args          []byte
	Conn          string
}
type Unbind struct {
	Vhost, Source string
	Dest          exchange.Dest
	Key           string
	Args          []byte
	Conn          string
}

// DropConnection deletes every exclusive queue of a closed connection.
type DropConnection struct{ Conn string }

// NodeStarted is proposed when a node (re)starts: its non-durable queues are
// deleted, and so is every non-durable exchange unless KeepTransientExchanges
// (set by a node restarting inside a running cluster: RabbitMQ keeps transient
// exchanges until the whole cluster restarts).
type NodeStarted struct {
	Node                   string
	KeepTransientExchanges bool `json:",omitempty"`
}

// NodeFailed is proposed by the Raft leader when gossip declares a node dead:
// exclusive queues of that node's connections are deleted, and each listed
// non-durable queue it owned is re-homed (empty) to the owner the leader chose.
// Durable queues stay with the dead node: it may come back with their messages.
//
// With Forget (an operator's `node forget`: the node will never return), durable
// queues are re-homed too, empty: their messages are lost with the node.
//
// Replicated queues: Node leaves the in-sync set of every queue it replicates; a queue it led
// gets the leader named in Rehome if that node is in sync (epoch bumped, messages kept). With
// Forget, Repair names for each replicated queue the live node that takes Node's place in its
// replica set (it starts out of sync and is filled by the leader).
type NodeFailed struct {
	Node   string
	Rehome []QueueRef
	Forget bool       `json:",omitempty"`
	Repair []QueueRef `json:",omitempty"`
}

// MoveQueues hands queues of a live node (From) to other nodes: `node leave` and rebalancing.
// Unlike NodeFailed the messages move too: the old owner keeps its queue object, no longer
// routed to, and forwards what it holds to the new owner (observers get QueueMoved). A move
// whose queue is no longer owned by From, or is exclusive, is skipped.
type MoveQueues struct {
	From  string
	Moves []QueueRef // Owner is the new owner
}

func (AddVhost) op() Op         { return OpAddVhost }
func (DeleteVhost) op() Op      { return OpDeleteVhost }
func (PutUser) op() Op          { return OpPutUser }
func (DeleteUser) op() Op       { return OpDeleteUser }
func (SetPermissions) op() Op   { return OpSetPermissions }
func (DeclareExchange) op() Op  { return OpDeclareExchange }
func (DeleteExchange) op() Op   { return OpDeleteExchange }
func (DeclareQueue) op() Op     { return OpDeclareQueue }
func (DeleteQueue) op() Op      { return OpDeleteQueue }
func (Bind) op() Op             { return OpBind }
func (Unbind) op() Op           { return OpUnbind }
func (DropConnection) op() Op   { return OpDropConnection }
func (NodeStarted) op() Op      { return OpNodeStarted }
func (NodeFailed) op() Op       { return OpNodeFailed }
func (MoveQueues) op() Op       { return OpMoveQueues }
func (ClearPermissions) op() Op { return OpClearPermissions }
func (SetInSync) op() Op        { return OpSetInSync }
func (ElectLeader) op() Op      { return OpElectLeader }
func (AddReplica) op() Op       { return OpAddReplica }

// Encode serialises a command as its op byte followed by JSON. Struct fields
// marshal in declaration order, so the bytes are deterministic.
func Encode(c Command) ([]byte, error) {
	if c == nil {
		return nil, errors.New("fsm: encode nil command")
	}
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode %s: %w", c.op(), err)
	}
	return append([]byte{byte(c.op())}, body...), nil
}

// Decode parses bytes produced by Encode.
func Decode(b []byte) (Command, error) {
	if len(b) == 0 {
		return nil, errors.New("fsm: decode: empty command")
	}
	op, body := Op(b[0]), b[1:]
	var c Command
	var err error
	switch op {
	case OpAddVhost:
		c, err = decodeInto[AddVhost](body)
	case OpDeleteVhost:
		c, err = decodeInto[DeleteVhost](body)
	case OpPutUser:
		c, err = decodeInto[PutUser](body)
	case OpDeleteUser:
		c, err = decodeInto[DeleteUser](body)
	case OpSetPermissions:
		c, err = decodeInto[SetPermissions](body)
	case OpDeclareExchange:
		c, err = decodeInto[DeclareExchange](body)
	case OpDeleteExchange:
		c, err = decodeInto[DeleteExchange](body)
	case OpDeclareQueue:
		c, err = decodeInto[DeclareQueue](body)
	case OpDeleteQueue:
		c, err = decodeInto[DeleteQueue](body)
	case OpBind:
		c, err = decodeInto[Bind](body)
	case OpUnbind:
		c, err = decodeInto[Unbind](body)
	case OpDropConnection:
		c, err = decodeInto[DropConnection](body)
	case OpNodeStarted:
		c, err = decodeInto[NodeStarted](body)
	case OpNodeFailed:
		c, err = decodeInto[NodeFailed](body)
	case OpMoveQueues:
		c, err = decodeInto[MoveQueues](body)
	case OpClearPermissions:
		c, err = decodeInto[ClearPermissions](body)
	case OpSetInSync:
		c, err = decodeInto[SetInSync](body)
	case OpElectLeader:
		c, err = decodeInto[ElectLeader](body)
	case OpAddReplica:
		c, err = decodeInto[AddReplica](body)
	default:
		dec, ok := extraDecoders[op]
		if !ok {
			return nil, fmt.Errorf("fsm: decode: unknown op %d", uint8(op))
		}
		c, err = dec(body)
	}
	if err != nil {
		return nil, fmt.Errorf("fsm: decode %s: %w", op, err)
	}
	return c, nil
}

// extraDecoders decode commands defined outside this file (limits.go).
var extraDecoders = map[Op]func([]byte) (Command, error){}

func decodeInto[T Command](body []byte) (Command, error) {
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	return v, nil
}
