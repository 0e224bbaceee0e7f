package placement

import (
	"slices"
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
