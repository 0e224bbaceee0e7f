package placement

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestReplicas(t *testing.T) {
	live := []string{"n1", "n2", "n3", "n4"}
	cases := []struct {
		leader string
		load   map[string]int
		size   int
		want   []string
	}{
		{"n1", nil, 3, []string{"n1", "n2", "n3"}},
		{"n3", map[string]int{"n1": 5, "n2": 1, "n4": 0}, 3, []string{"n3", "n4", "n2"}},
		{"n2", nil, 9, []string{"n2", "n1", "n3", "n4"}},
		{"n2", nil, 0, []string{"n2"}},
		{"n9", nil, 2, []string{"n9", "n1"}}, // a leader gossip does not list yet
	}
	for _, c := range cases {
		if got := Replicas(c.leader, live, c.load, c.size); !slices.Equal(got, c.want) {
			t.Errorf("Replicas(%s, %v, %d) = %v, want %v", c.leader, c.load, c.size, got, c.want)
		}
	}
}

func TestReplacementAndLeastLoaded(t *testing.T) {
	live := []string{"a", "b", "c", "d", "e"}
	if got := Replacement([]string{"a", "b", "x"}, live, map[string]int{"c": 2, "d": 1, "e": 1}); got != "d" {
		t.Fatalf("Replacement = %q, want d (fewest, then smallest id)", got)
	}
	if got := Replacement(live, live, nil); got != "" {
		t.Fatalf("Replacement with every node a replica = %q", got)
	}
	if got := LeastLoaded(nil, nil); got != "" {
		t.Fatalf("LeastLoaded of nothing = %q", got)
	}
}

// Queue builders for the tables: classic, durable, exclusive (declared on connNode) and
// replicated (size 3, epoch 7).
func cq(name, owner string) Queue { return Queue{Vhost: "/", Name: name, Owner: owner} }

func dq(name, owner string) Queue { q := cq(name, owner); q.Durable = true; return q }

func xq(name, owner, connNode string) Queue {
	q := cq(name, owner)
	q.Exclusive, q.ConnNode = true, connNode
	return q
}

func rq(name, owner string, replicas, inSync []string) Queue {
	return Queue{Vhost: "/", Name: name, Owner: owner, Durable: true, Replicated: true,
		Replicas: replicas, InSync: inSync, Size: 3, Epoch: 7}
}

func list(ids ...string) []string { return ids }

// moves renders moves as "name>to" (and checks From and Epoch against the queue they came from).
func moves(t *testing.T, queues []Queue, ms []Move) string {
	t.Helper()
	var out []string
	for _, m := range ms {
		i := slices.IndexFunc(queues, func(q Queue) bool { return q.Vhost == m.Vhost && q.Name == m.Name })
		if i < 0 {
			t.Fatalf("move %+v of a queue not in the input", m)
		}
		if m.From != queues[i].Owner || m.Epoch != queues[i].Epoch {
			t.Fatalf("move %+v: From/Epoch differ from the queue's %q/%d", m, queues[i].Owner, queues[i].Epoch)
		}
		out = append(out, m.Name+">"+m.To)
	}
	return strings.Join(out, " ")
}

// planCase is one row of the tables below: the live nodes (Leave: the targets), the queues, and
// the answer expected, rendered as a string.
type planCase struct {
	name   string
	live   []string
	queues []Queue
	want   string
}

// runCases checks plan's rendered answer for every row.
func runCases(t *testing.T, cases []planCase, plan func(live []string, queues []Queue) string) {
	t.Helper()
	for _, c := range cases {
		if got := plan(c.live, c.queues); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestDeclareOwner(t *testing.T) {
	runCases(t, []planCase{
		{"no live node", nil, []Queue{cq("a", "n1")}, ""},
		{"tie: smallest id", list("n3", "n2"), nil, "n2"},
		{"fewest queues", list("n1", "n2", "n3"), []Queue{cq("a", "n1"), cq("b", "n2"), cq("c", "n2")}, "n3"},
		{"exclusive and replicated queues count", list("n1", "n2"),
			[]Queue{xq("x", "n1", "n1"), rq("r", "n1", list("n1", "n2"), list("n1")), cq("c", "n2")}, "n2"},
		{"a dead node's queues count for nobody", list("n1", "n2"), []Queue{cq("a", "n1"), cq("b", "gone"), cq("c", "gone")}, "n2"},
		{"a node only listed once it is live", list("n2"), []Queue{cq("a", "n2")}, "n2"},
	}, DeclareOwner)
}

func TestFailover(t *testing.T) {
	cases := []struct {
		name           string
		live           []string
		queues         []Queue
		forget         bool
		rehome, repair string
	}{
		{"no live node", nil, []Queue{cq("a", "d"), rq("r", "d", list("d", "b"), list("d", "b"))}, true, "", ""},
		{"only the dead node listed live", list("d"), []Queue{cq("a", "d")}, false, "", ""},
		{"transient queues spread, counting the ones assigned (ties: smallest id)", list("b", "a", "c", "d"),
			[]Queue{cq("a1", "a"), cq("q1", "d"), cq("q2", "d"), cq("q3", "d"), cq("q4", "d")}, false,
			"q1>b q2>c q3>a q4>b", ""},
		{"durable queues wait for the node; exclusive ones go with their connections", list("a", "b"),
			[]Queue{dq("durable", "d"), xq("excl", "d", "d"), xq("elsewhere", "d", "a"), cq("t", "d")}, false, "t>a", ""},
		{"forget: durable queues too, still not exclusive ones", list("a", "b"),
			[]Queue{dq("durable", "d"), xq("excl", "d", "d"), cq("t", "d")}, true, "durable>a t>b", ""},
		{"other nodes' queues stay", list("a", "b"), []Queue{cq("x", "a"), cq("y", "b")}, true, "", ""},
		{"replicated: the in-sync live replica leading fewest leads", list("a", "b", "c"),
			[]Queue{cq("c1", "b"), rq("r", "d", list("d", "b", "c"), list("d", "b", "c"))}, false, "r>c", ""},
		{"replicated: tie goes to the smallest id", list("c", "b", "a"),
			[]Queue{rq("r", "d", list("d", "c", "b"), list("d", "c", "b"))}, false, "r>b", ""},
		{"replicated: an out-of-sync replica never leads", list("a", "b", "c"),
			[]Queue{rq("r", "d", list("d", "b", "c"), list("d", "c")), cq("c1", "c"), cq("c2", "c")}, false, "r>c", ""},
		{"replicated: no in-sync replica live, the queue waits", list("a", "b"),
			[]Queue{rq("r", "d", list("d", "b", "x"), list("d", "x"))}, false, "", ""},
		{"replicated, forget, no in-sync replica live: only the replica set is repaired", list("a", "b"),
			[]Queue{rq("r", "d", list("d", "b", "x"), list("d", "x"))}, true, "", "r>a"},
		{"replicated leaders count with classic queues", list("a", "b"),
			[]Queue{rq("r", "d", list("d", "a", "b"), list("d", "a", "b")), cq("t", "d")}, false, "r>a t>b", ""},
		{"replicated follower: nothing to elect; forget repairs with the fewest-replica node", list("a", "b", "c", "e"),
			[]Queue{rq("r1", "a", list("a", "d", "b"), list("a", "d", "b")), rq("r2", "b", list("b", "c", "e"), list("b")),
				rq("r3", "a", list("a", "d", "c"), list("a", "c"))}, true, "", "r1>e r3>b"},
		{"forget: no spare node for a replica", list("a", "b"),
			[]Queue{rq("r", "a", list("a", "b", "d"), list("a", "b", "d"))}, true, "", ""},
		{"replicated queues without the dead node are left alone", list("a", "b", "c"),
			[]Queue{rq("r", "a", list("a", "b"), list("a"))}, true, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan := Failover("d", c.live, c.queues, c.forget)
			if got := moves(t, c.queues, plan.Rehome); got != c.rehome {
				t.Errorf("Rehome %q, want %q", got, c.rehome)
			}
			if got := moves(t, c.queues, plan.Repair); got != c.repair {
				t.Errorf("Repair %q, want %q", got, c.repair)
			}
		})
	}
}

func TestFailoverLeavesTheCallersLiveListAlone(t *testing.T) {
	live := list("d", "a")
	Failover("d", live, []Queue{cq("q", "d")}, false)
	if !slices.Equal(live, list("d", "a")) {
		t.Fatalf("live list changed to %v", live)
	}
}

func TestNeedsFailover(t *testing.T) {
	live := list("a", "b")
	cases := []struct {
		name  string
		queue Queue
		want  bool
	}{
		{"transient queue", cq("q", "d"), true},
		{"durable queue waits", dq("q", "d"), false},
		{"its exclusive queue", xq("q", "d", "d"), true},
		{"exclusive queue of its connection on another owner", xq("q", "a", "d"), true},
		{"another node's queues", cq("q", "a"), false},
		{"replicated, it leads, an in-sync replica is live", rq("r", "d", list("d", "a"), list("d", "a")), true},
		{"replicated, it leads, no in-sync replica is live", rq("r", "d", list("d", "a", "x"), list("d", "x")), false},
		{"replicated, it follows in sync", rq("r", "a", list("a", "d"), list("a", "d")), true},
		{"replicated, it follows out of sync", rq("r", "a", list("a", "d"), list("a")), false},
	}
	for _, c := range cases {
		if got := NeedsFailover("d", live, []Queue{c.queue}); got != c.want {
			t.Errorf("%s: NeedsFailover = %v, want %v", c.name, got, c.want)
		}
	}
	if NeedsFailover("d", live, nil) {
		t.Error("no queues: nothing to fail over")
	}
}

func TestRepair(t *testing.T) {
	small, two := rq("small", "a", list("a"), list("a")), rq("two", "c", list("c", "a"), list("c"))
	small.Size, two.Size = 2, 2
	left := rq("left", "a", list("a", "b"), list("a", "b"))
	left.Departed = list("c") // c left and is still in gossip for a moment: not picked again
	runCases(t, []planCase{
		{"full sets stay", list("a", "b", "c", "e"), []Queue{rq("r", "a", list("a", "b", "c"), list("a"))}, ""},
		{"one replica per queue per round, counting the ones added", list("a", "b", "c", "e"),
			[]Queue{rq("r1", "a", list("a"), list("a")), rq("r2", "a", list("a", "b"), list("a")), rq("r3", "b", list("b", "c"), list("b"))},
			"r1>e r2>c r3>e"},
		{"its own size", list("a", "b", "c"), []Queue{small, two, rq("r", "b", list("b", "c"), list("b"))}, "small>b r>a"},
		{"no spare live node", list("a", "b"), []Queue{rq("r", "a", list("a", "b"), list("a"))}, ""},
		{"departed nodes are not picked", list("a", "b", "c", "d"), []Queue{left}, "left>d"},
		{"only a departed node spare", list("a", "b", "c"), []Queue{left}, ""},
		{"no live node", nil, []Queue{rq("r", "a", list("a"), list("a"))}, ""},
		{"classic queues have no replicas", list("a", "b"), []Queue{cq("c", "a")}, ""},
	}, func(live []string, qs []Queue) string { return moves(t, qs, Repair(live, qs)) })
}

func TestHoldsReplicas(t *testing.T) {
	qs := []Queue{cq("c", "n"), rq("r", "a", list("a", "b"), list("a"))}
	if HoldsReplicas("n", qs) || !HoldsReplicas("b", qs) || !HoldsReplicas("a", qs) {
		t.Fatal("HoldsReplicas: only replicated queues' replica sets count")
	}
}

func TestLeave(t *testing.T) {
	runCases(t, []planCase{
		{"no target", nil, []Queue{cq("q", "me")}, ""},
		{"only itself as target", list("me"), []Queue{cq("q", "me")}, ""},
		{"fewest first, counting the ones given (ties: smallest id)", list("c", "b", "me"),
			[]Queue{cq("b1", "b"), cq("q1", "me"), dq("q2", "me"), cq("q3", "me"), cq("q4", "me")}, "q1>c q2>b q3>c q4>b"},
		{"exclusive queues go with their connections; replicated ones are not moved", list("a"),
			[]Queue{xq("x", "me", "me"), rq("r", "me", list("me", "a"), list("me", "a")), cq("q", "me")}, "q>a"},
		{"other nodes' queues stay", list("a"), []Queue{cq("q", "a"), cq("z", "gone")}, ""},
	}, func(targets []string, qs []Queue) string { return moves(t, qs, Leave("me", targets, qs)) })
}

// rebalanced renders a Rebalance plan by source node, in node order.
func rebalanced(t *testing.T, queues []Queue, plans map[string][]Move) string {
	t.Helper()
	var out []string
	for _, from := range slices.Sorted(maps.Keys(plans)) {
		for _, m := range plans[from] {
			if m.From != from {
				t.Fatalf("move %+v filed under %s", m, from)
			}
		}
		out = append(out, from+": "+moves(t, queues, plans[from]))
	}
	return strings.Join(out, "; ")
}

func TestRebalance(t *testing.T) {
	var seven []Queue
	for _, name := range list("g", "f", "e", "d", "c", "b", "a") {
		seven = append(seven, cq(name, "n1"))
	}
	withOthers := append(slices.Clone(seven), xq("x", "n1", "n1"), cq("dead", "gone"),
		rq("r1", "n1", list("n1", "n2"), list("n1", "n2")), rq("r2", "n1", list("n1", "n2"), list("n1", "n2")))
	runCases(t, []planCase{
		{"one live node", list("n1"), seven, ""},
		{"seven on three: 3/2/2, the last names leave", list("n3", "n1", "n2"), seven, "n1: g>n2 f>n2 e>n3 d>n3"},
		{"exclusive, dead nodes' and replicated queues stay", list("n1", "n2", "n3"), withOthers, "n1: g>n2 f>n2 e>n3 d>n3"},
		{"two on three: below the floor of 0 nobody takes, below the ceiling n2 does", list("n1", "n2", "n3"),
			[]Queue{cq("a", "n1"), cq("b", "n1")}, "n1: b>n2"},
		{"already even", list("n1", "n2"), []Queue{cq("a", "n1"), cq("b", "n2"), cq("c", "n2")}, ""},
		{"several sources, vhost then name order", list("n1", "n2", "n3"),
			[]Queue{cq("a", "n1"), cq("b", "n1"), cq("c", "n1"), {Vhost: "v", Name: "a", Owner: "n2"}, cq("z", "n2"), cq("y", "n2")},
			"n1: c>n3; n2: a>n3"},
	}, func(live []string, qs []Queue) string { return rebalanced(t, qs, Rebalance(live, qs)) })
}

func TestLeaders(t *testing.T) {
	abc := list("a", "b", "c")
	runCases(t, []planCase{
		{"one live node", list("a"), []Queue{rq("q1", "a", abc, abc), rq("q2", "a", abc, abc)}, ""},
		{"four on a: down to the ceiling of 2, in name order; q0 has no in-sync replica elsewhere", abc,
			[]Queue{rq("q3", "a", abc, abc), rq("q2", "a", abc, abc), rq("q1", "a", abc, abc), rq("q0", "a", abc, list("a")), cq("classic", "a")},
			"q1>b q2>c"},
		{"only in-sync live replicas lead", abc,
			[]Queue{rq("q1", "a", abc, list("a", "c")), rq("q2", "a", abc, list("a", "x")), rq("q3", "a", abc, list("a", "c"))}, "q1>c"},
		{"ties: the first in the in-sync set", abc,
			[]Queue{rq("q1", "a", abc, list("a", "c", "b")), rq("q2", "a", abc, list("a", "c", "b")), rq("q3", "a", abc, list("a", "c", "b"))},
			"q1>c q2>b"},
		{"below the ceiling when nobody is below the floor", abc,
			[]Queue{rq("q1", "a", abc, abc), rq("q2", "a", abc, abc), rq("q3", "a", abc, abc), rq("q4", "b", abc, abc), rq("q5", "c", abc, abc)},
			"q1>b"},
		{"dead leaders' queues are left to failover", abc,
			[]Queue{rq("q1", "d", abc, abc), rq("q2", "d", abc, abc), rq("q3", "d", abc, abc)}, ""},
	}, func(live []string, qs []Queue) string { return moves(t, qs, Leaders(live, qs)) })
}

func ExampleFailover() {
	queues := []Queue{
		{Vhost: "/", Name: "reply", Owner: "n2"},
		{Vhost: "/", Name: "orders", Owner: "n2", Durable: true, Replicated: true,
			Replicas: []string{"n2", "n1", "n3"}, InSync: []string{"n2", "n3"}, Size: 3},
	}
	plan := Failover("n2", []string{"n1", "n3"}, queues, false)
	for _, m := range plan.Rehome {
		fmt.Println(m.Name, "->", m.To)
	}
	// Output:
	// orders -> n3
	// reply -> n1
}
