package node

import (
	"testing"

	"github.com/warrenmq/warren/fsm"
)

func TestRebalancePlanEvensOutAndKeepsExclusiveAndDeadNodesQueues(t *testing.T) {
	var qs []fsm.Queue
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		qs = append(qs, fsm.Queue{Vhost: "/", Name: name, Owner: "n1"})
	}
	qs = append(qs, fsm.Queue{Vhost: "/", Name: "x", Owner: "n1", Exclusive: true}, fsm.Queue{Vhost: "/", Name: "dead", Owner: "gone"})
	plans := rebalancePlan(qs, []string{"n1", "n2", "n3"})
	if len(plans) != 1 || plans["n1"].From != "n1" {
		t.Fatalf("plans %+v: want one command from n1", plans)
	}
	count := map[string]int{"n1": 7}
	for _, m := range plans["n1"].Moves {
		if m.Name == "x" || m.Name == "dead" {
			t.Fatalf("moved %s", m.Name)
		}
		count["n1"]--
		count[m.Owner]++
	}
	if count["n1"] != 3 || count["n2"] != 2 || count["n3"] != 2 {
		t.Fatalf("after the plan: %v, want 3/2/2", count)
	}
	if again := rebalancePlan(qs[:2], []string{"n1", "n2", "n3"}); len(again["n1"].Moves) != 1 {
		t.Fatalf("two queues on three nodes: %+v", again)
	}
	if none := rebalancePlan(qs, []string{"n1"}); len(none) != 0 {
		t.Fatalf("one live node: %+v", none)
	}
}

func TestLeaderPlanSpreadsReplicatedLeaders(t *testing.T) {
	rq := func(name, owner string, inSync ...string) fsm.Queue {
		return fsm.Queue{Vhost: "/", Name: name, Durable: true, Owner: owner, Type: fsm.QueueTypeQuorum,
			Replicas: []string{"a", "b", "c"}, InSync: inSync, Epoch: 3}
	}
	queues := []fsm.Queue{
		rq("q1", "a", "a", "b", "c"), rq("q2", "a", "a", "b", "c"), rq("q3", "a", "a", "b", "c"),
		rq("q4", "a", "a"), // no in-sync replica elsewhere: stays
		{Vhost: "/", Name: "classic", Owner: "a"},
	}
	plan := leaderPlan(queues, []string{"a", "b", "c"})
	got := map[string]string{}
	for _, e := range plan {
		if e.Epoch != 3 {
			t.Fatalf("%+v: epoch must be the one seen", e)
		}
		got[e.Name] = e.Leader
	}
	if len(got) != 2 || got["q4"] != "" || got["classic"] != "" {
		t.Fatalf("plan %+v: want two of q1..q3 handed to b and c", plan)
	}
	leaders := map[string]int{"a": 2} // q4 and one of q1..q3 stay
	for _, l := range got {
		leaders[l]++
	}
	if leaders["b"] != 1 || leaders["c"] != 1 {
		t.Fatalf("leaders after the plan %v", leaders)
	}
	if moves := rebalancePlan(queues, []string{"a", "b", "c"}); len(moves) != 0 {
		t.Fatalf("replicated queues moved like classic ones: %+v", moves)
	}
}
