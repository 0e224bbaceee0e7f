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
	api := apiFlags(fs, "any running node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: node forget [--http ADDR] NODE-ID")
		return 2
	}
	id := fs.Arg(0)
	var nodes []map[string]any
	if err := api.get("/api/nodes", &nodes); err != nil {
		fmt.Fprintf(stderr, "node forget: cannot read the node at %s: %v\n", api.addr, err)
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
	if err := api.at(leader).do(http.MethodPost, "/api/cluster/forget/"+url.PathEscape(id), nil); err != nil {
		fmt.Fprintf(stderr, "node forget: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "node %s forgotten: removed from Raft, its queues re-homed to live nodes\n", id)
	return 0
}
