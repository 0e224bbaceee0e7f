package mgmt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/warrenmq/warren/broker"
	"github.com/warrenmq/warren/cluster"
	"github.com/warrenmq/warren/server"
)

// members is the one place the API reads the cluster's membership from.
func (s *Server) members() []cluster.Member {
	var ms []cluster.Member
	if s.src.Members != nil {
		ms = s.src.Members()
	}
	if len(ms) == 0 {
		ms = []cluster.Member{{ID: s.src.Node.ID(), State: cluster.MemberAlive}}
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms
}

// queueSample is one queue's state at its owner.
type queueSample struct {
	Vhost     string  `json:"vhost"`
	Name      string  `json:"name"`
	Ready     int     `json:"ready"`
	Unacked   int     `json:"unacked"`
	Consumers int     `json:"consumers"`
	DepthRate float64 `json:"depth_rate"`
}

// nodeStats is what one node reports about itself: the queues it owns, its client
// connections and its message counters and rates.
type nodeStats struct {
	Node        string              `json:"node"`
	Queues      []queueSample       `json:"queues"`
	Connections []server.ConnInfo   `json:"connections"`
	Messages    server.MessageStats `json:"messages"`
	Rates       messageRates        `json:"rates"`
	MemUsed     uint64              `json:"mem_used"`
	Uptime      int64               `json:"uptime"` // milliseconds, as RabbitMQ
	Raft        map[string]string   `json:"raft"`
	// Hand-offs of queues moved away from this node (leave, rebalance): running, and
	// messages forwarded since the node started.
	MemAlarm       bool   `json:"mem_alarm"`
	MemLimit       uint64 `json:"mem_limit"`
	HandOffsActive int    `json:"handoffs_active"`
	HandOffsMoved  int64  `json:"handoffs_moved"`
	Err            string `json:"error,omitempty"`
}

func (s *Server) sample() sample {
	smp := sample{at: time.Now(), depths: map[string]int{}}
	if s.metrics != nil {
		s.metrics.observeLeader(s.leader())
	}
	if s.src.AMQP != nil {
		smp.msgs = s.src.AMQP.MessageStats()
	}
	id := s.src.Node.ID()
	for _, q := range s.src.Node.FSM().Queues("") {
		if q.Owner != id {
			continue
		}
		if lq := s.src.Node.LocalQueue(q.Vhost, q.Name); lq != nil {
			r, u, _ := lq.Counts()
			smp.depths[broker.StoreKey(q.Vhost, q.Name)] = r + u
		}
	}
	return smp
}

// memUsed is the memory the Go runtime holds from the OS (RabbitMQ's mem_used).
func memUsed() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Sys - ms.HeapReleased
}

// local reports this node's own stats.
func (s *Server) local() nodeStats {
	now := s.sample()
	rates, depth := s.rates.rates(now)
	st := nodeStats{Node: s.src.Node.ID(), Messages: now.msgs, Rates: rates, Queues: []queueSample{},
		MemUsed: memUsed(), Uptime: time.Since(s.started).Milliseconds()}
	st.HandOffsActive, st.HandOffsMoved = s.src.Node.HandOffs()
	if s.src.AMQP != nil {
		st.MemAlarm, st.MemLimit = s.src.AMQP.MemoryAlarm()
	}
	if s.src.RaftStats != nil {
		rs := s.src.RaftStats()
		st.Raft = map[string]string{"state": rs["state"], "term": rs["term"], "applied_index": rs["applied_index"],
			"commit_index": rs["commit_index"], "last_log_index": rs["last_log_index"]}
	}
	id := s.src.Node.ID()
	for _, q := range s.src.Node.FSM().Queues("") {
		if q.Owner != id {
			continue
		}
		if lq := s.src.Node.LocalQueue(q.Vhost, q.Name); lq != nil {
			r, u, c := lq.Counts()
			st.Queues = append(st.Queues, queueSample{Vhost: q.Vhost, Name: q.Name, Ready: r, Unacked: u, Consumers: c,
				DepthRate: depth[broker.StoreKey(q.Vhost, q.Name)]})
		}
	}
	if s.src.AMQP != nil {
		for _, c := range s.src.AMQP.Connections() {
			if c.ClientProperties["product"] != clientProduct {
				st.Connections = append(st.Connections, c)
			}
		}
	}
	return st
}

func (s *Server) localStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.local())
}

// clusterStats gathers every live node's stats: this node's directly, the others' over their
// APIs (a node that does not answer is reported with Err and no data).
func (s *Server) clusterStats(p *principal) []nodeStats {
	self := s.src.Node.ID()
	var others []cluster.Member
	for _, m := range s.members() {
		if m.ID != self && m.State == cluster.MemberAlive && m.Meta.HTTPAddr != "" {
			others = append(others, m)
		}
	}
	out := make([]nodeStats, len(others)+1)
	out[0] = s.local()
	var wg sync.WaitGroup
	for i, m := range others {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var st nodeStats
			if err := s.peerCall(p, http.MethodGet, m.Meta.HTTPAddr, "/api/warren/local", &st); err != nil {
				st = nodeStats{Node: m.ID, Err: err.Error()}
			}
			out[i+1] = st
		}()
	}
	wg.Wait()
	return out
}

// peerCall calls another node's API: signed with the cluster secret, or with the user's own
// credentials in a cluster without one.
func (s *Server) peerCall(p *principal, method, addr, path string, out any) error {
	return s.peerDo(p, method, addr, path, "", out)
}

// peerCallWithReason deletes on another node with an X-Reason header (closing a connection).
func (s *Server) peerCallWithReason(p *principal, addr, path, reason string) error {
	return s.peerDo(p, http.MethodDelete, addr, path, reason, nil)
}

func (s *Server) peerDo(p *principal, method, addr, path, reason string, out any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	u, err := url.Parse(peerURL(addr) + path) // path comes escaped
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return err
	}
	if reason != "" {
		req.Header.Set("X-Reason", reason)
	}
	if s.src.ClusterSecret != "" {
		req.Header.Set(peerHeader, s.peerToken(time.Now(), method, u.Path))
	} else if !p.peer {
		req.SetBasicAuth(p.name, p.password)
	}
	resp, err := s.peers.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s on %s: HTTP %s", method, path, addr, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// syncCluster waits (at most 5 s) until every live node's FSM has applied what this node's has,
// so a change the API answered is in effect on every node, as RabbitMQ promises: the next
// request may go to any of them.
func (s *Server) syncCluster(p *principal) {
	want := s.src.Node.FSM().AppliedIndex()
	self := s.src.Node.ID()
	deadline := time.Now().Add(5 * time.Second)
	var wg sync.WaitGroup
	for _, m := range s.members() {
		if m.ID == self || m.State != cluster.MemberAlive || m.Meta.HTTPAddr == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var got struct {
					Applied uint64 `json:"applied"`
				}
				err := s.peerCall(p, http.MethodGet, m.Meta.HTTPAddr, "/api/warren/applied", &got)
				if err == nil && got.Applied >= want {
					return
				}
				if time.Now().After(deadline) {
					s.log.Warn("a change the API made is not yet applied on a node", "node", m.ID, "index", want, "err", err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
}

func (s *Server) appliedIndex(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]uint64{"applied": s.src.Node.FSM().AppliedIndex()})
}

// forwardToNode sends the request (with the caller's own credentials) to another node's API and
// relays the answer: 400 when that node is not a live member, as RabbitMQ answers.
func (s *Server) forwardToNode(w http.ResponseWriter, r *http.Request, p *principal, id string, body []byte) {
	addr := ""
	for _, m := range s.members() {
		if m.ID == id && m.State == cluster.MemberAlive {
			addr = m.Meta.HTTPAddr
		}
	}
	if addr == "" || p.peer {
		badRequest(w, "Node "+id+" could not be contacted")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	segs := strings.Split(r.URL.Path, "/")
	for i, seg := range segs {
		segs[i] = url.PathEscape(strings.ReplaceAll(seg, slashMark, "/"))
	}
	target := peerURL(addr) + strings.Join(segs, "/")
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, target, bytes.NewReader(body))
	if err != nil {
		badRequest(w, err.Error())
		return
	}
	req.SetBasicAuth(p.name, p.password)
	req.Header.Set("Content-Type", "application/json")
	// Bounded by ctx, not by s.peers' short timeout: the other node answers once the change
	// is applied everywhere.
	resp, err := (&http.Client{Transport: s.peers.Transport}).Do(req)
	if err != nil {
		badRequest(w, "Node "+id+" could not be contacted")
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Location"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
