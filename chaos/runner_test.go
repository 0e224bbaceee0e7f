package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeCluster serves the management API of three nodes from one test server per node; a node
// marked down answers 503, as a dead node's address would refuse.
type fakeCluster struct {
	mu      sync.Mutex
	up      map[int]bool
	servers []*httptest.Server
}

func newFakeCluster(t *testing.T) (*fakeCluster, *Cluster) {
	f := &fakeCluster{up: map[int]bool{1: true, 2: true, 3: true}}
	c := &Cluster{User: "guest", Pass: "guest", client: &http.Client{Timeout: time.Second}}
	for i := 1; i <= 3; i++ {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !f.isUp(i) {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			switch r.URL.Path {
			case "/api/overview":
				_ = json.NewEncoder(w).Encode(map[string]string{"node": fmt.Sprintf("n%d", i), "leader": "n1", "topology_digest": "d"})
			case "/api/nodes":
				var ms []map[string]any
				for j := 1; j <= 3; j++ {
					ms = append(ms, map[string]any{"name": fmt.Sprintf("n%d", j), "running": f.isUp(j)})
				}
				_ = json.NewEncoder(w).Encode(ms)
			case "/api/queues":
				_, _ = io.WriteString(w, `[{"name":"chaos.q1","node":"n1","durable":true,"type":"classic"},`+
					`{"name":"chaos.q2","node":"n2","durable":true,"type":"classic"},`+
					`{"name":"chaos.qq2","node":"n2","durable":true,"type":"quorum","members":["n1","n2","n3"],"in_sync":["n1","n2","n3"]}]`)
			default:
				http.NotFound(w, r)
			}
		}))
		t.Cleanup(srv.Close)
		f.servers = append(f.servers, srv)
		c.Nodes = append(c.Nodes, &Node{Index: i, Name: fmt.Sprintf("n%d", i), HTTPAddr: strings.TrimPrefix(srv.URL, "http://")})
	}
	return f, c
}

func (f *fakeCluster) isUp(i int) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up[i]
}

func (f *fakeCluster) set(i int, up bool) {
	f.mu.Lock()
	f.up[i] = up
	f.mu.Unlock()
}

// fakeNemesis breaks and repairs the fake cluster. exitOnStart makes the next start of a node
// "succeed" while the node exits again at once, as a node failing during start-up does.
type fakeNemesis struct {
	c           *fakeCluster
	mu          sync.Mutex
	calls       []string
	exitOnStart map[int]bool
}

func (n *fakeNemesis) log(s string) {
	n.mu.Lock()
	n.calls = append(n.calls, s)
	n.mu.Unlock()
}

func (n *fakeNemesis) Kinds() []FaultKind { return []FaultKind{Kill, Pause} }

func (n *fakeNemesis) Inject(_ context.Context, f Fault) error {
	n.log(fmt.Sprintf("%s %d", f.Kind, f.Node))
	n.c.set(f.Node, false)
	return nil
}

func (n *fakeNemesis) Repair(ctx context.Context, f Fault) error {
	if f.Kind == Kill || f.Kind == Wipe {
		return n.Start(ctx, f.Node)
	}
	n.log(fmt.Sprintf("un%s %d", f.Kind, f.Node))
	n.c.set(f.Node, true)
	return nil
}

func (n *fakeNemesis) Start(_ context.Context, node int) error {
	n.log(fmt.Sprintf("start %d", node))
	if n.c.isUp(node) {
		return fmt.Errorf("start node %d: %w", node, ErrAlreadyRunning)
	}
	n.mu.Lock()
	exit := n.exitOnStart[node]
	delete(n.exitOnStart, node)
	n.mu.Unlock()
	if exit {
		return fmt.Errorf("node %d did not rejoin", node)
	}
	n.c.set(node, true)
	return nil
}

func (n *fakeNemesis) HealAll(context.Context, int) error { return nil }

func (n *fakeNemesis) Calls() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.calls, ",")
}

func newRunner(t *testing.T) (*Runner, *fakeCluster, *fakeNemesis) {
	fc, c := newFakeCluster(t)
	nem := &fakeNemesis{c: fc, exitOnStart: map[int]bool{}}
	r := &Runner{Nemesis: nem, Cluster: c, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Patience: 500 * time.Millisecond}
	return r, fc, nem
}

func TestRunnerInjectsAndRepairsOneFaultAtATime(t *testing.T) {
	r, _, nem := newRunner(t)
	schedule := []Fault{
		{Kind: Kill, Node: 2, Hold: 20 * time.Millisecond, Gap: 10 * time.Millisecond},
		{Kind: Pause, Node: 3, Hold: 20 * time.Millisecond, Gap: 10 * time.Millisecond},
		{Kind: Kill, Node: 1, Hold: time.Hour, Gap: 10 * time.Millisecond}, // cannot finish before the deadline
	}
	r.Run(context.Background(), schedule, time.Now().Add(5*time.Second))
	if got, want := nem.Calls(), "kill 2,start 2,pause 3,unpause 3"; got != want {
		t.Fatalf("calls %q, want %q", got, want)
	}
	if r.Counts[Kill] != 1 || r.Counts[Pause] != 1 || len(r.Counts) != 2 || len(r.Crashes) != 0 || len(r.FaultErrors) != 0 {
		t.Fatalf("counts %+v crashes %v", r.Counts, r.Crashes)
	}
	if len(r.Events) != 4 || r.Events[0].Leader != "n1" {
		t.Fatalf("events %+v", r.Events)
	}
}

func TestRunnerRecordsANodeThatDiedByItself(t *testing.T) {
	r, fc, nem := newRunner(t)
	fc.set(3, false) // n3 died without the nemesis
	if err := r.HealAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(r.Crashes) != 1 || !strings.HasPrefix(r.Crashes[0], "n3 was down") {
		t.Fatalf("crashes %v", r.Crashes)
	}
	if !fc.isUp(3) || nem.Calls() != "start 3" {
		t.Fatalf("n3 up %v, calls %q", fc.isUp(3), nem.Calls())
	}
}

func TestRunnerRecordsANodeThatExitedWhileRestarting(t *testing.T) {
	r, fc, nem := newRunner(t)
	nem.exitOnStart[2] = true
	r.Run(context.Background(), []Fault{{Kind: Kill, Node: 2, Hold: 10 * time.Millisecond, Gap: 10 * time.Millisecond}},
		time.Now().Add(5*time.Second))
	if len(r.Crashes) != 1 || !strings.HasPrefix(r.Crashes[0], "n2 exited while restarting") {
		t.Fatalf("crashes %v", r.Crashes)
	}
	if !fc.isUp(2) || nem.Calls() != "kill 2,start 2,start 2" {
		t.Fatalf("n2 up %v, calls %q", fc.isUp(2), nem.Calls())
	}
}

func TestRunnerDoesNotCountASlowRestartAsACrash(t *testing.T) {
	r, fc, _ := newRunner(t)
	nem := &slowStart{fakeNemesis: &fakeNemesis{c: fc, exitOnStart: map[int]bool{}}}
	r.Nemesis = nem
	r.Run(context.Background(), []Fault{{Kind: Kill, Node: 1, Hold: 10 * time.Millisecond, Gap: 10 * time.Millisecond}},
		time.Now().Add(5*time.Second))
	if len(r.Crashes) != 0 || !fc.isUp(1) {
		t.Fatalf("crashes %v, n1 up %v", r.Crashes, fc.isUp(1))
	}
}

// slowStart: the script's start launches the node but gives up waiting for it to rejoin.
type slowStart struct{ *fakeNemesis }

func (s *slowStart) Repair(ctx context.Context, f Fault) error {
	if err := s.fakeNemesis.Repair(ctx, f); err != nil {
		return err
	}
	return fmt.Errorf("node %d did not rejoin within 60s", f.Node)
}

// noopKill: the script's kill exits 0 but the node keeps running (a kill that signals the
// wrong process).
type noopKill struct{ *fakeNemesis }

func (n *noopKill) Inject(_ context.Context, f Fault) error {
	n.log(fmt.Sprintf("%s %d", f.Kind, f.Node))
	return nil
}

func TestRunnerRecordsAFaultWithoutEffect(t *testing.T) {
	r, fc, _ := newRunner(t)
	nem := &noopKill{fakeNemesis: &fakeNemesis{c: fc, exitOnStart: map[int]bool{}}}
	r.Nemesis = nem
	r.EffectTimeout = 300 * time.Millisecond
	r.Run(context.Background(), []Fault{{Kind: Kill, Node: 2, Hold: 10 * time.Millisecond, Gap: 10 * time.Millisecond}},
		time.Now().Add(5*time.Second))
	if r.Counts[Kill] != 0 || len(r.FaultErrors) != 1 || !strings.Contains(r.FaultErrors[0], "no effect: n2 still answers") {
		t.Fatalf("counts %v fault errors %v", r.Counts, r.FaultErrors)
	}
	if len(r.Crashes) != 0 || !fc.isUp(2) {
		t.Fatalf("crashes %v, n2 up %v", r.Crashes, fc.isUp(2))
	}
}

// failingInject: the script exits non-zero.
type failingInject struct{ *fakeNemesis }

func (n *failingInject) Inject(_ context.Context, f Fault) error {
	return fmt.Errorf("cluster.sh %s %d: exit status 1: node %d is not running", f.Kind, f.Node, f.Node)
}

func TestRunnerRecordsAFaultThatCouldNotBeInjected(t *testing.T) {
	r, fc, _ := newRunner(t)
	r.Nemesis = &failingInject{fakeNemesis: &fakeNemesis{c: fc, exitOnStart: map[int]bool{}}}
	r.Run(context.Background(), []Fault{{Kind: Pause, Node: 3, Hold: 10 * time.Millisecond, Gap: 10 * time.Millisecond}},
		time.Now().Add(5*time.Second))
	if r.Counts[Pause] != 0 || len(r.FaultErrors) != 1 || !strings.Contains(r.FaultErrors[0], "node 3 is not running") {
		t.Fatalf("counts %v fault errors %v", r.Counts, r.FaultErrors)
	}
}

// TestRunnerWipesOnlyAWholeCluster: a wipe while another node is down is skipped (the
// majority would not survive it); a wipe of a whole cluster records the window during which
// it was in force and the classic queues the node owned (not its replicated ones), whose
// disk went with it.
func TestRunnerWipesOnlyAWholeCluster(t *testing.T) {
	r, fc, nem := newRunner(t)
	fc.set(3, false)
	wipe := Fault{Kind: Wipe, Node: 2, Hold: 10 * time.Millisecond, Gap: 10 * time.Millisecond}
	r.Run(context.Background(), []Fault{wipe}, time.Now().Add(time.Minute))
	if r.Counts[Wipe] != 0 || nem.Calls() != "" || len(r.Windows) != 0 || len(r.FaultErrors) != 0 {
		t.Fatalf("wipe with n3 down: counts %v calls %q windows %v errors %v", r.Counts, nem.Calls(), r.Windows, r.FaultErrors)
	}

	r, _, nem = newRunner(t)
	before := time.Now()
	r.Run(context.Background(), []Fault{wipe}, time.Now().Add(time.Minute))
	if r.Counts[Wipe] != 1 || nem.Calls() != "wipe 2,start 2" || len(r.FaultErrors) != 0 {
		t.Fatalf("wipe: counts %v calls %q errors %v", r.Counts, nem.Calls(), r.FaultErrors)
	}
	if len(r.Wiped) != 1 || r.Wiped[0].Queue != "chaos.q2" || r.Wiped[0].Before.Before(before) {
		t.Fatalf("wiped queues: %v", r.Wiped)
	}
	if len(r.Windows) != 1 || r.Windows[0].Kind != Wipe || !r.Windows[0].To.After(r.Windows[0].From) ||
		r.Windows[0].To.Sub(r.Windows[0].From) < wipe.Hold {
		t.Fatalf("windows: %v", r.Windows)
	}
}
