package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/warrenmq/warren/exchange"
)

// snapshotFormat is bumped on any incompatible change of the documents below.
const snapshotFormat = 1

// snapshotFile is what Persist writes: the applied index and the canonical
// state document. Digest hashes only the state, so that replicas with the
// same topology agree regardless of how many raft entries they applied.
type snapshotFile struct {
	Format       int             `json:"format"`
	AppliedIndex uint64          `json:"applied_index"`
	State        json.RawMessage `json:"state"`
}

// stateDoc is the canonical serialisation of the whole state: every list is
// sorted, so equal states give equal bytes.
type stateDoc struct {
	Vhosts      []vhostDoc `json:"vhosts"`
	Users       []UserInfo `json:"users"`
	Permissions []permDoc  `json:"permissions"`
}

type vhostDoc struct {
	Name      string        `json:"name"`
	Exchanges []Exchange    `json:"exchanges"`
	Queues    []Queue       `json:"queues"`
	Bindings  []BindingInfo `json:"bindings"`
	// Limits are the vhost limits (limits.go); omitted when none, so older digests hold.
	Limits map[string]int `json:"limits,omitempty"`
}

type permDoc struct {
	User, Vhost string
	Permissions
}

func (f *FSM) stateBytesLocked() ([]byte, error) {
	var doc stateDoc
	for _, vname := range f.vhostNamesLocked() {
		vh := f.vhosts[vname]
		vd := vhostDoc{Name: vname, Exchanges: []Exchange{}, Queues: []Queue{}, Bindings: []BindingInfo{}, Limits: vh.limits}
		for _, n := range sortedKeys(vh.exchanges) {
			vd.Exchanges = append(vd.Exchanges, vh.exchanges[n].info)
		}
		for _, n := range sortedKeys(vh.queues) {
			vd.Queues = append(vd.Queues, *vh.queues[n])
		}
		for _, k := range sortedBindingKeys(vh.bindings) {
			vd.Bindings = append(vd.Bindings, vh.bindings[k].info)
		}
		doc.Vhosts = append(doc.Vhosts, vd)
	}
	for _, n := range sortedKeys(f.users) {
		doc.Users = append(doc.Users, *f.users[n])
	}
	for _, u := range sortedKeys(f.perms) {
		for _, v := range sortedKeys(f.perms[u]) {
			doc.Permissions = append(doc.Permissions, permDoc{User: u, Vhost: v, Permissions: f.perms[u][v]})
		}
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode state: %w", err)
	}
	return b, nil
}

// Digest is the hex sha256 of the canonical state bytes (the snapshot
// without its applied index): equal states give equal digests on every node.
func (f *FSM) Digest() string {
	f.mu.RLock()
	b, err := f.stateBytesLocked()
	f.mu.RUnlock()
	if err != nil {
		// The documents hold only strings, bools and byte slices; this is
		// unreachable, but a digest must never collide with a real one.
		return "error: " + err.Error()
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// SnapshotBytes returns the canonical snapshot (what Persist writes).
func (f *FSM) SnapshotBytes() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	state, err := f.stateBytesLocked()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(snapshotFile{Format: snapshotFormat, AppliedIndex: f.applied, State: state})
	if err != nil {
		return nil, fmt.Errorf("fsm: encode snapshot: %w", err)
	}
	return b, nil
}

// Snapshot implements raft.FSM. The state is serialised here (it is small
// next to the message data) so that Persist can run concurrently with Apply.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	b, err := f.SnapshotBytes()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{data: b}, nil
}

type fsmSnapshot struct{ data []byte }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s.data); err != nil {
		if cerr := sink.Cancel(); cerr != nil {
			slog.Warn("fsm: cancel snapshot sink", "err", cerr)
		}
		return fmt.Errorf("fsm: write snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: close snapshot sink: %w", err)
	}
	return nil
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM: it replaces the whole state with a snapshot
// and rebuilds the routing index. The observer then sees QueueDeleted for
// queues that disappeared and QueueCreated for queues that appeared.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("fsm: read snapshot: %w", err)
	}
	return f.RestoreBytes(data)
}

// RestoreBytes is Restore from an in-memory snapshot.
func (f *FSM) RestoreBytes(data []byte) error {
	var file snapshotFile
	if err := json.Unmarshal(data, &file); err != nil {
		return fmt.Errorf("fsm: decode snapshot: %w", err)
	}
	if file.Format != snapshotFormat {
		return fmt.Errorf("fsm: snapshot format %d, want %d", file.Format, snapshotFormat)
	}
	var doc stateDoc
	if err := json.Unmarshal(file.State, &doc); err != nil {
		return fmt.Errorf("fsm: decode snapshot state: %w", err)
	}
	fresh := &FSM{decodeArgs: f.decodeArgs}
	fresh.reset()
	if err := fresh.load(doc); err != nil {
		return err
	}

	f.mu.Lock()
	events := queueDiff(f.vhosts, fresh.vhosts)
	f.vhosts, f.users, f.perms = fresh.vhosts, fresh.users, fresh.perms
	f.applied = file.AppliedIndex
	observer := f.observer
	f.mu.Unlock()
	if observer != nil {
		for _, ev := range events {
			observer(ev)
		}
	}
	return nil
}

// load fills an empty FSM from a state document, validating as it goes so
// that a corrupt snapshot is refused instead of yielding a broken index.
func (f *FSM) load(doc stateDoc) error {
	for _, vd := range doc.Vhosts {
		if vd.Name == "" || f.vhosts[vd.Name] != nil {
			return fmt.Errorf("fsm: snapshot: bad or duplicate vhost %q", vd.Name)
		}
		vh := newVhost(vd.Name)
		clear(vh.exchanges) // the snapshot lists the predeclared ones too
		f.vhosts[vd.Name] = vh
		if len(vd.Limits) > 0 {
			vh.limits = vd.Limits
		}
		for _, x := range vd.Exchanges {
			m, err := exchange.NewMatcher(x.Kind)
			if err != nil {
				return fmt.Errorf("fsm: snapshot: exchange %q in vhost %q: %w", x.Name, vd.Name, err)
			}
			vh.exchanges[x.Name] = &exchangeState{info: x, matcher: m}
		}
		for _, q := range vd.Queues {
			vh.queues[q.Name] = &q
		}
		for _, b := range vd.Bindings {
			args, err := f.decode(b.Args)
			if err != nil {
				return fmt.Errorf("fsm: snapshot: binding %s→%s: %w", b.Source, b.Dest.Name, err)
			}
			src := vh.exchanges[b.Source]
			if src == nil {
				return fmt.Errorf("fsm: snapshot: binding from missing exchange %q in vhost %q", b.Source, vd.Name)
			}
			destExists := vh.queues[b.Dest.Name] != nil
			if b.Dest.IsExchange {
				destExists = vh.exchanges[b.Dest.Name] != nil
			}
			if !destExists {
				return fmt.Errorf("fsm: snapshot: binding to missing destination %q in vhost %q", b.Dest.Name, vd.Name)
			}
			key := bindingKey{source: b.Source, dest: b.Dest, key: b.Key, args: exchange.CanonicalArgs(args)}
			vh.bindings[key] = &storedBinding{info: b, args: args}
			addToSet(vh.bySource, b.Source, key)
			addToSet(vh.byDest, b.Dest, key)
			src.matcher.Add(exchange.Binding{Dest: b.Dest, Key: b.Key, Args: args})
		}
	}
	for _, u := range doc.Users {
		f.users[u.Name] = &UserInfo{Name: u.Name, PasswordHash: u.PasswordHash, Tags: slices.Clone(u.Tags), Limits: limiting(u.Limits)}
	}
	for _, p := range doc.Permissions {
		if f.perms[p.User] == nil {
			f.perms[p.User] = make(map[string]Permissions)
		}
		f.perms[p.User][p.Vhost] = p.Permissions
	}
	return nil
}

// queueDiff lists the queue events that turn the old set into the new one,
// in a deterministic order.
func queueDiff(before, after map[string]*vhostState) []Event {
	var events []Event
	lookup := func(m map[string]*vhostState, vhost, name string) *Queue {
		if vh := m[vhost]; vh != nil {
			return vh.queues[name]
		}
		return nil
	}
	for _, vname := range sortedKeys(before) {
		for _, name := range sortedKeys(before[vname].queues) {
			old := before[vname].queues[name]
			nu := lookup(after, vname, name)
			if nu != nil && bothReplicated(old, nu) {
				if !sameReplication(old, nu) {
					events = append(events, Event{Kind: QueueReplicasChanged, Queue: *nu, From: old.Owner})
				}
				continue
			}
			if nu == nil || nu.Owner != old.Owner {
				events = append(events, Event{Kind: QueueDeleted, Queue: *old})
			}
		}
	}
	for _, vname := range sortedKeys(after) {
		for _, name := range sortedKeys(after[vname].queues) {
			nu := after[vname].queues[name]
			old := lookup(before, vname, name)
			if old != nil && bothReplicated(old, nu) {
				continue // reported above
			}
			if old == nil || old.Owner != nu.Owner {
				events = append(events, Event{Kind: QueueCreated, Queue: *nu})
			}
		}
	}
	return events
}

// bothReplicated: a restore that keeps a replicated queue replicated changes its configuration,
// never its messages, so it is reported as QueueReplicasChanged rather than deleted and created.
func bothReplicated(a, b *Queue) bool { return a.Type == QueueTypeQuorum && b.Type == QueueTypeQuorum }

func sameReplication(a, b *Queue) bool {
	return a.Owner == b.Owner && a.Epoch == b.Epoch && slices.Equal(a.Replicas, b.Replicas) && slices.Equal(a.InSync, b.InSync)
}
