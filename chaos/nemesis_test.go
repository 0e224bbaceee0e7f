package chaos

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestScheduleIsSeededAndBounded(t *testing.T) {
	kinds := []FaultKind{Kill, Pause, Partition}
	a := Schedule(7, 3, kinds, 200)
	if !reflect.DeepEqual(a, Schedule(7, 3, kinds, 200)) {
		t.Fatal("the same seed gave two schedules")
	}
	if reflect.DeepEqual(a, Schedule(8, 3, kinds, 200)) {
		t.Fatal("seeds 7 and 8 gave the same schedule")
	}
	seen := map[FaultKind]bool{}
	nodes := map[int]bool{}
	for _, f := range a {
		seen[f.Kind] = true
		nodes[f.Node] = true
		lo, hi := 2*time.Second, 5*time.Second
		if f.Kind == Partition {
			lo, hi = 5*time.Second, 10*time.Second
		}
		if f.Hold < lo || f.Hold > hi {
			t.Fatalf("%v: hold outside [%s, %s]", f, lo, hi)
		}
		if f.Gap < 3*time.Second || f.Gap > 6*time.Second {
			t.Fatalf("%v: gap outside [3s, 6s]", f)
		}
		if f.Node < 1 || f.Node > 3 {
			t.Fatalf("%v: no such node", f)
		}
	}
	if len(seen) != 3 || len(nodes) != 3 {
		t.Fatalf("200 faults used kinds %v and nodes %v", seen, nodes)
	}
	for seed := range uint64(20) {
		first := map[FaultKind]bool{}
		for _, f := range Schedule(seed, 3, kinds, 3) {
			first[f.Kind] = true
		}
		if len(first) != 3 {
			t.Fatalf("seed %d: the first three faults are not one of each kind: %v", seed, first)
		}
	}
	for _, f := range Schedule(7, 3, []FaultKind{Kill, Pause}, 200) {
		if f.Kind == Partition {
			t.Fatal("a process schedule holds a partition")
		}
	}
}

// fakeScript writes a cluster script that appends its arguments to a log file, and fails for
// "start 2" (a node that will not come back).
func fakeScript(t *testing.T) (script, logFile string) {
	dir := t.TempDir()
	logFile = filepath.Join(dir, "calls")
	script = filepath.Join(dir, "cluster.sh")
	body := "#!/usr/bin/env bash\necho \"$*\" >> " + logFile + "\n" +
		"if [[ \"$*\" == \"start 2\" ]]; then echo 'node 2 did not rejoin' >&2; exit 1; fi\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, logFile
}

func TestScriptNemesisRunsSubcommands(t *testing.T) {
	script, logFile := fakeScript(t)
	ctx := context.Background()
	n := NewDockerNemesis(script)
	for _, f := range []Fault{{Kind: Kill, Node: 1}, {Kind: Pause, Node: 3}, {Kind: Partition, Node: 2}, {Kind: Wipe, Node: 3}} {
		if err := n.Inject(ctx, f); err != nil {
			t.Fatal(err)
		}
		if err := n.Repair(ctx, f); err != nil {
			t.Fatal(err)
		}
	}
	err := n.Repair(ctx, Fault{Kind: Kill, Node: 2})
	if err == nil || !strings.Contains(err.Error(), "node 2 did not rejoin") {
		t.Fatalf("a failing restart: err = %v", err)
	}
	got, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	want := "kill 1\nstart 1\npause 3\nunpause 3\npartition 2\nheal\nwipe 3\nstart 3\nstart 2\n"
	if string(got) != want {
		t.Fatalf("script calls:\n%s\nwant:\n%s", got, want)
	}
	if err := NewProcessNemesis(script).Inject(ctx, Fault{Kind: Partition, Node: 1}); err == nil {
		t.Fatal("a process nemesis accepted a partition")
	}
}

// A killed node can still look alive to the script for a moment (an unreaped zombie passes
// kill -0): the restart is retried instead of being taken for done.
func TestRestartRetriesWhileTheKilledNodeStillLooksAlive(t *testing.T) {
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	script := filepath.Join(dir, "cluster.sh")
	body := "#!/usr/bin/env bash\nn=$(cat " + count + " 2>/dev/null || echo 0); echo $((n+1)) > " + count + "\n" +
		"if ((n < 2)); then echo \"cluster.sh: node $2 is already running\" >&2; exit 1; fi\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := NewProcessNemesis(script).Repair(context.Background(), Fault{Kind: Kill, Node: 2}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(count)
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != "3" {
		t.Fatalf("start ran %s times, want 3", got)
	}
	if err := NewProcessNemesis(script).Start(context.Background(), 2); err != nil {
		t.Fatalf("a start after the node went away: %v", err)
	}
}
