package cluster

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/warrenmq/warren/fsm"
)

// Visible on -ok. Raft answers a write once the local FSM applied it; RabbitMQ answers
// declare-ok once every running node has the queue, and clients rely on that (declare on one
// node, consume through another right away). So after a command is applied here, Apply also
// waits until every other live voter reports that its FSM applied the command's index.
//
// How a node learns a peer's applied index: it asks the peer over the forwarding link
// ("applied >= i?", kindWaitApplied); the peer answers as soon as its FSM reached i, or after
// peerPollWait with what it has. One request per peer is in flight at a time and serves every
// command waiting on that peer (the highest index wanted), so concurrent writers share round
// trips. The leader is not asked after a forwarded write: it applied the command before
// answering.
//
// Bound: a peer that has not applied the index within VisibleWait (default 2 s) is marked
// behind and not waited for again until it has caught up (a background request keeps asking
// it), so a node that is partitioned away or stalled costs one bounded wait, not one per
// command. Peers memberlist reports dead, and nodes outside the Raft configuration, are never
// waited for.

// DefaultVisibleWait bounds how long a command waits for other live nodes to apply it.
const DefaultVisibleWait = 2 * time.Second

// peerPollWait is how long one "applied >= i?" request may wait at the peer; short so a
// shutting-down node is never held up for long by an in-flight request.
const peerPollWait = 250 * time.Millisecond

// kindWaitApplied asks any node (not only the leader) to answer once its FSM applied an index.
const kindWaitApplied = 3

// SetLiveNodes tells the store which nodes memberlist reports alive (their IDs); only those
// are waited for after a write. Without it a write waits for no other node.
func (s *Store) SetLiveNodes(live func() []string) { s.liveNodes.Store(&live) }

// visibility tracks, per peer, what it has applied as far as this node knows.
type visibility struct {
	s    *Store
	wait time.Duration

	mu     sync.Mutex
	peers  map[string]*peerApplied
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

type peerApplied struct {
	id      string
	known   uint64 // highest index the peer reported applied
	want    uint64 // highest index a waiter needs
	polling bool   // a goroutine is asking the peer
	behind  bool   // missed the bound; not waited for until known >= want
	changed chan struct{}
}

func newVisibility(s *Store, wait time.Duration) *visibility {
	if wait <= 0 {
		wait = DefaultVisibleWait
	}
	return &visibility{s: s, wait: wait, peers: make(map[string]*peerApplied), stop: make(chan struct{})}
}

// changedState says whether a command's result may have changed the topology; a refusal by
// the FSM changed nothing, so no other node needs to be waited for.
func changedState(res any) bool {
	switch r := res.(type) {
	case fsm.Result:
		return r.Err == nil
	case *fsm.Result:
		return r == nil || r.Err == nil
	}
	return true
}

// waitPeers blocks until every live voter other than this node (and skip, the leader that
// answered a forwarded write) has applied index, or the bound passes for the laggards.
func (v *visibility) waitPeers(index uint64, skip string) {
	livep := v.s.liveNodes.Load()
	if livep == nil || index == 0 {
		return
	}
	live := (*livep)()
	if len(live) <= 1 {
		return
	}
	servers := v.s.r().GetConfiguration().Configuration().Servers
	inConfig := make(map[string]bool, len(servers))
	for _, srv := range servers {
		inConfig[string(srv.ID)] = true
	}
	deadline := time.Now().Add(v.wait)
	var wg sync.WaitGroup
	for _, id := range live {
		if id == v.s.id || id == skip || !inConfig[id] {
			continue
		}
		p := v.peer(id)
		if p == nil {
			return // closed
		}
		if v.reached(p, index) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.waitPeer(p, index, deadline)
		}()
	}
	wg.Wait()
}

func (v *visibility) peer(id string) *peerApplied {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	p := v.peers[id]
	if p == nil {
		p = &peerApplied{id: id, changed: make(chan struct{})}
		v.peers[id] = p
	}
	return p
}

// reached reports, without waiting, whether p is known to have applied index or is behind.
func (v *visibility) reached(p *peerApplied, index uint64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return p.known >= index || p.behind
}

func (v *visibility) waitPeer(p *peerApplied, index uint64, deadline time.Time) {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		v.mu.Lock()
		// A peer that memberlist declared dead meanwhile is no longer waited for (its poller
		// stopped for that reason; starting another would spin).
		if p.known >= index || p.behind || v.closed || !v.isLive(p.id) {
			v.mu.Unlock()
			return
		}
		p.want = max(p.want, index)
		if !p.polling {
			p.polling = true
			v.wg.Add(1)
			go v.poll(p)
		}
		changed := p.changed
		v.mu.Unlock()
		select {
		case <-changed:
		case <-v.stop:
			return
		case <-timer.C:
			v.mu.Lock()
			if p.known < index && !p.behind {
				p.behind = true
				v.s.log.Warn("topology change answered before a live node applied it; not waiting for that node until it catches up",
					"peer", p.id, "index", index, "peer_applied", p.known, "bound", v.wait)
			}
			v.mu.Unlock()
			return
		}
	}
}

// poll asks p for its applied index until it has reached everything wanted of it, the peer is
// no longer live, or the store closes.
func (v *visibility) poll(p *peerApplied) {
	defer v.wg.Done()
	for {
		v.mu.Lock()
		if v.closed || p.known >= p.want || !v.isLive(p.id) {
			if p.known >= p.want {
				p.behind = false
			}
			p.polling = false
			close(p.changed)
			p.changed = make(chan struct{})
			v.mu.Unlock()
			return
		}
		target := p.want
		v.mu.Unlock()

		applied, err := v.ask(p.id, target)
		v.mu.Lock()
		if err == nil && applied > p.known {
			p.known = applied
			close(p.changed)
			p.changed = make(chan struct{})
		}
		v.mu.Unlock()
		if err != nil {
			select {
			case <-v.stop:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

// isLive is called with v.mu held; the callback only reads membership.
func (v *visibility) isLive(id string) bool {
	livep := v.s.liveNodes.Load()
	if livep == nil {
		return false
	}
	for _, l := range (*livep)() {
		if l == id {
			return true
		}
	}
	return false
}

func (v *visibility) ask(id string, index uint64) (uint64, error) {
	addr, err := v.s.resolveForward(id)
	if err != nil {
		return 0, err
	}
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], index)
	applied, _, err := v.s.forwardPool.request(addr, kindWaitApplied, req[:], time.Now().Add(peerPollWait+time.Second))
	if err != nil {
		return 0, fmt.Errorf("ask %s for its applied index: %w", id, err)
	}
	return applied, nil
}

// forget drops what is known of peers' applied indexes (Raft restarted empty to join another
// cluster, whose indexes start over). Pollers still running keep their own peer records.
func (v *visibility) forget() {
	v.mu.Lock()
	v.peers = make(map[string]*peerApplied)
	v.mu.Unlock()
}

func (v *visibility) close() {
	v.mu.Lock()
	if !v.closed {
		v.closed = true
		close(v.stop)
	}
	v.mu.Unlock()
	v.wg.Wait()
}

// appliedAtLeast serves a peer's "applied >= index?": it answers once the local FSM reached
// index, or after wait with the index it has reached.
func (s *Store) appliedAtLeast(req []byte, wait time.Duration, stop <-chan struct{}) (uint64, error) {
	if len(req) != 8 {
		return 0, fmt.Errorf("applied-index request of %d bytes", len(req))
	}
	index := binary.BigEndian.Uint64(req)
	_ = s.fsm.waitAppliedOrStop(index, time.Now().Add(min(wait, peerPollWait)), stop)
	return s.fsm.appliedIndex(), nil
}
