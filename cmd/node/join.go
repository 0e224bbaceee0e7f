package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runJoin asks the node at --http (a fresh node, alone in its own cluster) to join the cluster
// reachable at the given gossip addresses.
func runJoin(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := apiFlags(fs, "the node that joins")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: node join [--http ADDR] GOSSIP-ADDR[,GOSSIP-ADDR...]")
		return 2
	}
	seeds := splitList(fs.Arg(0))
	if len(seeds) == 0 {
		fmt.Fprintln(stderr, "node join: no gossip address given")
		return 2
	}
	api.timeout = 90 * time.Second // the node waits up to a minute to be added to Raft
	if err := api.call(http.MethodPost, "/api/cluster/join", map[string][]string{"seeds": seeds}, nil); err != nil {
		fmt.Fprintf(stderr, "node join: the node at %s did not join: %v\n", api.addr, err)
		return 1
	}
	fmt.Fprintf(stdout, "node at %s joined the cluster via %v\n", api.addr, seeds)
	return 0
}

// runRebalance asks the cluster (through the node at --http) to spread queues evenly.
func runRebalance(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("node rebalance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	api := apiFlags(fs, "any running node")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: node rebalance [--http ADDR]")
		return 2
	}
	var out struct {
		Moved int `json:"moved"`
	}
	started := time.Now()
	if err := api.do(http.MethodPost, "/api/cluster/rebalance", &out); err != nil {
		fmt.Fprintf(stderr, "node rebalance: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d queues moved; their messages follow them\n", out.Moved)
	if out.Moved > 0 {
		followProgress(*api, stdout, "rebalance", started, 10*time.Minute)
	}
	return 0
}
