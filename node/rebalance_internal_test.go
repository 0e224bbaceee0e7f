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
