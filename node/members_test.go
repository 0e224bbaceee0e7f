package node_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/warrenmq/warren/node"
)

// apiNodes reads /api/nodes of n as name → running.
func apiNodes(t *testing.T, n *node.Node) map[string]bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.HTTP.Addr()+"/api/nodes", nil)
	req.SetBasicAuth("guest", "guest")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rows []struct {
		Name    string `json:"name"`
		Running bool   `json:"running"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, r := range rows {
		out[r.Name] = r.Running
	}
	return out
}

func describeNodes(m map[string]bool) string {
	var parts []string
	for name, running := range m {
		state := "running"
		if !running {
			state = "stopped"
		}
		parts = append(parts, name+":"+state)
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func waitNodes(t *testing.T, n *node.Node, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := describeNodes(apiNodes(t, n))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/api/nodes on %s: %s, want %s", n.Broker.ID(), got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMembershipViews: a dead node stays listed, not running, until it is forgotten; a node
// that left gracefully is no longer listed anywhere: not in /api/nodes of the others, not in
// the Raft configuration.
func TestMembershipViews(t *testing.T) {
	nodes := startCluster(t, 3, "s3cret")
	waitAllAlive(t, nodes)
	c1 := nodes[0]
	waitNodes(t, c1, "c1:running c2:running c3:running")

	_ = nodes[2].Close()
	waitNodes(t, c1, "c1:running c2:running c3:stopped")
	waitNodes(t, nodes[1], "c1:running c2:running c3:stopped")
	if err := c1.Forget("c3"); err != nil {
		t.Fatalf("forget c3: %v", err)
	}
	waitNodes(t, c1, "c1:running c2:running")
	waitNodes(t, nodes[1], "c1:running c2:running")

	if _, err := nodes[1].Leave(30 * time.Second); err != nil {
		t.Fatalf("c2 leave: %v", err)
	}
	waitNodes(t, c1, "c1:running")
	servers, err := c1.Store.Configuration()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range servers {
		ids = append(ids, string(s.ID))
	}
	if !slices.Equal(ids, []string{"c1"}) {
		t.Fatalf("raft configuration after forget and leave: %v", ids)
	}
}
