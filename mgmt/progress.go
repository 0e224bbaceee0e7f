package mgmt

import (
	"errors"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Progress is a long operation of this node (leave, rebalance, definitions import) as
// GET /api/progress reports it while it runs and for a while after.
type Progress struct {
	mu        sync.Mutex
	ID        string
	Operation string
	Started   time.Time
	Finished  time.Time
	Queues    int // queues moved or declared
	Messages  int // messages moved
	Items     int // other definitions imported
	Total     int // items the operation will handle, when known
	Err       string
}

func (p *Progress) add(queues, messages int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.Queues += queues
	p.Messages += messages
	p.mu.Unlock()
}

func (p *Progress) addItems(n int) {
	p.mu.Lock()
	p.Items += n
	p.mu.Unlock()
}

func (p *Progress) json() map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	end := p.Finished
	if end.IsZero() {
		end = time.Now()
	}
	secs := max(end.Sub(p.Started).Seconds(), 1e-3)
	out := map[string]any{
		"id": p.ID, "operation": p.Operation, "started": p.Started.UTC().Format(time.RFC3339Nano),
		"running": p.Finished.IsZero(), "queues": p.Queues, "messages": p.Messages, "items": p.Items,
		"total": p.Total, "queues_per_second": float64(p.Queues) / secs,
		"messages_per_second": float64(p.Messages) / secs, "items_per_second": float64(p.Items) / secs,
		"elapsed_seconds": secs,
	}
	if p.Err != "" {
		out["error"] = p.Err
	}
	return out
}

var progressSeq struct {
	sync.Mutex
	n int
}

// startProgress registers a running operation; operations finished over ten minutes ago are
// dropped.
func (s *Server) startProgress(op string) *Progress {
	progressSeq.Lock()
	progressSeq.n++
	id := op + "-" + strconv.Itoa(progressSeq.n)
	progressSeq.Unlock()
	p := &Progress{ID: id, Operation: op, Started: time.Now()}
	s.progressMu.Lock()
	for k, old := range s.progress {
		old.mu.Lock()
		stale := !old.Finished.IsZero() && time.Since(old.Finished) > 10*time.Minute
		old.mu.Unlock()
		if stale {
			delete(s.progress, k)
		}
	}
	s.progress[id] = p
	s.progressMu.Unlock()
	return p
}

func (s *Server) finishProgress(p *Progress, err error) {
	p.mu.Lock()
	p.Finished = time.Now()
	if err != nil {
		p.Err = err.Error()
	}
	p.mu.Unlock()
}

func (s *Server) listProgress(w http.ResponseWriter, r *http.Request, _ *principal) {
	s.progressMu.Lock()
	var out []map[string]any
	for _, p := range s.progress {
		out = append(out, p.json())
	}
	s.progressMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i]["started"].(string) < out[j]["started"].(string) })
	writeList(w, r, out)
}

// trackLeave updates a leave's progress while it runs: queues this node no longer owns and
// messages its hand-offs forwarded. stop ends the tracking goroutine.
func (s *Server) trackLeave(pr *Progress) (stop func()) {
	self := s.src.Node.ID()
	owned := func() int {
		n := 0
		for _, q := range s.src.Node.FSM().Queues("") {
			if q.Owner == self && !q.Exclusive {
				n++
			}
		}
		return n
	}
	start := owned()
	_, movedBefore := s.src.Node.HandOffs()
	pr.mu.Lock()
	pr.Total = start
	pr.mu.Unlock()
	quit, done := make(chan struct{}), make(chan struct{})
	update := func() {
		_, moved := s.src.Node.HandOffs()
		pr.mu.Lock()
		pr.Queues, pr.Messages = max(start-owned(), 0), int(moved-movedBefore)
		pr.mu.Unlock()
	}
	go func() {
		defer close(done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				update()
				return
			case <-t.C:
				update()
			}
		}
	}()
	return func() { close(quit); <-done }
}

// clusterHandOffs sums the live nodes' hand-off counters.
func (s *Server) clusterHandOffs(p *principal) (active int, moved int64) {
	for _, st := range s.clusterStats(p) {
		active += st.HandOffsActive
		moved += st.HandOffsMoved
	}
	return
}

// trackRebalance follows the messages of a rebalance's moved queues in the background until no
// node hands off anything any more (at most ten minutes, or until the server closes).
func (s *Server) trackRebalance(pr *Progress, p *principal, before int64) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		deadline := time.Now().Add(10 * time.Minute)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.quit:
				s.finishProgress(pr, errors.New("the node closed while messages were moving"))
				return
			case <-t.C:
			}
			active, moved := s.clusterHandOffs(p)
			pr.mu.Lock()
			pr.Messages = int(moved - before)
			pr.mu.Unlock()
			if active == 0 {
				s.finishProgress(pr, nil)
				return
			}
			if time.Now().After(deadline) {
				s.finishProgress(pr, errors.New("messages still moving after 10 minutes"))
				return
			}
		}
	}()
}
