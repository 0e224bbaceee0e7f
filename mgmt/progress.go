package mgmt

import (
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
