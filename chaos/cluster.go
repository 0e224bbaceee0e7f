package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// Node is one cluster node as the suite reaches it from outside.
type Node struct {
	Index    int    // 1-based, as the cluster scripts number nodes
	Name     string // the node id the broker reports ("n1"); filled by Cluster.Identify
	AMQPURL  string // amqp://user:pass@host:port/
	HTTPAddr string // host:port of the management API
}

// Cluster reads the nodes' management APIs: health, ownership and topology digests.
type Cluster struct {
	Nodes      []*Node
	User, Pass string
	client     *http.Client
}

// NewCluster returns a Cluster of n nodes numbered from 1 whose AMQP and HTTP ports are
// amqpBase+i-1 and httpBase+i-1 on host, as scripts/cluster.sh and docker-cluster.sh lay them out.
func NewCluster(host string, n, amqpBase, httpBase int, user, pass string) *Cluster {
	c := &Cluster{User: user, Pass: pass, client: &http.Client{Timeout: 2 * time.Second}}
	for i := 1; i <= n; i++ {
		c.Nodes = append(c.Nodes, &Node{
			Index:    i,
			Name:     fmt.Sprintf("n%d", i),
			AMQPURL:  fmt.Sprintf("amqp://%s:%s@%s:%d/", user, pass, host, amqpBase+i-1),
			HTTPAddr: fmt.Sprintf("%s:%d", host, httpBase+i-1),
		})
	}
	return c
}

func (c *Cluster) get(ctx context.Context, n *Node, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr+path, nil)
	if err != nil {
		return fmt.Errorf("GET %s on %s: %w", path, n.HTTPAddr, err)
	}
	req.SetBasicAuth(c.User, c.Pass)
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s on %s: %w", path, n.HTTPAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s on %s: HTTP %s", path, n.HTTPAddr, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("GET %s on %s: decode: %w", path, n.HTTPAddr, err)
	}
	return nil
}

type overview struct {
	Node   string `json:"node"`
	Leader string `json:"leader"`
	Digest string `json:"topology_digest"`
}

type member struct {
	Name    string `json:"name"`
	Running bool   `json:"running"`
}

// Identify asks every node for its id, so logs and the checker use the broker's names.
func (c *Cluster) Identify(ctx context.Context) error {
	for _, n := range c.Nodes {
		var o overview
		if err := c.get(ctx, n, "/api/overview", &o); err != nil {
			return fmt.Errorf("identify node %d: %w", n.Index, err)
		}
		if o.Node == "" {
			return fmt.Errorf("identify node %d: /api/overview has no node id", n.Index)
		}
		n.Name = o.Node
	}
	return nil
}

// healthy: every node answers, sees every node running, and all agree on one leader.
func (c *Cluster) healthy(ctx context.Context) error {
	leader := ""
	for _, n := range c.Nodes {
		var o overview
		if err := c.get(ctx, n, "/api/overview", &o); err != nil {
			return err
		}
		if o.Leader == "" {
			return fmt.Errorf("%s knows no raft leader", n.Name)
		}
		if leader != "" && o.Leader != leader {
			return fmt.Errorf("%s follows %s, another node follows %s", n.Name, o.Leader, leader)
		}
		leader = o.Leader
		var ms []member
		if err := c.get(ctx, n, "/api/nodes", &ms); err != nil {
			return err
		}
		running := 0
		for _, m := range ms {
			if m.Running {
				running++
			}
		}
		if running < len(c.Nodes) {
			return fmt.Errorf("%s sees %d of %d nodes running", n.Name, running, len(c.Nodes))
		}
	}
	return nil
}

// WaitHealthy polls until the cluster is healthy or timeout passes; the error says what was
// still wrong.
func (c *Cluster) WaitHealthy(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.healthy(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not healthy after %s: %w", timeout, err)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// Digests returns each node's topology digest, polling up to timeout for them to agree
// (followers apply the Raft log asynchronously). Nodes that never answered are absent.
func (c *Cluster) Digests(ctx context.Context, timeout time.Duration) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		got := map[string]string{}
		for _, n := range c.Nodes {
			var o overview
			if err := c.get(ctx, n, "/api/overview", &o); err == nil {
				got[n.Name] = o.Digest
			}
		}
		if digestsEqual(c.Names(), got) {
			return got
		}
		select {
		case <-ctx.Done():
			return got
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Leader returns the Raft leader as the first answering node reports it ("" if none knows).
func (c *Cluster) Leader(ctx context.Context) string {
	for _, n := range c.Nodes {
		var o overview
		if err := c.get(ctx, n, "/api/overview", &o); err == nil && o.Leader != "" {
			return o.Leader
		}
	}
	return ""
}

// QueueOwners maps queue name to owner node as one node's FSM says.
func (c *Cluster) QueueOwners(ctx context.Context, via *Node) (map[string]string, error) {
	var qs []struct {
		Name string `json:"name"`
		Node string `json:"node"`
	}
	if err := c.get(ctx, via, "/api/queues", &qs); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(qs))
	for _, q := range qs {
		out[q.Name] = q.Node
	}
	return out, nil
}

// StrandedQueues lists the non-durable, non-exclusive queues that the first answering node
// other than dead still places on dead. Once gossip has declared a node dead the Raft leader
// re-homes those (docs/storage.md), so a list that stays non-empty means clients of those
// queues are refused until the node returns.
func (c *Cluster) StrandedQueues(ctx context.Context, dead string) ([]string, error) {
	var qs []struct {
		Name      string `json:"name"`
		Node      string `json:"node"`
		Durable   bool   `json:"durable"`
		Exclusive bool   `json:"exclusive"`
	}
	var err error
	for _, n := range c.Nodes {
		if n.Name == dead {
			continue
		}
		if err = c.get(ctx, n, "/api/queues", &qs); err == nil {
			var out []string
			for _, q := range qs {
				if q.Node == dead && !q.Durable && !q.Exclusive {
					out = append(out, q.Name)
				}
			}
			return out, nil
		}
	}
	return nil, fmt.Errorf("no live node answered: %w", err)
}

// Consumers maps every queue to its consumer count, asking each node for the queues it owns
// (a node reports counts only for its own queues). Nodes that do not answer are skipped.
func (c *Cluster) Consumers(ctx context.Context) map[string]int {
	out := map[string]int{}
	for _, n := range c.Nodes {
		var qs []struct {
			Name      string `json:"name"`
			Node      string `json:"node"`
			Consumers *int   `json:"consumers"`
		}
		if err := c.get(ctx, n, "/api/queues", &qs); err != nil {
			continue
		}
		for _, q := range qs {
			if q.Node == n.Name && q.Consumers != nil {
				out[q.Name] = *q.Consumers
			}
		}
	}
	return out
}

// Names lists the node ids in index order.
func (c *Cluster) Names() []string {
	out := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, n.Name)
	}
	return out
}

// queueRow is the part of /api/queues the suite reads.
type queueRow struct {
	Name    string `json:"name"`
	Node    string `json:"node"` // owner; a replicated queue's leader
	Durable bool   `json:"durable"`
	Type    string `json:"type"`
}

// queues lists the queues as the first node (in index order) that answers sees them.
func (c *Cluster) queues(ctx context.Context) ([]queueRow, error) {
	var err error
	for _, n := range c.Nodes {
		var qs []queueRow
		if err = c.get(ctx, n, "/api/queues", &qs); err == nil {
			return qs, nil
		}
	}
	return nil, fmt.Errorf("no node answered: %w", err)
}

// OwnerOf returns the node that owns queue now (for a replicated queue, its leader).
func (c *Cluster) OwnerOf(ctx context.Context, queue string) (*Node, error) {
	qs, err := c.queues(ctx)
	if err != nil {
		return nil, fmt.Errorf("owner of %s: %w", queue, err)
	}
	for _, q := range qs {
		if q.Name != queue {
			continue
		}
		for _, n := range c.Nodes {
			if n.Name == q.Node {
				return n, nil
			}
		}
		return nil, fmt.Errorf("owner of %s: %q is not a node of this cluster", queue, q.Node)
	}
	return nil, fmt.Errorf("owner of %s: no such queue", queue)
}

// ClassicQueuesOn lists the classic durable queues node owns: the queues whose messages a
// wipe of that node destroys.
func (c *Cluster) ClassicQueuesOn(ctx context.Context, node string) ([]string, error) {
	qs, err := c.queues(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, q := range qs {
		if q.Node == node && q.Durable && q.Type != TypeQuorum {
			out = append(out, q.Name)
		}
	}
	return out, nil
}

// replicaRow is the part of /api/queues that says where a replicated queue's replicas are.
type replicaRow struct {
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	Members []string `json:"members"`
	InSync  []string `json:"in_sync"`
}

// ReplicasInSync is nil when every replicated queue has as many replicas as it should (3, or
// every node when fewer) and all of them in sync, as the first node that answers sees it; the
// error names a queue that is not.
func (c *Cluster) ReplicasInSync(ctx context.Context) error {
	var err error
	for _, n := range c.Nodes {
		var qs []replicaRow
		if err = c.get(ctx, n, "/api/queues", &qs); err != nil {
			continue
		}
		want := min(3, len(c.Nodes))
		for _, q := range qs {
			if q.Type == TypeQuorum && (len(q.Members) < want || len(q.InSync) < len(q.Members)) {
				return fmt.Errorf("%s has replicas %v, in sync %v", q.Name, q.Members, q.InSync)
			}
		}
		return nil
	}
	return fmt.Errorf("no node answered: %w", err)
}

// WaitInSync polls ReplicasInSync until it holds or timeout passes.
func (c *Cluster) WaitInSync(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := c.ReplicasInSync(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("replicated queues not in sync after %s: %w", timeout, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
