// Package replica owns the pieces of replicated-queue replication that need neither sockets nor
// the broker: message identities (Ident), the request codec leader → follower, the ordered
// index from identities to a node's message-store ids, and the commit rule. The protocol is
// primary/backup with its configuration in the metadata Raft log, as Kafka's ISR replication
// under KRaft; docs/replication.md states it and its invariants.
package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Ident names one message of one replicated queue on every replica: the leader epoch that
// accepted it and its number within that epoch. Idents grow in publish order, also across
// leader changes, so a later leader never reuses one an earlier leader handed out, even for
// a message it never received.
type Ident uint64

const seqBits = 40

// MaxSeq is the number of messages one leader epoch can accept; a leader that reaches it
// steps down (a new epoch starts numbering again).
const MaxSeq = 1<<seqBits - 1

// MakeIdent returns the identity of message seq (1-based) of epoch.
func MakeIdent(epoch, seq uint64) Ident { return Ident(epoch<<seqBits | seq&MaxSeq) }

// Epoch is the leader epoch that accepted the message.
func (i Ident) Epoch() uint64 { return uint64(i) >> seqBits }

// Seq is the message's number within its epoch.
func (i Ident) Seq() uint64 { return uint64(i) & MaxSeq }

func (i Ident) String() string { return fmt.Sprintf("%d.%d", i.Epoch(), i.Seq()) }

// Kind says what a request asks of a follower.
type Kind uint8

const (
	// Append adds messages and settles (removes) others, in order. Prev is the last message
	// the leader sent this follower before; a follower whose last message differs refuses
	// (ErrOutOfSync) and the leader syncs it again.
	Append Kind = 1
	// Sync asks the follower for its position; the reply body is its last Ident (8 bytes).
	Sync Kind = 2
	// Truncate: the follower drops every message up to UpTo that is not in Keep (what the
	// leader still holds), including anything a deposed leader sent it and nobody confirmed.
	Truncate Kind = 3
)

// Entry is one operation of an Append: a message to store (Data non-nil), to settle, or (Returns
// > 0) the number of times it has come back to the queue so far (requeued, or its consumer
// gone), so that x-delivery-count and x-delivery-limit survive a failover. The count is the
// total, not an increment: applying it twice changes nothing.
type Entry struct {
	Ident   Ident
	Settle  bool
	Returns uint32
	Data    []byte
}

// Stores reports whether e carries a message (rather than a settlement or a return count).
func (e Entry) Stores() bool { return !e.Settle && e.Returns == 0 }

// Request is what the leader of Epoch sends one follower of one queue.
type Request struct {
	Kind    Kind
	Epoch   uint64
	Prev    Ident   // Append
	Entries []Entry // Append
	// UpTo: Truncate drops what the leader does not hold up to here; an Append moves the
	// follower's position here (a sync's last Append: the follower now holds everything the
	// leader holds up to UpTo, also when the messages in between were settled meanwhile).
	UpTo Ident
	Keep []Ident // Truncate, ascending
}

var errMalformed = errors.New("replica: malformed request")

// AppendRequest encodes r onto b.
func AppendRequest(b []byte, r *Request) []byte {
	b = append(b, byte(r.Kind))
	b = binary.AppendUvarint(b, r.Epoch)
	switch r.Kind {
	case Append:
		b = binary.AppendUvarint(b, uint64(r.Prev))
		b = binary.AppendUvarint(b, uint64(r.UpTo))
		b = binary.AppendUvarint(b, uint64(len(r.Entries)))
		for _, e := range r.Entries {
			b = binary.AppendUvarint(b, uint64(e.Ident))
			if e.Settle {
				b = append(b, 0)
				continue
			}
			if e.Returns > 0 {
				b = append(b, 2)
				b = binary.AppendUvarint(b, uint64(e.Returns))
				continue
			}
			b = append(b, 1)
			b = binary.AppendUvarint(b, uint64(len(e.Data)))
			b = append(b, e.Data...)
		}
	case Truncate:
		b = binary.AppendUvarint(b, uint64(r.UpTo))
		b = binary.AppendUvarint(b, uint64(len(r.Keep)))
		var prev Ident
		for _, k := range r.Keep {
			b = binary.AppendUvarint(b, uint64(k-prev))
			prev = k
		}
	}
	return b
}

// DecodeRequest parses AppendRequest's output. Entry data aliases b.
func DecodeRequest(b []byte) (*Request, error) {
	d := decoder{b: b}
	if len(b) == 0 {
		return nil, errMalformed
	}
	r := &Request{Kind: Kind(b[0])}
	d.b = b[1:]
	r.Epoch = d.uvarint()
	switch r.Kind {
	case Append:
		r.Prev = Ident(d.uvarint())
		r.UpTo = Ident(d.uvarint())
		n := d.uvarint()
		if n > uint64(len(d.b)) { // every entry takes at least two bytes
			return nil, errMalformed
		}
		r.Entries = make([]Entry, 0, n)
		for i := uint64(0); i < n && d.err == nil; i++ {
			e := Entry{Ident: Ident(d.uvarint())}
			switch d.byte() {
			case 0:
				e.Settle = true
			case 1:
				l := d.uvarint()
				e.Data = d.bytes(l)
			case 2:
				if v := d.uvarint(); v == 0 || v > 1<<32-1 {
					d.err = errMalformed
				} else {
					e.Returns = uint32(v)
				}
			default:
				d.err = errMalformed
			}
			r.Entries = append(r.Entries, e)
		}
	case Sync:
	case Truncate:
		r.UpTo = Ident(d.uvarint())
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			return nil, errMalformed
		}
		r.Keep = make([]Ident, 0, n)
		var prev Ident
		for i := uint64(0); i < n && d.err == nil; i++ {
			k := prev + Ident(d.uvarint())
			if i > 0 && k <= prev {
				d.err = errMalformed
			}
			r.Keep = append(r.Keep, k)
			prev = k
		}
	default:
		return nil, fmt.Errorf("%w: kind %d", errMalformed, r.Kind)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errMalformed
	}
	if d.err != nil {
		return nil, d.err
	}
	return r, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errMalformed
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) == 0 {
		d.err = errMalformed
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil || n > uint64(len(d.b)) {
		d.err = errMalformed
		return nil
	}
	out := d.b[:n:n]
	d.b = d.b[n:]
	return out
}

// EncodePosition is a Sync reply's body.
func EncodePosition(last Ident) []byte { return binary.BigEndian.AppendUint64(nil, uint64(last)) }

// DecodePosition parses a Sync reply's body.
func DecodePosition(b []byte) (Ident, error) {
	if len(b) != 8 {
		return 0, errMalformed
	}
	return Ident(binary.BigEndian.Uint64(b)), nil
}

// StoredIdent prefixes a stored message with its identity, so a replica that restarts knows
// which message each stored record is.
func StoredIdent(data []byte, id Ident) []byte {
	out := make([]byte, 0, binary.MaxVarintLen64+len(data))
	out = binary.AppendUvarint(out, uint64(id))
	return append(out, data...)
}

// SplitStored undoes StoredIdent.
func SplitStored(b []byte) (Ident, []byte, error) {
	v, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, nil, errMalformed
	}
	return Ident(v), b[n:], nil
}

// Committed is the newest message every in-sync follower has acknowledged as stored (the
// leader's own disk is awaited separately), or 0 while fewer than a majority of the replicas
// are in sync: a leader that lost its majority confirms nothing.
func Committed(last Ident, self string, inSync []string, replicas int, acked func(node string) Ident) Ident {
	if len(inSync) < Majority(replicas) || !slices.Contains(inSync, self) {
		return 0
	}
	c := last
	for _, n := range inSync {
		if n == self {
			continue
		}
		if a := acked(n); a < c {
			c = a
		}
	}
	return c
}

// Majority is how many of n replicas make a quorum.
func Majority(n int) int { return n/2 + 1 }
