package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// runForget removes a dead node from the cluster for good, through the Raft leader (found via
// the node at --http): it leaves Raft and its queues are re-homed, empty, to live nodes.
func runForget(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node forget", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", envDefault("http", "127.0.0.1:15672"), "HTTP API of any running node (env WARREN_HTTP)")
	user := fs.String("user", envDefault("user", "guest"), "API user (env WARREN_USER)")
	pass := fs.String("password", envDefault("password", "guest"), "API password (env WARREN_PASSWORD)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: node forget [--http ADDR] NODE-ID")
		return 2
	}
	id := fs.Arg(0)
	var nodes []map[string]any
	if err := (apiClient{*addr, *user, *pass}).get("/api/nodes", &nodes); err != nil {
		fmt.Fprintf(stderr, "node forget: cannot read the node at %s: %v\n", *addr, err)
		return 1
	}
	leader := ""
	for _, n := range nodes {
		if n["leader"] == true {
			leader, _ = n["http_addr"].(string)
		}
	}
	if leader == "" {
		fmt.Fprintln(stderr, "node forget: the cluster has no leader (no quorum?): nothing changed")
		return 1
	}
	if err := (apiClient{leader, *user, *pass}).do(http.MethodPost, "/api/cluster/forget/"+url.PathEscape(id), nil); err != nil {
		fmt.Fprintf(stderr, "node forget: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "node %s forgotten: removed from Raft, its queues re-homed to live nodes\n", id)
	return 0
}
